//! Each scenario against each system, in one run, into one [`Report`].

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use uuid::Uuid;

use arbor_storage::{Durability, Store};

use bytes::Bytes;

use super::fanout::{self, Fan};
use super::http::HttpClient;
use super::idle;
use super::instrument::{self, ARBOR_NONE_WRK, ARBOR_WRK, PGBENCH_OFF, PGBENCH_ON, WRK_FLOOR};
use super::load::{self, Bounds, LoadOutcome, Pace};
use super::machine;
use super::nullsse::NullSse;
use super::plan::{Plan, Scenario, System};
use super::report::{Goal, Metric, Report, Row, Skipped, SystemInfo, SCHEMA};
use super::statics::StaticAnswer;
use super::stats::{fmt_rate, fmt_ratio, fmt_us, round3, Recorder};
use super::systems::arbor::{ArborHttp, LocalArbor, LocalSinks};
use super::systems::postgres::Postgres;
use super::systems::redis::{event_json, Redis};
use super::systems::seeds::{Neo4j, Seeds};
use super::systems::Target;
use super::workload::{self, AgentOps, IdAlloc, NodeOp, Op};

/// Row names of the systems.
pub const ARBOR: &str = "arbor";
/// arbor with `--durability none`.
pub const ARBOR_NONE: &str = "arbor (durability none)";
/// The storage crate in-process: store reads (nodes from sled).
pub const STORE: &str = "arbor store, in-process";
/// The storage crate in-process: the index alone (seqs, no node bodies).
pub const INDEX: &str = "arbor index only, in-process";
/// Reference: the harness's HTTP client and the server with no storage work.
pub const HTTP_FLOOR: &str = "HTTP floor (GET /healthz), harness client";
/// Reference: the same client fetching arbor's path answer from a server that only
/// writes those bytes.
pub const PATH_FLOOR: &str = "HTTP floor (the same answer, static server)";
/// Baseline (a).
pub const SEEDS: &str = "seeds: neo4j + redis";
/// Baseline (b).
pub const POSTGRES: &str = "postgres";
/// Baseline (c).
pub const REDIS: &str = "redis";

pub(crate) const PROMPT: &str = "You are a benchmark agent. Append, fork, decide, monitor.";

/// One arbor server under test.
pub(crate) struct Arbor {
    /// Its row name.
    pub(crate) name: &'static str,
    /// Its client.
    pub(crate) http: ArborHttp,
    /// The in-process server, if the harness started it.
    pub(crate) local: Option<LocalArbor>,
}

/// The systems of a run, connected.
pub(crate) struct Systems {
    pub(crate) arbor: Option<Arbor>,
    pub(crate) arbor_none: Option<Arbor>,
    neo4j: Option<Neo4j>,
    seeds: Option<Seeds>,
    pub(crate) postgres: Option<Postgres>,
    redis: Option<Redis>,
}

impl Systems {
    async fn connect(plan: &Plan, report: &mut Report) -> anyhow::Result<Systems> {
        let timeout = plan.item_timeout;
        let want_arbor = plan.has(System::Arbor) || plan.has(System::ArborStore);
        let arbor = match &plan.url {
            _ if !want_arbor => None,
            Some(url) => {
                let http = ArborHttp::connect(url, timeout).await?;
                report.systems.push(SystemInfo {
                    name: ARBOR.into(),
                    detail: format!(
                        "arbor at {url} (--url), durability as that server is configured"
                    ),
                });
                Some(Arbor {
                    name: ARBOR,
                    http,
                    local: None,
                })
            }
            None => {
                let local = LocalArbor::start(Durability::Fsync, LocalSinks::default()).await?;
                let http = ArborHttp::connect(&local.base, timeout).await?;
                report.systems.push(SystemInfo {
                    name: ARBOR.into(),
                    detail: "arbor in-process on 127.0.0.1:0, temp data dir, --durability fsync \
                             (each group commit fdatasync'd before the acknowledgement)"
                        .into(),
                });
                Some(Arbor {
                    name: ARBOR,
                    http,
                    local: Some(local),
                })
            }
        };
        let arbor_none = if plan.url.is_none()
            && plan.has(System::ArborNone)
            && plan
                .scenarios
                .iter()
                .any(|s| matches!(s, Scenario::Append | Scenario::Batch))
        {
            let local = LocalArbor::start(Durability::None, LocalSinks::default()).await?;
            let http = ArborHttp::connect(&local.base, timeout).await?;
            report.systems.push(SystemInfo {
                name: ARBOR_NONE.into(),
                detail: "arbor in-process, --durability none (acknowledged before the flush; \
                         what the services below run with)"
                    .into(),
            });
            Some(Arbor {
                name: ARBOR_NONE,
                http,
                local: Some(local),
            })
        } else {
            if plan.url.is_some() && plan.has(System::ArborNone) {
                report.skipped.push(skip(
                    "*",
                    ARBOR_NONE,
                    "needs the in-process server (no --url)",
                ));
            }
            None
        };
        if plan.url.is_some() && plan.has(System::ArborStore) {
            report
                .skipped
                .push(skip("*", STORE, "needs the in-process server (no --url)"));
        } else if plan.has(System::ArborStore) {
            report.systems.push(SystemInfo {
                name: STORE.into(),
                detail: "the same server's arbor_storage::Store called in-process: \
                         `Store::path`/`subtree` (index walk + node bodies from the node \
                         cache, from sled on a miss)"
                    .into(),
            });
            report.systems.push(SystemInfo {
                name: INDEX.into(),
                detail: "the same server's petgraph index in-process: `Index::path`/`subtree` \
                         (seqs only, no node bodies: not like-for-like, the floor)"
                    .into(),
            });
        }
        let s = &plan.services;
        let need_redis = plan.has(System::Redis) || plan.has(System::Seeds);
        let redis = match (&s.redis_url, need_redis) {
            (Some(url), true) => {
                let r = Redis::connect(url).await?;
                let aof = r.setting("appendonly").await;
                let fsync = r.setting("appendfsync").await;
                report.systems.push(SystemInfo {
                    name: REDIS.into(),
                    detail: format!(
                        "Redis at {url}: XADD + PUBLISH per event, one pipelined round trip; \
                         appendonly={aof}, appendfsync={fsync} (appendonly=no: nothing is \
                         durable)"
                    ),
                });
                Some(r)
            }
            (None, true) => {
                report.skipped.push(skip(
                    "*",
                    REDIS,
                    "no --redis-url (or ARBOR_TEST_REDIS_URL): Redis and the seeds' design not run",
                ));
                None
            }
            _ => None,
        };
        let neo4j = match (&s.neo4j_url, plan.has(System::Seeds)) {
            (Some(url), true) => {
                let pool = plan.agents.clamp(1, 64);
                Some(Neo4j::connect(url, &s.neo4j_user, &s.neo4j_password, pool).await?)
            }
            (None, true) => {
                report.skipped.push(skip(
                    "*",
                    SEEDS,
                    "no --neo4j-url (or ARBOR_TEST_NEO4J_URL): the seeds' design not run",
                ));
                None
            }
            _ => None,
        };
        let seeds = match (&neo4j, &redis) {
            (Some(g), Some(r)) => {
                report.systems.push(SystemInfo {
                    name: SEEDS.into(),
                    detail: format!(
                        "the seeds' emit(): one Cypher `MATCH (parent:Node {{id}}) CREATE (n:Node \
                         {{…}}) CREATE (parent)-[:PARENT_OF]->(n)` per event on Neo4j at {} \
                         (auto-commit; Neo4j forces its transaction log at each commit), then \
                         PUBLISH on Redis; unique index on :Node(id); path to root by the \
                         seeds' Cypher with the direction corrected",
                        s.neo4j_url.as_deref().unwrap_or("")
                    ),
                });
                Some(Seeds::connect(g.clone(), r.connection()).await)
            }
            _ => None,
        };
        let postgres = match (&s.postgres_url, plan.has(System::Postgres)) {
            (Some(url), true) => {
                let pool = u32::try_from(plan.agents.clamp(1, 64)).unwrap_or(16);
                let p = Postgres::connect(url, pool).await?;
                let fsync = p.setting("fsync").await.unwrap_or_default();
                let sc = p.setting("synchronous_commit").await.unwrap_or_default();
                let version = p.setting("server_version").await.unwrap_or_default();
                report.systems.push(SystemInfo {
                    name: POSTGRES.into(),
                    detail: format!(
                        "PostgreSQL {version} at {}: table arbor_bench_events (PK, unique id, \
                         index on parent_id), one autocommit INSERT per event, multi-row INSERT \
                         per batch, recursive CTEs; fsync={fsync}, synchronous_commit={sc}{}",
                        redact(url),
                        if fsync == "off" {
                            " (fsync off: commits are not durable against power loss)"
                        } else {
                            ""
                        }
                    ),
                });
                Some(p)
            }
            (None, true) => {
                report.skipped.push(skip(
                    "*",
                    POSTGRES,
                    "no --postgres-url (or ARBOR_TEST_POSTGRES_URL): PostgreSQL not run",
                ));
                None
            }
            _ => None,
        };
        Ok(Systems {
            arbor,
            arbor_none,
            neo4j,
            seeds,
            postgres,
            redis,
        })
    }

    /// The append/batch targets in report order: (row name, target).
    fn write_targets(&self, plan: &Plan, batch: bool) -> Vec<(&'static str, Target)> {
        let mut v = Vec::new();
        for a in [&self.arbor, &self.arbor_none].into_iter().flatten() {
            let sys = if a.name == ARBOR {
                System::Arbor
            } else {
                System::ArborNone
            };
            if plan.has(sys) {
                v.push((a.name, Target::Arbor(a.http.clone())));
            }
        }
        if plan.has(System::ArborStore) {
            if let Some(l) = self.arbor.as_ref().and_then(|a| a.local.as_ref()) {
                v.push((STORE, Target::Store(l.store().clone())));
            }
        }
        if !batch {
            if let Some(s) = &self.seeds {
                v.push((SEEDS, Target::Seeds(s.clone())));
            }
        }
        if let Some(p) = &self.postgres {
            v.push((POSTGRES, Target::Postgres(p.clone())));
        }
        if let (Some(r), true) = (&self.redis, plan.has(System::Redis)) {
            v.push((REDIS, Target::Redis(r.clone())));
        }
        v
    }

    async fn shutdown(self) {
        for a in [self.arbor, self.arbor_none].into_iter().flatten() {
            if let Some(l) = a.local {
                if let Err(e) = l.stop().await {
                    tracing::warn!(error = %e, "stopping the in-process server");
                }
            }
        }
        if let Some(p) = self.postgres {
            p.close().await;
        }
    }
}

fn skip(scenario: &str, system: &str, reason: &str) -> Skipped {
    Skipped {
        scenario: scenario.into(),
        system: system.into(),
        reason: reason.into(),
    }
}

/// `scheme://user:password@host` → `scheme://user@host`.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub(crate) fn bar(msg: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed:>3}] {msg}: {pos} ops") {
        b.set_style(style);
    }
    b.set_message(msg);
    b.enable_steady_tick(Duration::from_millis(120));
    b
}

/// The row of one measured series.
pub(crate) fn row(scenario: &str, case: &str, system: &str, unit: &str, out: &LoadOutcome) -> Row {
    Row {
        scenario: scenario.into(),
        case: case.into(),
        system: system.into(),
        unit: unit.into(),
        summary: out.latency.summary(out.elapsed),
        service: None,
        events_per_second: None,
        extra: Map::new(),
        error: out.first_error.clone(),
    }
}

fn failed_row(scenario: &str, case: &str, system: &str, unit: &str, e: &anyhow::Error) -> Row {
    let mut r = row(scenario, case, system, unit, &LoadOutcome::default());
    r.error = Some(format!("{e:#}"));
    r
}

/// Runs the plan.
pub async fn execute(plan: Plan, command: String) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut report = Report {
        schema: SCHEMA,
        command,
        quick: plan.quick,
        arbor_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: serde_json::to_value(arbor_storage::Timestamp::now())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        machine: machine::describe(&std::env::temp_dir()),
        settings: plan.settings(),
        ..Report::default()
    };
    let needs_systems = plan
        .scenarios
        .iter()
        .any(|s| !matches!(s, Scenario::Fsync | Scenario::Idle));
    let systems = if needs_systems {
        Some(Systems::connect(&plan, &mut report).await?)
    } else {
        None
    };
    for scenario in &plan.scenarios {
        let t = Instant::now();
        let res = match (scenario, &systems) {
            (Scenario::Fsync, _) => fsync(&plan, &mut report),
            (Scenario::Idle, _) => idle_subscribers(&plan, &mut report).await,
            (_, None) => Ok(()),
            (Scenario::Append, Some(s)) => append(&plan, s, &mut report).await,
            (Scenario::Batch, Some(s)) => batch(&plan, s, &mut report).await,
            (Scenario::Path, Some(s)) => path(&plan, s, &mut report).await,
            (Scenario::Subtree, Some(s)) => subtree(&plan, s, &mut report).await,
            (Scenario::Fanout, Some(s)) => fanout_scenario(&plan, s, &mut report).await,
            (Scenario::SyncLag, Some(_)) => sync_lag(&plan, &mut report).await,
        };
        report.timings.insert(
            scenario.name().to_owned(),
            Value::from(round3(t.elapsed().as_secs_f64())),
        );
        if let Err(e) = res {
            if let Some(s) = systems {
                s.shutdown().await;
            }
            return Err(e.context(format!("scenario {}", scenario.name())));
        }
    }
    if let Some(s) = systems {
        s.shutdown().await;
    }
    compare_all(&mut report);
    goals(&plan, &mut report);
    report.seconds = round3(started.elapsed().as_secs_f64());
    Ok(report)
}

fn fsync(plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let s = machine::fsync_probe(&std::env::temp_dir(), 4096, 100_000, plan.fsync_duration)?;
    report.fsync = Some(s);
    Ok(())
}

fn pace_case(plan: &Plan, pace: Pace) -> String {
    match pace {
        Pace::Closed => format!("closed loop, {} agents", plan.agents),
        Pace::Open { rate } => format!("open loop at {rate}/s, {} agents", plan.agents),
    }
}

/// Single-node appends: every system, each pacing.
async fn append(plan: &Plan, sys: &Systems, report: &mut Report) -> anyhow::Result<()> {
    if plan.append_paces.contains(&Pace::Closed) {
        instrument::run(plan, sys, report).await;
    }
    for pace in &plan.append_paces {
        let case = pace_case(plan, *pace);
        for (name, target) in sys.write_targets(plan, false) {
            let r = match append_series(plan, *pace, &case, name, target).await {
                Ok(r) => r,
                Err(e) => failed_row("append", &case, name, "event", &e),
            };
            report.results.push(r);
        }
    }
    Ok(())
}

async fn append_series(
    plan: &Plan,
    pace: Pace,
    case: &str,
    name: &str,
    target: Target,
) -> anyhow::Result<Row> {
    warm_up(plan, &target, false).await;
    let (wf, root) = target.new_root(PROMPT).await?;
    let agents = plan.agents;
    let per_agent = cap_per_agent(plan, pace, plan.append_duration, agents);
    let ops: Vec<AgentOps> = (0..agents)
        .map(|a| AgentOps::new(&plan.workload, a, root, per_agent, IdAlloc::V7))
        .collect();
    let nodes_ok = Arc::new(AtomicU64::new(0));
    let all_ok = Arc::new(AtomicU64::new(0));
    let progress = bar(format!("append {case}: {name}"));
    let t = target.clone();
    let (n_ok, a_ok) = (nodes_ok.clone(), all_ok.clone());
    let out = load::drive(
        ops,
        pace,
        bounds(plan, plan.append_duration),
        &progress,
        move |op: Op| {
            let t = t.clone();
            let (n_ok, a_ok) = (n_ok.clone(), a_ok.clone());
            async move {
                t.apply(wf, &op).await?;
                a_ok.fetch_add(1, Ordering::Relaxed);
                if matches!(op, Op::Node(_)) {
                    n_ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        },
    )
    .await;
    progress.finish_and_clear();
    let mut r = row("append", case, name, "event", &out);
    if pace != Pace::Closed {
        r.service = Some(out.service.summary(out.elapsed));
    }
    let expected = if matches!(target, Target::Redis(_)) {
        all_ok.load(Ordering::Relaxed)
    } else {
        nodes_ok.load(Ordering::Relaxed)
    };
    verify_stored(&target, wf, (expected, 0), &mut r).await;
    if let Err(e) = target.cleanup(wf).await {
        tracing::warn!(error = %e, "cleanup");
    }
    Ok(r)
}

/// An unmeasured closed-loop series of `plan.warmup` on a workflow of its own.
async fn warm_up(plan: &Plan, target: &Target, batch: bool) {
    if plan.warmup.is_zero() {
        return;
    }
    let Ok((wf, root)) = target.new_root(PROMPT).await else {
        return;
    };
    let b = Bounds {
        duration: plan.warmup,
        ..bounds(plan, plan.warmup)
    };
    let agents: Vec<AgentOps> = (0..plan.agents)
        .map(|a| AgentOps::new(&plan.workload, a, root, 1_000_000, IdAlloc::V7))
        .collect();
    let t = target.clone();
    if batch {
        let n = plan.batch_size;
        let chunks: Vec<_> = agents
            .into_iter()
            .take(plan.batch_agents.max(1))
            .map(|ops| workload::batches(ops, n))
            .collect();
        load::drive(
            chunks,
            Pace::Closed,
            b,
            &ProgressBar::hidden(),
            move |c: Vec<NodeOp>| {
                let t = t.clone();
                async move { t.apply_batch(wf, &c).await }
            },
        )
        .await;
    } else {
        load::drive(
            agents,
            Pace::Closed,
            b,
            &ProgressBar::hidden(),
            move |op: Op| {
                let t = t.clone();
                async move { t.apply(wf, &op).await }
            },
        )
        .await;
    }
    if let Err(e) = target.cleanup(wf).await {
        tracing::warn!(error = %e, "cleanup");
    }
}

/// Checks that every acknowledged node is stored: exactly `expected`, or up to
/// `in_flight` more for a tool that stops counting with requests still in flight (wrk,
/// pgbench: those are stored but not counted).
pub(crate) async fn verify_stored(
    target: &Target,
    wf: Uuid,
    (expected, in_flight): (u64, u64),
    r: &mut Row,
) {
    let note = match target.stored(wf).await {
        Ok(n) if n as u64 == expected => format!("{n} of {expected} acknowledged"),
        Ok(n) if n as u64 > expected && n as u64 <= expected + in_flight => format!(
            "{n}: {expected} acknowledged within the run, {} in flight at its end",
            n as u64 - expected
        ),
        Ok(n) => format!("**{n} of {expected} acknowledged**"),
        Err(e) => format!("count failed: {e:#}"),
    };
    r.extra.insert("stored".into(), Value::from(note));
}

/// How many items one agent may need: bounded by `max_ops`, and for an open loop by
/// what the rate asks for.
fn cap_per_agent(plan: &Plan, pace: Pace, duration: Duration, agents: usize) -> usize {
    let by_max = plan.max_ops.div_ceil(agents.max(1) as u64);
    let by_rate = match pace {
        Pace::Closed => u64::MAX,
        Pace::Open { rate } => {
            ((rate * duration.as_secs_f64()) / agents.max(1) as f64).ceil() as u64 + 2
        }
    };
    usize::try_from(by_max.min(by_rate)).unwrap_or(usize::MAX)
}

/// Bounds of a write series of `duration`.
pub(crate) fn bounds(plan: &Plan, duration: Duration) -> Bounds {
    Bounds {
        duration,
        max_items: plan.max_ops,
        item_timeout: plan.item_timeout,
        give_up_after: load::MAX_CONSECUTIVE_ERRORS,
    }
}

/// Bounds of a query series: one failure (wrong answer, timeout) ends it.
fn query_bounds(plan: &Plan, max_items: u64) -> Bounds {
    Bounds {
        duration: plan.query_duration,
        max_items,
        // The queries enforce `query_timeout` themselves (Neo4j's are terminated on
        // the server); this is the backstop.
        item_timeout: plan.query_timeout + Duration::from_secs(5),
        give_up_after: 1,
    }
}

/// Batch appends.
async fn batch(plan: &Plan, sys: &Systems, report: &mut Report) -> anyhow::Result<()> {
    let b = plan.batch_size;
    let case = format!(
        "batches of {b} nodes, {} writers, closed loop",
        plan.batch_agents
    );
    for (name, target) in sys.write_targets(plan, true) {
        let r = match batch_series(plan, &case, name, target).await {
            Ok(r) => r,
            Err(e) => failed_row("batch", &case, name, &format!("batch of {b}"), &e),
        };
        report.results.push(r);
    }
    if sys.seeds.is_some() {
        report.skipped.push(skip(
            "batch",
            SEEDS,
            "the seeds' design writes one event per statement; see the append rows",
        ));
    }
    Ok(())
}

async fn batch_series(plan: &Plan, case: &str, name: &str, target: Target) -> anyhow::Result<Row> {
    let b = plan.batch_size;
    warm_up(plan, &target, true).await;
    let (wf, root) = target.new_root(PROMPT).await?;
    let writers = plan.batch_agents.max(1);
    let batches_cap = cap_per_agent(plan, Pace::Closed, plan.batch_duration, writers);
    let per_writer = batches_cap.saturating_mul(b).min(2_000_000);
    let agents: Vec<_> = (0..writers)
        .map(|a| {
            workload::batches(
                AgentOps::new(&plan.workload, a, root, per_writer, IdAlloc::V7),
                b,
            )
        })
        .collect();
    let ok_nodes = Arc::new(AtomicU64::new(0));
    let progress = bar(format!("batch: {name}"));
    let t = target.clone();
    let ok = ok_nodes.clone();
    let out = load::drive(
        agents,
        Pace::Closed,
        Bounds {
            max_items: plan.max_ops.div_ceil(b as u64),
            ..bounds(plan, plan.batch_duration)
        },
        &progress,
        move |nodes: Vec<NodeOp>| {
            let t = t.clone();
            let ok = ok.clone();
            async move {
                t.apply_batch(wf, &nodes).await?;
                ok.fetch_add(nodes.len() as u64, Ordering::Relaxed);
                Ok(())
            }
        },
    )
    .await;
    progress.finish_and_clear();
    let mut r = row("batch", case, name, &format!("batch of {b}"), &out);
    let events = ok_nodes.load(Ordering::Relaxed);
    r.events_per_second = Some(round3(events as f64 / out.elapsed.as_secs_f64().max(1e-9)));
    verify_stored(&target, wf, (events, 0), &mut r).await;
    if let Err(e) = target.cleanup(wf).await {
        tracing::warn!(error = %e, "cleanup");
    }
    Ok(r)
}

/// Loads `nodes` (parents first) into arbor in batches of 1 000.
async fn load_arbor(http: &ArborHttp, wf: Uuid, nodes: &[NodeOp]) -> anyhow::Result<()> {
    for chunk in nodes.chunks(1_000) {
        http.append_batch(wf, chunk).await?;
    }
    Ok(())
}

/// Query series of one system: `q` must return the expected count.
async fn query_series<F, Fut>(
    plan: &Plan,
    scenario: &str,
    case: &str,
    name: &str,
    expect: usize,
    q: F,
) -> Row
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send,
{
    // Warm-up: two unmeasured queries (plans, caches, connections). If they fail (a
    // timeout), the series would only repeat the failure: report it instead.
    let warm = q.clone();
    let w = load::repeat(query_bounds(plan, 2), &ProgressBar::hidden(), move || {
        let q = warm.clone();
        async move { q().await.map(drop) }
    })
    .await;
    if w.latency.count() == 0 && w.latency.errors() > 0 {
        return row(scenario, case, name, "query", &w);
    }
    let progress = bar(format!("{scenario} {case}: {name}"));
    let out = load::repeat(query_bounds(plan, plan.query_max), &progress, move || {
        let q = q.clone();
        async move {
            let n = q().await?;
            ensure!(n == expect, "returned {n} nodes, expected {expect}");
            Ok(())
        }
    })
    .await;
    progress.finish_and_clear();
    row(scenario, case, name, "query", &out)
}

/// Query series of an in-process call, on a blocking thread.
async fn blocking_series(
    plan: &Plan,
    scenario: &str,
    case: &str,
    name: &str,
    expect: usize,
    f: impl Fn() -> anyhow::Result<usize> + Send + 'static,
) -> Row {
    let progress = bar(format!("{scenario} {case}: {name}"));
    let b = query_bounds(plan, plan.query_max.saturating_mul(10));
    let p = progress.clone();
    let out = tokio::task::spawn_blocking(move || {
        load::repeat_blocking(b, &p, || {
            let n = f()?;
            ensure!(n == expect, "returned {n} nodes, expected {expect}");
            Ok(())
        })
    })
    .await
    .unwrap_or_else(|e| LoadOutcome {
        first_error: Some(format!("blocking task: {e}")),
        ..LoadOutcome::default()
    });
    progress.finish_and_clear();
    row(scenario, case, name, "query", &out)
}

fn store_of(sys: &Systems) -> Option<Store> {
    sys.arbor
        .as_ref()
        .and_then(|a| a.local.as_ref())
        .map(|l| l.store().clone())
}

/// Path to root at each depth.
async fn path(plan: &Plan, sys: &Systems, report: &mut Report) -> anyhow::Result<()> {
    for &depth in &plan.path_depths {
        let case = format!("depth {depth}");
        let expect = depth + 1;
        // arbor: over HTTP, then in-process on the same data.
        if let (Some(a), true) = (
            &sys.arbor,
            plan.has(System::Arbor) || plan.has(System::ArborStore),
        ) {
            let (wf, root) = a.http.create_workflow(PROMPT).await?;
            let chain = workload::chain(&plan.workload, root, depth);
            let leaf = chain.last().map_or(root, |n| n.id);
            load_arbor(&a.http, wf, &chain)
                .await
                .with_context(|| format!("loading a chain of {depth} into arbor"))?;
            if plan.has(System::Arbor) {
                let http = a.http.clone();
                let known = http.path(leaf, None).await?;
                report.results.push(
                    query_series(plan, "path", &case, a.name, expect, move || {
                        let http = http.clone();
                        async move { Ok(http.path(leaf, Some(known)).await?.nodes) }
                    })
                    .await,
                );
                // The floor: the same answer from a server that only writes it.
                let body = a
                    .http
                    .client()
                    .get(&format!("/v1/nodes/{leaf}/path"))
                    .await?
                    .ok("GET path")?;
                let floor = StaticAnswer::start(&body).await?;
                let client = HttpClient::new(&floor.base(), plan.item_timeout)?;
                let mut r = query_series(plan, "path", &case, PATH_FLOOR, expect, move || {
                    let client = client.clone();
                    async move {
                        client.get("/path").await?.ok("GET floor")?;
                        Ok(known.nodes)
                    }
                })
                .await;
                r.extra
                    .insert("answer_bytes".into(), Value::from(body.len() as u64));
                report.results.push(r);
            }
            if let (Some(store), true) = (store_of(sys), plan.has(System::ArborStore)) {
                let s = store.clone();
                report.results.push(
                    blocking_series(plan, "path", &case, STORE, expect, move || {
                        Ok(s.path(&leaf)?.map_or(0, |v| v.len()))
                    })
                    .await,
                );
                report.results.push(
                    blocking_series(plan, "path", &case, INDEX, expect, move || {
                        Ok(store.path_seqs(&leaf).map_or(0, |v| v.len()))
                    })
                    .await,
                );
            }
        }
        if let Some(g) = &sys.neo4j {
            let (wf, root) = (Uuid::now_v7(), Uuid::now_v7());
            g.create_root(wf, root, PROMPT).await?;
            let chain = workload::chain(&plan.workload, root, depth);
            let leaf = chain.last().map_or(root, |n| n.id);
            g.load(wf, &chain)
                .await
                .with_context(|| format!("loading a chain of {depth} into neo4j"))?;
            let (g2, limit) = (g.clone(), plan.query_timeout);
            let mut r = query_series(plan, "path", &case, SEEDS, expect, move || {
                let g = g2.clone();
                async move { g.path(leaf, limit).await }
            })
            .await;
            r.extra
                .insert("query".into(), Value::from("Cypher, corrected direction"));
            report.results.push(r);
            if let Err(e) = g.delete_workflow(wf).await {
                tracing::warn!(error = %e, "neo4j cleanup");
            }
        }
        if let Some(p) = &sys.postgres {
            let (wf, root) = (Uuid::now_v7(), Uuid::now_v7());
            p.create_root(wf, root, PROMPT).await?;
            let chain = workload::chain(&plan.workload, root, depth);
            let leaf = chain.last().map_or(root, |n| n.id);
            p.load(wf, &chain)
                .await
                .with_context(|| format!("loading a chain of {depth} into postgres"))?;
            let p2 = p.clone();
            let mut r = query_series(plan, "path", &case, POSTGRES, expect, move || {
                let p = p2.clone();
                async move { p.path(leaf).await }
            })
            .await;
            r.extra.insert("query".into(), Value::from("recursive CTE"));
            report.results.push(r);
        }
    }
    Ok(())
}

/// Subtree of a synthetic workflow's root.
async fn subtree(plan: &Plan, sys: &Systems, report: &mut Report) -> anyhow::Result<()> {
    let n = plan.subtree_nodes;
    let case = format!("whole workflow of {n} nodes (forks, decisions, monitors)");
    let expect = n + 1;
    let nodes_for = |root: Uuid| -> Vec<NodeOp> {
        AgentOps::new(&plan.workload, 0, root, n, IdAlloc::V7)
            .nodes_only()
            .filter_map(|o| match o {
                Op::Node(n) => Some(n),
                _ => None,
            })
            .collect()
    };
    if let (Some(a), true) = (
        &sys.arbor,
        plan.has(System::Arbor) || plan.has(System::ArborStore),
    ) {
        let (wf, root) = a.http.create_workflow(PROMPT).await?;
        load_arbor(&a.http, wf, &nodes_for(root)).await?;
        if plan.has(System::Arbor) {
            let http = a.http.clone();
            let known = http.subtree(root, None).await?;
            report.results.push(
                query_series(plan, "subtree", &case, a.name, expect, move || {
                    let http = http.clone();
                    async move { Ok(http.subtree(root, Some(known)).await?.nodes) }
                })
                .await,
            );
        }
        if let (Some(store), true) = (store_of(sys), plan.has(System::ArborStore)) {
            let s = store.clone();
            report.results.push(
                blocking_series(plan, "subtree", &case, STORE, expect, move || {
                    Ok(s.subtree(&root, None)?.map_or(0, |v| v.len()))
                })
                .await,
            );
            report.results.push(
                blocking_series(plan, "subtree", &case, INDEX, expect, move || {
                    Ok(store.subtree_seqs(&root, None).map_or(0, |v| v.len()))
                })
                .await,
            );
        }
    }
    if let Some(g) = &sys.neo4j {
        let (wf, root) = (Uuid::now_v7(), Uuid::now_v7());
        g.create_root(wf, root, PROMPT).await?;
        g.load(wf, &nodes_for(root)).await?;
        let (g2, limit) = (g.clone(), plan.query_timeout);
        let mut r = query_series(plan, "subtree", &case, SEEDS, expect, move || {
            let g = g2.clone();
            async move { g.subtree(root, limit).await }
        })
        .await;
        r.extra
            .insert("query".into(), Value::from("Cypher [:PARENT_OF*0..]"));
        report.results.push(r);
        if let Err(e) = g.delete_workflow(wf).await {
            tracing::warn!(error = %e, "neo4j cleanup");
        }
    }
    if let Some(p) = &sys.postgres {
        let (wf, root) = (Uuid::now_v7(), Uuid::now_v7());
        p.create_root(wf, root, PROMPT).await?;
        p.load(wf, &nodes_for(root)).await?;
        let p2 = p.clone();
        let mut r = query_series(plan, "subtree", &case, POSTGRES, expect, move || {
            let p = p2.clone();
            async move { p.subtree(root).await }
        })
        .await;
        r.extra.insert("query".into(), Value::from("recursive CTE"));
        report.results.push(r);
    }
    Ok(())
}

/// Events a fan-out run may send (table size): the rate's worth plus slack.
fn fan_capacity(rate: f64, duration: Duration) -> usize {
    ((rate * duration.as_secs_f64() * 1.1) as usize).saturating_add(1_000)
}

fn fan_row(
    case: &str,
    system: &str,
    m: usize,
    sent: &LoadOutcome,
    receipts: &fanout::Receipts,
    elapsed: Duration,
) -> Row {
    let expected = sent.latency.count() * m as u64;
    let got = receipts.latency.count();
    let mut r = Row {
        scenario: "fanout".into(),
        case: case.into(),
        system: system.into(),
        unit: "delivery".into(),
        summary: receipts.latency.summary(elapsed),
        service: None,
        events_per_second: None,
        extra: Map::new(),
        error: receipts.first_error.clone().or(sent.first_error.clone()),
    };
    r.extra.insert(
        "delivered".into(),
        Value::from(format!(
            "{got} of {expected} ({:.2} %)",
            if expected == 0 {
                0.0
            } else {
                got as f64 * 100.0 / expected as f64
            }
        )),
    );
    let s = sent.latency.summary(sent.elapsed);
    r.extra.insert(
        "appends".into(),
        Value::from(format!(
            "{} at {:.0}/s, p50 {}, p99 {}",
            s.count,
            s.per_second,
            fmt_us(s.p50_us),
            fmt_us(s.p99_us)
        )),
    );
    if receipts.failed_subscribers > 0 {
        r.extra.insert(
            "failed_subscribers".into(),
            Value::from(receipts.failed_subscribers),
        );
    }
    r
}

/// M subscribers on one workflow / channel, for each case of the plan.
async fn fanout_scenario(plan: &Plan, sys: &Systems, report: &mut Report) -> anyhow::Result<()> {
    for &(m, rate) in &plan.fanout_cases {
        fanout_case(plan, sys, report, m, rate).await?;
    }
    Ok(())
}

/// The case name of a fan-out.
fn fan_case(plan: &Plan, m: usize, rate: f64) -> String {
    format!(
        "{m} subscribers on one workflow, {rate}/s for {} s",
        plan.fanout_duration.as_secs_f64()
    )
}

async fn fanout_case(
    plan: &Plan,
    sys: &Systems,
    report: &mut Report,
    m: usize,
    rate: f64,
) -> anyhow::Result<()> {
    let case = fan_case(plan, m, rate);
    if let Some(limit) = fanout::open_files_limit() {
        if limit < (2 * m as u64) + 256 {
            bail!(
                "{m} subscribers need about {} open files here (client and server ends); \
                 the limit is {limit}: raise it (ulimit -n) or pass --subscribers",
                2 * m + 256
            );
        }
    }
    if let (Some(a), true) = (&sys.arbor, plan.has(System::Arbor)) {
        let (wf, root) = a.http.create_workflow(PROMPT).await?;
        let fan = Fan::new(fan_capacity(rate, plan.fanout_duration));
        let ids = IdAlloc::counted();
        let path = format!("/v1/workflows/{wf}/stream");
        let subs = fanout::raw_subscribers(a.http.base(), &path, m, ids.clone(), &fan).await?;
        let http = a.http.clone();
        let sent = drive_marked(
            plan,
            (rate, plan.fanout_duration),
            (root, &ids),
            &fan,
            &format!("fanout: arbor SSE × {m}"),
            move |op: Op| {
                let http = http.clone();
                async move { http.apply(wf, &op).await }
            },
        )
        .await;
        report
            .results
            .push(fan_collect(&case, "arbor SSE", m, &fan, &sent, subs).await);
    }
    // The floor: the same client against a server that does nothing but write.
    {
        let server = NullSse::start(arbor::http::Limits::default().sse_coalesce).await?;
        let fan = Fan::new(fan_capacity(rate, plan.fanout_duration));
        let ids = IdAlloc::counted();
        let (wf, root) = (Uuid::now_v7(), Uuid::now_v7());
        let subs = fanout::raw_subscribers(&server.base(), "/stream", m, ids.clone(), &fan).await?;
        let publisher = server.publisher();
        let sent = drive_marked(
            plan,
            (rate, plan.fanout_duration),
            (root, &ids),
            &fan,
            &format!("fanout: null SSE server × {m}"),
            move |op: Op| {
                let publisher = publisher.clone();
                async move {
                    let frame = format!("event: node.created\ndata: {}\n\n", event_json(wf, &op)?);
                    // No subscriber left is the subscribers' failure, counted there.
                    let _ = publisher.send(Bytes::from(frame));
                    Ok(())
                }
            },
        )
        .await;
        report
            .results
            .push(fan_collect(&case, "SSE floor (null server)", m, &fan, &sent, subs).await);
    }
    if let (Some(r), true) = (&sys.redis, plan.has(System::Redis)) {
        let fan = Fan::new(fan_capacity(rate, plan.fanout_duration));
        let (wf, root) = (Uuid::now_v7(), Uuid::now_v7());
        let channel = format!("workflow:{wf}");
        let subs =
            fanout::redis_subscribers(r.client(), &channel, m, &fan, fanout::payload_index).await;
        // The same events as arbor's, prefixed with their number.
        let ids = IdAlloc::counted();
        let (conn, ids2) = (r.connection(), ids.clone());
        let sent = drive_marked(
            plan,
            (rate, plan.fanout_duration),
            (root, &ids),
            &fan,
            &format!("fanout: redis pub/sub × {m}"),
            move |op: Op| {
                let (mut conn, channel) = (conn.clone(), channel.clone());
                let n = match &op {
                    Op::Node(n) => ids2.index_of(&n.id),
                    _ => None,
                };
                async move {
                    let payload = format!("{}|{}", n.unwrap_or(u64::MAX), event_json(wf, &op)?);
                    redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(payload)
                        .query_async::<i64>(&mut conn)
                        .await?;
                    Ok(())
                }
            },
        )
        .await;
        report
            .results
            .push(fan_collect(&case, "redis pub/sub", m, &fan, &sent, subs).await);
    }
    Ok(())
}

/// Appends at `rate` for `duration` from `plan.agents` agents extending `root` with
/// counted ids (`ids`), open loop; marks each node's send time in `fan` just before
/// `send` sends it.
async fn drive_marked<F, Fut>(
    plan: &Plan,
    (rate, duration): (f64, Duration),
    (root, ids): (Uuid, &IdAlloc),
    fan: &Fan,
    label: &str,
    send: F,
) -> LoadOutcome
where
    F: Fn(Op) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let appenders = plan.agents;
    let pace = Pace::Open { rate };
    let per_agent = cap_per_agent(plan, pace, duration, appenders);
    let agents: Vec<AgentOps> = (0..appenders)
        .map(|i| AgentOps::new(&plan.workload, i, root, per_agent, ids.clone()).nodes_only())
        .collect();
    let progress = bar(label.to_owned());
    let (times, ids) = (fan.times.clone(), ids.clone());
    let sent = load::drive(
        agents,
        pace,
        bounds(plan, duration),
        &progress,
        move |op: Op| {
            if let Op::Node(n) = &op {
                if let Some(i) = ids.index_of(&n.id) {
                    times.mark(i);
                }
            }
            send(op)
        },
    )
    .await;
    progress.finish_and_clear();
    sent
}

/// Waits (up to 10 s) for the subscribers to receive what was `sent`, stops them and
/// makes the fan-out row of `system`.
async fn fan_collect(
    case: &str,
    system: &str,
    m: usize,
    fan: &Fan,
    sent: &LoadOutcome,
    subs: Vec<tokio::task::JoinHandle<fanout::Receipts>>,
) -> Row {
    fan.finish(sent.latency.count() * m as u64, Duration::from_secs(10))
        .await;
    let receipts = fanout::collect(subs).await;
    fan_row(case, system, m, sent, &receipts, sent.elapsed)
}

/// Idle subscribers on the real binary (see [`idle`]).
async fn idle_subscribers(plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let n = plan.idle_subscribers;
    let Some(bin) = idle::sibling_arbor() else {
        report.skipped.push(skip(
            "idle",
            "arbor SSE",
            "the arbor binary is not built beside arbor-bench (cargo build --release)",
        ));
        return Ok(());
    };
    if let Some(limit) = fanout::open_files_limit() {
        if limit < n as u64 + 256 {
            bail!(
                "{n} idle subscribers need about {} open files per process; the limit is \
                 {limit}: raise it (ulimit -n) or pass --subscribers",
                n + 256
            );
        }
    }
    let case = format!("{n} idle subscribers on one workflow, then one event");
    let row = match idle::measure(&bin, n).await {
        Ok(out) => {
            let mut r = Row {
                scenario: "idle".into(),
                case,
                system: "arbor SSE (the real binary)".into(),
                unit: "delivery".into(),
                summary: out.receipts.latency.summary(out.connect_time),
                service: None,
                events_per_second: None,
                extra: out.extra(),
                error: out.receipts.first_error.clone(),
            };
            r.extra.insert(
                "delivered".into(),
                Value::from(format!("{} of {n}", out.receipts.latency.count())),
            );
            if out.receipts.failed_subscribers > 0 {
                r.extra.insert(
                    "failed_subscribers".into(),
                    Value::from(out.receipts.failed_subscribers),
                );
            }
            r
        }
        Err(e) => failed_row("idle", &case, "arbor SSE (the real binary)", "delivery", &e),
    };
    report.results.push(row);
    Ok(())
}

/// Sync lag: append acknowledged → visible in each sink.
async fn sync_lag(plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let s = &plan.services;
    if plan.url.is_some() {
        report.skipped.push(skip(
            "sync_lag",
            "*",
            "needs the in-process server (it is started with the sink URLs)",
        ));
        return Ok(());
    }
    if s.redis_url.is_none() && s.postgres_url.is_none() && s.neo4j_url.is_none() {
        report
            .skipped
            .push(skip("sync_lag", "*", "no service URLs given"));
        return Ok(());
    }
    // A schema of its own: the PostgreSQL sink keeps its cursor in PostgreSQL, so a
    // fresh store replicating into tables another store filled would be skipped.
    let schema = format!("arbor_bench_sync_{:016x}", rand::random::<u64>());
    let sinks = LocalSinks {
        redis_url: s.redis_url.clone(),
        postgres_url: s.postgres_url.clone(),
        postgres_schema: Some(schema.clone()),
        neo4j: s
            .neo4j_url
            .clone()
            .map(|u| (u, s.neo4j_user.clone(), s.neo4j_password.clone())),
    };
    let local = LocalArbor::start(Durability::Fsync, sinks).await?;
    let http = ArborHttp::connect(&local.base, plan.item_timeout).await?;
    let names = http.sink_names().await.unwrap_or_default();
    let res = if names.is_empty() {
        report.skipped.push(skip(
            "sync_lag",
            "*",
            "`arbor serve` started with the sink URLs reports no sinks in /v1/health: the \
             sync workers are not wired into the server in this build (src/sinks.rs)",
        ));
        Ok(None)
    } else {
        async {
            // The load starts once every sink has set up (schema, cursor): the rows
            // measure replication, not a sink's start-up.
            let took = http.wait_sinks_started(Duration::from_secs(120)).await?;
            tracing::info!(?took, "sinks ready");
            let (wf, root) = http.create_workflow(PROMPT).await?;
            sync_lag_series(plan, &http, &names, &schema, (wf, root), report).await?;
            Ok(Some(wf))
        }
        .await
    };
    local.stop().await?;
    // Leave the services as they were: the sinks' rows of this run go.
    if let Some(url) = &s.postgres_url {
        if let Err(e) = drop_schema(url, &schema).await {
            tracing::warn!(error = %e, schema, "dropping the sync-lag schema");
        }
    }
    if let Ok(Some(wf)) = &res {
        if let Err(e) = clean_sinks(plan, *wf).await {
            tracing::warn!(error = %e, "removing the sync-lag workflow from the sinks");
        }
    }
    res.map(drop)
}

/// Removes workflow `wf` from the Redis and Neo4j sinks.
async fn clean_sinks(plan: &Plan, wf: Uuid) -> anyhow::Result<()> {
    let s = &plan.services;
    if let Some(url) = &s.redis_url {
        let r = Redis::connect(url).await?;
        r.delete_keys(&[
            format!("workflow:events:{wf}"),
            format!("workflow:status:{wf}"),
        ])
        .await?;
    }
    if let Some(url) = &s.neo4j_url {
        let g = Neo4j::connect(url, &s.neo4j_user, &s.neo4j_password, 1).await?;
        g.delete_workflow(wf).await?;
    }
    Ok(())
}

/// Drops the sync-lag run's PostgreSQL schema.
async fn drop_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    // `schema` is ours: arbor_bench_sync_ and 16 hex digits.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(())
}

async fn sync_lag_series(
    plan: &Plan,
    http: &ArborHttp,
    sinks: &[String],
    schema: &str,
    (wf, root): (Uuid, Uuid),
    report: &mut Report,
) -> anyhow::Result<()> {
    let rate = plan.sync_rate;
    let case = format!(
        "{rate}/s for {} s, sinks on",
        plan.sync_duration.as_secs_f64()
    );
    let fan = Fan::new(fan_capacity(rate, plan.sync_duration));
    let ids = IdAlloc::counted();
    // Redis sink: it PUBLISHes each event on workflow:{wf} once it is in the stream.
    let redis_subs = match (&plan.services.redis_url, sinks.iter().any(|s| s == "redis")) {
        (Some(url), true) => {
            let client = redis::Client::open(url.as_str())?;
            let ids = ids.clone();
            let index = move |p: &[u8]| fanout::event_id(p).and_then(|id| ids.index_of(&id));
            Some(
                fanout::redis_subscribers(&client, &format!("workflow:{wf}"), 1, &fan, index).await,
            )
        }
        _ => None,
    };
    // PostgreSQL and Neo4j: poll the sink's highest seq of this workflow (PostgreSQL:
    // an index-only max; Neo4j, which has no index on seq: the highest of the oldest
    // acknowledged nodes not seen yet, by id, so a poll costs the same however large
    // the workflow grows — the sinks apply in log order).
    let acks: Arc<parking_lot::Mutex<Vec<(u64, Instant, Uuid)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pollers = Vec::new();
    if let (Some(url), true) = (
        &plan.services.postgres_url,
        sinks.iter().any(|s| s == "postgres"),
    ) {
        let pg = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        let q = format!("SELECT max(seq) FROM \"{schema}\".arbor_nodes WHERE workflow_id = $1");
        let (acks, stop) = (acks.clone(), stop.clone());
        pollers.push(tokio::spawn(poll_sink("postgres", acks, stop, move |_| {
            let (pg, q) = (pg.clone(), q.clone());
            async move {
                let v: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(q.as_str()))
                    .bind(wf)
                    .fetch_one(&pg)
                    .await?;
                Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
            }
        })));
    }
    if let (Some(url), true) = (&plan.services.neo4j_url, sinks.iter().any(|s| s == "neo4j")) {
        let g = neo4rs::Graph::new(
            url.as_str(),
            plan.services.neo4j_user.as_str(),
            plan.services.neo4j_password.as_str(),
        )
        .await?;
        let (acks, stop) = (acks.clone(), stop.clone());
        pollers.push(tokio::spawn(poll_sink(
            "neo4j",
            acks,
            stop,
            move |ids: Vec<Uuid>| {
                let g = g.clone();
                async move {
                    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
                    let mut rows = g
                        .execute(
                            neo4rs::query(
                                "UNWIND $ids AS id MATCH (n:Node {id: id}) RETURN max(n.seq) AS s",
                            )
                            .param("ids", ids),
                        )
                        .await?;
                    let v: Option<i64> = match rows.next().await? {
                        Some(r) => r.get("s").ok(),
                        None => None,
                    };
                    Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
                }
            },
        )));
    }
    let (h, acks2) = (http.clone(), acks.clone());
    let t0 = Instant::now();
    let sent = drive_marked(
        plan,
        (rate, plan.sync_duration),
        (root, &ids),
        &fan,
        "sync lag",
        move |op: Op| {
            let (h, acks) = (h.clone(), acks2.clone());
            async move {
                let Op::Node(n) = &op else { return Ok(()) };
                let seq = h.append_seq(wf, n).await?;
                acks.lock().push((seq, Instant::now(), n.id));
                Ok(())
            }
        },
    )
    .await;
    let ok = sent.latency.count();
    if let Some(subs) = redis_subs {
        fan.finish(ok, Duration::from_secs(15)).await;
        let receipts = fanout::collect(subs).await;
        let mut r = fan_row(
            &case,
            "redis sink (append sent → PUBLISH received)",
            1,
            &sent,
            &receipts,
            t0.elapsed(),
        );
        r.scenario = "sync_lag".into();
        report.results.push(r);
    }
    // Every sink gets until the deadline to catch up; then the pollers stop.
    let catch_up = plan.sync_catch_up;
    let deadline = Instant::now() + catch_up;
    for mut p in pollers {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let res = match tokio::time::timeout(remaining, &mut p).await {
            Ok(r) => r,
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                p.await
            }
        };
        let (name, rec, err) = res.map_err(|e| anyhow::anyhow!("sink poller failed: {e}"))?;
        let got = rec.count();
        let error = err.or_else(|| {
            (got < ok).then(|| {
                format!("only {got} of {ok} replicated {catch_up:?} after the appends stopped")
            })
        });
        let mut r = Row {
            scenario: "sync_lag".into(),
            case: case.clone(),
            system: format!("{name} sink (append acknowledged → row visible, 10 ms polls)"),
            unit: "event".into(),
            summary: rec.summary(sent.elapsed),
            service: None,
            events_per_second: None,
            extra: Map::new(),
            error,
        };
        r.extra
            .insert("replicated".into(), Value::from(format!("{got} of {ok}")));
        report.results.push(r);
    }
    Ok(())
}

/// Polls a sink's highest replicated seq every 10 ms until every acknowledged append is
/// there (after the appends stopped) or `stop`; records ack → visible per event.
async fn poll_sink<F, Fut>(
    name: &'static str,
    acks: Arc<parking_lot::Mutex<Vec<(u64, Instant, Uuid)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    max_seq: F,
) -> (&'static str, Recorder, Option<String>)
where
    F: Fn(Vec<Uuid>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut rec = Recorder::default();
    let mut first_error = None;
    let mut answered = false;
    let mut done = 0usize; // acks[..done] are recorded
    let mut idle_since: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // The oldest acknowledged events not seen in the sink yet.
        let pending: Vec<Uuid> = {
            let mut a = acks.lock();
            a[done..].sort_unstable_by_key(|x| x.0);
            a[done..].iter().take(256).map(|x| x.2).collect()
        };
        let polled = tokio::time::timeout(Duration::from_secs(5), max_seq(pending))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 5 s")));
        match polled {
            Ok(top) => {
                answered = true;
                let now = Instant::now();
                let mut a = acks.lock();
                a[done..].sort_unstable_by_key(|x| x.0);
                while done < a.len() && a[done].0 <= top {
                    rec.record(now.saturating_duration_since(a[done].1));
                    done += 1;
                }
                let caught_up = done == a.len();
                drop(a);
                // Finished: caught up and nothing new acknowledged for a while.
                if caught_up {
                    let since = *idle_since.get_or_insert(now);
                    if now.duration_since(since) > Duration::from_millis(1_500) {
                        break;
                    }
                } else {
                    idle_since = None;
                }
            }
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(format!("{e:#}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Errors before the sink's tables exist are expected; report one only if the sink
    // never answered.
    (name, rec, if answered { None } else { first_error })
}

/// The standard comparisons of a run.
fn compare_all(report: &mut Report) {
    let cases: Vec<(String, String)> = report
        .results
        .iter()
        .map(|r| (r.scenario.clone(), r.case.clone()))
        .fold(Vec::new(), |mut v, c| {
            if !v.contains(&c) {
                v.push(c);
            }
            v
        });
    for (scenario, case) in cases {
        match scenario.as_str() {
            "append" => {
                let open = case.starts_with("open");
                // The instrument check: the harness's client against wrk on the same
                // requests, arbor against pgbench.
                report.compare(&scenario, &case, HTTP_FLOOR, WRK_FLOOR, Metric::Throughput);
                for (arbor, by_wrk) in [(ARBOR, ARBOR_WRK), (ARBOR_NONE, ARBOR_NONE_WRK)] {
                    report.compare(&scenario, &case, arbor, by_wrk, Metric::Throughput);
                    for base in [PGBENCH_ON, PGBENCH_OFF] {
                        report.compare(&scenario, &case, arbor, base, Metric::Throughput);
                    }
                }
                for arbor in [ARBOR, ARBOR_NONE] {
                    for base in [SEEDS, POSTGRES, REDIS] {
                        if open {
                            report.compare(&scenario, &case, arbor, base, Metric::P50);
                            report.compare(&scenario, &case, arbor, base, Metric::P99);
                        } else {
                            report.compare(&scenario, &case, arbor, base, Metric::Throughput);
                        }
                    }
                }
            }
            "batch" => {
                for arbor in [ARBOR, ARBOR_NONE] {
                    for base in [POSTGRES, REDIS] {
                        report.compare(&scenario, &case, arbor, base, Metric::Throughput);
                    }
                }
            }
            "path" | "subtree" => {
                for arbor in [ARBOR, STORE, INDEX] {
                    for base in [SEEDS, POSTGRES] {
                        report.compare(&scenario, &case, arbor, base, Metric::P50);
                    }
                }
            }
            "fanout" => {
                report.compare(&scenario, &case, "arbor SSE", "redis pub/sub", Metric::P50);
                report.compare(&scenario, &case, "arbor SSE", "redis pub/sub", Metric::P99);
            }
            _ => {}
        }
    }
}

fn ratio_of(
    report: &Report,
    scenario: &str,
    case: &str,
    arbor: &str,
    base: &str,
    metric: &str,
) -> Option<f64> {
    report
        .comparisons
        .iter()
        .find(|c| {
            c.scenario == scenario
                && c.case == case
                && c.arbor == arbor
                && c.baseline == base
                && c.metric == metric
        })
        .map(|c| c.ratio)
}

/// The goals against this run.
fn goals(plan: &Plan, report: &mut Report) {
    let closed = pace_case(plan, Pace::Closed);
    let mut goals = Vec::new();
    let check = instrument::case(plan);
    let floor = ratio_of(
        report,
        "append",
        &check,
        HTTP_FLOOR,
        WRK_FLOOR,
        "throughput",
    );
    let want = 1.0 / instrument::FLOOR_TOLERANCE;
    goals.push(Goal {
        goal: format!(
            "instrument (issue 13): the harness's HTTP floor within {}× of wrk's (GET /healthz, \
             {} connections, same seconds)",
            instrument::FLOOR_TOLERANCE,
            plan.connections
        ),
        measured: match (
            floor,
            report.row("append", &check, HTTP_FLOOR),
            report.row("append", &check, WRK_FLOOR),
        ) {
            (Some(r), Some(h), Some(w)) => format!(
                "{}/s vs wrk {}/s: {} of wrk's",
                fmt_rate(h.summary.per_second),
                fmt_rate(w.summary.per_second),
                fmt_ratio(r)
            ),
            _ => "not measured".to_owned(),
        },
        met: floor.map(|r| r >= want),
    });
    for (base, want, label) in [
        (SEEDS, 20.0, "the seeds' design"),
        (POSTGRES, 5.0, "per-row PostgreSQL"),
    ] {
        let goal = format!("single appends ≥ {want}× {label} (throughput, {closed})");
        let a = ratio_of(report, "append", &closed, ARBOR, base, "throughput");
        let n = ratio_of(report, "append", &closed, ARBOR_NONE, base, "throughput");
        let measured = match (a, n) {
            (Some(a), Some(n)) => format!(
                "{} with fsync; {} with durability none",
                fmt_ratio(a),
                fmt_ratio(n)
            ),
            (Some(a), None) => format!("{} with fsync", fmt_ratio(a)),
            _ => "not measured".to_owned(),
        };
        goals.push(Goal {
            goal,
            measured,
            met: a.map(|a| a >= want),
        });
    }
    let case = "depth 1000";
    for (base, label) in [(SEEDS, "Cypher"), (POSTGRES, "the recursive CTE")] {
        let http = ratio_of(report, "path", case, ARBOR, base, "p50");
        let store = ratio_of(report, "path", case, STORE, base, "p50");
        let index = ratio_of(report, "path", case, INDEX, base, "p50");
        let mut parts = Vec::new();
        for (what, r) in [
            ("over HTTP", http),
            ("store in-process", store),
            ("index in-process", index),
        ] {
            if let Some(r) = r {
                parts.push(format!("{} {what}", fmt_ratio(r)));
            }
        }
        goals.push(Goal {
            goal: format!(
                "path to root at depth 1 000 ≥ 1 000× faster than {label} (p50, arbor over HTTP)"
            ),
            measured: if parts.is_empty() {
                "not measured".into()
            } else {
                parts.join("; ")
            },
            met: http.map(|r| r >= 1_000.0),
        });
    }
    let goal_case = fan_case(plan, 1_000, 1_000.0);
    let fan = report
        .results
        .iter()
        .filter(|r| r.scenario == "fanout" && r.system == "arbor SSE")
        .max_by_key(|r| (r.case == goal_case, r.summary.count));
    let (measured, met) = match fan {
        Some(r) => {
            let all = r
                .extra
                .get("delivered")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            (
                format!(
                    "{}: p99 {} (p50 {}), delivered {all}",
                    r.case,
                    fmt_us(r.summary.p99_us),
                    fmt_us(r.summary.p50_us)
                ),
                if r.case == goal_case && r.summary.count > 0 {
                    Some(r.summary.p99_us <= 50_000.0 && r.error.is_none())
                } else {
                    None
                },
            )
        }
        None => ("not measured".to_owned(), None),
    };
    goals.push(Goal {
        goal: "SSE: 1 000 subscribers on one workflow at 1 000 events/s, p99 delivery ≤ 50 ms"
            .into(),
        measured,
        met,
    });
    report.goals = goals;
}
