//! arbor-sync: replicates arbor's event log to Redis, PostgreSQL and Neo4j.
//!
//! # Layout
//! - [`sink`]: the [`Sink`] trait (name, where the cursor lives, `setup`, `probe`,
//!   idempotent `apply`, the in-destination cursor) and [`Item`], the unit of a batch (an
//!   event plus the OPTION_OF edge it implies); [`sink::DynSink`], the trait as an object.
//! - [`driver`]: the one generic worker: read from the cursor in batches, apply, advance
//!   the cursor only after success, wait on the head watch when caught up (probing the
//!   sink meanwhile), retry retriable errors, set up again after a lost connection or
//!   schema, bisect permanent ones down to a poison event and dead-letter it.
//! - [`retry`]: retriable-vs-permanent classification ([`retry::Retriable`]) apart from
//!   timing ([`retry::Backoff`]: capped exponential backoff with full jitter), and
//!   [`retry::retry`], the one retry loop.
//! - [`error`]: [`SinkError`] (with its class), [`SyncError`], credential redaction.
//! - [`redis`]: streams (`XADD … {seq}-0`), pub/sub, status hashes (a plain pipeline above
//!   the high-water mark, a Lua script for possible replays); cursor in arbor, marks in
//!   Redis that reveal a Redis which lost data, refilled from the log without
//!   re-publishing history.
//! - [`postgres`]: migrations, bulk `UNNEST` inserts (one statement per batch above the
//!   highest seq present), cursor in the same transaction.
//! - [`neo4j`]: `UNWIND … MERGE` graph projection with placeholder parents; cursor in
//!   arbor.
//! - [`dead`]: dead letters (events a sink refused): list, retry through the sink,
//!   acknowledge a loss.
//! - [`verify`]: compares counts and per-workflow digests between the log and each sink.
//!
//! # Entry points
//! [`start`] spawns one worker per configured sink and returns a [`SyncSet`]
//! (`status`, `shutdown`); [`status`], [`reset`] and [`verify_sinks`] serve the CLI.
//! [`SinkStatus`] is the one status type: the workers', the CLI's, `/v1/health`'s and
//! `/metrics`'.
//!
//! # Invariants
//! - The log is the source of truth; every sink is derived from it and can be rebuilt
//!   from it (`reset --from 0`). Sinks are idempotent, so re-delivery is harmless.
//! - A cursor only moves after its sink acknowledged the write; an event is either
//!   written, or recorded as a dead letter with its error — never silently dropped.
//! - Workers only read the store: a sink that is down never slows or fails an append.

pub mod dead;
pub mod driver;
pub mod error;
pub mod neo4j;
pub mod postgres;
pub mod redis;
pub mod retry;
pub mod sink;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use arbor_storage::{Seq, Store, Timestamp};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use driver::SinkState;
pub use driver::{AuditStatus, Divergence};
pub use error::{SinkError, SyncError};
pub use neo4j::Neo4jConfig;
pub use retry::Backoff;
pub use sink::{Audit, CursorHome, Item, Sink};
pub use verify::{verify_sinks, SinkDiff};

use driver::{DriverOptions, Stats, Worker};
use sink::DynSink;

/// What to replicate where.
#[derive(Clone)]
pub struct SyncConfig {
    /// `redis://…`; None = no Redis sink.
    pub redis_url: Option<String>,
    /// `postgres://…`; None = no PostgreSQL sink.
    pub postgres_url: Option<String>,
    /// Neo4j connection; None = no Neo4j sink.
    pub neo4j: Option<Neo4jConfig>,
    /// Most events per batch.
    pub batch_size: usize,
    /// `MAXLEN ~` of each Redis workflow stream; 0: unbounded.
    pub redis_maxlen: usize,
    /// What the Redis sink publishes on `workflow:{id}`.
    pub redis_message_shape: redis::MessageShape,
    /// PostgreSQL schema of the replica tables (created if missing).
    pub postgres_schema: String,
    /// Backoff between retries of a failing sink.
    pub backoff: Backoff,
    /// How long an in-flight write may finish after shutdown was asked.
    pub shutdown_grace: Duration,
    /// Longest a write or a setup may take before it counts as a lost connection.
    pub write_timeout: Duration,
    /// How often an idle worker asks its sink whether it answers (so that a dead
    /// server shows as degraded within about this long, plus [`PROBE_TIMEOUT`]).
    pub probe_interval: Duration,
    /// A sink lagging more than this reads `degraded`.
    pub lag_bound: Duration,
    /// Time between two anti-entropy rounds of each sink; zero turns them off.
    pub anti_entropy_interval: Duration,
    /// Most events one anti-entropy round audits.
    pub anti_entropy_budget: usize,
}

/// Longest a probe may take before the sink counts as lost.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            redis_url: None,
            postgres_url: None,
            neo4j: None,
            batch_size: 5000,
            redis_maxlen: 10_000,
            redis_message_shape: redis::MessageShape::Arbor,
            postgres_schema: "public".to_owned(),
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(5),
            write_timeout: Duration::from_secs(120),
            probe_interval: Duration::from_secs(1),
            lag_bound: Duration::from_secs(30),
            anti_entropy_interval: Duration::from_secs(60),
            anti_entropy_budget: 50_000,
        }
    }
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(error::redact_urls);
        f.debug_struct("SyncConfig")
            .field("redis_url", &url(&self.redis_url))
            .field("postgres_url", &url(&self.postgres_url))
            .field("neo4j", &self.neo4j)
            .field("batch_size", &self.batch_size)
            .field("redis_maxlen", &self.redis_maxlen)
            .field("redis_message_shape", &self.redis_message_shape)
            .field("postgres_schema", &self.postgres_schema)
            .field("backoff", &self.backoff)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("write_timeout", &self.write_timeout)
            .field("probe_interval", &self.probe_interval)
            .field("lag_bound", &self.lag_bound)
            .field("anti_entropy_interval", &self.anti_entropy_interval)
            .field("anti_entropy_budget", &self.anti_entropy_budget)
            .finish()
    }
}

impl SyncConfig {
    /// Names of the configured sinks, in start order.
    pub fn sink_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.redis_url.is_some() {
            v.push(redis::NAME);
        }
        if self.postgres_url.is_some() {
            v.push(postgres::NAME);
        }
        if self.neo4j.is_some() {
            v.push(neo4j::NAME);
        }
        v
    }

    fn driver_options(&self) -> DriverOptions {
        DriverOptions {
            batch_size: self.batch_size.max(1),
            backoff: self.backoff,
            shutdown_grace: self.shutdown_grace,
            write_timeout: self.write_timeout,
            probe_interval: self.probe_interval,
            probe_timeout: PROBE_TIMEOUT,
            lag_bound: self.lag_bound,
            audit_interval: self.anti_entropy_interval,
            audit_budget: self.anti_entropy_budget,
        }
    }

    /// The configured sinks (not connected yet), in start order: the one place that
    /// knows every kind of sink. An invalid setting (a URL that does not parse) is an
    /// error of that sink alone.
    fn sinks(&self, store: &Store) -> Vec<NamedSink> {
        fn boxed<S: Sink>(s: Result<S, SinkError>) -> Result<Box<dyn DynSink>, SinkError> {
            s.map(|s| Box::new(s) as Box<dyn DynSink>)
        }
        let mut out = Vec::new();
        if let Some(url) = &self.redis_url {
            let first = store.event(1).ok().map(|e| e.id);
            let shape = self.redis_message_shape;
            let sink = redis::RedisSink::new(url, self.redis_maxlen, store.id())
                .map(|s| s.for_log(first).with_shape(shape));
            out.push((redis::NAME, boxed(sink)));
        }
        if let Some(url) = &self.postgres_url {
            let sink = postgres::PostgresSink::new(url, &self.postgres_schema)
                .map(|s| s.for_store(store.id()));
            out.push((postgres::NAME, boxed(sink)));
        }
        if let Some(cfg) = &self.neo4j {
            out.push((neo4j::NAME, boxed(Ok(neo4j::Neo4jSink::new(cfg.clone())))));
        }
        out
    }
}

/// A configured sink by name, or why it could not be made.
pub(crate) type NamedSink = (&'static str, Result<Box<dyn DynSink>, SinkError>);

/// One sink's status, as `/v1/health`, `/metrics` and `arbor sync status` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SinkStatus {
    /// Sink name: `redis`, `postgres`, `neo4j`.
    pub name: String,
    /// starting, ok, degraded or stopped.
    pub state: SinkState,
    /// Last seq the sink has.
    pub cursor: Seq,
    /// Events in the log the sink does not have yet.
    pub lag_events: u64,
    /// How long ago the oldest event the sink does not have yet reached this server (0
    /// when caught up): its arrival, not its own time (imports keep theirs).
    pub lag_seconds: f64,
    /// Last error (credentials stripped).
    pub last_error: Option<String>,
    /// Batches written since start.
    pub batches: u64,
    /// Events written since start.
    pub events: u64,
    /// Retried failures since start.
    pub retries: u64,
    /// Failures (retried or dead-lettered) since start.
    pub errors: u64,
    /// Unresolved dead letters of this sink (events it refused; `arbor sync
    /// dead-letters` resolves them).
    pub dead_letters: u64,
    /// Why the sink is degraded although its worker runs fine: unresolved dead
    /// letters, lag above the bound, workflows anti-entropy could not repair. Empty
    /// otherwise.
    pub reasons: Vec<String>,
    /// Anti-entropy: audits, divergences found and repaired.
    pub anti_entropy: AuditStatus,
}

impl SinkStatus {
    /// Marks an `ok` sink `degraded` while it has unresolved dead letters or lags more
    /// than `lag_bound`, and says why.
    fn judged(mut self, lag_bound: Duration) -> SinkStatus {
        if self.dead_letters > 0 {
            self.reasons
                .push(format!("{} unresolved dead letter(s)", self.dead_letters));
        }
        if self.lag_seconds > lag_bound.as_secs_f64() {
            self.reasons.push(format!(
                "lag {:.1} s above the bound of {} s",
                self.lag_seconds,
                lag_bound.as_secs_f64()
            ));
        }
        if self.anti_entropy.unrepaired > 0 {
            self.reasons.push(format!(
                "{} workflow(s) diverged from the log and not repaired",
                self.anti_entropy.unrepaired
            ));
        }
        if self.state == SinkState::Ok && !self.reasons.is_empty() {
            self.state = SinkState::Degraded;
        }
        self
    }
}

impl SinkStatus {
    /// The status of a sink that no worker runs (`arbor sync status`): counters are zero.
    fn idle(
        store: &Store,
        name: &str,
        state: SinkState,
        cursor: Seq,
        last_error: Option<String>,
    ) -> SinkStatus {
        let (lag_events, lag_seconds) = lag(store, cursor);
        SinkStatus {
            name: name.to_owned(),
            state,
            cursor,
            lag_events,
            lag_seconds,
            last_error,
            batches: 0,
            events: 0,
            retries: 0,
            errors: 0,
            dead_letters: store.dead_letters(name).map_or(0, |d| d.len() as u64),
            reasons: Vec::new(),
            anti_entropy: AuditStatus::default(),
        }
    }
}

/// Computes lag figures of a sink at `cursor`.
fn lag(store: &Store, cursor: Seq) -> (u64, f64) {
    let head = store.head();
    if cursor >= head {
        return (0, 0.0);
    }
    // Arrival, not the event's own time: an imported event keeps its original time.
    let seconds = match store.arrival_after(cursor) {
        Ok(Some(at)) => {
            let age = Timestamp::now().micros().saturating_sub(at.micros());
            (age.max(0) as f64) / 1e6
        }
        Ok(None) | Err(_) => 0.0,
    };
    (head - cursor, seconds)
}

struct Running {
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

/// The running workers. Dropping it asks them to stop; [`SyncSet::shutdown`] also
/// waits for them.
pub struct SyncSet {
    store: Store,
    lag_bound: Duration,
    workers: Vec<Running>,
    shutdown: watch::Sender<bool>,
}

impl SyncSet {
    /// Starts one worker per sink of `sinks`. Must be called inside a tokio runtime.
    pub(crate) fn spawn(
        store: Store,
        sinks: Vec<Box<dyn DynSink>>,
        opts: DriverOptions,
    ) -> SyncSet {
        let (shutdown, _) = watch::channel(false);
        let workers = sinks
            .into_iter()
            .map(|sink| {
                let stats = Arc::new(Stats::new(sink.name()));
                let worker = Worker::new(
                    store.clone(),
                    sink,
                    stats.clone(),
                    opts,
                    shutdown.subscribe(),
                );
                Running {
                    stats,
                    task: tokio::spawn(worker.run()),
                }
            })
            .collect();
        SyncSet {
            store,
            lag_bound: opts.lag_bound,
            workers,
            shutdown,
        }
    }

    /// Status of every worker (no I/O but one log record per lagging sink).
    pub fn status(&self) -> Vec<SinkStatus> {
        self.workers
            .iter()
            .map(|w| {
                let cursor = w.stats.cursor();
                let (lag_events, lag_seconds) = lag(&self.store, cursor);
                let (batches, events, retries, errors) = w.stats.counters();
                SinkStatus {
                    name: w.stats.name.to_owned(),
                    state: w.stats.state(),
                    cursor,
                    lag_events,
                    lag_seconds,
                    last_error: w.stats.last_error(),
                    batches,
                    events,
                    retries,
                    errors,
                    dead_letters: w.stats.dead_letters(),
                    reasons: Vec::new(),
                    anti_entropy: w.stats.audit.status(),
                }
                .judged(self.lag_bound)
            })
            .collect()
    }

    /// Stops every worker (in-flight writes get the configured grace) and waits.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for w in std::mem::take(&mut self.workers) {
            if let Err(e) = w.task.await {
                tracing::error!(sink = w.stats.name, error = %e, "sync worker panicked");
            }
        }
    }
}

impl Drop for SyncSet {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Starts one worker per configured sink. Never waits for a sink: one that is down
/// shows as degraded and is retried. Fails only on an invalid configuration. Must be
/// called inside a tokio runtime.
pub fn start(store: Store, config: SyncConfig) -> Result<SyncSet, SyncError> {
    let sinks = config
        .sinks(&store)
        .into_iter()
        .map(|(name, sink)| sink.map_err(|e| SyncError::Config(format!("{name}: {}", e.message))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SyncSet::spawn(store, sinks, config.driver_options()))
}

/// How long the CLI waits for a sink to answer.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

async fn within<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(CLI_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(SinkError::retriable(format!(
            "{what}: no answer within {CLI_TIMEOUT:?}"
        ))),
    }
}

/// The cursor of `sink`, wherever it lives.
async fn cursor_of<S: Sink>(store: &Store, sink: &mut S) -> Result<Seq, SinkError> {
    let cursor = match sink.cursor_home() {
        CursorHome::Sink => within(sink.name(), sink.load_cursor()).await?,
        CursorHome::Arbor => store
            .cursor(sink.name())
            .map_err(|e| SinkError::retriable(format!("arbor store: {e}")))?,
    };
    Ok(cursor.unwrap_or(0))
}

/// Whether `sink` answers, and where it is.
async fn probe<S: Sink>(store: &Store, sink: &mut S) -> Result<Seq, SinkError> {
    within(sink.name(), sink.probe()).await?;
    cursor_of(store, sink).await
}

/// Status of every configured sink without running workers (for `arbor sync status`):
/// the cursor (read from the sink when it keeps it), the lag, and whether the sink
/// answers (`ok`) or not (`degraded`, with the error); `degraded` too with unresolved
/// dead letters or lag above the bound. Counters are zero.
pub async fn status(store: &Store, config: &SyncConfig) -> Vec<SinkStatus> {
    let found = statuses(store, config.sinks(store)).await;
    found
        .into_iter()
        .map(|s| s.judged(config.lag_bound))
        .collect()
}

/// [`status`] of these sinks.
pub(crate) async fn statuses(store: &Store, sinks: Vec<NamedSink>) -> Vec<SinkStatus> {
    let mut out = Vec::new();
    for (name, sink) in sinks {
        let status = match sink {
            Ok(mut sink) => match probe(store, &mut sink).await {
                Ok(cursor) => SinkStatus::idle(store, name, SinkState::Ok, cursor, None),
                Err(e) => {
                    // A sink-kept cursor cannot be read from a sink that does not answer:
                    // what arbor last knew of it stands in.
                    let key = driver::known_cursor_key(name, sink.cursor_home());
                    let cursor = store.cursor(&key).ok().flatten().unwrap_or(0);
                    SinkStatus::idle(store, name, SinkState::Degraded, cursor, Some(e.message))
                }
            },
            Err(e) => SinkStatus::idle(store, name, SinkState::Degraded, 0, Some(e.message)),
        };
        out.push(status);
    }
    out
}

/// Moves the cursor of `sink_name` to `from_seq` (`0` = replay everything): the next
/// run re-sends every event after it, which the idempotent sinks absorb. Run it while
/// no worker runs for that sink (`arbor sync reset` runs with the server stopped).
pub async fn reset(
    store: &Store,
    config: &SyncConfig,
    sink_name: &str,
    from_seq: Seq,
) -> Result<(), SyncError> {
    let mut sink = configured_sink(store, config, sink_name)?;
    reset_sink(store, &mut sink, from_seq).await
}

/// Takes over a destination that holds another store's replica, deliberately: empties
/// it, marks it as this store's, and replays everything (`arbor sync reset SINK --from 0
/// --adopt`).
pub async fn adopt(store: &Store, config: &SyncConfig, sink_name: &str) -> Result<(), SyncError> {
    let mut sink = configured_sink(store, config, sink_name)?;
    within(sink_name, sink.adopt())
        .await
        .map_err(|e| SyncError::sink(sink_name, e))?;
    tracing::warn!(sink = sink_name, store = %store.id(), "sink adopted by this store");
    reset_sink(store, &mut sink, 0).await
}

/// The configured sink named `sink_name` (not connected yet).
pub(crate) fn configured_sink(
    store: &Store,
    config: &SyncConfig,
    sink_name: &str,
) -> Result<Box<dyn DynSink>, SyncError> {
    let mut sinks = config.sinks(store);
    let Some(at) = sinks.iter().position(|(n, _)| *n == sink_name) else {
        return Err(SyncError::UnknownSink {
            name: sink_name.to_owned(),
            configured: config.sink_names().join(", "),
        });
    };
    let (name, sink) = sinks.swap_remove(at);
    sink.map_err(|e| SyncError::Config(format!("{name}: {}", e.message)))
}

/// [`reset`] of one sink.
pub(crate) async fn reset_sink<S: Sink>(
    store: &Store,
    sink: &mut S,
    from_seq: Seq,
) -> Result<(), SyncError> {
    let name = sink.name();
    let head = store.head();
    if from_seq > head {
        return Err(SyncError::BeyondHead {
            sink: name.to_owned(),
            seq: from_seq,
            head,
        });
    }
    match sink.cursor_home() {
        CursorHome::Sink => within(name, async {
            sink.setup().await?;
            sink.store_cursor(from_seq).await
        })
        .await
        .map_err(|e| SyncError::sink(name, e))?,
        CursorHome::Arbor => {}
    }
    store.set_cursor(
        &driver::known_cursor_key(name, sink.cursor_home()),
        from_seq,
    )?;
    tracing::info!(sink = name, from_seq, "sync cursor reset");
    Ok(())
}
