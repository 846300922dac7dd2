//! The `arbor` binary: parses the command line and runs it (see `arbor::cli`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = arbor::cli::Cli::parse();
    match arbor::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arbor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
