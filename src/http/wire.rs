//! Wire types of the HTTP API: request bodies (unknown fields rejected) and the
//! JSON body extractor that turns every malformed body into a problem+json 400
//! (or 413 when over the body limit).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use arbor_storage::{NewNode, Role};

use super::problem::Problem;

/// A JSON request body, parsed strictly.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::too_large(format!("request body too large: {}", r.body_text()))
            } else {
                Problem::bad_request(format!("could not read the body: {}", r.body_text()))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// `POST /v1/workflows`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// Client-chosen id (idempotency key).
    pub id: Option<Uuid>,
    /// The system prompt (root content).
    pub system_prompt: String,
    /// Workflow metadata (an object).
    pub metadata: Option<Map<String, Value>>,
    /// Owner.
    pub user_id: Option<String>,
}

/// `POST /v1/workflows/{wf}/nodes` and each item of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    /// Client-chosen id (idempotency key).
    pub id: Option<Uuid>,
    /// Parent node.
    pub parent_id: Uuid,
    /// Node type.
    #[serde(rename = "type")]
    pub node_type: String,
    /// Role.
    pub role: Option<Role>,
    /// Content.
    pub content: String,
    /// Payload.
    pub payload: Option<Value>,
    /// Metadata (an object).
    pub metadata: Option<Map<String, Value>>,
    /// Agent.
    pub agent_id: Option<String>,
    /// User.
    pub user_id: Option<String>,
    /// Only append if the parent has no child yet.
    #[serde(default)]
    pub expect_leaf: bool,
}

impl CreateNode {
    /// The storage intent for this node.
    pub fn into_new_node(self) -> NewNode {
        NewNode {
            id: self.id,
            parent_id: self.parent_id,
            node_type: self.node_type,
            role: self.role,
            content: self.content,
            payload: self.payload.unwrap_or(Value::Null),
            metadata: self.metadata.unwrap_or_default(),
            agent_id: self.agent_id,
            user_id: self.user_id,
            expect_leaf: self.expect_leaf,
            timestamp: None,
        }
    }
}

/// `POST /v1/workflows/{wf}/nodes/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// The nodes, in order.
    pub nodes: Vec<CreateNode>,
}

/// `POST /v1/workflows/{wf}/edges`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEdge {
    /// MONITORS, OPTION_OF or CHOSEN_OPTION.
    #[serde(rename = "type")]
    pub kind: String,
    /// Source.
    pub from: Uuid,
    /// Target.
    pub to: Uuid,
}

/// `POST /v1/nodes/{id}/choose`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choose {
    /// The option to choose.
    pub option_id: Uuid,
}

/// `PATCH /v1/workflows/{wf}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchWorkflow {
    /// New status.
    pub status: String,
}

/// `201 {workflow_id, root_id, seq}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkflowCreated {
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Root node id.
    pub root_id: Uuid,
    /// Seq of `workflow.created`.
    pub seq: u64,
}

/// An edge as returned by `POST …/edges` and `choose`.
#[derive(Debug, Serialize, Deserialize)]
pub struct EdgeCreated {
    /// Edge type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Source.
    pub from: Uuid,
    /// Target.
    pub to: Uuid,
    /// Seq of the event that records it.
    pub seq: u64,
}

/// Query of `GET /v1/workflows`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (1..=1000, default 50).
    pub limit: Option<usize>,
    /// Cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Status filter.
    pub status: Option<String>,
    /// Owner filter.
    pub user_id: Option<String>,
}

/// Query of `GET …/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Start after this seq (default 0).
    pub after: Option<u64>,
    /// Page size (1..=10000, default 1000).
    pub limit: Option<usize>,
}

/// Query of `GET /v1/nodes/{id}/path`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// `nodes` (default) or `messages`.
    pub format: Option<String>,
}

/// Query of `GET /v1/nodes/{id}/subtree`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubtreeQuery {
    /// Levels below the node (unbounded when absent).
    pub max_depth: Option<u32>,
}

/// Query of `GET …/monitors`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorsQuery {
    /// Only monitors whose target is on another branch.
    #[serde(default)]
    pub cross_branch: bool,
}

/// Query of the SSE endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this seq (0 = whole history first).
    pub after: Option<u64>,
}

/// A query string, parsed strictly (unknown parameters are a 400 problem).
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e| Problem::bad_request(format!("invalid query: {}", e.body_text())))
    }
}

/// A path parameter, parsed strictly (a malformed id is a 400 problem).
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for PathParam<T>
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParam(p.0))
            .map_err(|e| Problem::bad_request(format!("invalid path: {}", e.body_text())))
    }
}
