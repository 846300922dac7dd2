//! The generic worker: one task per sink.
//!
//! ```text
//! count dead letters (once) →
//! setup → load cursor (an arbor-kept one rewound to what the sink still holds:
//!         [`Sink::held`]) (retried until they succeed) →
//!   reader task: read batches after the cursor (two threads per batch when catching
//!                up; wait on the head watch when there is none) → channel of one ─┐
//!   writer loop: for each batch ◄──────────────────────────────────────────────┘
//!     apply ─ ok ───────────→ commit the cursor (arbor-kept) · count · next
//!           ─ retriable ────→ degraded · backoff with full jitter · same batch again
//!           ─ lost ─────────→ degraded · back to setup (which reloads the cursor and
//!                             restarts the reader from it)
//!           ─ permanent ────→ split in halves, each handled the same way; a single
//!                             event that fails permanently is dead-lettered, the cursor
//!                             moves past it, and the error is counted
//!     no batch for `probe_interval` → probe ─ fails or no answer in `probe_timeout`
//!                             → degraded · back to setup
//!     every `audit_interval` → anti-entropy round (see below)
//! ```
//!
//! **Anti-entropy** ([`audit`]): every `audit_interval`, between two batches, the worker
//! takes the next workflows in a rotation over all of them (up to `audit_budget`
//! events a round), reads each one's events up to the cursor from the log (dead letters
//! left out) and asks the sink whether it holds all they imply ([`Sink::audit`]: one
//! or a few reads per workflow). A workflow that diverged (a row, node or stream entry
//! deleted behind arbor's back, a replica restored from an old backup) is written again
//! ([`Sink::repair`]: idempotent, publishes nothing twice, moves no cursor) and audited
//! once more. Divergences found and repaired are counted in the status; one that the
//! repair did not mend keeps the sink `degraded` until a later round finds it whole.
//! Running inside the worker means a repair never races the sink's own writes.
//!
//! Every retry goes through [`crate::retry::retry`]. The reader runs one batch ahead, so
//! reading the log overlaps the sink's write; it never moves the cursor. The cursor only
//! moves after the sink acknowledged the write, so a crash anywhere re-sends (idempotent
//! sinks) and never skips. A write that does not answer within `write_timeout` counts as
//! a lost connection. On shutdown the worker stops reading; a write in flight gets
//! `shutdown_grace` to finish, then is dropped (safe, for the same reason). The worker
//! only reads the store, so a sink that is down or slow never touches the append path.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_storage::{Seq, StorageError, Store};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::error::SinkError;
use crate::retry::{retry, Attempts, Backoff};
use crate::sink::{CursorHome, Item, Sink};

mod audit;
pub use audit::{AuditStatus, Divergence};
#[cfg(test)]
mod script;
#[cfg(test)]
mod tests;

/// Health of a sink worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkState {
    /// The last write succeeded (or none was needed).
    Ok = 0,
    /// The last attempt failed (a retriable or lost error, or a probe of the idle sink);
    /// the worker is retrying, or setting the sink up again.
    Degraded = 1,
    /// The worker has ended (shutdown), or is not running (CLI status).
    Stopped = 2,
    /// The worker is setting up (connecting, creating the sink's schema, loading its
    /// cursor) and has written nothing yet; a setup that fails makes it `Degraded`.
    Starting = 3,
}

impl SinkState {
    /// The state as `/v1/health` and the `state` label of `arbor_sink_state` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkState::Ok => "ok",
            SinkState::Degraded => "degraded",
            SinkState::Stopped => "stopped",
            SinkState::Starting => "starting",
        }
    }

    fn from_u8(v: u8) -> SinkState {
        match v {
            0 => SinkState::Ok,
            1 => SinkState::Degraded,
            3 => SinkState::Starting,
            _ => SinkState::Stopped,
        }
    }
}

/// Tuning of a worker.
#[derive(Clone, Copy, Debug)]
pub struct DriverOptions {
    /// Most events per batch.
    pub batch_size: usize,
    /// Backoff between retriable failures.
    pub backoff: Backoff,
    /// How long an in-flight write may run on after shutdown was asked.
    pub shutdown_grace: Duration,
    /// Longest a write (or setup) may take before it counts as a lost connection.
    pub write_timeout: Duration,
    /// How long the worker waits for a batch before it probes the sink.
    pub probe_interval: Duration,
    /// Longest a probe may take before it counts as a lost connection.
    pub probe_timeout: Duration,
    /// A sink lagging more than this reads `degraded` in its status.
    pub lag_bound: Duration,
    /// Time between two anti-entropy rounds; zero turns anti-entropy off.
    pub audit_interval: Duration,
    /// Most events a round audits (at least one workflow is audited per round).
    pub audit_budget: usize,
}

/// Live counters of one worker, shared with [`crate::SyncSet::status`].
#[derive(Debug)]
pub struct Stats {
    /// Sink name.
    pub name: &'static str,
    state: AtomicU8,
    cursor: AtomicU64,
    batches: AtomicU64,
    events: AtomicU64,
    retries: AtomicU64,
    errors: AtomicU64,
    /// Dead letters of this sink in the store: counted once at start, then kept.
    dead_letters: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Anti-entropy figures.
    pub(crate) audit: audit::AuditStats,
}

impl Stats {
    pub(crate) fn new(name: &'static str) -> Stats {
        Stats {
            name,
            state: AtomicU8::new(SinkState::Starting as u8),
            cursor: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            last_error: Mutex::new(None),
            audit: audit::AuditStats::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> SinkState {
        SinkState::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn set_state(&self, s: SinkState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Last seq the sink has.
    pub fn cursor(&self) -> Seq {
        self.cursor.load(Ordering::Relaxed)
    }

    /// (batches, events, retries, errors) since start.
    pub fn counters(&self) -> (u64, u64, u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.events.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    /// Unresolved dead letters of this sink.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }

    /// The last error seen (redacted).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn note_error(&self, e: &SinkError) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.message.clone());
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The key in arbor's cursors of what arbor last knew of `sink`'s cursor: the cursor
/// itself for a [`CursorHome::Arbor`] sink, a copy (a lower bound, written after the
/// sink committed) for a [`CursorHome::Sink`] one, read while the sink is unreachable.
pub(crate) fn known_cursor_key(sink: &str, home: CursorHome) -> String {
    match home {
        CursorHome::Sink => format!("{sink}.last-known"),
        CursorHome::Arbor => sink.to_owned(),
    }
}

/// Reads up to `limit` events after `after` as sink items (blocking: sled reads).
pub fn read_items(store: &Store, after: Seq, limit: usize) -> Result<Vec<Item>, StorageError> {
    store.read_events_as(after, limit, |event| Item {
        option_of: store.implied_option_of(&event),
        event,
    })
}

/// Runs a blocking store call on the blocking pool, as a retriable sink error on failure.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, SinkError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SinkError::retriable(format!("arbor store: {e}"))),
        Err(e) => Err(SinkError::retriable(format!("arbor store task: {e}"))),
    }
}

/// Resolves once shutdown is asked (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Counts a retried failure and marks the sink degraded.
fn retried(stats: &Stats, name: &'static str, e: &SinkError) {
    stats.note_error(e);
    stats.retries.fetch_add(1, Ordering::Relaxed);
    stats.set_state(SinkState::Degraded);
    tracing::warn!(sink = name, error = %e, "sink write failed; will retry");
}

/// Smallest half of a batch that is read on its own thread.
const SPLIT_MIN: usize = 1024;

/// Reads up to `limit` items after `after`. When at least `limit` events are waiting
/// (catch-up), the two halves are read on two blocking threads at once: the second
/// half starts at `after + limit/2` and keeps only what follows the first half's last
/// event, so the result is the same contiguous run of the log whatever its seqs.
pub async fn read_batch(store: &Store, after: Seq, limit: usize) -> Result<Vec<Item>, SinkError> {
    let half = limit / 2;
    let waiting = store.head().saturating_sub(after);
    if half < SPLIT_MIN || waiting < limit as u64 {
        let store = store.clone();
        return blocking(move || read_items(&store, after, limit)).await;
    }
    let (s1, s2) = (store.clone(), store.clone());
    let mid = after + half as u64;
    let (first, second) = tokio::join!(
        blocking(move || read_items(&s1, after, half)),
        blocking(move || read_items(&s2, mid, limit - half)),
    );
    let mut items = first?;
    let end = items.last().map_or(after, Item::seq);
    items.extend(second?.into_iter().filter(|i| i.seq() > end));
    Ok(items)
}

/// The read-ahead half of a worker: reads batches from the cursor on and hands them
/// to the writer through a channel of one, waiting on the head watch when caught up.
struct Reader {
    store: Store,
    stats: Arc<Stats>,
    opts: DriverOptions,
    shutdown: watch::Receiver<bool>,
    name: &'static str,
}

impl Reader {
    async fn run(mut self, mut next: Seq, tx: mpsc::Sender<Vec<Item>>) {
        let mut head = self.store.watch_head();
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let Some(items) = self.read(next).await else {
                return;
            };
            match items.last() {
                Some(last) => {
                    next = last.seq();
                    if tx.send(items).await.is_err() {
                        return;
                    }
                }
                None => {
                    tokio::select! {
                        r = head.wait_for(|h| *h > next) => if r.is_err() { return },
                        _ = stopping(&mut self.shutdown) => return,
                    }
                }
            }
        }
    }

    /// Reads the next batch, retrying store errors. None on shutdown.
    async fn read(&mut self, after: Seq) -> Option<Vec<Item>> {
        let limit = self.opts.batch_size.max(1);
        let (stats, name) = (&self.stats, self.name);
        retry(
            &self.opts.backoff,
            &mut self.shutdown,
            &mut self.store,
            |e, _| retried(stats, name, e),
            |store| Box::pin(read_batch(store, after, limit)),
        )
        .await
        .and_then(Result::ok)
    }
}

/// What the worker does next.
enum Step {
    /// Write a batch the reader handed over.
    Batch(Vec<Item>),
    /// The reader ended (shutdown).
    Stop,
    /// Nothing came for `probe_interval`: probe the sink.
    Probe,
    /// Time for an anti-entropy round.
    Audit,
}

/// What the worker does after a step.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    /// Go on.
    Next,
    /// The connection or the destination's schema is gone: set up again, reload the cursor.
    Restart,
    /// Shutdown.
    Stop,
}

/// Runs `fut` for at most `limit`; no answer in time is a lost connection.
async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(SinkError::lost(format!(
            "{what}: no answer within {limit:?}"
        ))),
    }
}

/// Runs a write for at most `limit`; once `stop` fires it gets `grace` more. None if
/// shutdown cut it short.
async fn guarded<T>(
    fut: impl Future<Output = Result<T, SinkError>>,
    stop: &mut watch::Receiver<bool>,
    grace: Duration,
    limit: Duration,
) -> Option<Result<T, SinkError>> {
    let fut = within(limit, "write", fut);
    tokio::pin!(fut);
    tokio::select! {
        r = &mut fut => return Some(r),
        () = stopping(stop) => {}
    }
    tokio::time::timeout(grace, fut).await.ok()
}

/// One sink's worker.
pub(crate) struct Worker<S: Sink> {
    store: Store,
    sink: S,
    stats: Arc<Stats>,
    opts: DriverOptions,
    shutdown: watch::Receiver<bool>,
    /// Seqs of this sink's dead letters (so that a replayed poison event counts once).
    dead: HashSet<Seq>,
    /// Where the anti-entropy rotation goes on.
    rotation: audit::Rotation,
}

impl<S: Sink> Worker<S> {
    /// A worker writing the log of `store` to `sink`, reporting to `stats`, until
    /// `shutdown` turns true.
    pub(crate) fn new(
        store: Store,
        sink: S,
        stats: Arc<Stats>,
        opts: DriverOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Worker<S> {
        Worker {
            store,
            sink,
            stats,
            opts,
            shutdown,
            dead: HashSet::new(),
            rotation: audit::Rotation::default(),
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        let name = self.sink.name();
        if self.count_dead_letters().await {
            // Set up again after a loss at once; with backoff if no batch was written since.
            let mut quiet = Attempts::new(self.opts.backoff);
            while let Some(cursor) = self.start().await {
                tracing::info!(sink = name, cursor, "sync worker started");
                let written = self.stats.batches.load(Ordering::Relaxed);
                if self.pump(cursor).await == Flow::Stop {
                    break;
                }
                if self.stats.batches.load(Ordering::Relaxed) != written {
                    quiet = Attempts::new(self.opts.backoff);
                } else if !quiet.wait(&mut self.shutdown).await {
                    break;
                }
            }
        }
        self.stats.set_state(SinkState::Stopped);
        tracing::info!(sink = name, "sync worker stopped");
    }

    fn retried(&self, e: &SinkError) {
        retried(&self.stats, self.sink.name(), e);
    }

    /// Runs `call` on the store (on the blocking pool), retried until it succeeds. None
    /// on shutdown.
    async fn with_store<T: Send + 'static>(
        &mut self,
        call: impl Fn(&Store) -> Result<T, StorageError> + Clone + Send + 'static,
    ) -> Option<T> {
        let (stats, name) = (&self.stats, self.sink.name());
        retry(
            &self.opts.backoff,
            &mut self.shutdown,
            &mut self.store,
            |e, _| retried(stats, name, e),
            |store| {
                let (store, call) = (store.clone(), call.clone());
                Box::pin(blocking(move || call(&store)))
            },
        )
        .await?
        .ok()
    }

    /// Reads this sink's dead letters once (the count `status` shows), and the cursor
    /// arbor last knew, so that lag is true while the sink cannot be reached to load
    /// its own. False on shutdown.
    async fn count_dead_letters(&mut self) -> bool {
        let name = self.sink.name();
        let known = known_cursor_key(name, self.sink.cursor_home());
        let Some(cursor) = self.with_store(move |s| s.cursor(&known)).await else {
            return false;
        };
        self.stats
            .cursor
            .store(cursor.unwrap_or(0), Ordering::Relaxed);
        let Some(found) = self.with_store(move |s| s.dead_letters(name)).await else {
            return false;
        };
        self.dead = found.into_iter().map(|(seq, _)| seq).collect();
        self.stats
            .dead_letters
            .store(self.dead.len() as u64, Ordering::Relaxed);
        true
    }

    /// Setup and cursor, retried until they succeed. None on shutdown.
    async fn start(&mut self) -> Option<Seq> {
        if *self.shutdown.borrow() {
            return None;
        }
        let (stats, name) = (&self.stats, self.sink.name());
        let home = self.sink.cursor_home();
        let limit = self.opts.write_timeout;
        let mut ctx = (&mut self.sink, &self.store);
        let cursor = retry(
            &self.opts.backoff,
            &mut self.shutdown,
            &mut ctx,
            |e, _| retried(stats, name, e),
            |(sink, store)| {
                let store = (*store).clone();
                Box::pin(async move {
                    let prepared = async {
                        sink.setup().await?;
                        match home {
                            CursorHome::Sink => Ok(sink.load_cursor().await?.unwrap_or(0)),
                            CursorHome::Arbor => {
                                let s = store.clone();
                                let cursor = blocking(move || s.cursor(name)).await?.unwrap_or(0);
                                let held = sink.held(cursor).await?;
                                if held < cursor {
                                    // The sink lost data: it refills from where it is.
                                    tracing::warn!(
                                        sink = name,
                                        cursor,
                                        held,
                                        "sink lost data; rewinding its cursor to refill it"
                                    );
                                    blocking(move || store.set_cursor(name, held)).await?;
                                }
                                Ok(held)
                            }
                        }
                    };
                    // Setup failures are never the data's fault: always retried.
                    within(limit, "setup", prepared)
                        .await
                        .map_err(SinkError::into_retriable)
                })
            },
        )
        .await?
        .ok()?;
        self.stats.cursor.store(cursor, Ordering::Relaxed);
        self.stats.set_state(SinkState::Ok);
        Some(cursor)
    }

    /// Delivers the batches the reader hands over, from `cursor` on, probing the sink
    /// when none comes for `probe_interval`. Returns on shutdown or on a loss.
    async fn pump(&mut self, cursor: Seq) -> Flow {
        // The reader runs one batch ahead of the writer, so reading the log overlaps the
        // sink's write. It never moves a cursor: the writer commits each batch after the
        // sink acknowledged it, in order.
        let (tx, mut rx) = mpsc::channel::<Vec<Item>>(1);
        let reader = Reader {
            store: self.store.clone(),
            stats: self.stats.clone(),
            opts: self.opts,
            shutdown: self.shutdown.clone(),
            name: self.sink.name(),
        };
        let reader = tokio::spawn(reader.run(cursor, tx));
        let mut rounds = audit::Schedule::new(self.opts.audit_interval);
        let flow = loop {
            // Rounds come first: they are rare, and a busy sink must still get them.
            let next = tokio::select! {
                biased;
                () = rounds.tick() => Step::Audit,
                items = rx.recv() => items.map_or(Step::Stop, Step::Batch),
                () = tokio::time::sleep(self.opts.probe_interval) => Step::Probe,
            };
            let flow = match next {
                Step::Batch(items) => self.deliver(&items).await,
                Step::Stop => Flow::Stop,
                Step::Probe => self.probe().await,
                Step::Audit => self.audit_round().await,
            };
            if flow != Flow::Next {
                break flow;
            }
        };
        drop(rx);
        reader.abort();
        let _ = reader.await;
        flow
    }

    /// Asks an idle sink whether it still answers.
    async fn probe(&mut self) -> Flow {
        let limit = self.opts.probe_timeout;
        match within(limit, "probe", self.sink.probe()).await {
            Ok(()) => Flow::Next,
            Err(e) => {
                self.retried(&e);
                Flow::Restart
            }
        }
    }

    /// Applies `items`, bisecting on permanent errors, committing the cursor after each
    /// acknowledged part.
    async fn deliver(&mut self, items: &[Item]) -> Flow {
        let mut stack: Vec<Range<usize>> = Vec::with_capacity(8);
        stack.push(0..items.len());
        while let Some(r) = stack.pop() {
            let part = &items[r.clone()];
            let (Some(first), Some(last)) = (part.first(), part.last()) else {
                continue;
            };
            let (first, last) = (first.seq(), last.seq());
            if *self.shutdown.borrow() {
                return Flow::Stop;
            }
            let t0 = tokio::time::Instant::now();
            match self.write(part).await {
                None => return Flow::Stop,
                Some(Ok(())) => {
                    let applied = t0.elapsed();
                    let flow = self.commit(last).await;
                    if flow != Flow::Next {
                        return flow;
                    }
                    tracing::debug!(sink = self.sink.name(), first, last, events = part.len(),
                        apply = ?applied, commit = ?(t0.elapsed() - applied), "batch written");
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .events
                        .fetch_add(part.len() as u64, Ordering::Relaxed);
                    self.stats.set_state(SinkState::Ok);
                }
                Some(Err(e)) if e.is_permanent() => {
                    self.stats.note_error(&e);
                    if part.len() > 1 {
                        tracing::warn!(sink = self.sink.name(), first, last, error = %e,
                            "batch rejected; bisecting to find the poison event");
                        let mid = r.start + part.len() / 2;
                        stack.push(mid..r.end);
                        stack.push(r.start..mid);
                    } else {
                        let flow = self.dead_letter(first, &e).await;
                        if flow != Flow::Next {
                            return flow;
                        }
                    }
                }
                Some(Err(e)) => {
                    self.retried(&e);
                    return Flow::Restart;
                }
            }
        }
        Flow::Next
    }

    /// Applies `part`, retrying retriable errors. None if shutdown came first (or cut
    /// the write short after its grace); otherwise the write's outcome, which is never
    /// a retriable error.
    async fn write(&mut self, part: &[Item]) -> Option<Result<(), SinkError>> {
        let (stats, name) = (&self.stats, self.sink.name());
        let (grace, limit) = (self.opts.shutdown_grace, self.opts.write_timeout);
        let mut ctx = (&mut self.sink, self.shutdown.clone());
        let written = retry(
            &self.opts.backoff,
            &mut self.shutdown,
            &mut ctx,
            |e, _| retried(stats, name, e),
            |(sink, stop)| {
                Box::pin(async move {
                    match guarded(sink.apply(part), stop, grace, limit).await {
                        Some(r) => r.map(Some),
                        None => Ok(None),
                    }
                })
            },
        )
        .await?;
        match written {
            Ok(Some(())) => Some(Ok(())),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Records the cursor after a successful write (arbor-kept cursors; sink-kept ones
    /// were committed by the write itself).
    async fn commit(&mut self, seq: Seq) -> Flow {
        let key = known_cursor_key(self.sink.name(), self.sink.cursor_home());
        if self
            .with_store(move |s| s.set_cursor(&key, seq))
            .await
            .is_none()
        {
            return Flow::Stop;
        }
        self.stats.cursor.store(seq, Ordering::Relaxed);
        Flow::Next
    }

    /// Records a poison event and moves the cursor past it.
    async fn dead_letter(&mut self, seq: Seq, e: &SinkError) -> Flow {
        let (stats, name) = (&self.stats, self.sink.name());
        tracing::error!(sink = name, seq, error = %e, "event rejected by the sink; dead-lettered");
        let limit = self.opts.write_timeout;
        let message = e.message.as_str();
        let mut ctx = (&mut self.sink, &self.store);
        let done = retry(
            &self.opts.backoff,
            &mut self.shutdown,
            &mut ctx,
            |e, _| retried(stats, name, e),
            |(sink, store)| {
                let (store, message) = ((*store).clone(), message.to_owned());
                Box::pin(async move {
                    blocking(move || store.put_dead_letter(name, seq, &message)).await?;
                    within(limit, "cursor", sink.store_cursor(seq)).await
                })
            },
        )
        .await;
        match done {
            None => Flow::Stop,
            Some(Err(e)) => {
                self.retried(&e);
                Flow::Restart
            }
            Some(Ok(())) => {
                self.dead.insert(seq);
                self.stats
                    .dead_letters
                    .store(self.dead.len() as u64, Ordering::Relaxed);
                self.commit(seq).await
            }
        }
    }
}
