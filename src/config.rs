//! Server configuration: flags, then `ARBOR_*` environment variables (both through
//! clap), then an optional TOML file, then defaults — in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use arbor_storage::Durability;

use crate::http::Limits;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data/db";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

/// `--durability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityArg {
    /// Flush and fdatasync each group before acknowledging.
    Fsync,
    /// Acknowledge before the flush (throwaway runs, benchmarks).
    None,
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

/// Flags of `arbor serve` (each also readable from its `ARBOR_*` variable).
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (lowest precedence but defaults).
    #[arg(long, env = "ARBOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./data/db].
    #[arg(long, env = "ARBOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:7700].
    #[arg(long, env = "ARBOR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Durability of acknowledged appends [default: fsync].
    #[arg(long, env = "ARBOR_DURABILITY", value_enum)]
    pub durability: Option<DurabilityArg>,
    /// sled page cache in MiB [default: 256].
    #[arg(long, env = "ARBOR_CACHE_MB")]
    pub cache_mb: Option<u64>,
    /// Cache of decoded nodes (path, subtree, … reads) in MiB; 0 disables it
    /// [default: 256].
    #[arg(long, env = "ARBOR_NODE_CACHE_MB")]
    pub node_cache_mb: Option<u64>,
    /// Redis URL for the streaming sink.
    #[arg(long, env = "ARBOR_REDIS_URL")]
    pub redis_url: Option<String>,
    /// PostgreSQL URL for the table sink.
    #[arg(long, env = "ARBOR_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// PostgreSQL schema of the replica tables [default: public].
    #[arg(long, env = "ARBOR_POSTGRES_SCHEMA")]
    pub postgres_schema: Option<String>,
    /// Neo4j Bolt URL for the graph sink.
    #[arg(long, env = "ARBOR_NEO4J_URL")]
    pub neo4j_url: Option<String>,
    /// Neo4j user.
    #[arg(long, env = "ARBOR_NEO4J_USER")]
    pub neo4j_user: Option<String>,
    /// Neo4j password.
    #[arg(long, env = "ARBOR_NEO4J_PASSWORD", hide_env_values = true)]
    pub neo4j_password: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "ARBOR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Largest node content in bytes [default: 1 MiB].
    #[arg(long, env = "ARBOR_MAX_CONTENT_BYTES")]
    pub max_content_bytes: Option<usize>,
    /// Largest request body in bytes [default: 16 MiB].
    #[arg(long, env = "ARBOR_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most nodes per batch [default: 10000].
    #[arg(long, env = "ARBOR_MAX_BATCH_NODES")]
    pub max_batch_nodes: Option<usize>,
    /// SSE heartbeat interval in seconds [default: 15].
    #[arg(long, env = "ARBOR_SSE_HEARTBEAT_SECS")]
    pub sse_heartbeat_secs: Option<u64>,
    /// In-memory event broadcast capacity; slower SSE readers catch up from the log
    /// [default: 4096].
    #[arg(long, env = "ARBOR_BROADCAST_CAPACITY")]
    pub broadcast_capacity: Option<usize>,
}

/// The TOML file: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    durability: Option<DurabilityArg>,
    cache_mb: Option<u64>,
    node_cache_mb: Option<u64>,
    redis_url: Option<String>,
    postgres_url: Option<String>,
    postgres_schema: Option<String>,
    neo4j_url: Option<String>,
    neo4j_user: Option<String>,
    neo4j_password: Option<String>,
    log_format: Option<LogFormat>,
    max_content_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    max_batch_nodes: Option<usize>,
    sse_heartbeat_secs: Option<u64>,
    broadcast_capacity: Option<usize>,
}

/// Errors of configuration loading.
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
    /// The TOML file is invalid.
    #[error("parsing config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A combination of settings is not allowed.
    #[error("{0}")]
    Invalid(String),
}

/// Neo4j connection settings.
#[derive(Clone, Debug)]
pub struct Neo4jSettings {
    /// Bolt URL.
    pub url: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
}

/// The resolved server configuration.
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
    /// Redis sink URL.
    pub redis_url: Option<String>,
    /// PostgreSQL sink URL.
    pub postgres_url: Option<String>,
    /// PostgreSQL schema of the replica tables.
    pub postgres_schema: String,
    /// Neo4j sink.
    pub neo4j: Option<Neo4jSettings>,
    /// Log format.
    pub log_format: LogFormat,
    /// Request limits.
    pub limits: Limits,
    /// Broadcast capacity.
    pub broadcast_capacity: usize,
}

impl ServeConfig {
    /// A configuration with every default, data in `data_dir`, listening on `listen`.
    pub fn new(data_dir: &Path, listen: SocketAddr) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.to_path_buf(),
            listen,
            durability: Durability::Fsync,
            cache_mb: 256,
            node_cache_mb: 256,
            redis_url: None,
            postgres_url: None,
            postgres_schema: "public".into(),
            neo4j: None,
            log_format: LogFormat::Text,
            limits: Limits::default(),
            broadcast_capacity: 4096,
        }
    }

    /// Resolves flags/env over the TOML file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let default_listen: SocketAddr = DEFAULT_LISTEN
            .parse()
            .map_err(|_| ConfigError::Invalid("bad default listen address".into()))?;
        let defaults = ServeConfig::new(Path::new(DEFAULT_DATA_DIR), default_listen);
        let d = Limits::default();
        let neo4j_url = args.neo4j_url.clone().or(file.neo4j_url);
        let neo4j = neo4j_url.map(|url| Neo4jSettings {
            url,
            user: args
                .neo4j_user
                .clone()
                .or(file.neo4j_user.clone())
                .unwrap_or_else(|| "neo4j".into()),
            password: args
                .neo4j_password
                .clone()
                .or(file.neo4j_password.clone())
                .unwrap_or_default(),
        });
        let durability = match args.durability.or(file.durability) {
            Some(DurabilityArg::None) => Durability::None,
            Some(DurabilityArg::Fsync) | None => Durability::Fsync,
        };
        let cfg = ServeConfig {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(defaults.data_dir),
            listen: args.listen.or(file.listen).unwrap_or(defaults.listen),
            durability,
            cache_mb: args.cache_mb.or(file.cache_mb).unwrap_or(defaults.cache_mb),
            node_cache_mb: args
                .node_cache_mb
                .or(file.node_cache_mb)
                .unwrap_or(defaults.node_cache_mb),
            redis_url: args.redis_url.clone().or(file.redis_url),
            postgres_url: args.postgres_url.clone().or(file.postgres_url),
            postgres_schema: args
                .postgres_schema
                .clone()
                .or(file.postgres_schema)
                .unwrap_or(defaults.postgres_schema),
            neo4j,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            limits: Limits {
                max_content_bytes: args
                    .max_content_bytes
                    .or(file.max_content_bytes)
                    .unwrap_or(d.max_content_bytes),
                max_body_bytes: args
                    .max_body_bytes
                    .or(file.max_body_bytes)
                    .unwrap_or(d.max_body_bytes),
                max_batch_nodes: args
                    .max_batch_nodes
                    .or(file.max_batch_nodes)
                    .unwrap_or(d.max_batch_nodes),
                sse_heartbeat: args
                    .sse_heartbeat_secs
                    .or(file.sse_heartbeat_secs)
                    .map(Duration::from_secs)
                    .unwrap_or(d.sse_heartbeat),
                request_timeout: d.request_timeout,
            },
            broadcast_capacity: args
                .broadcast_capacity
                .or(file.broadcast_capacity)
                .unwrap_or(defaults.broadcast_capacity),
        };
        if cfg.limits.sse_heartbeat.is_zero() {
            return Err(ConfigError::Invalid(
                "sse heartbeat must be at least 1 s".into(),
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arbor.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ncache_mb = 64\ndurability = \"none\"\nnode_cache_mb = 8\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            cache_mb: Some(32),
            ..ServeArgs::default()
        };
        let cfg = ServeConfig::resolve(&args).unwrap();
        assert_eq!(cfg.cache_mb, 32, "flag wins");
        assert_eq!(cfg.node_cache_mb, 8, "file beats default");
        let args = ServeArgs {
            config: Some(path),
            node_cache_mb: Some(0),
            ..ServeArgs::default()
        };
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
    fn unknown_or_broken_file_settings_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        assert!(matches!(
            ServeConfig::resolve(&args),
            Err(ConfigError::Parse { .. })
        ));
        let args = ServeArgs {
            config: Some(dir.path().join("missing.toml")),
            ..ServeArgs::default()
        };
        assert!(matches!(
            ServeConfig::resolve(&args),
            Err(ConfigError::Read { .. })
        ));
    }
}
