//! Liveness, readiness, component health and Prometheus metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::problem::Problem;
use super::AppState;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the index is built and the store takes writes.
pub async fn readyz(State(app): State<AppState>) -> Response {
    match app.store.poisoned() {
        None => Json(json!({ "status": "ready" })).into_response(),
        Some(reason) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason).into_response()
        }
    }
}

/// `GET /v1/health`: components; storage down → 503, a sink down → 200 `degraded`.
pub async fn health(State(app): State<AppState>) -> Response {
    let poisoned = app.store.poisoned();
    let (nodes, workflows) = app.store.index_size();
    let sinks = app.sinks.as_ref().map(|s| s.sinks()).unwrap_or_default();
    let status = if poisoned.is_some() {
        "failing"
    } else if sinks.iter().any(|s| s.state != arbor_sync::SinkState::Ok) {
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
pub async fn metrics(State(app): State<AppState>) -> Response {
    let m = &app.metrics;
    let (nodes, workflows) = app.store.index_size();
    m.index_nodes.set(i64::try_from(nodes).unwrap_or(i64::MAX));
    m.index_workflows
        .set(i64::try_from(workflows).unwrap_or(i64::MAX));
    m.head_seq
        .set(i64::try_from(app.store.head()).unwrap_or(i64::MAX));
    m.node_cache.set(app.store.node_cache_stats());
    if let Some(report) = &app.sinks {
        for s in report.sinks() {
            let n = [s.name.as_str()];
            let set = |g: &prometheus::IntGaugeVec, v: u64| {
                g.with_label_values(&n)
                    .set(i64::try_from(v).unwrap_or(i64::MAX))
            };
            set(&m.sink_lag_events, s.lag_events);
            set(&m.sink_batches, s.batches);
            set(&m.sink_retries, s.retries);
            set(&m.sink_errors, s.errors);
            set(&m.sink_dead_letters, s.dead_letters);
            m.sink_lag_seconds.with_label_values(&n).set(s.lag_seconds);
        }
    }
    match m.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}
