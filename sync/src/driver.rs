//! The generic worker: one task per sink.
//!
//! ```text
//! setup (retry) → load cursor →
//!   reader task: read batches after the cursor (two threads per batch when catching
//!                up; wait on the head watch when there is none) → channel of one ─┐
//!   writer loop: for each batch ◄──────────────────────────────────────────────┘
//!     apply ─ ok ───────────→ commit the cursor (arbor-kept) · count · next
//!           ─ retriable ────→ degraded · backoff with full jitter · same batch again
//!           ─ permanent ────→ split in halves, each handled the same way; a single
//!                             event that fails permanently is dead-lettered, the cursor
//!                             moves past it, and the error is counted
//! ```
//!
//! The reader runs one batch ahead, so reading the log overlaps the sink's write; it
//! never moves the cursor. The cursor only moves after the sink acknowledged the write,
//! so a crash anywhere re-sends (idempotent sinks) and never skips. On shutdown the worker stops reading;
//! a write in flight gets `shutdown_grace` to finish, then is dropped (safe, for the same
//! reason). The worker only reads the store, so a sink that is down or slow never
//! touches the append path.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_storage::{Seq, StorageError, Store};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::error::SinkError;
use crate::retry::{Attempts, Backoff};
use crate::sink::{CursorHome, Item, Sink};

/// Health of a sink worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkState {
    /// The last write succeeded (or none was needed).
    Ok = 0,
    /// The last attempt failed with a retriable error; the worker is retrying.
    Degraded = 1,
    /// The worker has ended (shutdown), or is not running (CLI status).
    Stopped = 2,
    /// The worker is setting up (connecting, creating the sink's schema, loading its
    /// cursor) and has written nothing yet; a setup that fails makes it `Degraded`.
    Starting = 3,
}

impl SinkState {
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
    last_error: Mutex<Option<String>>,
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
            last_error: Mutex::new(None),
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

/// Reads up to `limit` events after `after` as sink items (blocking: sled reads).
pub fn read_items(store: &Store, after: Seq, limit: usize) -> Result<Vec<Item>, StorageError> {
    let events = store.read_events(after, limit)?;
    Ok(events
        .into_iter()
        .map(|event| Item {
            option_of: store.implied_option_of(&event),
            event,
        })
        .collect())
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
        let mut attempts = Attempts::new(self.opts.backoff);
        loop {
            match read_batch(&self.store, after, self.opts.batch_size.max(1)).await {
                Ok(items) => return Some(items),
                Err(e) => {
                    retried(&self.stats, self.name, &e);
                    if !attempts.wait(&mut self.shutdown).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// One sink's worker.
pub(crate) struct Worker<S: Sink> {
    pub store: Store,
    pub sink: S,
    pub stats: Arc<Stats>,
    pub opts: DriverOptions,
    pub shutdown: watch::Receiver<bool>,
}

impl<S: Sink> Worker<S> {
    /// Runs until shutdown.
    pub async fn run(mut self) {
        let name = self.sink.name();
        if let Some(cursor) = self.start().await {
            tracing::info!(sink = name, cursor, "sync worker started");
            // The reader runs one batch ahead of the writer, so reading the log overlaps
            // the sink's write. It never moves a cursor: the writer commits each batch
            // after the sink acknowledged it, in order.
            let (tx, mut rx) = mpsc::channel::<Vec<Item>>(1);
            let reader = Reader {
                store: self.store.clone(),
                stats: self.stats.clone(),
                opts: self.opts,
                shutdown: self.shutdown.clone(),
                name,
            };
            let reader = tokio::spawn(reader.run(cursor, tx));
            while let Some(items) = rx.recv().await {
                if self.deliver(&items).await.is_none() {
                    break;
                }
            }
            drop(rx);
            reader.abort();
            let _ = reader.await;
        }
        self.stats.set_state(SinkState::Stopped);
        tracing::info!(sink = name, "sync worker stopped");
    }

    fn retried(&self, e: &SinkError) {
        retried(&self.stats, self.sink.name(), e);
    }

    /// Setup and cursor, retried until they succeed. None on shutdown.
    async fn start(&mut self) -> Option<Seq> {
        let mut attempts = Attempts::new(self.opts.backoff);
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            let res = match self.sink.setup().await {
                Ok(()) => self.load_cursor().await,
                Err(e) => Err(e),
            };
            match res {
                Ok(c) => {
                    self.stats.cursor.store(c, Ordering::Relaxed);
                    self.stats.set_state(SinkState::Ok);
                    return Some(c);
                }
                Err(e) => {
                    // Setup failures are never the data's fault: always retried.
                    self.retried(&e);
                    if !attempts.wait(&mut self.shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn load_cursor(&mut self) -> Result<Seq, SinkError> {
        match self.sink.cursor_home() {
            CursorHome::Sink => Ok(self.sink.load_cursor().await?.unwrap_or(0)),
            CursorHome::Arbor => {
                let store = self.store.clone();
                let name = self.sink.name();
                Ok(blocking(move || store.cursor(name)).await?.unwrap_or(0))
            }
        }
    }

    /// Applies `items`, bisecting on permanent errors. Returns the new cursor, or None
    /// on shutdown (everything acknowledged before it is committed).
    async fn deliver(&mut self, items: &[Item]) -> Option<Seq> {
        let mut stack: Vec<Range<usize>> = Vec::with_capacity(8);
        stack.push(0..items.len());
        while let Some(r) = stack.pop() {
            let part = &items[r.clone()];
            let (Some(first), Some(last)) = (part.first(), part.last()) else {
                continue;
            };
            let (first, last) = (first.seq(), last.seq());
            let mut attempts = Attempts::new(self.opts.backoff);
            loop {
                if *self.shutdown.borrow() {
                    return None;
                }
                let t0 = std::time::Instant::now();
                let res = self.apply_guarded(part).await?;
                let applied = t0.elapsed();
                match res {
                    Ok(()) => {
                        self.commit(last).await?;
                        tracing::debug!(sink = self.sink.name(), first, last, events = part.len(),
                            apply = ?applied, commit = ?(t0.elapsed() - applied), "batch written");
                        self.stats.batches.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .events
                            .fetch_add(part.len() as u64, Ordering::Relaxed);
                        self.stats.set_state(SinkState::Ok);
                        break;
                    }
                    Err(e) if e.is_retriable() => {
                        self.retried(&e);
                        if !attempts.wait(&mut self.shutdown).await {
                            return None;
                        }
                    }
                    Err(e) => {
                        self.stats.note_error(&e);
                        if part.len() > 1 {
                            tracing::warn!(sink = self.sink.name(), first, last, error = %e,
                                "batch rejected; bisecting to find the poison event");
                            let mid = r.start + part.len() / 2;
                            stack.push(mid..r.end);
                            stack.push(r.start..mid);
                        } else {
                            self.dead_letter(first, &e).await?;
                        }
                        break;
                    }
                }
            }
        }
        items.last().map(Item::seq)
    }

    /// Applies with a grace period on shutdown. None if shutdown cut the write short.
    async fn apply_guarded(&mut self, part: &[Item]) -> Option<Result<(), SinkError>> {
        let grace = self.opts.shutdown_grace;
        let fut = self.sink.apply(part);
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => return Some(r),
            _ = stopping(&mut self.shutdown) => {}
        }
        tokio::time::timeout(grace, fut).await.ok()
    }

    /// Records the cursor after a successful write (arbor-kept cursors; sink-kept ones
    /// were committed by the write itself).
    async fn commit(&mut self, seq: Seq) -> Option<()> {
        if self.sink.cursor_home() == CursorHome::Arbor {
            let mut attempts = Attempts::new(self.opts.backoff);
            loop {
                let store = self.store.clone();
                let name = self.sink.name();
                match blocking(move || store.set_cursor(name, seq)).await {
                    Ok(()) => break,
                    Err(e) => {
                        self.retried(&e);
                        if !attempts.wait(&mut self.shutdown).await {
                            return None;
                        }
                    }
                }
            }
        }
        self.stats.cursor.store(seq, Ordering::Relaxed);
        Some(())
    }

    /// Records a poison event and moves the cursor past it.
    async fn dead_letter(&mut self, seq: Seq, e: &SinkError) -> Option<()> {
        let name = self.sink.name();
        tracing::error!(sink = name, seq, error = %e, "event rejected by the sink; dead-lettered");
        let mut attempts = Attempts::new(self.opts.backoff);
        loop {
            let store = self.store.clone();
            let msg = e.message.clone();
            let res = match blocking(move || store.put_dead_letter(name, seq, &msg)).await {
                Ok(()) => match self.sink.cursor_home() {
                    CursorHome::Sink => self.sink.skip(seq).await,
                    CursorHome::Arbor => Ok(()),
                },
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => break,
                Err(e) => {
                    self.retried(&e);
                    if !attempts.wait(&mut self.shutdown).await {
                        return None;
                    }
                }
            }
        }
        self.commit(seq).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_worker_is_starting_until_set_up() {
        let s = Stats::new("t");
        assert_eq!(s.state(), SinkState::Starting);
        for st in [
            SinkState::Ok,
            SinkState::Degraded,
            SinkState::Stopped,
            SinkState::Starting,
        ] {
            s.set_state(st);
            assert_eq!(s.state(), st);
        }
    }
}
