//! The command line (clap): `serve`, `import`, `export`, `verify`.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use arbor_storage::{Store, StoreOptions};

use crate::config::{LogFormat, ServeArgs, ServeConfig, DEFAULT_DATA_DIR};

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
        /// Data directory.
        #[arg(long, env = "ARBOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Export one workflow as JSONL of portable events (server must be stopped).
    Export {
        /// Workflow id.
        #[arg(long)]
        workflow: Uuid,
        /// Output file (stdout when absent).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Data directory.
        #[arg(long, env = "ARBOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Check the hash chain, the secondary trees and the graph; exit 1 on any problem.
    Verify {
        /// Data directory.
        #[arg(long, env = "ARBOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
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
}

/// Sink connection flags shared by `sync` and `verify --sinks`.
#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Redis URL.
    #[arg(long, env = "ARBOR_REDIS_URL")]
    pub redis_url: Option<String>,
    /// PostgreSQL URL.
    #[arg(long, env = "ARBOR_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// PostgreSQL schema of the replica tables.
    #[arg(long, env = "ARBOR_POSTGRES_SCHEMA", default_value = "public")]
    pub postgres_schema: String,
    /// Neo4j Bolt URL.
    #[arg(long, env = "ARBOR_NEO4J_URL")]
    pub neo4j_url: Option<String>,
    /// Neo4j user.
    #[arg(long, env = "ARBOR_NEO4J_USER", default_value = "neo4j")]
    pub neo4j_user: String,
    /// Neo4j password.
    #[arg(
        long,
        env = "ARBOR_NEO4J_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub neo4j_password: String,
}

impl SinkArgs {
    fn sync_config(&self) -> arbor_sync::SyncConfig {
        arbor_sync::SyncConfig {
            redis_url: self.redis_url.clone(),
            postgres_url: self.postgres_url.clone(),
            postgres_schema: self.postgres_schema.clone(),
            neo4j: self.neo4j_url.as_ref().map(|url| arbor_sync::Neo4jConfig {
                url: url.clone(),
                user: self.neo4j_user.clone(),
                password: self.neo4j_password.clone(),
            }),
            ..arbor_sync::SyncConfig::default()
        }
    }
}

/// `arbor sync …`.
#[derive(Subcommand, Debug)]
pub enum SyncAction {
    /// Each configured sink's cursor, lag and dead letters. With --url, asks a running
    /// server instead of opening the data directory.
    Status {
        /// Data directory.
        #[arg(long, env = "ARBOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
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
        /// Data directory.
        #[arg(long, env = "ARBOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
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
        Command::Import { file, data_dir } => {
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
            data_dir,
        } => {
            let store = open_store(&data_dir)?;
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
        Command::Verify {
            data_dir,
            sinks,
            conn,
        } => {
            let report = arbor_storage::verify::verify_dir(&data_dir)
                .with_context(|| format!("verify {}", data_dir.display()))?;
            println!("{}", serde_json::to_string(&report)?);
            if sinks {
                let config = conn.sync_config();
                if config.sink_names().is_empty() {
                    bail!("--sinks needs at least one of --redis-url, --postgres-url, --neo4j-url");
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
            SyncAction::Status {
                data_dir,
                url,
                conn,
            } => {
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
                let store = open_store(&data_dir)?;
                let status = arbor_sync::status(&store, &conn.sync_config()).await;
                store.close().await;
                println!("{}", serde_json::to_string_pretty(&status)?);
                Ok(())
            }
            SyncAction::Reset {
                sink,
                from,
                data_dir,
                conn,
            } => {
                let store = open_store(&data_dir)?;
                let res = arbor_sync::reset(&store, &conn.sync_config(), &sink, from).await;
                store.close().await;
                res?;
                println!("{}", serde_json::json!({ "sink": sink, "cursor": from }));
                Ok(())
            }
        },
    }
}
