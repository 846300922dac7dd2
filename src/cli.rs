//! The command line (clap): `serve`, `import`, `export`, `generate`, `bench`, `verify`,
//! `sync`. Every subcommand that opens the store takes `--config` and `--data-dir`, and
//! resolves them, with its other flags, through [`crate::config`].

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use arbor_storage::{Store, StoreOptions};

use crate::config::{BaseArgs, LogFormat, ServeArgs, ServeConfig, SinkArgs};

/// arbor: a store for branching AI-agent workflows.
#[derive(Parser, Debug)]
#[command(name = "arbor", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (embedded by default: needs nothing but its data directory).
    Serve(ServeArgs),
    /// Import workflows from a JSONL file of portable events (server must be stopped).
    Import {
        /// The JSONL file (`-` for stdin).
        file: PathBuf,
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
    },
    /// Export one workflow as JSONL of portable events (server must be stopped).
    Export {
        /// Workflow id.
        #[arg(long)]
        workflow: Uuid,
        /// Output file (stdout when absent).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
    },
    /// Check the hash chain, the secondary trees and the graph; exit 1 on any problem.
    Verify {
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
        /// Also compare counts and per-workflow digests with every configured sink.
        #[arg(long)]
        sinks: bool,
        /// Sink connections (for --sinks).
        #[command(flatten)]
        conn: SinkArgs,
    },
    /// Sync workers: status, and resetting a sink's cursor.
    Sync {
        /// What to do.
        #[command(subcommand)]
        action: SyncAction,
    },
    /// Access tokens: create (secret shown once), list, revoke (server stopped).
    Token {
        /// What to do.
        #[command(subcommand)]
        action: crate::auth::cli::TokenAction,
    },
}

/// `arbor sync …`.
#[derive(Subcommand, Debug)]
pub enum SyncAction {
    /// Each configured sink's cursor, lag and dead letters. With --url, asks a running
    /// server instead of opening the data directory.
    Status {
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
        /// Base URL of a running server (e.g. http://127.0.0.1:7700).
        #[arg(long)]
        url: Option<String>,
        /// Sink connections.
        #[command(flatten)]
        conn: SinkArgs,
    },
    /// Move a sink's cursor back (or forward) so it re-replicates from SEQ (server stopped).
    Reset {
        /// Sink: redis, postgres or neo4j.
        sink: String,
        /// Re-replicate every event after this seq (0 = everything).
        #[arg(long)]
        from: u64,
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
        /// Sink connections.
        #[command(flatten)]
        conn: SinkArgs,
    },
}

/// Sets up tracing: `RUST_LOG` filters (default `info`), text or JSON lines on stderr.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn open_store(dir: &std::path::Path) -> anyhow::Result<Store> {
    if !dir.join("db").exists() {
        bail!("{} holds no arbor store", dir.display());
    }
    Store::open(dir, StoreOptions::default()).with_context(|| {
        format!(
            "opening {} (is a server running on it? stop it first)",
            dir.display()
        )
    })
}

fn progress_bar(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let cfg = ServeConfig::resolve(&args)?;
            init_tracing(cfg.log_format);
            let running = crate::server::start(cfg).await?;
            running.run_until_signal().await?;
            Ok(())
        }
        Command::Import { file, base } => {
            let data_dir = base.resolve(None)?.data_dir;
            init_tracing(LogFormat::Text);
            std::fs::create_dir_all(&data_dir)?;
            let store = Store::open(&data_dir, StoreOptions::default()).with_context(|| {
                format!(
                    "opening {} (is a server running on it?)",
                    data_dir.display()
                )
            })?;
            let (mut reader, len): (Box<dyn std::io::BufRead>, u64) = if file.as_os_str() == "-" {
                (Box::new(BufReader::new(std::io::stdin())), 0)
            } else {
                let f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                (Box::new(BufReader::new(f)), len)
            };
            let bar = progress_bar(len);
            let res =
                crate::portable::import(&store, &mut reader, &mut |done| bar.set_position(done))
                    .await;
            bar.finish_and_clear();
            store.close().await;
            let report = res?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Export {
            workflow,
            output,
            base,
        } => {
            let store = open_store(&base.resolve(None)?.data_dir)?;
            let res = match output {
                Some(path) => {
                    let mut w = BufWriter::new(File::create(&path)?);
                    crate::portable::export(&store, &workflow, &mut w)
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut w = BufWriter::new(stdout.lock());
                    crate::portable::export(&store, &workflow, &mut w).and_then(|n| {
                        w.flush()?;
                        Ok(n)
                    })
                }
            };
            store.close().await;
            res?;
            Ok(())
        }
        Command::Verify { base, sinks, conn } => {
            let cfg = base.resolve(Some(&conn))?;
            let data_dir = cfg.data_dir;
            let report = arbor_storage::verify_dir(&data_dir)
                .with_context(|| format!("verify {}", data_dir.display()))?;
            println!("{}", serde_json::to_string(&report)?);
            if sinks {
                let config = cfg.sync;
                if config.sink_names().is_empty() {
                    bail!(
                        "--sinks needs at least one of --redis-url, --postgres-url, \
                         --neo4j-url (as a flag, an ARBOR_* variable or in --config)"
                    );
                }
                let store = open_store(&data_dir)?;
                let diffs = arbor_sync::verify_sinks(&store, &config).await;
                store.close().await;
                let diffs = diffs?;
                for d in &diffs {
                    println!("{}", serde_json::to_string(d)?);
                }
                if !diffs.is_empty() {
                    bail!(
                        "{} difference(s) between the log and the sinks",
                        diffs.len()
                    );
                }
                println!(
                    "{}",
                    serde_json::json!({ "sinks": config.sink_names(), "differences": 0 })
                );
            }
            Ok(())
        }
        Command::Sync { action } => match action {
            SyncAction::Status { base, url, conn } => {
                if let Some(url) = url {
                    let health: serde_json::Value =
                        reqwest::get(format!("{}/v1/health", url.trim_end_matches('/')))
                            .await?
                            .json()
                            .await?;
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&health["components"]["sinks"])?
                    );
                    return Ok(());
                }
                let cfg = base.resolve(Some(&conn))?;
                let store = open_store(&cfg.data_dir)?;
                let status = arbor_sync::status(&store, &cfg.sync).await;
                store.close().await;
                println!("{}", serde_json::to_string_pretty(&status)?);
                Ok(())
            }
            SyncAction::Reset {
                sink,
                from,
                base,
                conn,
            } => {
                let cfg = base.resolve(Some(&conn))?;
                let store = open_store(&cfg.data_dir)?;
                let res = arbor_sync::reset(&store, &cfg.sync, &sink, from).await;
                store.close().await;
                res?;
                println!("{}", serde_json::json!({ "sink": sink, "cursor": from }));
                Ok(())
            }
        },
        Command::Token { action } => crate::auth::cli::run(action).await,
    }
}
