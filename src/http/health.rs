//! Liveness, readiness, component health and Prometheus metrics. Both `/v1/health` and
//! `/metrics` read running figures only (the store's, the sync workers' stats): no scan.

use super::wire::{NoQuery, QueryParams};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use arbor_sync::{SinkState, SinkStatus};

use super::problem::Problem;
use super::schemas;
use super::AppState;

/// `{status}` of the probes.
#[derive(Serialize, ToSchema)]
#[schema(as = ProbeStatus)]
pub struct Probe {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    status: &'static str,
}

/// How well something works.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Works.
    Ok,
    /// Works, but a sink does not (the store answers; replicas lag).
    Degraded,
    /// Does not work: the store takes no writes (503).
    Failing,
}

/// `GET /v1/health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `failing` when storage is, else `degraded` when a sink is not `ok`, else `ok`.
    status: Level,
    /// Each component.
    components: Components,
}

/// The components of [`Health`].
#[derive(Serialize, ToSchema)]
#[schema(as = HealthComponents)]
pub struct Components {
    /// The log.
    storage: StorageHealth,
    /// The in-memory index.
    index: IndexHealth,
    /// Each configured sink.
    #[schema(value_type = Vec<schemas::SinkStatus>)]
    sinks: Vec<SinkStatus>,
}

/// The log's health.
#[derive(Serialize, ToSchema)]
pub struct StorageHealth {
    /// `ok` or `failing`.
    state: Level,
    /// The durable head: seq of the last event.
    head_seq: u64,
    /// Why the store takes no writes (null while it does).
    #[schema(required = true)]
    last_error: Option<String>,
}

/// The index's size.
#[derive(Serialize, ToSchema)]
pub struct IndexHealth {
    /// Always `ok` (a server without its index does not answer).
    state: Level,
    /// Nodes indexed.
    nodes: usize,
    /// Workflows indexed.
    workflows: usize,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Probe)))]
pub async fn healthz(_: QueryParams<NoQuery>) -> Response {
    Json(Probe { status: "ok" }).into_response()
}

/// The index is built and the store takes writes.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Probe),
        (status = 503, description = "The store takes no writes (a write or flush failed; \
            a restart rebuilds it)"),
    ))]
pub async fn readyz(State(app): State<AppState>, _: QueryParams<NoQuery>) -> Response {
    match app.store.poisoned() {
        None => Json(Probe { status: "ready" }).into_response(),
        Some(reason) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason).into_response()
        }
    }
}

/// Component health: storage, index, each sink (state, lag, last error).
///
/// Storage down → 503; a sink down → 200 `degraded`.
#[utoipa::path(get, path = "/v1/health", tag = "health",
    responses(
        (status = 200, description = "Storage works (`ok` or `degraded`)", body = Health),
        (status = 503, description = "Storage is failing", body = Health),
    ))]
pub async fn health(State(app): State<AppState>, _: QueryParams<NoQuery>) -> Response {
    let poisoned = app.store.poisoned();
    let (nodes, workflows) = app.store.index_size();
    let sinks = app.sinks.as_ref().map(|s| s.sinks()).unwrap_or_default();
    let status = if poisoned.is_some() {
        Level::Failing
    } else if sinks.iter().any(|s| s.state != SinkState::Ok) {
        Level::Degraded
    } else {
        Level::Ok
    };
    let code = if poisoned.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = Health {
        status,
        components: Components {
            storage: StorageHealth {
                state: if poisoned.is_some() {
                    Level::Failing
                } else {
                    Level::Ok
                },
                head_seq: app.store.head(),
                last_error: poisoned,
            },
            index: IndexHealth {
                state: Level::Ok,
                nodes,
                workflows,
            },
            sinks,
        },
    };
    (code, Json(body)).into_response()
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "The metrics", body = String,
        content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>, _: QueryParams<NoQuery>) -> Response {
    let sinks = app.sinks.as_ref().map(|s| s.sinks()).unwrap_or_default();
    match app.metrics.render(&app.store, &sinks) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}
