//! The `arbor` binary: parses the command line and runs it (see `arbor::cli`).

use clap::Parser;

/// mimalloc, not glibc's malloc: every append allocates on the request path and on the
/// writer thread, and glibc's allocator took ~15 % of the writer's samples in a profile
/// (`storage/examples/append_load.rs`, issue 13).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before any thread starts: see the function's docs (issue 13).
    arbor_storage::disable_transparent_huge_pages();
    let cli = arbor::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("arbor: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(arbor::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arbor: {}", message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: an error whose text already
/// includes its cause's (`binding …: {source}`) is not followed by that cause again.
fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
