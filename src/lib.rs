//! arbor: a store for branching AI-agent workflows, as one binary.
//!
//! # Layout
//! - [`cli`]: the command line (`serve`, `import`, `export`, `verify`).
//! - [`config`]: flags > `ARBOR_*` env > TOML file > defaults.
//! - [`server`]: starts the store, the sync workers and HTTP; graceful shutdown.
//! - [`http`]: the DESIGN §4 API: routes, SSE, health, problem+json errors.
//! - [`metrics`]: Prometheus metrics.
//! - [`portable`]: JSONL import/export of workflows.
//! - [`sinks`]: the seam to the sync workers of `arbor-sync`.
//!
//! The storage engine lives in `arbor-storage` (log, index, verify); replication
//! in `arbor-sync`. Only this crate knows axum and HTTP.

pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod portable;
pub mod server;
pub mod sinks;
