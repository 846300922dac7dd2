//! arbor-storage: the durable event log, content store and in-memory workflow index.
//!
//! # API
//! Everything a caller uses is re-exported here; the modules are private. [`Store`] is
//! the handle: [`Store::submit`] an [`Intent`], read queries that return plain domain
//! results ([`WorkflowSummary`], [`NodeWithEdges`], [`Decision`], [`Monitor`],
//! [`BranchNodes`], [`BranchInfo`], nodes, and what a branch-scoped reader sees:
//! [`BranchScope`], [`NodePlace`]), the log ([`Store::read_events`],
//! [`Store::read_records`]), the broadcast ([`Store::subscribe`]) and head watch, sink
//! cursors and dead letters. [`verify_dir`] and [`verify_store`] re-check a store from
//! disk. The model types are the JSON form of DESIGN §2.
//!
//! # Layout
//! - `model`: nodes, edges, statuses and events (DESIGN §2), in their JSON form.
//! - `time`: microsecond timestamps, RFC 3339 on the wire.
//! - `json`: a node's JSON text written straight into a buffer (the same bytes as
//!   `serde_json`, faster): what appends answer and the node cache keeps.
//! - `record`: the on-disk event record and the BLAKE3 hash chain.
//! - `log`: the sled layer (the only module that knows sled): trees, group writes,
//!   the durable-flush protocol, cursors, dead letters.
//! - `index`: the petgraph index per workflow, derived from the log.
//! - `node_cache`: the bounded cache of decoded nodes that reads go through.
//! - `intent`: what callers ask for and what they get back.
//! - `validate`: turns intents into records against the index plus the group overlay.
//! - `admin`: the admin log (token events, own seqs and hash chain) and the token
//!   table derived from it; kept apart from the workflow log so that no replay, stream,
//!   export or sink can carry a secret hash.
//! - `store`: [`Store`], the handle: writer thread with group commit, reads, broadcast.
//! - `verify`: re-checks the chain, the content hashes and the graph from disk.
//! - `error`: [`StorageError`] (I/O, integrity) and [`AppendError`] (refused requests).
//!
//! # Invariants
//! - The log is the source of truth: seqs are gap-free from 1 and each record's hash
//!   chains to the previous one. The index (with its id → seq and workflow → events
//!   maps) and every sink are derived from it and can be rebuilt from it.
//! - An append is acknowledged only after its group is durable (with `Durability::Fsync`),
//!   and it is indexed and broadcast only after that: no reader ever sees an event that a
//!   crash could take back.
//! - A refused request stores nothing; an atomic batch is stored whole or not at all.
//! - This crate knows nothing of HTTP or of sinks.

mod admin;
mod error;
mod index;
mod intent;
mod json;
mod log;
mod model;
mod node_cache;
mod process;
mod record;
mod store;
mod time;
mod validate;
mod verify;

pub use admin::{AdminBody, AdminEvent, SecretDigest, Token, TokenError, TokenSpec};
pub use error::{AppendError, StorageError};
pub use index::{BranchInfo, BranchScope};
pub use intent::{edge_event_id, Intent, Meta, NewNode, NewWorkflow, Outcome};
pub use json::{node_json, write_node_json};
#[doc(hidden)]
pub use log::wait_for_sled_release;
pub use log::{log_entry, replace_log_value, LogEntry};
pub use model::{
    valid_node_type, Edge, EdgeKind, Event, EventBody, Node, PortableEvent, Role, Seq,
    StatusChanged, WorkflowCreated, WorkflowStatus,
};
pub use node_cache::{NodeCacheStats, RenderedNode};
pub use process::disable_transparent_huge_pages;
pub use record::{NodeRecord, Record, RecordBody};
pub use store::{
    BranchNodes, Decision, Durability, GroupObserver, GroupStats, ListFilter, Monitor, NodePlace,
    NodeWithEdges, Outline, OutlineNode, RebuildProgress, Store, StoreOptions, WorkflowSummary,
};
pub use time::Timestamp;
pub use verify::{verify_dir, verify_store, VerifyError, VerifyReport};
