//! The `arbor-bench` binary: parses the command line and runs the harness (see
//! `arbor_bench`).

use clap::Parser;

/// The allocator the `arbor` binary uses: the harness runs arbor's server in process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = arbor_bench::Cli::parse();
    arbor::cli::init_tracing(arbor::config::LogFormat::Text);
    match arbor_bench::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arbor-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
