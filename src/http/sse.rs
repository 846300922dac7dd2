//! Server-Sent Events with loss-free resume.
//!
//! Each stream is the response body itself (no task, no channel in between): it owns a
//! broadcast receiver and a position `last` (the seq of the last event sent). It
//! subscribes *before* reading the head, then:
//! 1. catch-up: reads the log after `last` up to the durable head, page by page;
//! 2. live: forwards broadcast events with seq > `last`;
//! 3. when the receiver lags (the client is slower than the broadcast buffer), it
//!    goes back to 1. So a client gets every event, in order, none twice.
//!
//! Events are `id: <seq>`, `event: <kind>`, `data: <event JSON>`. Streams do not read
//! the store's broadcast themselves: [`Live`] is a small fan-out task that wraps each
//! store event once, with an empty slot for its frame, and re-broadcasts it. The first
//! stream that sends an event renders the frame into that slot; every other stream
//! writes the same bytes (one rendering per event, not one per subscriber, and none for
//! events no stream wants). When the fan-out itself falls behind the store's broadcast
//! it says so ([`Item::Missed`]) and every stream catches up from the log, as it does
//! when its own receiver lags. Events already waiting in the broadcast are sent
//! together in one body chunk. A heartbeat comment goes out after `sse_heartbeat` (15 s
//! by default) without any write. Every stream opens with `retry: <sse_retry ms>` (1 s by
//! default): a browser's EventSource then reconnects that soon after the stream ends.
//!
//! A busy stream writes at most once per `sse_coalesce` (20 ms by default): after a
//! live write it sleeps out the window *without* polling its receiver, so the
//! broadcast does not wake it, then sends everything that arrived meanwhile as one
//! chunk. With many subscribers and a steady event rate this turns one wake-up and one
//! socket write per event per stream into one per window per stream; an event after a
//! quiet spell is written at once, and the added latency is at most the window.
//!
//! A scoped token's stream ([`EventScope`]) skips each event it may not see, in
//! catch-up and live alike, before any frame is taken: the position still moves past
//! it (seqs only increase; a filtered stream is not a gap), and frames stay rendered
//! once for every stream.
//!
//! Catch-up pages are read from sled on tokio's blocking pool (`routes::read`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::BytesMut;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, Sleep};
use uuid::Uuid;

use arbor_storage::{Event, Seq, Store, Timestamp};

use super::auth::Principal;
use super::openapi::WorkflowMissing;
use super::problem::Problem;
use super::routes::read;
use super::schemas::SseEvent;
use super::scope::EventScope;
use super::wire::{PathParam, QueryParams, ResumeHeader, StreamQuery, WorkflowPath};
use super::AppState;

/// Events read from the log per catch-up page.
const PAGE: usize = 512;

/// A chunk stops taking more waiting events past this size.
const CHUNK: usize = 64 * 1024;

/// The heartbeat: an empty comment (what axum's `KeepAlive` sends by default).
const HEARTBEAT: &[u8] = b":\n\n";

/// What [`Live`] broadcasts to the streams.
pub enum Item {
    /// A durable event, with the slot its SSE frame is rendered into once.
    Event {
        /// The event.
        event: Arc<Event>,
        /// Its frame, rendered by the first stream that sends it.
        frame: OnceLock<Bytes>,
    },
    /// The fan-out lagged behind the store's broadcast and lost events: every stream
    /// must catch up from the log.
    Missed,
}

/// The store's event broadcast, re-broadcast for the SSE streams by one fan-out task
/// (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Live {
    tx: broadcast::Sender<Arc<Item>>,
}

impl Live {
    /// Starts the fan-out from `store`'s broadcast, buffering `capacity` items per
    /// stream (a slower stream catches up from the log). Needs a tokio runtime. The task
    /// ends when the store closes its broadcast or once every `Live` handle is gone.
    pub fn start(store: &Store, capacity: usize) -> Live {
        let (tx, _) = broadcast::channel(capacity.max(1));
        tokio::spawn(fan_out(store.subscribe(), tx.downgrade()));
        Live { tx }
    }

    /// A receiver of every item broadcast from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Item>> {
        self.tx.subscribe()
    }
}

/// Wraps each store event once and re-broadcasts it; reports its own lag as
/// [`Item::Missed`].
async fn fan_out(
    mut events: broadcast::Receiver<Arc<Event>>,
    streams: broadcast::WeakSender<Arc<Item>>,
) {
    loop {
        let item = match events.recv().await {
            Ok(event) => Item::Event {
                event,
                frame: OnceLock::new(),
            },
            Err(RecvError::Lagged(_)) => Item::Missed,
            Err(RecvError::Closed) => return,
        };
        let Some(tx) = streams.upgrade() else { return };
        // No stream listening is fine.
        let _ = tx.send(Arc::new(item));
    }
}

/// A workflow's events as Server-Sent Events, live.
///
/// Each event is `id: <seq>`, `event: <kind>`, `data: <event JSON>` (an `Event`, with
/// its `seq`). Without a position the stream sends new events only; it resumes after
/// `Last-Event-ID` or `?after=` (`0` = the whole history first) with no gap and no
/// duplicate. A heartbeat comment goes out every 15 s (by default). The stream does
/// not end by itself. EventSource cannot send headers: the token may come as `?access_token=`.
#[utoipa::path(get, path = "/v1/workflows/{wf}/stream", tag = "streams",
    params(WorkflowPath, StreamQuery, ResumeHeader),
    responses(
        (status = 200, description = "The event stream; the schema is one event's",
            body = SseEvent, content_type = "text/event-stream"),
        (status = 400, description = "A resume position beyond the log's head or not a seq, \
            or an unknown parameter"),
        WorkflowMissing,
    ))]
pub async fn workflow_stream(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    PathParam(wf): PathParam<Uuid>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<StreamQuery>,
) -> Result<Response, Problem> {
    p.workflow(&app.store, &wf)?;
    if !app.store.has_workflow(&wf) {
        return Err(super::scope::workflow_missing(&wf));
    }
    open(app, &p, Some(wf), &headers, q.after)
}

/// Every workflow's events as Server-Sent Events, live.
///
/// As the per-workflow stream, for the whole store.
#[utoipa::path(get, path = "/v1/stream", tag = "streams",
    params(StreamQuery, ResumeHeader),
    responses(
        (status = 200, description = "The event stream; the schema is one event's",
            body = SseEvent, content_type = "text/event-stream"),
        (status = 400, description = "A resume position beyond the log's head or not a seq, \
            or an unknown parameter"),
    ))]
pub async fn global_stream(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<StreamQuery>,
) -> Result<Response, Problem> {
    open(app, &p, None, &headers, q.after)
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
    who: &Principal,
    workflow: Option<Uuid>,
    headers: &HeaderMap,
    after: Option<Seq>,
) -> Result<Response, Problem> {
    let requested = resume_position(headers, after)?;
    // Subscribe before reading the head: every event above it reaches `rx` (the
    // fan-out forwards it after the store moved its head past it, so after this).
    let rx = app.live.subscribe();
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
    let interval = app.limits.sse_heartbeat;
    app.metrics.sse_subscribers.inc();
    let pump = Pump {
        token: who.token_id,
        revocations: app.store.watch_revocations(),
        store: app.store.clone(),
        workflow,
        scope: EventScope::of(who),
        last,
        rx,
        mode: Mode::CatchUp,
        shutdown: app.shutdown.clone(),
        interval,
        heartbeat: Box::pin(tokio::time::sleep(interval)),
        last_write: Instant::now(),
        coalesce: app.limits.sse_coalesce,
        next_write: None,
        metrics: app.metrics.clone(),
        _task: app.tasks.clone(),
    };
    // Every stream starts with `retry:`, so a browser reconnects after a restart within
    // `sse_retry` rather than its own default (3 s in Chromium).
    let retry = Bytes::from(format!("retry: {}\n\n", app.limits.sse_retry.as_millis()));
    let body = futures_util::stream::unfold(pump, |mut pump| async move {
        let chunk = pump.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), pump))
    });
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, Infallible>(retry) }),
        body,
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Appends the SSE frame of `e` to `out`: byte for byte what axum's
/// `Event::default().id(seq).event(kind).data(json)` writes (compact JSON has no line
/// breaks, so the data is one line).
pub fn render_frame(e: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "id: {}\nevent: {}\ndata: ", e.seq, e.kind());
    serde_json::to_writer(&mut *out, e)?;
    out.extend_from_slice(b"\n\n");
    Ok(())
}

/// The frame of a broadcast event, rendered by the first stream that asks.
fn shared_frame(event: &Event, frame: &OnceLock<Bytes>) -> Option<Bytes> {
    if let Some(b) = frame.get() {
        return Some(b.clone());
    }
    let mut out = Vec::with_capacity(512);
    if let Err(e) = render_frame(event, &mut out) {
        tracing::error!(error = %e, seq = event.seq, "SSE frame rendering failed");
        return None;
    }
    Some(frame.get_or_init(|| Bytes::from(out)).clone())
}

/// Where a stream is.
enum Mode {
    /// Reading the log after `last`.
    CatchUp,
    /// Forwarding the broadcast.
    Live,
    /// Ended (client gone, shutdown, broadcast closed or a store error).
    Done,
}

struct Pump {
    /// The token the stream was opened with: the stream ends once it is revoked or
    /// expires.
    token: Option<Uuid>,
    /// Moves on every revocation.
    revocations: watch::Receiver<u64>,
    store: Store,
    workflow: Option<Uuid>,
    /// The token's scope, when it does not see every event: applied to each event
    /// before its frame is taken, so frames are still rendered once.
    scope: Option<EventScope>,
    last: Seq,
    rx: broadcast::Receiver<Arc<Item>>,
    mode: Mode,
    shutdown: watch::Receiver<bool>,
    interval: Duration,
    /// Fires at most `interval` after `last_write`; moved forward only when it fires
    /// (not on every write), so a busy stream pays no timer update per event.
    heartbeat: Pin<Box<Sleep>>,
    last_write: Instant,
    /// The coalescing window (`Limits::sse_coalesce`).
    coalesce: Duration,
    /// After a live write, the earliest moment of the next one: until then the stream
    /// sleeps without polling its receiver, so the broadcast does not wake it per event.
    next_write: Option<Instant>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Dropped when the stream ends; shutdown waits for every stream.
    _task: mpsc::Sender<()>,
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.metrics.sse_subscribers.dec();
    }
}

impl Pump {
    fn wants(&mut self, e: &Event) -> bool {
        e.seq > self.last
            && self.workflow.is_none_or(|wf| wf == e.workflow_id)
            && self.scope.as_mut().is_none_or(|s| s.sees(&self.store, e))
    }

    fn shutting_down(&self) -> bool {
        // An error means the server is gone: end too.
        self.shutdown.has_changed().unwrap_or(true)
    }

    /// Whether the stream's token was revoked or has expired (never in open mode).
    fn token_lapsed(&self) -> bool {
        self.token.is_some_and(|id| {
            self.store
                .token(&id)
                .is_none_or(|t| !t.is_live(Timestamp::now()))
        })
    }

    /// The next body chunk: one or more whole frames, or a heartbeat; `None` ends the
    /// stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            let chunk = match self.mode {
                Mode::Done => return None,
                Mode::CatchUp => self.catch_up_page().await,
                Mode::Live => self.live().await,
            };
            if let Some(c) = chunk {
                self.last_write = Instant::now();
                return Some(c);
            }
        }
    }

    /// One page of the log after `last` (ends catch-up once a page is short).
    async fn catch_up_page(&mut self) -> Option<Bytes> {
        if self.shutting_down() || self.token_lapsed() {
            self.mode = Mode::Done;
            return None;
        }
        let (workflow, last) = (self.workflow, self.last);
        let page = read(&self.store, move |s| match workflow {
            Some(wf) => s
                .read_workflow_events(&wf, last, PAGE)
                .map(Option::unwrap_or_default),
            None => s.read_events(last, PAGE),
        })
        .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e.detail, "SSE catch-up read failed");
                self.mode = Mode::Done;
                return None;
            }
        };
        if page.len() < PAGE {
            self.mode = Mode::Live;
        }
        let mut out = Vec::new();
        for e in &page {
            // Left out of the scope: skipped, and the position moves past it.
            if let Some(scope) = self.scope.as_mut() {
                if !scope.sees(&self.store, e) {
                    self.last = e.seq;
                    continue;
                }
            }
            if let Err(err) = render_frame(e, &mut out) {
                tracing::error!(error = %err, seq = e.seq, "SSE frame rendering failed");
                self.mode = Mode::Done;
                break;
            }
            self.last = e.seq;
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    /// Waits for the next wanted broadcast event (or a heartbeat) and returns it with
    /// every wanted event already waiting behind it. `None` with the mode changed when
    /// the receiver lagged or the stream ends.
    async fn live(&mut self) -> Option<Bytes> {
        if self.shutting_down() || self.token_lapsed() {
            self.mode = Mode::Done;
            return None;
        }
        // Coalescing: right after a live write, wait out the window without polling the
        // receiver; whatever arrived meanwhile is then sent in one chunk.
        if let Some(due) = self.next_write.take() {
            if Instant::now() < due {
                tokio::select! {
                    biased;
                    _ = self.shutdown.changed() => {
                        self.mode = Mode::Done;
                        return None;
                    }
                    () = tokio::time::sleep_until(due) => {}
                }
            }
        }
        let (seq, frame) = loop {
            // Biased, the broadcast first: when an event is waiting, neither the
            // shutdown watch nor the timer is touched.
            let received = tokio::select! {
                biased;
                r = self.rx.recv() => r,
                _ = self.shutdown.changed() => {
                    self.mode = Mode::Done;
                    return None;
                }
                r = self.revocations.changed(), if self.token.is_some() => {
                    if r.is_err() || self.token_lapsed() {
                        self.mode = Mode::Done;
                        return None;
                    }
                    continue;
                }
                () = self.heartbeat.as_mut() => {
                    if self.token_lapsed() {
                        self.mode = Mode::Done;
                        return None;
                    }
                    let due = self.last_write + self.interval;
                    if Instant::now() >= due {
                        self.heartbeat.as_mut().reset(Instant::now() + self.interval);
                        return Some(Bytes::from_static(HEARTBEAT));
                    }
                    self.heartbeat.as_mut().reset(due);
                    continue;
                }
            };
            match received {
                Ok(item) => match &*item {
                    Item::Event { event, frame } if self.wants(event) => {
                        let Some(frame) = shared_frame(event, frame) else {
                            self.mode = Mode::Done;
                            return None;
                        };
                        break (event.seq, frame);
                    }
                    Item::Event { .. } => continue,
                    Item::Missed => {
                        self.lagged();
                        return None;
                    }
                },
                Err(RecvError::Lagged(_)) => {
                    self.lagged();
                    return None;
                }
                Err(RecvError::Closed) => {
                    self.mode = Mode::Done;
                    return None;
                }
            }
        };
        self.last = seq;
        // Take what is already waiting into the same chunk: one write, one read.
        let mut more: Option<BytesMut> = None;
        // Whether the receiver was emptied (not stopped by the chunk's size or a lag).
        let mut drained = false;
        while more.as_ref().map_or(frame.len(), BytesMut::len) < CHUNK {
            let item = match self.rx.try_recv() {
                Ok(item) => item,
                Err(TryRecvError::Empty) => {
                    drained = true;
                    break;
                }
                Err(TryRecvError::Lagged(_)) => {
                    self.lagged();
                    break;
                }
                Err(TryRecvError::Closed) => {
                    self.mode = Mode::Done;
                    break;
                }
            };
            let (event, slot) = match &*item {
                Item::Event { event, frame } => (event, frame),
                Item::Missed => {
                    self.lagged();
                    break;
                }
            };
            if !self.wants(event) {
                continue;
            }
            let Some(next) = shared_frame(event, slot) else {
                self.mode = Mode::Done;
                break;
            };
            let buf = more.get_or_insert_with(|| {
                let mut b = BytesMut::with_capacity(2 * (frame.len() + next.len()));
                b.extend_from_slice(&frame);
                b
            });
            buf.extend_from_slice(&next);
            self.last = event.seq;
        }
        // A stream with more waiting (a full chunk) writes again at once: the window
        // limits wake-ups, never a stream's throughput.
        if drained && !self.coalesce.is_zero() {
            self.next_write = Some(Instant::now() + self.coalesce);
        }
        Some(more.map_or(frame, BytesMut::freeze))
    }

    /// The receiver fell behind the broadcast: catch up from the log.
    fn lagged(&mut self) {
        self.metrics.sse_lagged.inc();
        self.mode = Mode::CatchUp;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::sse::{Event as SseEvent, Sse};

    fn event(seq: Seq, content: &str) -> Event {
        let wf = Uuid::from_u64_pair(1, 2);
        serde_json::from_value(serde_json::json!({
            "seq": seq,
            "id": Uuid::from_u64_pair(3, seq),
            "workflow_id": wf,
            "timestamp": "2026-11-23T18:00:00.123456Z",
            "actor": "anonymous",
            "kind": "workflow.status_changed",
            "body": { "from": "running", "to": "completed" },
            "prev_hash": content,
            "hash": "00ff",
        }))
        .expect("a valid event")
    }

    /// Runs the fan-out over a store broadcast of `capacity` into which `seqs` were sent
    /// before it started, until that broadcast closes; returns what `streams` receivers
    /// subscribed to its output got.
    async fn fan(
        capacity: usize,
        seqs: std::ops::RangeInclusive<Seq>,
        streams: usize,
    ) -> Vec<broadcast::Receiver<Arc<Item>>> {
        let (store_tx, store_rx) = broadcast::channel(capacity);
        let (tx, _) = broadcast::channel(16);
        let rxs = (0..streams).map(|_| tx.subscribe()).collect();
        for seq in seqs {
            store_tx
                .send(Arc::new(event(seq, "x")))
                .expect("a receiver");
        }
        drop(store_tx);
        fan_out(store_rx, tx.downgrade()).await;
        rxs
    }

    fn items(rx: &mut broadcast::Receiver<Arc<Item>>) -> Vec<Option<Seq>> {
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            out.push(match &*item {
                Item::Event { event, .. } => Some(event.seq),
                Item::Missed => None,
            });
        }
        out
    }

    /// The fan-out forwards every event once, in order, and says so when it lost some
    /// to its own lag instead of leaving a silent hole.
    #[tokio::test]
    async fn fan_out_forwards_in_order_and_reports_its_lag() {
        let mut rx = fan(8, 6..=8, 1).await;
        assert_eq!(items(&mut rx[0]), [Some(6), Some(7), Some(8)]);
        let mut rx = fan(2, 1..=5, 1).await;
        assert_eq!(items(&mut rx[0]), [None, Some(4), Some(5)]);
    }

    /// Every stream gets the same item, and the frame is rendered once: the second
    /// stream writes the very bytes the first one rendered.
    #[tokio::test]
    async fn a_frame_is_rendered_once_for_all_streams() {
        let mut rx = fan(8, 1..=1, 2).await;
        let [a, b] = &mut rx[..] else {
            panic!("two streams")
        };
        let (ia, ib) = (
            a.try_recv().expect("an item"),
            b.try_recv().expect("an item"),
        );
        assert!(Arc::ptr_eq(&ia, &ib), "one item for every stream");
        let Item::Event { event, frame } = &*ia else {
            panic!("not an event")
        };
        assert!(
            frame.get().is_none(),
            "nothing rendered before a stream asks"
        );
        let first = shared_frame(event, frame).expect("rendered");
        let second = shared_frame(event, frame).expect("rendered");
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the same bytes, not a re-render"
        );
        let mut fresh = Vec::new();
        render_frame(event, &mut fresh).expect("render");
        assert_eq!(first.to_vec(), fresh);
    }

    /// The frames are byte for byte what axum's `Sse` wrote for the same events.
    #[tokio::test]
    async fn frames_match_axum_sse() {
        let events = [
            event(1, "plain"),
            event(42, "line\nbreak\r\nand \u{2028} \"quotes\""),
        ];
        let mut ours = Vec::new();
        for e in &events {
            render_frame(e, &mut ours).expect("render");
        }
        let items: Vec<Result<SseEvent, Infallible>> = events
            .iter()
            .map(|e| {
                Ok(SseEvent::default()
                    .id(e.seq.to_string())
                    .event(e.kind())
                    .data(serde_json::to_string(e).expect("json")))
            })
            .collect();
        let resp = Sse::new(futures_util::stream::iter(items)).into_response();
        let theirs = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
        assert_eq!(ours, theirs.to_vec());
    }
}
