//! What wraps every route: request spans for the tracing logs, and the request timeout.
//!
//! - [`trace`]: one `request` span per request carrying the method and the path — never
//!   the query string (a stream's `?access_token=`) nor any header (`Authorization`).
//!   Successes are logged at debug level, so default (`info`) logs stay quiet; server
//!   errors at error level, inside the span.
//! - [`request_timeout`]: a request must have sent its body and got its response head
//!   within `--request-timeout`. It bounds the handler, not the response body: an SSE
//!   stream that has started runs as long as it likes. A body that has not fully arrived
//!   in time gets 408; a handler that has not answered in time gets 503; both are
//!   problem+json.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::{Level, Span};

use super::problem::Problem;

/// Makes the span of one request: method and path only.
#[derive(Clone, Copy, Debug)]
pub struct RequestSpan;

impl<B> tower_http::trace::MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &axum::http::Request<B>) -> Span {
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
    }
}

/// The tracing layer of the router (see the module docs).
pub fn trace() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan> {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_response(
            DefaultOnResponse::new()
                .level(Level::DEBUG)
                .latency_unit(LatencyUnit::Micros),
        )
        .on_failure(
            DefaultOnFailure::new()
                .level(Level::ERROR)
                .latency_unit(LatencyUnit::Micros),
        )
}

/// The request-timeout middleware (see the module docs); its state is the timeout.
pub async fn request_timeout(
    State(timeout): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    let received = Arc::new(AtomicBool::new(false));
    let req = watch_body_end(req, received.clone());
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) if !received.load(Ordering::Acquire) => {
            tracing::warn!(?timeout, "request body not received in time");
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the request body did not arrive within {timeout:?}"),
            )
            .into_response()
        }
        Err(_) => {
            tracing::warn!(?timeout, "no response in time");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("no response within {timeout:?}; the request may still take effect"),
            )
            .into_response()
        }
    }
}

/// `req` with a body that sets `received` once it has been read to its end (at once for
/// a request without a body).
fn watch_body_end(req: Request, received: Arc<AtomicBool>) -> Request {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        received.store(true, Ordering::Release);
        return Request::from_parts(parts, body);
    }
    let body = Body::from_stream(BodyEnd {
        inner: body.into_data_stream(),
        received,
    });
    Request::from_parts(parts, body)
}

/// A request body's data that flags its end.
struct BodyEnd {
    inner: BodyDataStream,
    received: Arc<AtomicBool>,
}

impl Stream for BodyEnd {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(None) = next {
            self.received.store(true, Ordering::Release);
        }
        next
    }
}
