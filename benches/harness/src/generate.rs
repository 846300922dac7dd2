//! `arbor-bench generate`: deterministic workflows as JSONL of portable events, the
//! format `arbor import` reads (the generators of `arbor_testkit`).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use arbor_storage::PortableEvent;
use arbor_testkit as testkit;
use clap::{Args, Subcommand};

/// Flags of `arbor-bench generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What to generate.
    #[command(subcommand)]
    pub what: GenerateWhat,
    /// Output file (stdout when absent).
    #[arg(long, short, global = true)]
    pub output: Option<PathBuf>,
}

/// Generators of `arbor-bench generate`.
#[derive(Subcommand, Debug)]
pub enum GenerateWhat {
    /// The coding-agent sample shipped in data/.
    Sample,
    /// Synthetic workflows (see `arbor_testkit::SyntheticSpec`).
    Synthetic {
        /// Seed (same seed, same bytes).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of workflows.
        #[arg(long, default_value_t = 10)]
        workflows: usize,
        /// Nodes per workflow, root included.
        #[arg(long, default_value_t = 200)]
        nodes: usize,
        /// Deepest node.
        #[arg(long, default_value_t = 10_000)]
        max_depth: usize,
        /// Probability that a node forks a new branch.
        #[arg(long, default_value_t = 0.05)]
        fanout: f64,
        /// Median content size in bytes (log-normal, sigma 1).
        #[arg(long, default_value_t = 400)]
        content_median: usize,
        /// Largest content size in bytes.
        #[arg(long, default_value_t = 16 * 1024)]
        content_max: usize,
        /// Probability that a node is a decision (followed by 2–4 options).
        #[arg(long, default_value_t = 0.03)]
        decision_ratio: f64,
        /// Probability that a node is a monitor (with a MONITORS edge).
        #[arg(long, default_value_t = 0.02)]
        monitor_ratio: f64,
    },
    /// One workflow that is a single chain of the given depth.
    Chain {
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Depth of the chain.
        #[arg(long, default_value_t = 1000)]
        depth: usize,
    },
}

/// Writes the events `args` ask for to the output file or stdout.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let events: Box<dyn Iterator<Item = PortableEvent>> = match args.what {
        GenerateWhat::Sample => Box::new(testkit::coding_agent_sample().into_iter()),
        GenerateWhat::Synthetic {
            seed,
            workflows,
            nodes,
            max_depth,
            fanout,
            content_median,
            content_max,
            decision_ratio,
            monitor_ratio,
        } => Box::new(testkit::synthetic(&testkit::SyntheticSpec {
            seed,
            workflows,
            nodes_per_workflow: nodes,
            max_depth,
            fanout,
            content: testkit::ContentSize::LogNormal {
                median: content_median,
                sigma: 1.0,
                max: content_max,
            },
            decision_ratio,
            monitor_ratio,
            ..testkit::SyntheticSpec::default()
        })),
        GenerateWhat::Chain { seed, depth } => Box::new(testkit::deep_chain(seed, depth)),
    };
    let n = match args.output {
        Some(path) => testkit::write_jsonl(BufWriter::new(File::create(&path)?), events)?,
        None => testkit::write_jsonl(BufWriter::new(std::io::stdout().lock()), events)?,
    };
    eprintln!("arbor-bench: wrote {n} events");
    Ok(())
}
