//! `arbor bench`: the benchmark harness (issue 4). Placeholder until it lands.

use clap::Args;

/// Flags of `arbor bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {}

/// Runs the harness.
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("the benchmark harness is not built yet")
}
