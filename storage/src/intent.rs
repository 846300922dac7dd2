//! What callers ask the store to do ([`Intent`]) and what they get back ([`Outcome`]).

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::{Edge, EdgeKind, Node, Role, Seq, WorkflowStatus};
use crate::time::Timestamp;

/// A request to change the store. Each is validated against everything durable and
/// everything accepted before it in the same group, then written atomically.
#[derive(Clone, Debug)]
pub enum Intent {
    /// Create a workflow and its root node.
    CreateWorkflow(NewWorkflow),
    /// Append nodes atomically; later nodes may name earlier ones as parents.
    AppendNodes {
        /// Target workflow.
        workflow_id: Uuid,
        /// The nodes, in order.
        nodes: Vec<NewNode>,
    },
    /// Record a MONITORS, OPTION_OF or CHOSEN_OPTION edge.
    AddEdge {
        /// Workflow both ends must belong to.
        workflow_id: Uuid,
        /// The edge.
        edge: Edge,
    },
    /// Record the chosen option of a decision (its workflow is the decision's).
    Choose {
        /// Decision node.
        decision_id: Uuid,
        /// Option node.
        option_id: Uuid,
    },
    /// Change a workflow's status.
    SetStatus {
        /// Target workflow.
        workflow_id: Uuid,
        /// New status.
        status: WorkflowStatus,
    },
}

/// A workflow to create.
#[derive(Clone, Debug, Default)]
pub struct NewWorkflow {
    /// Client-chosen id (idempotency key); v7 when absent.
    pub id: Option<Uuid>,
    /// Root id; set only by import (the API assigns it).
    pub root_id: Option<Uuid>,
    /// The system prompt: the root's content.
    pub system_prompt: String,
    /// Workflow metadata.
    pub metadata: Map<String, Value>,
    /// Owner.
    pub user_id: Option<String>,
}

/// A node to append.
#[derive(Clone, Debug)]
pub struct NewNode {
    /// Client-chosen id (idempotency key); v7 when absent.
    pub id: Option<Uuid>,
    /// Parent node.
    pub parent_id: Uuid,
    /// Type name.
    pub node_type: String,
    /// Role.
    pub role: Option<Role>,
    /// Content.
    pub content: String,
    /// Payload (`null` when absent).
    pub payload: Value,
    /// Metadata.
    pub metadata: Map<String, Value>,
    /// Agent.
    pub agent_id: Option<String>,
    /// User.
    pub user_id: Option<String>,
    /// Only append if the parent has no child yet.
    pub expect_leaf: bool,
    /// Original time; set only by import.
    pub timestamp: Option<Timestamp>,
}

impl NewNode {
    /// A node with the given parent, type and content and everything else empty.
    pub fn new(parent_id: Uuid, node_type: &str, content: impl Into<String>) -> NewNode {
        NewNode {
            id: None,
            parent_id,
            node_type: node_type.to_owned(),
            role: None,
            content: content.into(),
            payload: Value::Null,
            metadata: Map::new(),
            agent_id: None,
            user_id: None,
            expect_leaf: false,
            timestamp: None,
        }
    }
}

/// Who asks, and (for import) what to keep from the original event.
#[derive(Clone, Debug)]
pub struct Meta {
    /// Token id or `anonymous`.
    pub actor: String,
    /// Original event id (import of status changes).
    pub event_id: Option<Uuid>,
    /// Original time (import).
    pub timestamp: Option<Timestamp>,
}

impl Default for Meta {
    fn default() -> Meta {
        Meta {
            actor: "anonymous".to_owned(),
            event_id: None,
            timestamp: None,
        }
    }
}

/// The result of an accepted intent. `replayed` is true when nothing new was
/// written because an identical request had been accepted before.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Workflow created (or replayed).
    WorkflowCreated {
        /// Workflow id.
        workflow_id: Uuid,
        /// Root node id.
        root_id: Uuid,
        /// Seq of `workflow.created`.
        seq: Seq,
        /// Identical replay.
        replayed: bool,
    },
    /// Nodes appended (or replayed), in request order.
    Nodes {
        /// The stored nodes.
        nodes: Vec<Node>,
        /// Identical replay.
        replayed: bool,
    },
    /// Edge recorded (or already there).
    Edge {
        /// The edge.
        edge: Edge,
        /// Seq of its event.
        seq: Seq,
        /// Already recorded.
        replayed: bool,
    },
    /// Status set; `seq` is `None` when it already was that status.
    Status {
        /// Workflow.
        workflow_id: Uuid,
        /// Current status.
        status: WorkflowStatus,
        /// Seq of the change, if one was recorded.
        seq: Option<Seq>,
    },
}

/// The deterministic event id of an edge, so that re-sending an edge is idempotent.
pub fn edge_event_id(kind: EdgeKind, from: Uuid, to: Uuid) -> Uuid {
    const NS: Uuid = Uuid::from_u128(0x6172_626f_725f_6564_6765_5f6e_735f_7631);
    let mut name = Vec::with_capacity(48);
    name.extend_from_slice(kind.as_str().as_bytes());
    name.extend_from_slice(from.as_bytes());
    name.extend_from_slice(to.as_bytes());
    Uuid::new_v5(&NS, &name)
}
