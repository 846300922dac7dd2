//! Server-Sent Events with loss-free resume.
//!
//! Each stream is a task that owns a broadcast receiver and a position `last` (the
//! seq of the last event sent). It subscribes *before* reading the head, then:
//! 1. catch-up: reads the log after `last` up to the durable head, page by page;
//! 2. live: forwards broadcast events with seq > `last`;
//! 3. when the receiver lags (the client is slower than the broadcast buffer), it
//!    goes back to 1. So a client gets every event, in order, none twice.
//!
//! Events are `id: <seq>`, `event: <kind>`, `data: <event JSON>`. A heartbeat
//! comment goes out every `sse_heartbeat` (15 s by default).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use arbor_storage::{Event, Seq, Store};

use super::problem::Problem;
use super::wire::{PathParam, QueryParams, StreamQuery};
use super::AppState;

/// Events read from the log per catch-up page.
const PAGE: usize = 512;

/// `GET /v1/workflows/{wf}/stream`.
pub async fn workflow_stream(
    State(app): State<AppState>,
    PathParam(wf): PathParam<Uuid>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<StreamQuery>,
) -> Result<Response, Problem> {
    if !app.store.has_workflow(&wf) {
        return Err(Problem::not_found(format!("workflow {wf} not found")));
    }
    open(app, Some(wf), &headers, q.after)
}

/// `GET /v1/stream`: every workflow.
pub async fn global_stream(
    State(app): State<AppState>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<StreamQuery>,
) -> Result<Response, Problem> {
    open(app, None, &headers, q.after)
}

/// The resume position: `Last-Event-ID` wins over `?after=` (a browser reconnecting
/// keeps the original URL); neither means "new events only".
fn resume_position(headers: &HeaderMap, after: Option<Seq>) -> Result<Option<Seq>, Problem> {
    match headers.get("last-event-id") {
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| Problem::bad_request("Last-Event-ID is not text"))?;
            s.trim()
                .parse::<Seq>()
                .map(Some)
                .map_err(|_| Problem::bad_request(format!("Last-Event-ID {s:?} is not a seq")))
        }
        None => Ok(after),
    }
}

fn open(
    app: AppState,
    workflow: Option<Uuid>,
    headers: &HeaderMap,
    after: Option<Seq>,
) -> Result<Response, Problem> {
    let requested = resume_position(headers, after)?;
    // Subscribe before reading the head: every event above it reaches `rx`.
    let rx = app.store.subscribe();
    let head = app.store.head();
    let last = match requested {
        Some(p) if p > head => {
            return Err(Problem::bad_request(format!(
                "resume position {p} is beyond the log's head {head}"
            )))
        }
        Some(p) => p,
        None => head,
    };
    let (tx, out) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let pump = Pump {
        store: app.store.clone(),
        workflow,
        last,
        tx,
        shutdown: app.shutdown.clone(),
        metrics: app.metrics.clone(),
        _task: app.tasks.clone(),
    };
    tokio::spawn(pump.run(rx));
    let keep_alive = KeepAlive::new().interval(app.limits.sse_heartbeat);
    Ok(Sse::new(ReceiverStream::new(out))
        .keep_alive(keep_alive)
        .into_response())
}

struct Pump {
    store: Store,
    workflow: Option<Uuid>,
    last: Seq,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Dropped when the pump ends; shutdown waits for every pump.
    _task: mpsc::Sender<()>,
}

/// Why a pump stops.
enum Stop {
    /// Client gone, server shutting down, or the store failed.
    Done,
}

impl Pump {
    async fn run(mut self, mut rx: broadcast::Receiver<Arc<Event>>) {
        self.metrics.sse_subscribers.inc();
        let _ = self.pump(&mut rx).await;
        self.metrics.sse_subscribers.dec();
    }

    async fn pump(&mut self, rx: &mut broadcast::Receiver<Arc<Event>>) -> Result<(), Stop> {
        loop {
            self.catch_up().await?;
            self.live(rx).await?;
            self.metrics.sse_lagged.inc();
        }
    }

    /// Sends everything in the log after `last`, up to the durable head.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let page = match self.workflow {
                Some(wf) => self
                    .store
                    .read_workflow_events(&wf, self.last, PAGE)
                    .map(Option::unwrap_or_default),
                None => self.store.read_events(self.last, PAGE),
            };
            let page = page.map_err(|e| {
                tracing::error!(error = %e, "SSE catch-up read failed");
                Stop::Done
            })?;
            let n = page.len();
            for e in page {
                self.send(&e).await?;
            }
            if n < PAGE {
                return Ok(());
            }
        }
    }

    /// Forwards broadcast events until the receiver lags (Ok) or the stream ends (Err).
    async fn live(&mut self, rx: &mut broadcast::Receiver<Arc<Event>>) -> Result<(), Stop> {
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = self.shutdown.changed() => return Err(Stop::Done),
            };
            match received {
                Ok(e) => {
                    if e.seq <= self.last || self.workflow.is_some_and(|wf| wf != e.workflow_id) {
                        continue;
                    }
                    self.send(&e).await?;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Ok(()),
                Err(broadcast::error::RecvError::Closed) => return Err(Stop::Done),
            }
        }
    }

    async fn send(&mut self, e: &Event) -> Result<(), Stop> {
        let data = serde_json::to_string(e).map_err(|_| Stop::Done)?;
        let item = SseEvent::default()
            .id(e.seq.to_string())
            .event(e.kind())
            .data(data);
        tokio::select! {
            r = self.tx.send(Ok(item)) => r.map_err(|_| Stop::Done)?,
            _ = self.shutdown.changed() => return Err(Stop::Done),
        }
        self.last = e.seq;
        Ok(())
    }
}
