//! The data model of DESIGN §2: nodes, edges, workflow status and events.
//!
//! These types are what the log stores (in a compact record form, see
//! [`crate::record`]) and what every reader gets back. Their serde form is the
//! JSON form the API and the sinks use, so a node looks the same everywhere.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::time::Timestamp;

/// Global log position. Gap-free from 1; 0 means "before the first event".
pub type Seq = u64;

/// The role of a node in an LLM conversation, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system prompt.
    System,
    /// A human.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl Role {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// The role of a lowercase wire name ([`Role::as_str`]'s inverse).
    pub fn parse(s: &str) -> Option<Role> {
        [Role::System, Role::User, Role::Assistant, Role::Tool]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A node of a workflow tree, with every field of DESIGN §2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Node id (UUID; client-supplied or server-assigned v7).
    pub id: Uuid,
    /// The workflow the node belongs to.
    pub workflow_id: Uuid,
    /// Parent node; `None` only for the root.
    pub parent_id: Option<Uuid>,
    /// Node type: `system`, `message`, `action`, `decision`, `option`, `monitor` or any
    /// lowercase word `[a-z][a-z0-9_]{0,31}`.
    #[serde(rename = "type")]
    pub node_type: String,
    /// Conversation role, if any.
    pub role: Option<Role>,
    /// UTF-8 content.
    pub content: String,
    /// Free JSON payload (`null` when absent).
    #[serde(default)]
    pub payload: Value,
    /// JSON object of metadata (empty when absent).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The agent that produced the node.
    pub agent_id: Option<String>,
    /// The user behind the node.
    pub user_id: Option<String>,
    /// Branch id: the id of the first node of the branch (see DESIGN §2).
    pub branch_id: Uuid,
    /// Distance from the root (root = 0).
    pub depth: u32,
    /// Log position of the event that created the node.
    pub seq: Seq,
    /// Server time of creation.
    pub timestamp: Timestamp,
}

/// The kinds of non-tree edges (PARENT_OF is implied by `parent_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EdgeKind {
    /// parent → child; implied by `parent_id`, never sent as an edge event.
    #[serde(rename = "PARENT_OF")]
    ParentOf,
    /// monitor → target.
    #[serde(rename = "MONITORS")]
    Monitors,
    /// decision → option.
    #[serde(rename = "OPTION_OF")]
    OptionOf,
    /// decision → chosen option.
    #[serde(rename = "CHOSEN_OPTION")]
    ChosenOption,
}

impl EdgeKind {
    /// The upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::ParentOf => "PARENT_OF",
            EdgeKind::Monitors => "MONITORS",
            EdgeKind::OptionOf => "OPTION_OF",
            EdgeKind::ChosenOption => "CHOSEN_OPTION",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<EdgeKind> {
        Some(match s {
            "PARENT_OF" => EdgeKind::ParentOf,
            "MONITORS" => EdgeKind::Monitors,
            "OPTION_OF" => EdgeKind::OptionOf,
            "CHOSEN_OPTION" => EdgeKind::ChosenOption,
            _ => return None,
        })
    }
}

/// An edge between two nodes of one workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Edge type.
    #[serde(rename = "type")]
    pub kind: EdgeKind,
    /// Source node.
    pub from: Uuid,
    /// Target node.
    pub to: Uuid,
}

/// Workflow lifecycle status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    /// Agents are working (initial status).
    Running,
    /// Waiting for a user or an external event.
    Waiting,
    /// Finished successfully (terminal).
    Completed,
    /// Finished with an error (terminal).
    Failed,
    /// Stopped by a user (terminal).
    Cancelled,
}

impl WorkflowStatus {
    /// Terminal statuses accept no further status change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Completed | WorkflowStatus::Failed | WorkflowStatus::Cancelled
        )
    }

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Waiting => "waiting",
            WorkflowStatus::Completed => "completed",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<WorkflowStatus> {
        Some(match s {
            "running" => WorkflowStatus::Running,
            "waiting" => WorkflowStatus::Waiting,
            "completed" => WorkflowStatus::Completed,
            "failed" => WorkflowStatus::Failed,
            "cancelled" => WorkflowStatus::Cancelled,
            _ => return None,
        })
    }
}

/// What an event says happened, tagged by its kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body")]
pub enum EventBody {
    /// A workflow and its root (system) node were created.
    #[serde(rename = "workflow.created")]
    WorkflowCreated(WorkflowCreated),
    /// A node was appended.
    #[serde(rename = "node.created")]
    NodeCreated(Node),
    /// A MONITORS, OPTION_OF or CHOSEN_OPTION edge was recorded.
    #[serde(rename = "edge.created")]
    EdgeCreated(Edge),
    /// The workflow's status changed.
    #[serde(rename = "workflow.status_changed")]
    StatusChanged(StatusChanged),
}

impl EventBody {
    /// The event kind's wire name.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::WorkflowCreated(_) => "workflow.created",
            EventBody::NodeCreated(_) => "node.created",
            EventBody::EdgeCreated(_) => "edge.created",
            EventBody::StatusChanged(_) => "workflow.status_changed",
        }
    }
}

/// Body of `workflow.created`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowCreated {
    /// The root node (type `system`, role `system`, content = system prompt).
    pub root: Node,
    /// Workflow metadata (JSON object).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The user who started the workflow.
    pub user_id: Option<String>,
}

/// Body of `workflow.status_changed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChanged {
    /// Status before.
    pub from: WorkflowStatus,
    /// Status after.
    pub to: WorkflowStatus,
}

/// One event of the log, as readers see it (content resolved, hashes in hex).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Global log position.
    pub seq: Seq,
    /// Event id (idempotency key).
    pub id: Uuid,
    /// The workflow the event belongs to.
    pub workflow_id: Uuid,
    /// Server time.
    pub timestamp: Timestamp,
    /// Who appended it (token id or `anonymous`).
    pub actor: String,
    /// Kind and body.
    #[serde(flatten)]
    pub body: EventBody,
    /// Hash of the previous event (hex; zeros before the first).
    pub prev_hash: String,
    /// BLAKE3 over `prev_hash` and the canonical encoding of this event (hex).
    pub hash: String,
}

impl Event {
    /// The event kind's wire name.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }
}

/// An event in portable form, as `arbor export` writes and `arbor import` reads it:
/// no log position and no hashes, which belong to the store it lives in, and nodes
/// without `seq`. Exporting an imported workflow gives back the same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortableEvent {
    /// Event id.
    pub id: Uuid,
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Original server time, kept on import.
    pub timestamp: Timestamp,
    /// Original actor.
    pub actor: String,
    /// Kind and body (nodes carry `seq: 0`, which import ignores).
    #[serde(flatten)]
    pub body: EventBody,
}

impl PortableEvent {
    /// The portable form of a stored event: `seq`s zeroed, hashes dropped.
    pub fn from_event(event: &Event) -> PortableEvent {
        let mut body = event.body.clone();
        match &mut body {
            EventBody::WorkflowCreated(created) => created.root.seq = 0,
            EventBody::NodeCreated(node) => node.seq = 0,
            EventBody::EdgeCreated(_) | EventBody::StatusChanged(_) => {}
        }
        PortableEvent {
            id: event.id,
            workflow_id: event.workflow_id,
            timestamp: event.timestamp,
            actor: event.actor.clone(),
            body,
        }
    }
}

/// Checks a node type name: `[a-z][a-z0-9_]{0,31}`.
pub fn valid_node_type(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_type_names() {
        for ok in ["system", "message", "a", "tool_call2", &"x".repeat(32)] {
            assert!(valid_node_type(ok), "{ok}");
        }
        for bad in [
            "",
            "Message",
            "1abc",
            "_x",
            "a-b",
            "a b",
            &"x".repeat(33),
            "é",
        ] {
            assert!(!valid_node_type(bad), "{bad}");
        }
    }

    #[test]
    fn edge_and_status_names_round_trip() {
        for k in [
            EdgeKind::ParentOf,
            EdgeKind::Monitors,
            EdgeKind::OptionOf,
            EdgeKind::ChosenOption,
        ] {
            assert_eq!(EdgeKind::parse(k.as_str()), Some(k));
        }
        for s in [
            WorkflowStatus::Running,
            WorkflowStatus::Waiting,
            WorkflowStatus::Completed,
            WorkflowStatus::Failed,
            WorkflowStatus::Cancelled,
        ] {
            assert_eq!(WorkflowStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(EdgeKind::parse("parent_of"), None);
    }
}
