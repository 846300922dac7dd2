//! The command line (clap): `serve`, `import`, `export`, `verify`, `sync`, `workflows`.
//! Every subcommand that opens the store takes `--config` and `--data-dir`, and resolves
//! them, with its other flags, through [`crate::config`]. Errors name the data directory
//! once; when a server holds it, they say so and what to do instead (its HTTP
//! equivalent where there is one).

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use arbor_storage::{ListFilter, Store, StoreOptions, VerifyError, WorkflowSummary};
use serde_json::{json, Value};

use crate::config::{BaseArgs, LogFormat, ServeArgs, ServeConfig, SinkArgs};
use crate::http::views::WorkflowView;
use crate::server::ServeError;

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
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// Export one workflow as JSONL of portable events (server must be stopped; the
    /// workflow ids: `arbor workflows`).
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
    /// Check the hash chain, the content hashes and the graph; exit 1 on any problem.
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
    /// List the stored workflows, newest first, as `GET /v1/workflows` does (server
    /// must be stopped).
    Workflows {
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
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
        /// Access token (admin) for --url, when the server requires one.
        #[arg(long, env = "ARBOR_TOKEN", hide_env_values = true, requires = "url")]
        token: Option<String>,
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
        /// Take over a destination that holds another store's replica: empty it and
        /// replay this store's log into it (needs --from 0).
        #[arg(long)]
        adopt: bool,
    },
    /// Events a sink refused (dead letters): list, retry, acknowledge (server stopped).
    DeadLetters {
        /// What to do.
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

/// `arbor sync dead-letters …`.
#[derive(Subcommand, Debug)]
pub enum DeadLetterAction {
    /// Every dead letter (of SINK, or of each configured sink), unresolved and acknowledged.
    List {
        /// Sink: redis, postgres or neo4j (default: every configured sink).
        sink: Option<String>,
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
        /// Sink connections.
        #[command(flatten)]
        conn: SinkArgs,
    },
    /// Re-applies dead-lettered events through the sink; each one it takes is resolved.
    Retry {
        /// Sink: redis, postgres or neo4j.
        sink: String,
        /// The dead letter to retry.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        seq: Option<u64>,
        /// Retry every unresolved dead letter of the sink.
        #[arg(long)]
        all: bool,
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
        /// Sink connections.
        #[command(flatten)]
        conn: SinkArgs,
    },
    /// Accepts the loss of a dead letter: recorded in the store's acknowledged dead
    /// letters, so `verify --sinks` and health stop reporting it.
    Ack {
        /// Sink: redis, postgres or neo4j.
        sink: String,
        /// The dead letter to acknowledge.
        #[arg(long)]
        seq: u64,
        /// Why the loss is accepted (kept with the acknowledgement).
        #[arg(long, default_value = "accepted by operator")]
        note: String,
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
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

/// Whether `err`, or an error under it, is sled refusing a directory that another
/// process holds open (its lock file): a running server, most likely.
fn is_locked(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source())
        .any(|e| e.to_string().contains("could not acquire lock"))
}

/// The error of opening the store in `dir` for `what`: when another process holds it,
/// one sentence saying so and what to do `instead`; else the error itself.
fn open_error<E>(dir: &Path, err: E, instead: &str) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    if is_locked(&err) {
        anyhow!(
            "{} is in use by another arbor process (is a server running on it?): {instead}",
            dir.display()
        )
    } else {
        anyhow::Error::new(err).context(format!("opening {}", dir.display()))
    }
}

/// Opens the existing store in `dir` for an offline command; `instead` says what to do
/// while a server holds it.
fn open_store(dir: &Path, instead: &str) -> anyhow::Result<Store> {
    if !dir.join("db").exists() {
        bail!("{} holds no arbor store", dir.display());
    }
    Store::open(dir, StoreOptions::default()).map_err(|e| open_error(dir, e, instead))
}

/// What to do instead of `sync reset` or `import` while a server holds the store.
const STOP_FIRST: &str = "stop it first";

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

/// Every workflow in the store, newest first.
fn all_workflows(store: &Store) -> Result<Vec<WorkflowSummary>, arbor_storage::StorageError> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let (page, next) = store.list_workflows(&ListFilter::default(), before, 1000)?;
        all.extend(page);
        match next {
            Some(cursor) => before = Some(cursor),
            None => return Ok(all),
        }
    }
}

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let cfg = ServeConfig::resolve(&args)?;
            init_tracing(cfg.log_format);
            let running = crate::server::start(cfg).await.map_err(|e| match e {
                ServeError::Store { dir, source } => open_error(
                    Path::new(&dir),
                    source,
                    "only one server can use a data directory",
                ),
                ServeError::Bind { addr, source }
                    if source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    anyhow!(
                        "{addr} is already in use (is another server running?): stop it, or \
                         listen elsewhere with --listen"
                    )
                }
                e => e.into(),
            })?;
            running.run_until_signal().await?;
            Ok(())
        }
        Command::Import { file, base } => {
            let data_dir = base.resolve(None)?.data_dir;
            init_tracing(LogFormat::Text);
            std::fs::create_dir_all(&data_dir)?;
            let store = Store::open(&data_dir, StoreOptions::default())
                .map_err(|e| open_error(&data_dir, e, STOP_FIRST))?;
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
            let stored = res.as_ref().map_or(Ok(Vec::new()), |r| {
                r.workflow_ids
                    .iter()
                    .filter_map(|wf| store.workflow(wf).transpose())
                    .map(|w| {
                        w.map(
                            |w| json!({ "workflow_id": w.workflow_id, "node_count": w.node_count }),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
            });
            store.close().await;
            let mut report = serde_json::to_value(res?)?;
            report["stored_workflows"] = Value::Array(stored?);
            println!("{report}");
            Ok(())
        }
        Command::Export {
            workflow,
            output,
            base,
        } => {
            let store = open_store(
                &base.resolve(None)?.data_dir,
                &format!(
                    "stop it first, or ask it over HTTP: \
                     GET /v1/workflows/{workflow}/events?after=0"
                ),
            )?;
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
            let report = arbor_storage::verify_dir(&data_dir).map_err(|e| match e {
                VerifyError::Problem(_) => anyhow::Error::new(e),
                e => open_error(
                    &data_dir,
                    e,
                    "stop it first (verify reads the whole store and needs it to itself)",
                ),
            })?;
            println!("{}", serde_json::to_string(&report)?);
            if sinks {
                let config = cfg.sync;
                if config.sink_names().is_empty() {
                    bail!(
                        "--sinks needs at least one of --redis-url, --postgres-url, \
                         --neo4j-url (as a flag, an ARBOR_* variable or in --config)"
                    );
                }
                let store = open_store(&data_dir, STOP_FIRST)?;
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
        Command::Workflows { base } => {
            let store = open_store(
                &base.resolve(None)?.data_dir,
                "stop it first, or ask it over HTTP: GET /v1/workflows",
            )?;
            let listed = all_workflows(&store);
            store.close().await;
            let listed = listed?;
            let views: Vec<WorkflowView> = listed.iter().map(WorkflowView::from).collect();
            println!("{}", json!({ "workflows": views }));
            Ok(())
        }
        Command::Sync { action } => match action {
            SyncAction::Status {
                base,
                url,
                token,
                conn,
            } => {
                if let Some(url) = url {
                    let mut request = reqwest::Client::new()
                        .get(format!("{}/v1/health", url.trim_end_matches('/')));
                    if let Some(token) = token {
                        request = request.bearer_auth(token);
                    }
                    let response = request.send().await?;
                    let status = response.status();
                    if !status.is_success() {
                        let detail = response.text().await.unwrap_or_default();
                        bail!(
                            "{url} answered {status}: {detail}{}",
                            if status == reqwest::StatusCode::UNAUTHORIZED {
                                "\n  hint: pass an admin token with --token (or ARBOR_TOKEN)"
                            } else {
                                ""
                            }
                        );
                    }
                    let health: serde_json::Value = response.json().await?;
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&health["components"]["sinks"])?
                    );
                    return Ok(());
                }
                let cfg = base.resolve(Some(&conn))?;
                let store = open_store(
                    &cfg.data_dir,
                    "stop it first, or ask it: arbor sync status --url http://ADDRESS",
                )?;
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
                adopt,
            } => {
                if adopt && from != 0 {
                    bail!("--adopt replays the whole log: use it with --from 0");
                }
                let cfg = base.resolve(Some(&conn))?;
                let store = open_store(&cfg.data_dir, STOP_FIRST)?;
                let res = if adopt {
                    arbor_sync::adopt(&store, &cfg.sync, &sink).await
                } else {
                    arbor_sync::reset(&store, &cfg.sync, &sink, from).await
                };
                store.close().await;
                res?;
                println!("{}", serde_json::json!({ "sink": sink, "cursor": from }));
                Ok(())
            }
            SyncAction::DeadLetters { action } => dead_letters(action).await,
        },
        Command::Token { action } => crate::auth::cli::run(action).await,
    }
}

/// `arbor sync dead-letters …`. Fails (non-zero exit) when a retried event is refused
/// again.
async fn dead_letters(action: DeadLetterAction) -> anyhow::Result<()> {
    match action {
        DeadLetterAction::List { sink, base, conn } => {
            let cfg = base.resolve(Some(&conn))?;
            let store = open_store(&cfg.data_dir, STOP_FIRST)?;
            let names: Vec<&str> = match &sink {
                Some(s) => vec![s.as_str()],
                None => cfg.sync.sink_names(),
            };
            let found = arbor_sync::dead::list(&store, &names);
            store.close().await;
            for d in found? {
                println!("{}", serde_json::to_string(&d)?);
            }
            Ok(())
        }
        DeadLetterAction::Retry {
            sink,
            seq,
            all: _,
            base,
            conn,
        } => {
            let cfg = base.resolve(Some(&conn))?;
            let store = open_store(&cfg.data_dir, STOP_FIRST)?;
            let seqs = seq.map(|s| vec![s]);
            let res = arbor_sync::dead::retry(&store, &cfg.sync, &sink, seqs).await;
            store.close().await;
            let outcomes = res?;
            for o in &outcomes {
                println!("{}", serde_json::to_string(o)?);
            }
            let refused = outcomes.iter().filter(|o| !o.resolved).count();
            if refused > 0 {
                bail!("{refused} dead letter(s) of {sink} refused again");
            }
            Ok(())
        }
        DeadLetterAction::Ack {
            sink,
            seq,
            note,
            base,
        } => {
            let cfg = base.resolve(None)?;
            let store = open_store(&cfg.data_dir, STOP_FIRST)?;
            let res = arbor_sync::dead::ack(&store, &sink, seq, &note);
            store.close().await;
            res?;
            println!(
                "{}",
                serde_json::json!({ "sink": sink, "seq": seq, "acknowledged": true })
            );
            Ok(())
        }
    }
}
