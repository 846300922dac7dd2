//! arbor: a store for branching AI-agent workflows, as one binary.
//!
//! # Layout
//! - [`auth`]: access-control primitives: token secrets, roles, rate limits.
//! - [`cli`]: the command line (`serve`, `import`, `export`, `verify`, `sync`, …).
//! - [`config`]: every setting declared once; flags > `ARBOR_*` env > TOML file >
//!   defaults, the same for every subcommand; secrets masked wherever shown.
//! - [`server`]: starts the store, the sync workers and HTTP; graceful shutdown.
//! - [`http`]: the DESIGN §4 API: routes, SSE, health, problem+json errors; request
//!   spans and the request timeout around every route.
//! - [`listen`]: the accept loop: connection cap, header timeout, TLS.
//! - [`metrics`]: Prometheus metrics (recorded ones, and figures read from their
//!   owners at scrape time; every `_total` a counter).
//! - [`portable`]: JSONL import/export of workflows.
//! - [`sinks`]: the seam to the sync workers of `arbor-sync`.
//!
//! The storage engine lives in `arbor-storage` (log, index, verify); replication
//! in `arbor-sync`. Only this crate knows axum and HTTP.

pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod portable;
pub mod server;
pub mod sinks;
