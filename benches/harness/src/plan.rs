//! What a run does: which scenarios, on which systems, how long and how hard. `compare`
//! takes the quick or full sizes; `run` takes one scenario and any flag overrides.

use std::time::Duration;

use clap::ValueEnum;
use serde::Serialize;
use serde_json::{Map, Value};

use super::load::Pace;
use super::workload::WorkloadSpec;
use super::{CommonArgs, PaceArg, RunArgs, ServiceArgs};

/// A scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Single-node appends (one event per request), closed and open loop.
    Append,
    /// Batch appends (many nodes per request).
    Batch,
    /// Path to root at several depths.
    Path,
    /// Subtree of a workflow's root.
    Subtree,
    /// M subscribers on one workflow: append → receipt latency.
    Fanout,
    /// Append acknowledged → visible in each sink.
    SyncLag,
    /// This disk's fdatasync latency.
    Fsync,
    /// Thousands of idle SSE subscribers on the real binary: memory per subscriber.
    Idle,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 8] = [
        Scenario::Fsync,
        Scenario::Append,
        Scenario::Batch,
        Scenario::Path,
        Scenario::Subtree,
        Scenario::Fanout,
        Scenario::Idle,
        Scenario::SyncLag,
    ];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Append => "append",
            Scenario::Batch => "batch",
            Scenario::Path => "path",
            Scenario::Subtree => "subtree",
            Scenario::Fanout => "fanout",
            Scenario::SyncLag => "sync_lag",
            Scenario::Fsync => "fsync",
            Scenario::Idle => "idle",
        }
    }
}

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// arbor over HTTP, `--durability fsync` (or the `--url` server as configured).
    Arbor,
    /// arbor over HTTP, `--durability none` (in-process server only).
    ArborNone,
    /// arbor's storage crate in-process: the store and the index alone.
    ArborStore,
    /// The seeds' design: Neo4j statement per event, then Redis PUBLISH.
    Seeds,
    /// A PostgreSQL events table.
    Postgres,
    /// Redis XADD + PUBLISH, and pub/sub fan-out.
    Redis,
}

impl System {
    /// Every system.
    pub const ALL: [System; 6] = [
        System::Arbor,
        System::ArborNone,
        System::ArborStore,
        System::Seeds,
        System::Postgres,
        System::Redis,
    ];
}

/// The plan of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Reduced sizes.
    pub quick: bool,
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Systems to include.
    pub systems: Vec<System>,
    /// An external arbor server.
    pub url: Option<String>,
    /// Baseline services.
    #[serde(skip)]
    pub services: ServiceArgs,
    /// The agents' workload.
    pub workload: WorkloadSpec,
    /// Concurrent agents of the append scenarios.
    pub agents: usize,
    /// Connections of the instrument check (floor, fixed appends, pgbench).
    pub connections: usize,
    /// Pacings of the append scenario.
    #[serde(serialize_with = "paces")]
    pub append_paces: Vec<Pace>,
    /// Unmeasured warm-up before each write series (JIT, caches, connections).
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// Length of each append series.
    #[serde(serialize_with = "secs")]
    pub append_duration: Duration,
    /// Most operations of any series.
    pub max_ops: u64,
    /// Nodes per batch.
    pub batch_size: usize,
    /// Concurrent batch writers.
    pub batch_agents: usize,
    /// Length of each batch series.
    #[serde(serialize_with = "secs")]
    pub batch_duration: Duration,
    /// Path depths.
    pub path_depths: Vec<usize>,
    /// Nodes of the subtree workflow.
    pub subtree_nodes: usize,
    /// Length of each query series.
    #[serde(serialize_with = "secs")]
    pub query_duration: Duration,
    /// One query may take at most this long (Neo4j's are then terminated).
    #[serde(serialize_with = "secs")]
    pub query_timeout: Duration,
    /// Most queries per series.
    pub query_max: u64,
    /// Fan-out cases: (subscribers, events per second).
    pub fanout_cases: Vec<(usize, f64)>,
    /// Length of the fan-out.
    #[serde(serialize_with = "secs")]
    pub fanout_duration: Duration,
    /// Idle subscribers opened on the real binary.
    pub idle_subscribers: usize,
    /// Events per second of the sync-lag series.
    pub sync_rate: f64,
    /// Length of the sync-lag series.
    #[serde(serialize_with = "secs")]
    pub sync_duration: Duration,
    /// How long the sinks get to catch up after the sync-lag appends stop.
    #[serde(serialize_with = "secs")]
    pub sync_catch_up: Duration,
    /// Length of the fsync probe.
    #[serde(serialize_with = "secs")]
    pub fsync_duration: Duration,
    /// One operation may take at most this long.
    #[serde(serialize_with = "secs")]
    pub item_timeout: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn paces<S: serde::Serializer>(p: &[Pace], s: S) -> Result<S::Ok, S::Error> {
    let v: Vec<String> = p
        .iter()
        .map(|p| match p {
            Pace::Closed => "closed".to_owned(),
            Pace::Open { rate } => format!("open at {rate}/s"),
        })
        .collect();
    v.serialize(s)
}

impl Plan {
    fn base(common: &CommonArgs) -> anyhow::Result<Plan> {
        if let Some(u) = &common.url {
            super::check_loopback("--url", u)?;
        }
        let s = &common.services;
        for (what, u) in [
            ("--redis-url", &s.redis_url),
            ("--postgres-url", &s.postgres_url),
            ("--neo4j-url", &s.neo4j_url),
        ] {
            if let Some(u) = u {
                super::check_loopback(what, u)?;
            }
        }
        let quick = common.quick;
        let secs = |quick_s: f64, full_s: f64| {
            Duration::from_secs_f64(if quick { quick_s } else { full_s })
        };
        Ok(Plan {
            quick,
            scenarios: Scenario::ALL.to_vec(),
            systems: System::ALL.to_vec(),
            url: common.url.clone(),
            services: common.services.clone(),
            workload: WorkloadSpec {
                seed: common.seed,
                fanout: common.fanout,
                decision_ratio: common.decision_ratio,
                chosen_ratio: common.chosen_ratio,
                monitor_ratio: common.monitor_ratio,
                content_median: common.content_median,
                content_sigma: common.content_sigma,
                content_max: common.content_max,
            },
            agents: common.agents.unwrap_or(16).clamp(1, 1_024),
            connections: common.connections.clamp(1, 1_024),
            // Open loop: a rate every system sustains (the seeds' design tops out at a few
            // hundred events/s here), so latencies compare at equal load; the full run
            // adds one only arbor, PostgreSQL and Redis can carry.
            append_paces: if quick {
                vec![Pace::Closed, Pace::Open { rate: 300.0 }]
            } else {
                vec![
                    Pace::Closed,
                    Pace::Open { rate: 300.0 },
                    Pace::Open { rate: 1_500.0 },
                ]
            },
            warmup: secs(0.3, 2.0),
            append_duration: secs(1.5, 10.0),
            max_ops: 10_000_000,
            batch_size: 100,
            batch_agents: 4,
            batch_duration: secs(1.5, 5.0),
            path_depths: vec![10, 1_000, 10_000],
            subtree_nodes: if quick { 2_000 } else { 10_000 },
            query_duration: secs(0.5, 5.0),
            query_timeout: secs(5.0, 60.0),
            query_max: if quick { 20_000 } else { 1_000_000 },
            // Quick: the goal's thousand subscribers at a rate this 2-core machine's
            // client can take; full: the goal's case and the two that locate its bound.
            fanout_cases: if quick {
                vec![(1_000, 100.0)]
            } else {
                vec![(100, 1_000.0), (1_000, 100.0), (1_000, 1_000.0)]
            },
            fanout_duration: secs(2.0, 10.0),
            idle_subscribers: if quick { 500 } else { 10_000 },
            sync_rate: if quick { 200.0 } else { 500.0 },
            sync_duration: secs(2.0, 10.0),
            sync_catch_up: secs(10.0, 30.0),
            fsync_duration: secs(1.0, 3.0),
            item_timeout: secs(20.0, 60.0),
        })
    }

    /// `arbor-bench compare`.
    pub fn compare(common: &CommonArgs) -> anyhow::Result<Plan> {
        Plan::base(common)
    }

    /// `arbor-bench run`.
    pub fn single(r: &RunArgs) -> anyhow::Result<Plan> {
        let mut p = Plan::base(&r.common)?;
        p.scenarios = vec![r.scenario];
        if !r.systems.is_empty() {
            p.systems = r.systems.clone();
        }
        let rate = r.rate.filter(|x| x.is_finite() && *x > 0.0);
        p.append_paces = vec![match r.pace {
            PaceArg::Closed => Pace::Closed,
            PaceArg::Open => Pace::Open {
                rate: rate.unwrap_or(1_000.0),
            },
        }];
        if let Some(d) = r.duration.filter(|d| d.is_finite() && *d > 0.0) {
            let d = Duration::from_secs_f64(d);
            p.append_duration = d;
            p.batch_duration = d;
            p.query_duration = d;
            p.fanout_duration = d;
            p.sync_duration = d;
            p.fsync_duration = d;
        }
        if let Some(m) = r.max_ops {
            p.max_ops = m.max(1);
            p.query_max = m.max(1);
        }
        if !r.depth.is_empty() {
            p.path_depths = r.depth.iter().map(|d| (*d).max(1)).collect();
        }
        if let Some(b) = r.batch_size {
            p.batch_size = b.clamp(1, 10_000);
        }
        if let Some(n) = r.subtree_nodes {
            p.subtree_nodes = n.max(1);
        }
        if let Some(m) = r.subscribers {
            p.idle_subscribers = m.max(1);
        }
        if r.subscribers.is_some() || rate.is_some() {
            p.fanout_cases = vec![(
                r.subscribers.unwrap_or(1_000).max(1),
                rate.unwrap_or(1_000.0),
            )];
        }
        if let Some(x) = rate {
            p.sync_rate = x;
        }
        Ok(p)
    }

    /// Whether `s` is included.
    pub fn has(&self, s: System) -> bool {
        self.systems.contains(&s)
    }

    /// The plan as JSON (for the report).
    pub fn settings(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: super::super::BenchCommand,
    }

    fn parse(args: &[&str]) -> super::super::BenchCommand {
        let mut v = vec!["bench"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v) {
            Ok(c) => c.cmd,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn quick_compare_is_smaller_than_full() {
        let super::super::BenchCommand::Compare(q) = parse(&["compare", "--quick"]) else {
            panic!("compare")
        };
        let super::super::BenchCommand::Compare(f) = parse(&["compare"]) else {
            panic!("compare")
        };
        let (q, f) = (
            Plan::compare(&q.common).unwrap(),
            Plan::compare(&f.common).unwrap(),
        );
        assert!(q.quick && !f.quick);
        assert!(q.append_duration < f.append_duration);
        assert_eq!(q.scenarios, Scenario::ALL.to_vec());
        assert_eq!(q.path_depths, vec![10, 1_000, 10_000]);
        let settings = q.settings();
        assert_eq!(settings["quick"], Value::Bool(true));
        assert!(settings["append_paces"][1]
            .as_str()
            .unwrap_or("")
            .starts_with("open at"));
    }

    #[test]
    fn run_overrides() {
        let super::super::BenchCommand::Run(r) = parse(&[
            "run",
            "--scenario",
            "path",
            "--systems",
            "arbor,postgres",
            "--depth",
            "5,50",
            "--pace",
            "open",
            "--rate",
            "250",
            "--duration",
            "0.5",
            "--agents",
            "3",
        ]) else {
            panic!("run")
        };
        let p = Plan::single(&r).unwrap();
        assert_eq!(p.scenarios, vec![Scenario::Path]);
        assert_eq!(p.systems, vec![System::Arbor, System::Postgres]);
        assert_eq!(p.path_depths, vec![5, 50]);
        assert_eq!(p.append_paces, vec![Pace::Open { rate: 250.0 }]);
        assert_eq!(p.query_duration, Duration::from_millis(500));
        assert_eq!(p.agents, 3);
        assert!(p.has(System::Postgres) && !p.has(System::Seeds));
    }

    #[test]
    fn non_loopback_targets_are_refused() {
        let super::super::BenchCommand::Compare(c) =
            parse(&["compare", "--redis-url", "redis://10.1.2.3:6379/"])
        else {
            panic!("compare")
        };
        assert!(Plan::compare(&c.common).is_err());
        let super::super::BenchCommand::Compare(c) =
            parse(&["compare", "--url", "http://example.org"])
        else {
            panic!("compare")
        };
        assert!(Plan::compare(&c.common).is_err());
    }
}
