//! The HTTP API of DESIGN §4: the only place that knows axum, HTTP and wire types.
//!
//! - [`routes`]: workflows, nodes, edges, queries, replay.
//! - [`sse`]: per-workflow and global event streams with loss-free resume.
//! - [`health`]: liveness, readiness, component health, Prometheus metrics.
//! - [`cors`]: which other origins' pages may call the API (`--cors-origin`).
//! - [`layers`]: what wraps every route: request spans, the request timeout.
//! - [`wire`]: request bodies, write responses and strict extractors.
//! - [`views`]: response bodies of the reads, mapped from the store's results.
//! - [`guard`]: request guards that run before any handler (JSON bodies only).
//! - [`problem`]: problem+json errors.
//! - [`auth`]: authentication and the role check, on every route.
//! - [`tokens`]: `/v1/tokens` (admin).
//! - [`audit`]: `/v1/audit` (admin): the admin log, paged and filtered.
//! - [`scope`]: what a token limited to workflows or branches sees and may append to.
//! - [`ui`]: the web UI at `/`, embedded in the binary.
//! - [`openapi`]: the OpenAPI 3.1 description (`/openapi.json`) and its page (`/docs`);
//!   [`schemas`] describes the wire shapes of the storage and sync types.

pub mod audit;
pub mod auth;
pub mod cors;
pub mod guard;
pub mod health;
pub mod layers;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod schemas;
pub mod scope;
pub mod sse;
pub mod tokens;
pub mod ui;
pub mod views;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::sync::watch;

use arbor_storage::Store;

use crate::metrics::Metrics;
use problem::Problem;

/// Request limits (DESIGN §4: content 1 MiB, body 16 MiB, batch 10 000 nodes; payload
/// 1 MiB and metadata 64 KiB serialized), the request timeout and the SSE timings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest node content in bytes.
    pub max_content_bytes: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Most nodes in one batch.
    pub max_batch_nodes: usize,
    /// SSE heartbeat interval.
    pub sse_heartbeat: Duration,
    /// Longest a request may take to send its body and get its response head (a
    /// streaming body is not limited).
    pub request_timeout: Duration,
    /// Largest node `payload`, serialized, in bytes.
    pub max_payload_bytes: usize,
    /// Largest `metadata` (of a node or a workflow), serialized, in bytes.
    pub max_metadata_bytes: usize,
    /// The `retry:` every SSE stream starts with: how long a browser's EventSource waits
    /// before reconnecting.
    pub sse_retry: Duration,
    /// A live SSE stream writes at most once per this window; events arriving in
    /// between are sent together in its next write (zero: every event at once).
    pub sse_coalesce: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_content_bytes: 1024 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            max_batch_nodes: 10_000,
            sse_heartbeat: Duration::from_secs(15),
            request_timeout: Duration::from_secs(30),
            max_payload_bytes: 1024 * 1024,
            max_metadata_bytes: 64 * 1024,
            sse_retry: Duration::from_millis(1000),
            sse_coalesce: Duration::from_millis(20),
        }
    }
}

/// Status of the sync workers, as health and metrics report it.
pub trait SinkReport: Send + Sync {
    /// One entry per sink, from the workers' running figures (no store scan).
    fn sinks(&self) -> Vec<arbor_sync::SinkStatus>;
}

/// The handlers' state: one `Arc`, so the clone axum makes for every extractor and
/// middleware of every request is one reference count, not a copy of each field (a
/// watch receiver, an mpsc sender's count, the CORS origins' vector…).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of a server sharing `shared`.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares.
pub struct Shared {
    /// The store.
    pub store: Store,
    /// The store's events, re-broadcast for the SSE streams ([`sse::Live::start`]).
    pub live: sse::Live,
    /// Request limits.
    pub limits: Limits,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Flips to true when the server shuts down (ends SSE streams).
    pub shutdown: watch::Receiver<bool>,
    /// Sync workers, when any sink is configured.
    pub sinks: Option<Arc<dyn SinkReport>>,
    /// Held by every SSE stream (the response body itself, not a task); shutdown waits
    /// until all clones are gone.
    pub tasks: tokio::sync::mpsc::Sender<()>,
    /// Rate limiters of tokens and of failed authentications.
    pub access: Arc<auth::Access>,
    /// Origins whose pages may call the API (`--cors-origin`; none by default).
    pub cors_origins: Vec<String>,
}

/// The full router: the routes, the body limit, the request timeout, request spans.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    let timeout = state.limits.request_timeout;
    let auth = axum::middleware::from_fn_with_state(state.clone(), auth::authenticate);
    let cors = cors::layer(&state.cors_origins);
    let router = Router::new()
        .route(
            "/v1/workflows",
            post(routes::create_workflow).get(routes::list_workflows),
        )
        .route(
            "/v1/workflows/{wf}",
            get(routes::get_workflow).patch(routes::patch_workflow),
        )
        .route("/v1/workflows/{wf}/nodes", post(routes::create_node))
        .route("/v1/workflows/{wf}/nodes/batch", post(routes::create_batch))
        .route("/v1/workflows/{wf}/edges", post(routes::create_edge))
        .route("/v1/workflows/{wf}/decisions", get(routes::get_decisions))
        .route("/v1/workflows/{wf}/branches", get(routes::get_branches))
        .route(
            "/v1/workflows/{wf}/branches/{branch_id}",
            get(routes::get_branch),
        )
        .route("/v1/workflows/{wf}/monitors", get(routes::get_monitors))
        .route("/v1/workflows/{wf}/events", get(routes::get_events))
        .route("/v1/workflows/{wf}/outline", get(routes::get_outline))
        .route("/v1/workflows/{wf}/labels", get(routes::get_labels))
        .route("/v1/workflows/{wf}/stream", get(sse::workflow_stream))
        .route("/v1/stream", get(sse::global_stream))
        .route("/v1/nodes/{id}", get(routes::get_node))
        .route("/v1/nodes/{id}/choose", post(routes::choose))
        .route("/v1/nodes/{id}/path", get(routes::get_path))
        .route("/v1/nodes/{id}/children", get(routes::get_children))
        .route("/v1/nodes/{id}/subtree", get(routes::get_subtree))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/health", get(health::health))
        .route("/metrics", get(health::metrics))
        .route(
            "/v1/tokens",
            post(tokens::create_token).get(tokens::list_tokens),
        )
        .route("/v1/tokens/{id}", delete(tokens::revoke_token))
        .route("/v1/audit", get(audit::audit))
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .route_layer(auth)
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn(guard::json_bodies))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            layers::request_timeout,
        ));
    // Outside everything but the request span: a preflight is answered before
    // authentication, and every answer (a 401, a 429, a 415) carries the CORS headers
    // the page needs to read it.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(layers::trace()).with_state(state)
}
