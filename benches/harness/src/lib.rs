//! `arbor-bench`: the benchmark harness (issue 4). It drives arbor over HTTP (and the
//! storage crate in-process where a scenario says so) and, in the same run, the
//! baselines of the issue against real services: the seeds' design (Neo4j + Redis
//! PUBLISH), a PostgreSQL events table, and Redis alone. It starts arbor in-process
//! through the `arbor` library, so the server crate carries none of this.
//!
//! - `arbor-bench compare [--quick]`: every scenario, every system, ratios and goals.
//! - `arbor-bench run --scenario S [--systems …] [--pace open --rate R] …`: one scenario.
//! - `arbor-bench fsync`: this disk's fdatasync latency.
//! - `arbor-bench generate sample|synthetic|chain`: workflows as JSONL for `arbor import`.
//!
//! # Layout
//! - [`workload`]: the agents' ops, from the test kit's synthetic generator (`arbor-testkit`).
//! - [`http`]: the keep-alive HTTP/1.1 client every HTTP scenario uses (hyper, one
//!   connection per concurrent caller).
//! - [`load`]: open- and closed-loop drivers, bounded in count and time.
//! - [`external`]: wrk and pgbench as child processes, their figures as rows.
//! - [`instrument`]: the floor check (the harness's client against wrk) and the fixed
//!   appends against pgbench with fsync on and off.
//! - [`stats`]: HdrHistogram recording and the percentile summary.
//! - [`fanout`]: SSE and Redis pub/sub subscribers, append → receipt latency.
//! - [`systems`]: arbor (HTTP and in-process), the seeds' design, PostgreSQL, Redis.
//! - [`plan`]: what a run does (quick and full sizes, flag overrides).
//! - [`scenarios`]: each scenario against each system.
//! - [`report`]: the JSON report and its markdown rendering.
//! - [`machine`]: the machine description and the fsync probe.
//! - [`generate`]: `arbor-bench generate`.
//!
//! Only loopback addresses may be targeted: every URL is checked before use.

pub mod external;
pub mod fanout;
pub mod generate;
pub mod http;
pub mod idle;
pub mod instrument;
pub mod load;
pub mod machine;
pub mod nullsse;
pub mod plan;
pub mod report;
pub mod scenarios;
pub mod statics;
pub mod stats;
pub mod systems;
pub mod workload;

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use plan::{Plan, Scenario, System};

/// arbor-bench: arbor against the seeds' design, PostgreSQL and Redis.
#[derive(Parser, Debug)]
#[command(name = "arbor-bench", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// Subcommands of `arbor-bench`.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Every scenario against arbor and the baselines, in one run, with ratios.
    Compare(CompareArgs),
    /// One scenario (`--scenario`), on the systems chosen (`--systems`).
    Run(RunArgs),
    /// This disk's fsync latency (write + fdatasync of 4 KiB, in a loop).
    Fsync(FsyncArgs),
    /// Write generated workflows as JSONL of portable events (for `arbor import`).
    Generate(generate::GenerateArgs),
}

/// Flags of `arbor-bench compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Everything that `run` and `compare` share.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags of `arbor-bench run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The scenario.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Systems to run it on (comma-separated) [default: all that the scenario has].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub systems: Vec<System>,
    /// Pacing of the append scenarios: closed loop, or open loop at `--rate`.
    #[arg(long, value_enum, default_value = "closed")]
    pub pace: PaceArg,
    /// Events per second in total (open loop, fan-out, sync lag).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long each measured series runs, in seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Most operations per series.
    #[arg(long)]
    pub max_ops: Option<u64>,
    /// Path depths (comma-separated) for `--scenario path`.
    #[arg(long, value_delimiter = ',')]
    pub depth: Vec<usize>,
    /// Nodes per batch for `--scenario batch`.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Nodes of the workflow for `--scenario subtree`.
    #[arg(long)]
    pub subtree_nodes: Option<usize>,
    /// SSE / pub/sub subscribers for `--scenario fanout`.
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Everything that `run` and `compare` share.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PaceArg {
    /// Next request when the previous one is answered.
    Closed,
    /// Requests due at a fixed rate (`--rate`).
    Open,
}

/// Flags of `arbor-bench fsync`.
#[derive(Args, Debug)]
pub struct FsyncArgs {
    /// Directory of the probe file [default: the temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Bytes per write.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Most writes.
    #[arg(long, default_value_t = 100_000)]
    pub max: u64,
}

/// Flags shared by `compare` and `run`.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// A reduced run (compare: well under 3 minutes on 2 cores).
    #[arg(long)]
    pub quick: bool,
    /// An arbor server to drive instead of starting one in-process (loopback only).
    /// In-process scenarios (store, index) and the `none`-durability variant need the
    /// in-process server and are skipped.
    #[arg(long)]
    pub url: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the markdown report here (it always goes to stdout too).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Concurrent agents (append scenarios).
    #[arg(long)]
    pub agents: Option<usize>,
    /// Keep-alive connections of the instrument check (HTTP floor, fixed appends from
    /// the harness's client and from wrk, pgbench clients).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Probability that a new node forks instead of extending its branch.
    #[arg(long, default_value_t = 0.05)]
    pub fanout: f64,
    /// Probability that a new node is a decision (with 2–4 options).
    #[arg(long, default_value_t = 0.03)]
    pub decision_ratio: f64,
    /// Probability that a decision gets a choice.
    #[arg(long, default_value_t = 0.85)]
    pub chosen_ratio: f64,
    /// Probability that a new node is a monitor (with a MONITORS edge).
    #[arg(long, default_value_t = 0.02)]
    pub monitor_ratio: f64,
    /// Median content size in bytes (log-normal).
    #[arg(long, default_value_t = 400)]
    pub content_median: usize,
    /// Spread of content sizes (sigma of ln(size); 0 = all the median).
    #[arg(long, default_value_t = 1.0)]
    pub content_sigma: f64,
    /// Largest content in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub content_max: usize,
    /// The services of the baselines.
    #[command(flatten)]
    pub services: ServiceArgs,
}

/// Where the baseline services are (defaults: the variables the service script sets).
#[derive(Args, Debug, Clone, Default)]
pub struct ServiceArgs {
    /// Redis (baselines a and c).
    #[arg(long, env = "ARBOR_TEST_REDIS_URL")]
    pub redis_url: Option<String>,
    /// PostgreSQL (baseline b).
    #[arg(long, env = "ARBOR_TEST_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Neo4j Bolt (baseline a).
    #[arg(long, env = "ARBOR_TEST_NEO4J_URL")]
    pub neo4j_url: Option<String>,
    /// Neo4j user.
    #[arg(long, env = "ARBOR_TEST_NEO4J_USER", default_value = "neo4j")]
    pub neo4j_user: String,
    /// Neo4j password.
    #[arg(
        long,
        env = "ARBOR_TEST_NEO4J_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub neo4j_password: String,
}

/// Refuses any URL whose host is not a loopback address.
pub fn check_loopback(what: &str, url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url).with_context(|| format!("{what}: not a URL"))?;
    let host = parsed
        .host_str()
        .with_context(|| format!("{what}: the URL names no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ok = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("{what}: only loopback addresses may be targeted, not {host}");
    }
    Ok(())
}

/// Runs the harness.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        BenchCommand::Fsync(f) => {
            let dir = f.dir.unwrap_or_else(std::env::temp_dir);
            let s = machine::fsync_probe(
                &dir,
                f.size,
                f.max,
                Duration::from_secs_f64(f.duration.max(0.01)),
            )?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        BenchCommand::Compare(c) => {
            let plan = Plan::compare(&c.common)?;
            finish(&c.common, scenarios::execute(plan, command_line()).await?)
        }
        BenchCommand::Run(r) => {
            let plan = Plan::single(&r)?;
            finish(&r.common, scenarios::execute(plan, command_line()).await?)
        }
        BenchCommand::Generate(g) => generate::run(g),
    }
}

fn command_line() -> String {
    let mut args = std::env::args();
    let _ = args.next();
    let mut s = String::from("arbor-bench");
    for a in args {
        s.push(' ');
        s.push_str(&a);
    }
    s
}

fn finish(common: &CommonArgs, report: report::Report) -> anyhow::Result<()> {
    let md = report.markdown();
    if let Some(p) = &common.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &common.markdown {
        std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
    }
    print!("{md}");
    if std::io::stderr().is_terminal() {
        eprintln!("done in {:.0} s", report.seconds);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls() {
        for ok in [
            "http://127.0.0.1:7700",
            "redis://127.0.0.1:6379/",
            "postgres://postgres@127.0.0.1:5432/db",
            "bolt://localhost:7687",
            "http://[::1]:80/",
            "redis://127.3.4.5/",
        ] {
            assert!(check_loopback("x", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:7700",
            "redis://example.com/",
            "postgres://u@192.168.1.2/db",
            "not a url",
            "unix:/tmp/sock",
        ] {
            assert!(check_loopback("x", bad).is_err(), "{bad}");
        }
    }
}
