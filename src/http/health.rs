//! Liveness, readiness, component health and Prometheus metrics. Both `/v1/health` and
//! `/metrics` read running figures only (the store's, the sync workers' stats): no scan.

use super::wire::{NoQuery, QueryParams};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use arbor_sync::SinkState;

use super::problem::Problem;
use super::AppState;

/// `GET /healthz`: the process answers.
pub async fn healthz(_: QueryParams<NoQuery>) -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the index is built and the store takes writes.
pub async fn readyz(State(app): State<AppState>, _: QueryParams<NoQuery>) -> Response {
    match app.store.poisoned() {
        None => Json(json!({ "status": "ready" })).into_response(),
        Some(reason) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason).into_response()
        }
    }
}

/// `GET /v1/health`: components; storage down → 503, a sink down → 200 `degraded`.
pub async fn health(State(app): State<AppState>, _: QueryParams<NoQuery>) -> Response {
    let poisoned = app.store.poisoned();
    let (nodes, workflows) = app.store.index_size();
    let sinks = app.sinks.as_ref().map(|s| s.sinks()).unwrap_or_default();
    let status = if poisoned.is_some() {
        "failing"
    } else if sinks.iter().any(|s| s.state != SinkState::Ok) {
        "degraded"
    } else {
        "ok"
    };
    let body = json!({
        "status": status,
        "components": {
            "storage": {
                "state": if poisoned.is_some() { "failing" } else { "ok" },
                "head_seq": app.store.head(),
                "last_error": poisoned,
            },
            "index": { "state": "ok", "nodes": nodes, "workflows": workflows },
            "sinks": sinks,
        }
    });
    let code = if poisoned.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(app): State<AppState>, _: QueryParams<NoQuery>) -> Response {
    let sinks = app.sinks.as_ref().map(|s| s.sinks()).unwrap_or_default();
    match app.metrics.render(&app.store, &sinks) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}
