//! OpenAPI schemas of the wire shapes this crate serializes but does not own: the
//! nodes, edges and events of arbor-storage, its token spec, and arbor-sync's sink
//! status. Neither crate knows of OpenAPI; these types are never built, only described
//! (`#[derive(ToSchema)]` reads their fields and serde attributes). Also here: the
//! values of request fields that handlers take as text and check themselves
//! ([`NewEdgeKind`], [`PathFormat`]), and one event of the SSE streams ([`SseEvent`]).
//!
//! They cannot drift silently: `openapi`'s tests validate real values of the storage
//! and sync types, serialized as the API sends them, against these schemas, strictly
//! (a key the schema does not name fails too) — a field added, removed or retyped on
//! either side fails them. Schemathesis checks the live responses as well
//! (`tests/openapi.rs`).

use serde_json::{Map, Value};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

/// The role of a node in an LLM conversation.
#[derive(ToSchema)]
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

/// A workflow's lifecycle status; `completed`, `failed` and `cancelled` are terminal.
#[derive(ToSchema)]
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

/// An edge type. `PARENT_OF` is implied by a node's `parent_id`; the others are
/// recorded by `POST /v1/workflows/{wf}/edges` or `choose`.
#[derive(ToSchema)]
pub enum EdgeKind {
    /// parent → child.
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

/// The edge types a client may record (`PARENT_OF` is implied by `parent_id`: 400).
#[derive(ToSchema)]
pub enum NewEdgeKind {
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

/// The shape of `GET /v1/nodes/{id}/path`: `nodes` (default) or `messages`, the path's
/// nodes that have a role as `{role, content}`.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PathFormat {
    /// `{nodes:[…]}`.
    Nodes,
    /// `{messages:[{role, content}]}`.
    Messages,
}

/// A node of a workflow tree (DESIGN §2).
#[derive(ToSchema)]
pub struct Node {
    /// Node id (client-supplied or a server-assigned UUIDv7).
    pub id: Uuid,
    /// The workflow the node belongs to.
    pub workflow_id: Uuid,
    /// Parent node; null only for the root.
    #[schema(required = true)]
    pub parent_id: Option<Uuid>,
    /// Node type: `system`, `message`, `action`, `decision`, `option`, `monitor` or any
    /// lowercase word.
    #[serde(rename = "type")]
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub node_type: String,
    /// Conversation role, if any.
    #[schema(required = true)]
    pub role: Option<Role>,
    /// UTF-8 content.
    pub content: String,
    /// Free JSON payload (null when absent).
    pub payload: Value,
    /// Metadata (an object; empty when absent).
    pub metadata: Map<String, Value>,
    /// The agent that produced the node.
    #[schema(required = true)]
    pub agent_id: Option<String>,
    /// The user behind the node.
    #[schema(required = true)]
    pub user_id: Option<String>,
    /// Branch id: the id of the first node of the branch.
    pub branch_id: Uuid,
    /// Distance from the root (root = 0).
    pub depth: u32,
    /// Log position of the event that created the node.
    pub seq: u64,
    /// Server time of creation (RFC 3339, microseconds).
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// A MONITORS, OPTION_OF or CHOSEN_OPTION edge between two nodes of one workflow.
#[derive(ToSchema)]
pub struct Edge {
    /// Edge type.
    #[serde(rename = "type")]
    pub kind: EdgeKind,
    /// Source node.
    pub from: Uuid,
    /// Target node.
    pub to: Uuid,
}

/// The kind of an event, naming the shape of its `body`.
#[derive(ToSchema)]
pub enum EventKind {
    /// `body` is a `WorkflowCreatedBody`.
    #[serde(rename = "workflow.created")]
    WorkflowCreated,
    /// `body` is the new [`Node`].
    #[serde(rename = "node.created")]
    NodeCreated,
    /// `body` is the [`Edge`].
    #[serde(rename = "edge.created")]
    EdgeCreated,
    /// `body` is a [`StatusChanged`].
    #[serde(rename = "workflow.status_changed")]
    StatusChanged,
}

/// What an event says happened; its `kind` says which.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum EventBody {
    /// `workflow.created`.
    WorkflowCreated(WorkflowCreated),
    /// `node.created`.
    NodeCreated(Node),
    /// `edge.created`.
    EdgeCreated(Edge),
    /// `workflow.status_changed`.
    StatusChanged(StatusChanged),
}

/// Body of `workflow.created`.
#[derive(ToSchema)]
#[schema(as = WorkflowCreatedBody)]
pub struct WorkflowCreated {
    /// The root node (type `system`, role `system`, content = the system prompt).
    pub root: Node,
    /// Workflow metadata.
    pub metadata: Map<String, Value>,
    /// The user who started the workflow.
    #[schema(required = true)]
    pub user_id: Option<String>,
}

/// Body of `workflow.status_changed`.
#[derive(ToSchema)]
pub struct StatusChanged {
    /// Status before.
    pub from: WorkflowStatus,
    /// Status after.
    pub to: WorkflowStatus,
}

/// One event of the log, as replays and streams send it.
#[derive(ToSchema)]
pub struct Event {
    /// Global log position.
    pub seq: u64,
    /// Event id (idempotency key).
    pub id: Uuid,
    /// The workflow the event belongs to.
    pub workflow_id: Uuid,
    /// Server time (RFC 3339, microseconds).
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// Who appended it (a token id, `anonymous`, or `import`'s original actor).
    pub actor: String,
    /// The event kind.
    pub kind: EventKind,
    /// What happened, as `kind` says.
    pub body: EventBody,
    /// Hash of the previous event (hex; zeros before the first).
    pub prev_hash: String,
    /// BLAKE3 over `prev_hash` and the canonical encoding of this event (hex).
    pub hash: String,
}

/// A token's id, name, role, scope, expiry and rate.
#[derive(ToSchema)]
pub struct TokenSpec {
    /// Token id (the `<id>` of `arbor_<id>_<secret>`).
    pub id: Uuid,
    /// A name for people.
    pub name: String,
    /// Role.
    #[schema(value_type = crate::auth::role::Role)]
    pub role: String,
    /// Workflows in scope; empty = all.
    pub workflows: Vec<Uuid>,
    /// Branches in scope; empty = all.
    pub branches: Vec<Uuid>,
    /// When the token stops working.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// Requests per second; null = the server's default.
    #[schema(required = true)]
    pub rate: Option<f64>,
}

/// The health of a sync worker.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SinkState {
    /// The last write succeeded (or none was needed).
    Ok,
    /// The last attempt failed; the worker is retrying.
    Degraded,
    /// The worker has ended.
    Stopped,
    /// The worker is setting up and has written nothing yet.
    Starting,
}

/// One sink's status.
#[derive(ToSchema)]
pub struct SinkStatus {
    /// Sink name: `redis`, `postgres`, `neo4j`.
    pub name: String,
    /// Worker state.
    pub state: SinkState,
    /// Last seq the sink has.
    pub cursor: u64,
    /// Events in the log the sink does not have yet.
    pub lag_events: u64,
    /// How long ago the oldest event the sink does not have yet reached this server.
    pub lag_seconds: f64,
    /// Last error (credentials stripped).
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// Batches written since start.
    pub batches: u64,
    /// Events written since start.
    pub events: u64,
    /// Retried failures since start.
    pub retries: u64,
    /// Failures (retried or dead-lettered) since start.
    pub errors: u64,
    /// Unresolved dead letters of this sink.
    pub dead_letters: u64,
    /// Why the sink is degraded although its worker runs fine.
    pub reasons: Vec<String>,
    /// Anti-entropy: audits, divergences found and repaired.
    pub anti_entropy: AuditStatus,
}

/// Anti-entropy figures of one sink.
#[derive(ToSchema)]
pub struct AuditStatus {
    /// Rounds run since start.
    pub rounds: u64,
    /// Workflow audits since start.
    pub workflows_audited: u64,
    /// Events those audits covered.
    pub events_audited: u64,
    /// Workflows found diverged from the log.
    pub divergences: u64,
    /// Of those, repaired.
    pub repaired: u64,
    /// Workflows diverged now.
    pub unrepaired: u64,
    /// Workflows not audited for their size.
    pub skipped: u64,
    /// The most recent divergence.
    #[schema(required = true)]
    pub last_divergence: Option<Divergence>,
}

/// A workflow a replica held otherwise than the log.
#[derive(ToSchema)]
pub struct Divergence {
    /// The workflow.
    pub workflow_id: Uuid,
    /// What differed.
    pub what: String,
    /// Rows, nodes or entries missing (at least).
    pub missing: u64,
    /// Whether the repair made it whole.
    pub repaired: bool,
    /// When it was found (RFC 3339).
    #[schema(format = DateTime)]
    pub found_at: String,
}

/// One Server-Sent Event of the streams, as an EventSource sees it: `event` is the
/// kind, `id` the seq, `data` the [`Event`] as JSON text. Written by hand: utoipa has no
/// `contentSchema` (JSON Schema's keyword for what a string holds), so it rides in the
/// schema's extension map, which is written out as is.
pub struct SseEvent;

impl utoipa::PartialSchema for SseEvent {
    fn schema() -> RefOr<Schema> {
        let data_holds = Extensions::from_iter([(
            "contentSchema",
            serde_json::json!({ "$ref": "#/components/schemas/Event" }),
        )]);
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .description(Some("The event, as JSON"))
            .extensions(Some(data_holds));
        let id = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]+$"))
            .description(Some(
                "The event's seq: send it back as `Last-Event-ID` to resume",
            ));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("event", Ref::from_schema_name(EventKind::name()))
            .property("id", id)
            .property("data", data)
            .required("event")
            .required("id")
            .required("data")
            .description(Some(
                "One event: `event: <kind>`, `id: <seq>`, `data: <event JSON>`. The stream \
                 also sends a `retry:` line first and heartbeat comments, which carry no event.",
            ))
            .into()
    }
}

impl ToSchema for SseEvent {
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        out.push((EventKind::name().into(), EventKind::schema()));
        out.push((Event::name().into(), Event::schema()));
        Event::schemas(out);
    }
}
