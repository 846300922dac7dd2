//! arbor-sync: replicates arbor's event log to Redis, PostgreSQL and Neo4j.
//!
//! # Layout
//! - [`sink`]: the [`Sink`] trait (name, idempotent `apply`, where the cursor lives) and
//!   [`Item`], the unit of a batch (an event plus the OPTION_OF edge it implies).
//! - [`driver`]: the one generic worker: read from the cursor in batches, apply, advance
//!   the cursor only after success, wait on the head watch when caught up, retry
//!   retriable errors, bisect permanent ones down to a poison event and dead-letter it.
//! - [`retry`]: retriable-vs-permanent classification ([`retry::Retriable`]) apart from
//!   timing ([`retry::Backoff`]: capped exponential backoff with full jitter).
//! - [`error`]: [`SinkError`] (with its class), [`SyncError`], credential redaction.
//! - [`redis`]: streams (`XADD … {seq}-0`), pub/sub, status hashes (a plain pipeline above
//!   the high-water mark, a Lua script for possible replays); cursor in arbor.
//! - [`postgres`]: migrations, bulk `UNNEST` inserts (one statement per batch above the
//!   highest seq present), cursor in the same transaction;
//!   [`postgres::queries`] answers the seeds' queries from the tables.
//! - [`neo4j`]: `UNWIND … MERGE` graph projection with placeholder parents; cursor in
//!   arbor; [`neo4j::queries`] answers the seeds' queries (with the corrected
//!   path-to-root Cypher).
//! - [`verify`]: compares counts and per-workflow digests between the log and each sink.
//!
//! # Entry points
//! [`start`] spawns one worker per configured sink and returns a [`SyncSet`]
//! (`status`, `shutdown`); [`status`], [`reset`] and [`verify_sinks`] serve the CLI.
//!
//! # Invariants
//! - The log is the source of truth; every sink is derived from it and can be rebuilt
//!   from it (`reset --from 0`). Sinks are idempotent, so re-delivery is harmless.
//! - A cursor only moves after its sink acknowledged the write; an event is either
//!   written, or recorded as a dead letter with its error — never silently dropped.
//! - Workers only read the store: a sink that is down never slows or fails an append.

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
pub use error::{SinkError, SyncError};
pub use neo4j::Neo4jConfig;
pub use retry::Backoff;
pub use sink::{CursorHome, Item, Sink};
pub use verify::{verify_sinks, SinkDiff};

use driver::{DriverOptions, Stats, Worker};

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
    /// `MAXLEN ~` of each Redis workflow stream.
    pub redis_maxlen: usize,
    /// PostgreSQL schema of the replica tables (created if missing).
    pub postgres_schema: String,
    /// Backoff between retries of a failing sink.
    pub backoff: Backoff,
    /// How long an in-flight write may finish after shutdown was asked.
    pub shutdown_grace: Duration,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            redis_url: None,
            postgres_url: None,
            neo4j: None,
            batch_size: 5000,
            redis_maxlen: 10_000,
            postgres_schema: "public".to_owned(),
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(5),
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
            .field("postgres_schema", &self.postgres_schema)
            .field("backoff", &self.backoff)
            .field("shutdown_grace", &self.shutdown_grace)
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
        }
    }
}

/// One sink's status, as `/v1/health`, `/metrics` and `arbor sync status` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SinkStatus {
    /// Sink name: `redis`, `postgres`, `neo4j`.
    pub name: String,
    /// ok, degraded or stopped.
    pub state: SinkState,
    /// Last seq the sink has.
    pub cursor: Seq,
    /// Events in the log the sink does not have yet.
    pub lag_events: u64,
    /// Age of the oldest event the sink does not have yet (0 when caught up).
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
    /// Events of this sink in the dead-letter tree (all time).
    pub dead_letters: u64,
}

/// Computes lag figures of a sink at `cursor`.
fn lag(store: &Store, cursor: Seq) -> (u64, f64) {
    let head = store.head();
    if cursor >= head {
        return (0, 0.0);
    }
    let seconds = match store.read_records(cursor, 1) {
        Ok(r) => r.first().map_or(0.0, |r| {
            let age = Timestamp::now()
                .micros()
                .saturating_sub(r.timestamp.micros());
            (age.max(0) as f64) / 1e6
        }),
        Err(_) => 0.0,
    };
    (head - cursor, seconds)
}

fn dead_count(store: &Store, name: &str) -> u64 {
    store.dead_letters(name).map_or(0, |d| d.len() as u64)
}

struct Running {
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

/// The running workers. Dropping it asks them to stop; [`SyncSet::shutdown`] also
/// waits for them.
pub struct SyncSet {
    store: Store,
    workers: Vec<Running>,
    shutdown: watch::Sender<bool>,
}

impl SyncSet {
    /// Status of every worker.
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
                    dead_letters: dead_count(&self.store, w.stats.name),
                }
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

fn spawn<S: Sink>(
    store: &Store,
    sink: S,
    opts: DriverOptions,
    shutdown: &watch::Sender<bool>,
) -> Running {
    let stats = Arc::new(Stats::new(sink.name()));
    let worker = Worker {
        store: store.clone(),
        sink,
        stats: stats.clone(),
        opts,
        shutdown: shutdown.subscribe(),
    };
    Running {
        stats,
        task: tokio::spawn(worker.run()),
    }
}

fn config_error(sink: &str, e: SinkError) -> SyncError {
    SyncError::Config(format!("{sink}: {}", e.message))
}

/// Starts one worker per configured sink. Never waits for a sink: one that is down
/// shows as degraded and is retried. Fails only on an invalid configuration. Must be
/// called inside a tokio runtime.
pub fn start(store: Store, config: SyncConfig) -> Result<SyncSet, SyncError> {
    let opts = config.driver_options();
    let (shutdown, _) = watch::channel(false);
    let mut workers = Vec::new();
    if let Some(url) = &config.redis_url {
        let first = store.event(1).ok().map(|e| e.id);
        let sink = redis::RedisSink::new(url, config.redis_maxlen)
            .map_err(|e| config_error(redis::NAME, e))?
            .for_log(first);
        workers.push(spawn(&store, sink, opts, &shutdown));
    }
    if let Some(url) = &config.postgres_url {
        let sink = postgres::PostgresSink::new(url, &config.postgres_schema)
            .map_err(|e| config_error(postgres::NAME, e))?;
        workers.push(spawn(&store, sink, opts, &shutdown));
    }
    if let Some(cfg) = &config.neo4j {
        workers.push(spawn(
            &store,
            neo4j::Neo4jSink::new(cfg.clone()),
            opts,
            &shutdown,
        ));
    }
    Ok(SyncSet {
        store,
        workers,
        shutdown,
    })
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

/// Where a sink is and whether it answers: `(cursor, error)`.
async fn probe(store: &Store, config: &SyncConfig, name: &str) -> Result<Seq, SinkError> {
    match name {
        redis::NAME => {
            let url = config.redis_url.as_deref().unwrap_or_default();
            let mut sink = redis::RedisSink::new(url, config.redis_maxlen)?;
            let mut conn = within("redis", sink.connection()).await?;
            within("redis", async {
                ::redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map_err(|e| SinkError::retriable(format!("redis: {e}")))
            })
            .await?;
            Ok(store.cursor(name).unwrap_or_default().unwrap_or(0))
        }
        postgres::NAME => {
            let url = config.postgres_url.as_deref().unwrap_or_default();
            let pool = postgres::pool(url, &config.postgres_schema, 1)?;
            let r = within("postgres", async {
                postgres::migrate(&pool, &config.postgres_schema).await?;
                postgres::read_cursor(&pool, postgres::NAME).await
            })
            .await;
            pool.close().await;
            Ok(r?.unwrap_or(0))
        }
        _ => {
            let Some(cfg) = &config.neo4j else {
                return Ok(0);
            };
            let graph = within("neo4j", neo4j::connect(cfg)).await?;
            within("neo4j", async {
                graph
                    .run(neo4rs::query("RETURN 1"))
                    .await
                    .map_err(|e| neo4j::classify(&e))
            })
            .await?;
            Ok(store.cursor(name).unwrap_or_default().unwrap_or(0))
        }
    }
}

/// Status of every configured sink without running workers (for `arbor sync status`):
/// the cursor (read from PostgreSQL for the postgres sink), the lag, and whether the
/// sink answers (`ok`) or not (`degraded`, with the error). Counters are zero.
pub async fn status(store: &Store, config: &SyncConfig) -> Vec<SinkStatus> {
    let mut out = Vec::new();
    for name in config.sink_names() {
        let (state, cursor, last_error) = match probe(store, config, name).await {
            Ok(c) => (SinkState::Ok, c, None),
            Err(e) => {
                let c = if name == postgres::NAME {
                    0
                } else {
                    store.cursor(name).ok().flatten().unwrap_or(0)
                };
                (SinkState::Degraded, c, Some(e.message))
            }
        };
        let (lag_events, lag_seconds) = lag(store, cursor);
        out.push(SinkStatus {
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
            dead_letters: dead_count(store, name),
        });
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
    let names = config.sink_names();
    let Some(name) = names.iter().copied().find(|n| *n == sink_name) else {
        return Err(SyncError::UnknownSink {
            name: sink_name.to_owned(),
            configured: names.join(", "),
        });
    };
    let head = store.head();
    if from_seq > head {
        return Err(SyncError::BeyondHead {
            sink: name.to_owned(),
            seq: from_seq,
            head,
        });
    }
    if name == postgres::NAME {
        let url = config.postgres_url.as_deref().unwrap_or_default();
        let pool =
            postgres::pool(url, &config.postgres_schema, 1).map_err(|e| config_error(name, e))?;
        let r = within("postgres", async {
            postgres::migrate(&pool, &config.postgres_schema).await?;
            postgres::write_cursor(&pool, postgres::NAME, from_seq).await
        })
        .await;
        pool.close().await;
        r.map_err(|e| SyncError::sink(name, e))?;
    } else {
        store.set_cursor(name, from_seq)?;
    }
    tracing::info!(sink = name, from_seq, "sync cursor reset");
    Ok(())
}
