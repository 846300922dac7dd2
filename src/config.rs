//! Configuration, declared once.
//!
//! Every setting is one field of one group below ([`DataArgs`], [`StoreArgs`],
//! [`SinkArgs`], [`HttpArgs`]). That one declaration is at once the flag (`--cache-mb`),
//! its `ARBOR_*` variable (`ARBOR_CACHE_MB`) and its TOML key (`cache_mb`). Each
//! subcommand flattens the groups it needs, and every subcommand reads the same TOML
//! file (`--config`), so `serve`, `sync` and `verify --sinks` see the same sinks.
//!
//! Precedence: flags, then `ARBOR_*` variables (both through clap), then the TOML file,
//! then the defaults. The defaults live with the code that owns each setting
//! ([`StoreOptions::default`], [`SyncConfig::default`], [`Limits::default`]) plus the
//! three constants below; [`ServeConfig::new`] is the only place that gathers them.
//!
//! Secrets (the Neo4j password, passwords inside sink URLs) never leave this module in
//! clear: the `Debug` of every type here, the start-up line ([`ServeConfig`]'s
//! `Display`), `--help` (environment values hidden) and every [`ConfigError`] mask them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use arbor_storage::{Durability, StoreOptions};
use arbor_sync::error::{redact_urls, url_password, Redactor};
use arbor_sync::redis::MessageShape;
use arbor_sync::{Neo4jConfig, SyncConfig};

use crate::http::Limits;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data/db";
/// Default listen address.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    7700,
));
/// Default Neo4j user.
pub const DEFAULT_NEO4J_USER: &str = "neo4j";

/// Declares a group of settings: every field becomes `Option<T>` (unset = "ask the next
/// layer"), the group gets its TOML keys (`KEYS`) and `or` (this layer over a lower one).
/// Field attributes are clap's (`#[arg(long, env = …)]`); the field name is the TOML key.
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Args, Deserialize, Default, Clone)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
        }

        impl $name {
            /// The TOML keys of this group.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Each setting of `self`, else of `lower`.
            pub fn or(self, lower: $name) -> $name {
                $name { $( $field: self.$field.or(lower.$field), )* }
            }
        }
    };
}

settings! {
    /// Where the store lives: every subcommand that opens it.
    #[derive(Debug)]
    pub struct DataArgs {
        /// Data directory [default: ./data/db].
        #[arg(long, env = "ARBOR_DATA_DIR")]
        data_dir: PathBuf,
    }
}

settings! {
    /// How the server runs the store.
    #[derive(Debug)]
    pub struct StoreArgs {
        /// Durability of acknowledged appends [default: fsync].
        #[arg(long, env = "ARBOR_DURABILITY", value_enum)]
        durability: DurabilityArg,
        /// sled page cache in MiB: an upper bound, filled as the log is read; size it to
        /// hold the log a sink catches up over (1 M events take ~650 MB) [default: 1024].
        #[arg(long, env = "ARBOR_CACHE_MB")]
        cache_mb: u64,
        /// Cache of decoded nodes (path, subtree, … reads) in MiB; 0 disables it
        /// [default: 256].
        #[arg(long, env = "ARBOR_NODE_CACHE_MB")]
        node_cache_mb: u64,
        /// In-memory event broadcast capacity; slower SSE readers catch up from the log
        /// [default: 4096].
        #[arg(long, env = "ARBOR_BROADCAST_CAPACITY")]
        broadcast_capacity: usize,
        /// Longest, in µs, a flush waits for more appends already on their way (fsync
        /// durability; only while at least four are, so a lone client never waits);
        /// 0 disables it [default: 500].
        #[arg(long, env = "ARBOR_COMMIT_DELAY_US")]
        commit_delay_us: u64,
    }
}

settings! {
    /// Where the log is replicated: `serve`, `sync …` and `verify --sinks`. Secrets are
    /// masked in `Debug` and their environment values hidden in `--help`.
    pub struct SinkArgs {
        /// Redis URL for the streaming sink.
        #[arg(long, env = "ARBOR_REDIS_URL", hide_env_values = true)]
        redis_url: String,
        /// PostgreSQL URL for the table sink.
        #[arg(long, env = "ARBOR_POSTGRES_URL", hide_env_values = true)]
        postgres_url: String,
        /// PostgreSQL schema of the replica tables [default: public].
        #[arg(long, env = "ARBOR_POSTGRES_SCHEMA")]
        postgres_schema: String,
        /// Neo4j Bolt URL for the graph sink.
        #[arg(long, env = "ARBOR_NEO4J_URL", hide_env_values = true)]
        neo4j_url: String,
        /// Neo4j user [default: neo4j].
        #[arg(long, env = "ARBOR_NEO4J_USER")]
        neo4j_user: String,
        /// Neo4j password.
        #[arg(long, env = "ARBOR_NEO4J_PASSWORD", hide_env_values = true)]
        neo4j_password: String,
        /// Entries each Redis workflow stream keeps (`XADD … MAXLEN ~ N`, so a few more);
        /// 0: unbounded [default: 10000].
        #[arg(long, env = "ARBOR_REDIS_MAXLEN")]
        redis_maxlen: usize,
        /// What Redis publishes on `workflow:{id}`: `arbor` (each event as the API shows
        /// it) or `seeds` (`{id, workflowId, type, content, parentId, metadata}` per new
        /// node, for clients written against the seeds) [default: arbor].
        #[arg(long, env = "ARBOR_REDIS_MESSAGE_SHAPE", value_enum)]
        redis_message_shape: MessageShapeArg,
        /// A sink whose oldest unreplicated event arrived longer ago than this reads
        /// `degraded`, e.g. `30s`, `2m` [default: 30s].
        #[arg(long, env = "ARBOR_SINK_LAG_BOUND")]
        sink_lag_bound: HumanDuration,
        /// Time between two anti-entropy rounds of each sink (each compares workflows
        /// in the sink with the log and repairs what diverged), e.g. `60s`; `0s` turns
        /// anti-entropy off [default: 60s].
        #[arg(long, env = "ARBOR_ANTI_ENTROPY_INTERVAL")]
        anti_entropy_interval: HumanDuration,
        /// Most events one anti-entropy round compares per sink [default: 50000].
        #[arg(long, env = "ARBOR_ANTI_ENTROPY_BUDGET")]
        anti_entropy_budget: usize,
    }
}

settings! {
    /// The HTTP server: `serve` only.
    #[derive(Debug)]
    pub struct HttpArgs {
        /// Listen address [default: 127.0.0.1:7700].
        #[arg(long, env = "ARBOR_LISTEN")]
        listen: SocketAddr,
        /// Log format [default: text].
        #[arg(long, env = "ARBOR_LOG_FORMAT", value_enum)]
        log_format: LogFormat,
        /// Largest node content in bytes [default: 1 MiB].
        #[arg(long, env = "ARBOR_MAX_CONTENT_BYTES")]
        max_content_bytes: usize,
        /// Largest request body in bytes [default: 16 MiB].
        #[arg(long, env = "ARBOR_MAX_BODY_BYTES")]
        max_body_bytes: usize,
        /// Most nodes per batch [default: 10000].
        #[arg(long, env = "ARBOR_MAX_BATCH_NODES")]
        max_batch_nodes: usize,
        /// SSE heartbeat interval in seconds [default: 15].
        #[arg(long, env = "ARBOR_SSE_HEARTBEAT_SECS")]
        sse_heartbeat_secs: u64,
        /// Longest a request may take to send its body and get its response head, e.g.
        /// `30s`, `500ms`, `2m` (a bare number is seconds); an SSE stream, once started,
        /// is not limited [default: 30s].
        #[arg(long, env = "ARBOR_REQUEST_TIMEOUT")]
        request_timeout: HumanDuration,
        /// Longest a client may take to send a request head (and to finish a TLS
        /// handshake); also how long an idle keep-alive connection is kept, e.g. `10s`
        /// [default: 10s].
        #[arg(long, env = "ARBOR_HEADER_TIMEOUT")]
        header_timeout: HumanDuration,
        /// Most connections open at once; further clients wait to be accepted until one
        /// closes [default: 4096].
        #[arg(long, env = "ARBOR_MAX_CONNECTIONS")]
        max_connections: usize,
        /// Largest node payload, serialized as JSON, in bytes [default: 1 MiB].
        #[arg(long, env = "ARBOR_MAX_PAYLOAD_BYTES")]
        max_payload_bytes: usize,
        /// Largest node or workflow metadata, serialized as JSON, in bytes [default: 64 KiB].
        #[arg(long, env = "ARBOR_MAX_METADATA_BYTES")]
        max_metadata_bytes: usize,
        /// The `retry:` of SSE streams in milliseconds: how soon a browser reconnects after
        /// a restart [default: 1000].
        #[arg(long, env = "ARBOR_SSE_RETRY_MS")]
        sse_retry_ms: u64,
        /// A busy SSE stream writes at most once per this many milliseconds; events
        /// arriving in between go out together in its next write, so a stream costs one
        /// wake-up and one write per window, not per event. An event after a quiet spell
        /// is written at once. `0` writes every event as it comes [default: 20].
        #[arg(long, env = "ARBOR_SSE_COALESCE_MS")]
        sse_coalesce_ms: u64,
        /// An origin whose pages may call the API and open its streams, e.g.
        /// `https://app.example.com`; repeat the flag for more (`ARBOR_CORS_ORIGIN` and
        /// the TOML key take a comma-separated list / an array) [default: none].
        #[arg(long = "cors-origin", env = "ARBOR_CORS_ORIGIN", value_delimiter = ',')]
        cors_origin: Vec<String>,
        /// TLS certificate chain (PEM); with `--tls-key`, the server speaks HTTPS only.
        #[arg(long, env = "ARBOR_TLS_CERT", requires = "tls_key")]
        tls_cert: PathBuf,
        /// TLS private key (PEM) of `--tls-cert`.
        #[arg(long, env = "ARBOR_TLS_KEY", requires = "tls_cert")]
        tls_key: PathBuf,
        /// Requests per second of a token that has no `rate` of its own, e.g. `1000/s`
        /// (burst twice that) [default: 1000/s].
        #[arg(long, env = "ARBOR_RATE_LIMIT")]
        rate_limit: PerSecond,
        /// Failed authentications one client address may make per second, after a burst
        /// of 20 (or twice the rate, if more); then 429 [default: 1/s].
        #[arg(long, env = "ARBOR_AUTH_FAILURE_RATE")]
        auth_failure_rate: PerSecond,
    }
}

impl fmt::Debug for SinkArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(redact_urls);
        f.debug_struct("SinkArgs")
            .field("redis_url", &url(&self.redis_url))
            .field("postgres_url", &url(&self.postgres_url))
            .field("postgres_schema", &self.postgres_schema)
            .field("neo4j_url", &url(&self.neo4j_url))
            .field("neo4j_user", &self.neo4j_user)
            .field(
                "neo4j_password",
                &self.neo4j_password.as_ref().map(|_| "***"),
            )
            .field("redis_maxlen", &self.redis_maxlen)
            .field("redis_message_shape", &self.redis_message_shape)
            .field("sink_lag_bound", &self.sink_lag_bound)
            .field("anti_entropy_interval", &self.anti_entropy_interval)
            .field("anti_entropy_budget", &self.anti_entropy_budget)
            .finish()
    }
}

/// `--config FILE` and the data directory: what every subcommand that opens the store
/// takes.
#[derive(Args, Debug, Default, Clone)]
pub struct BaseArgs {
    /// TOML file with any setting of `arbor serve` (keys are the flag names with `_`,
    /// e.g. `cache_mb = 64`); flags and `ARBOR_*` variables override it.
    #[arg(long, env = "ARBOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory.
    #[command(flatten)]
    pub data: DataArgs,
}

impl BaseArgs {
    /// The configuration for an offline subcommand: these flags and `sinks` (flags of
    /// `sync` and `verify`) over the file over the defaults.
    pub fn resolve(&self, sinks: Option<&SinkArgs>) -> Result<ServeConfig, ConfigError> {
        ServeConfig::resolve_layers(
            self.config.as_deref(),
            Layer {
                data: self.data.clone(),
                sinks: sinks.cloned().unwrap_or_default(),
                ..Layer::default()
            },
        )
    }
}

/// Flags of `arbor serve` (each also readable from its `ARBOR_*` variable and the TOML
/// file).
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// `--config`, `--data-dir`.
    #[command(flatten)]
    pub base: BaseArgs,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The sinks.
    #[command(flatten)]
    pub sinks: SinkArgs,
    /// HTTP.
    #[command(flatten)]
    pub http: HttpArgs,
}

/// One layer of settings (the flags with their variables, or the file): every group,
/// every setting optional.
#[derive(Default, Clone)]
struct Layer {
    data: DataArgs,
    store: StoreArgs,
    sinks: SinkArgs,
    http: HttpArgs,
}

impl Layer {
    /// Each setting of `self`, else of `lower`.
    fn or(self, lower: Layer) -> Layer {
        Layer {
            data: self.data.or(lower.data),
            store: self.store.or(lower.store),
            sinks: self.sinks.or(lower.sinks),
            http: self.http.or(lower.http),
        }
    }

    /// Reads the TOML file. Unknown keys are an error; no error repeats a secret.
    fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_error = |e: toml::de::Error, redactor: &Redactor| {
            let at = e.span().map_or_else(String::new, |s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            // The message only, never toml's excerpt of the file: that could be a secret.
            ConfigError::Parse {
                path: path.to_path_buf(),
                message: redactor.apply(&format!("{at}{}", e.message().trim_end())),
            }
        };
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| parse_error(e, &Redactor::default()))?;
        let redactor = Redactor::new(secret_values(&table));
        let known = [
            DataArgs::KEYS,
            StoreArgs::KEYS,
            SinkArgs::KEYS,
            HttpArgs::KEYS,
        ]
        .concat();
        let unknown: Vec<&str> = table
            .keys()
            .map(String::as_str)
            .filter(|k| !known.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "unknown setting(s) {}; known: {}",
                    unknown.join(", "),
                    known.join(", ")
                ),
            });
        }
        // Each group reads the keys it declares (and ignores the others' keys).
        Ok(Layer {
            data: toml::from_str(&text).map_err(|e| parse_error(e, &redactor))?,
            store: toml::from_str(&text).map_err(|e| parse_error(e, &redactor))?,
            sinks: toml::from_str(&text).map_err(|e| parse_error(e, &redactor))?,
            http: toml::from_str(&text).map_err(|e| parse_error(e, &redactor))?,
        })
    }
}

/// What a file holds under the secret keys, whatever its type, so that an error about
/// one never repeats it.
fn secret_values(table: &toml::Table) -> Vec<String> {
    let text = |key: &str| {
        table
            .get(key)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };
    let mut secrets: Vec<String> = text("neo4j_password").into_iter().collect();
    for key in ["redis_url", "postgres_url", "neo4j_url"] {
        secrets.extend(text(key).as_deref().and_then(url_password));
    }
    secrets
}

/// `--durability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityArg {
    /// Flush and fdatasync each group before acknowledging.
    Fsync,
    /// Acknowledge before the flush (throwaway runs, benchmarks).
    None,
}

impl From<DurabilityArg> for Durability {
    fn from(d: DurabilityArg) -> Durability {
        match d {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::None => Durability::None,
        }
    }
}

/// `--redis-message-shape`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageShapeArg {
    /// Each event, as the API and the stream show it.
    Arbor,
    /// The seeds' `{id, workflowId, type, content, parentId, metadata}`, per new node.
    Seeds,
}

impl From<MessageShapeArg> for MessageShape {
    fn from(s: MessageShapeArg) -> MessageShape {
        match s {
            MessageShapeArg::Arbor => MessageShape::Arbor,
            MessageShapeArg::Seeds => MessageShape::Seeds,
        }
    }
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration written `500ms`, `30s`, `2m` or a bare number of seconds (in TOML also an
/// integer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<HumanDuration, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            other => return Err(format!("unknown unit {other:?} in {s:?} (ms, s or m)")),
        };
        Ok(HumanDuration(d))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(HumanDuration(Duration::from_secs(n))),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A rate written `1000/s` or a bare number per second (in TOML also a number); more
/// than 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerSecond(pub f64);

impl FromStr for PerSecond {
    type Err = String;

    fn from_str(s: &str) -> Result<PerSecond, String> {
        let t = s.trim();
        let n = t.strip_suffix("/s").unwrap_or(t).trim();
        match n.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(PerSecond(v)),
            _ => Err(format!(
                "{s:?} is not a rate: a positive number per second, e.g. 1000/s"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for PerSecond {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PerSecond, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(s) => s,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Errors of configuration loading. None carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is invalid (syntax, a wrong type, an unknown key).
    #[error("parsing config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, where (secrets masked).
        message: String,
    },
    /// A combination of settings is not allowed.
    #[error("{0}")]
    Invalid(String),
}

/// The resolved configuration: every setting with a value. `serve` uses all of it; the
/// offline subcommands use the data directory and the sinks.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Durability.
    pub durability: Durability,
    /// sled cache MiB.
    pub cache_mb: u64,
    /// Decoded-node cache MiB (0: disabled).
    pub node_cache_mb: u64,
    /// Broadcast capacity.
    pub broadcast_capacity: usize,
    /// Longest a flush waits for appends on their way ([`StoreOptions::commit_delay`]).
    pub commit_delay: Duration,
    /// The sinks (none by default), as the sync workers take them. Its `Debug` masks
    /// passwords.
    pub sync: SyncConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Request limits and the request timeout.
    pub limits: Limits,
    /// Longest a client may take to send a request head; the keep-alive idle timeout.
    pub header_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Certificate and key files when the server speaks TLS.
    pub tls: Option<TlsFiles>,
    /// Requests per second of a token without a `rate` of its own.
    pub rate_limit: f64,
    /// Failed authentications per second of one client address (after a burst).
    pub auth_failure_rate: f64,
    /// Origins whose pages may call the API (checked, lower-case).
    pub cors_origins: Vec<String>,
}

/// `--tls-cert` and `--tls-key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// The default of `--rate-limit` (DESIGN §8).
pub const DEFAULT_RATE_LIMIT: f64 = 1000.0;
/// The default of `--auth-failure-rate`.
pub const DEFAULT_AUTH_FAILURE_RATE: f64 = 1.0;

impl ServeConfig {
    /// A configuration with every default, data in `data_dir`, listening on `listen`.
    pub fn new(data_dir: &Path, listen: SocketAddr) -> ServeConfig {
        let store = StoreOptions::default();
        let accept = crate::listen::ListenOptions::default();
        ServeConfig {
            data_dir: data_dir.to_path_buf(),
            listen,
            durability: store.durability,
            cache_mb: store.cache_mb,
            node_cache_mb: store.node_cache_mb,
            broadcast_capacity: store.broadcast_capacity,
            commit_delay: store.commit_delay,
            sync: SyncConfig::default(),
            log_format: LogFormat::default(),
            limits: Limits::default(),
            header_timeout: accept.header_timeout,
            max_connections: accept.max_connections,
            tls: None,
            rate_limit: DEFAULT_RATE_LIMIT,
            auth_failure_rate: DEFAULT_AUTH_FAILURE_RATE,
            cors_origins: Vec::new(),
        }
    }

    /// Resolves `arbor serve`'s flags and variables over the TOML file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
        ServeConfig::resolve_layers(
            args.base.config.as_deref(),
            Layer {
                data: args.base.data.clone(),
                store: args.store.clone(),
                sinks: args.sinks.clone(),
                http: args.http.clone(),
            },
        )
    }

    fn resolve_layers(file: Option<&Path>, flags: Layer) -> Result<ServeConfig, ConfigError> {
        let layer = match file {
            Some(path) => flags.or(Layer::from_file(path)?),
            None => flags,
        };
        let d = ServeConfig::new(Path::new(DEFAULT_DATA_DIR), DEFAULT_LISTEN);
        let Layer {
            data,
            store,
            sinks,
            http,
        } = layer;
        let neo4j_user = sinks.neo4j_user;
        let neo4j_password = sinks.neo4j_password;
        let sync = SyncConfig {
            redis_url: sinks.redis_url,
            postgres_url: sinks.postgres_url,
            postgres_schema: sinks.postgres_schema.unwrap_or(d.sync.postgres_schema),
            neo4j: sinks.neo4j_url.map(|url| Neo4jConfig {
                url,
                user: neo4j_user.unwrap_or_else(|| DEFAULT_NEO4J_USER.to_owned()),
                password: neo4j_password.unwrap_or_default(),
            }),
            redis_maxlen: sinks.redis_maxlen.unwrap_or(d.sync.redis_maxlen),
            redis_message_shape: sinks
                .redis_message_shape
                .map_or(d.sync.redis_message_shape, Into::into),
            lag_bound: sinks.sink_lag_bound.map_or(d.sync.lag_bound, |t| t.0),
            anti_entropy_interval: sinks
                .anti_entropy_interval
                .map_or(d.sync.anti_entropy_interval, |t| t.0),
            anti_entropy_budget: sinks
                .anti_entropy_budget
                .unwrap_or(d.sync.anti_entropy_budget),
            ..d.sync
        };
        let limits = Limits {
            max_content_bytes: http.max_content_bytes.unwrap_or(d.limits.max_content_bytes),
            max_body_bytes: http.max_body_bytes.unwrap_or(d.limits.max_body_bytes),
            max_batch_nodes: http.max_batch_nodes.unwrap_or(d.limits.max_batch_nodes),
            sse_heartbeat: http
                .sse_heartbeat_secs
                .map_or(d.limits.sse_heartbeat, Duration::from_secs),
            request_timeout: http
                .request_timeout
                .map_or(d.limits.request_timeout, |t| t.0),
            max_payload_bytes: http.max_payload_bytes.unwrap_or(d.limits.max_payload_bytes),
            max_metadata_bytes: http
                .max_metadata_bytes
                .unwrap_or(d.limits.max_metadata_bytes),
            sse_retry: http
                .sse_retry_ms
                .map_or(d.limits.sse_retry, Duration::from_millis),
            sse_coalesce: http
                .sse_coalesce_ms
                .map_or(d.limits.sse_coalesce, Duration::from_millis),
        };
        if limits.sse_heartbeat.is_zero() {
            return Err(ConfigError::Invalid(
                "sse heartbeat must be at least 1 s".into(),
            ));
        }
        if limits.request_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "request timeout must be more than 0".into(),
            ));
        }
        let header_timeout = http.header_timeout.map_or(d.header_timeout, |t| t.0);
        if header_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "header timeout must be more than 0".into(),
            ));
        }
        let max_connections = http.max_connections.unwrap_or(d.max_connections);
        if max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max connections must be at least 1".into(),
            ));
        }
        let tls = match (http.tls_cert, http.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert and tls_key go together: give both or neither".into(),
                ))
            }
        };
        let rate_limit = http.rate_limit.map_or(d.rate_limit, |r| r.0);
        let auth_failure_rate = http.auth_failure_rate.map_or(d.auth_failure_rate, |r| r.0);
        let cors_origins = http
            .cors_origin
            .unwrap_or_default()
            .iter()
            .map(|o| crate::http::cors::parse_origin(o.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::Invalid)?;
        Ok(ServeConfig {
            data_dir: data.data_dir.unwrap_or(d.data_dir),
            listen: http.listen.unwrap_or(d.listen),
            durability: store.durability.map_or(d.durability, Durability::from),
            cache_mb: store.cache_mb.unwrap_or(d.cache_mb),
            node_cache_mb: store.node_cache_mb.unwrap_or(d.node_cache_mb),
            broadcast_capacity: store.broadcast_capacity.unwrap_or(d.broadcast_capacity),
            commit_delay: store
                .commit_delay_us
                .map_or(d.commit_delay, Duration::from_micros),
            sync,
            log_format: http.log_format.unwrap_or(d.log_format),
            limits,
            header_timeout,
            max_connections,
            tls,
            rate_limit,
            auth_failure_rate,
            cors_origins,
        })
    }
}

/// The start-up line: what runs where, with every password masked.
impl fmt::Display for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "data_dir={} listen={} durability={:?} cache_mb={} node_cache_mb={} \
             broadcast_capacity={} commit_delay={:?} request_timeout={:?} tls={} \
             rate_limit={}/s sinks=[",
            self.data_dir.display(),
            self.listen,
            self.durability,
            self.cache_mb,
            self.node_cache_mb,
            self.broadcast_capacity,
            self.commit_delay,
            self.limits.request_timeout,
            if self.tls.is_some() { "on" } else { "off" },
            self.rate_limit,
        )?;
        let s = &self.sync;
        let mut sep = "";
        if let Some(url) = &s.redis_url {
            write!(f, "redis {}", redact_urls(url))?;
            sep = ", ";
        }
        if let Some(url) = &s.postgres_url {
            write!(
                f,
                "{sep}postgres {} schema {}",
                redact_urls(url),
                s.postgres_schema
            )?;
            sep = ", ";
        }
        if let Some(n) = &s.neo4j {
            write!(f, "{sep}neo4j {} user {}", redact_urls(&n.url), n.user)?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("arbor.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn with_file(path: &Path) -> ServeArgs {
        ServeArgs {
            base: BaseArgs {
                config: Some(path.to_path_buf()),
                ..BaseArgs::default()
            },
            ..ServeArgs::default()
        }
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "listen = \"127.0.0.1:9000\"\ncache_mb = 64\ndurability = \"none\"\nnode_cache_mb = 8\n\
             commit_delay_us = 250\n",
        );
        let mut args = with_file(&path);
        args.store.cache_mb = Some(32);
        let cfg = ServeConfig::resolve(&args).unwrap();
        assert_eq!(cfg.cache_mb, 32, "flag wins");
        assert_eq!(cfg.node_cache_mb, 8, "file beats default");
        assert_eq!(
            cfg.commit_delay,
            Duration::from_micros(250),
            "file beats default"
        );
        let mut args = with_file(&path);
        args.store.node_cache_mb = Some(0);
        assert_eq!(ServeConfig::resolve(&args).unwrap().node_cache_mb, 0);
        assert_eq!(
            ServeConfig::resolve(&ServeArgs::default())
                .unwrap()
                .node_cache_mb,
            256
        );
        assert_eq!(cfg.listen.port(), 9000, "file beats default");
        assert_eq!(cfg.durability, Durability::None);
        assert_eq!(cfg.data_dir, PathBuf::from(DEFAULT_DATA_DIR), "default");
    }

    #[test]
    fn the_defaults_are_the_owners_defaults() {
        let cfg = ServeConfig::resolve(&ServeArgs::default()).unwrap();
        let store = StoreOptions::default();
        assert_eq!(cfg.cache_mb, store.cache_mb);
        assert_eq!(cfg.node_cache_mb, store.node_cache_mb);
        assert_eq!(cfg.broadcast_capacity, store.broadcast_capacity);
        assert_eq!(cfg.commit_delay, store.commit_delay);
        assert_eq!(cfg.durability, store.durability);
        assert_eq!(
            cfg.sync.postgres_schema,
            SyncConfig::default().postgres_schema
        );
        assert_eq!(cfg.sync.sink_names(), Vec::<&str>::new());
        assert_eq!(cfg.sync.redis_maxlen, SyncConfig::default().redis_maxlen);
        assert_eq!(cfg.listen, DEFAULT_LISTEN);
        assert_eq!(cfg.limits.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn offline_subcommands_read_the_same_file_as_serve() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "data_dir = \"/srv/arbor\"\nredis_url = \"redis://127.0.0.1:6379/\"\n\
             postgres_url = \"postgres://a@h/db\"\npostgres_schema = \"replica\"\n\
             neo4j_url = \"bolt://h:7687\"\nneo4j_password = \"pw\"\ncache_mb = 1\n\
             redis_maxlen = 0\nredis_message_shape = \"seeds\"\n",
        );
        let base = BaseArgs {
            config: Some(path.clone()),
            data: DataArgs::default(),
        };
        let flags = SinkArgs {
            postgres_schema: Some("flagged".into()),
            ..SinkArgs::default()
        };
        let offline = base.resolve(Some(&flags)).unwrap();
        let served = ServeConfig::resolve(&with_file(&path)).unwrap();
        assert_eq!(offline.data_dir, PathBuf::from("/srv/arbor"));
        assert_eq!(offline.data_dir, served.data_dir);
        assert_eq!(offline.sync.sink_names(), ["redis", "postgres", "neo4j"]);
        assert_eq!(offline.sync.sink_names(), served.sync.sink_names());
        assert_eq!(offline.sync.postgres_schema, "flagged", "flag wins");
        assert_eq!(served.sync.postgres_schema, "replica");
        assert_eq!(offline.sync.redis_maxlen, 0, "0: unbounded streams");
        assert_eq!(offline.sync.redis_message_shape, MessageShape::Seeds);
        let neo4j = offline.sync.neo4j.as_ref().unwrap();
        assert_eq!(
            (neo4j.user.as_str(), neo4j.password.as_str()),
            ("neo4j", "pw")
        );
    }

    #[test]
    fn durations_parse_with_units() {
        let p = |s: &str| s.parse::<HumanDuration>().map(|d| d.0);
        assert_eq!(p("30"), Ok(Duration::from_secs(30)));
        assert_eq!(p("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(p("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(p("2m"), Ok(Duration::from_secs(120)));
        assert!(p("2h").is_err());
        assert!(p("s").is_err());
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("request_timeout = 5\n", Duration::from_secs(5)),
            ("request_timeout = \"750ms\"\n", Duration::from_millis(750)),
        ] {
            let cfg = ServeConfig::resolve(&with_file(&write(&dir, text))).unwrap();
            assert_eq!(cfg.limits.request_timeout, want, "{text}");
        }
        let cfg = ServeConfig::resolve(&with_file(&write(&dir, "request_timeout = \"0s\"\n")));
        assert!(matches!(cfg, Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn unknown_or_broken_file_settings_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "lisen = \"127.0.0.1:1\"\n");
        match ServeConfig::resolve(&with_file(&path)) {
            Err(ConfigError::Parse { message, .. }) => assert!(message.contains("lisen")),
            other => panic!("{other:?}"),
        }
        let path = write(&dir, "cache_mb = \"lots\"\n");
        match ServeConfig::resolve(&with_file(&path)) {
            Err(ConfigError::Parse { message, .. }) => {
                assert!(message.starts_with("line 1, column 12: "), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let args = with_file(&dir.path().join("missing.toml"));
        assert!(matches!(
            ServeConfig::resolve(&args),
            Err(ConfigError::Read { .. })
        ));
    }

    /// Secrets given by flag or by file appear nowhere: not in the `Debug` of the flags
    /// or of the resolved configuration, not in the start-up line (`Display`), not in an
    /// error about the file.
    #[test]
    fn secrets_are_never_printed() {
        const SECRETS: [&str; 4] = ["redis-pw-1", "pg-pw-2", "neo-pw-3", "bolt-pw-4"];
        let check = |what: &str, text: &str| {
            for s in SECRETS {
                assert!(!text.contains(s), "{what} shows {s}: {text}");
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "postgres_url = \"postgres://arbor:pg-pw-2@db:5432/x\"\n\
             neo4j_url = \"bolt://neo4j:bolt-pw-4@graph:7687\"\n",
        );
        let mut args = with_file(&path);
        args.sinks.redis_url = Some("redis://:redis-pw-1@cache:6379/0".into());
        args.sinks.neo4j_password = Some("neo-pw-3".into());
        let cfg = ServeConfig::resolve(&args).unwrap();
        assert_eq!(cfg.sync.sink_names(), ["redis", "postgres", "neo4j"]);
        assert_eq!(cfg.sync.neo4j.as_ref().unwrap().password, "neo-pw-3");
        check("Debug of the flags", &format!("{args:?}"));
        check("Debug of the config", &format!("{cfg:?}"));
        check("Debug of the config", &format!("{cfg:#?}"));
        let line = cfg.to_string();
        check("the start-up line", &line);
        assert!(line.contains("redis redis://:***@cache:6379/0"), "{line}");
        assert!(line.contains("neo4j bolt://neo4j:***@graph:7687 user neo4j"));

        // A file whose secrets are of the wrong type, or beside a bad value.
        for text in [
            "neo4j_password = 12345678\n",
            "neo4j_password = \"neo-pw-3\"\nneo4j_url = [\"neo-pw-3\"]\n",
            "postgres_url = \"postgres://u:pg-pw-2@h/db\"\nredis_url = 7\n\
             neo4j_url = \"bolt://u:bolt-pw-4@h\"\nneo4j_user = 1\n",
        ] {
            let err = ServeConfig::resolve(&with_file(&write(&dir, text))).unwrap_err();
            let shown = format!("{err} {err:?}");
            check("a config error", &shown);
            assert!(!shown.contains("12345678"), "{shown}");
        }
    }
}
