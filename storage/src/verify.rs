//! `arbor verify`: re-checks everything the store promises, from the bytes on disk.
//!
//! In order, stopping at the first problem:
//! 1. the log: keys are seqs 1, 2, 3… with no gap; each record decodes, carries its own
//!    seq, links to the previous hash and hashes to what it says (the chain);
//! 2. content: every node's content is present (its `text` entry, else the `content`
//!    entry of its hash) and hashes to the hash its record carries; every `text` entry
//!    belongs to a node; every `content` blob hashes to its key;
//! 3. the graph: a fresh index rebuilt from the log accepts every record (tree shape,
//!    depths, branch ids, edge rules, every workflow, node and event id used once), and
//!    matches the live index when one is given.
//!
//! (The id → seq and workflow → events maps are the index's, rebuilt from the log at
//! every open; there are no trees of them on disk to check.)

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use crate::error::StorageError;
use crate::index::Index;
use crate::log::Engine;
use crate::model::Seq;
use crate::record::{hex, Hash, Record, ZERO_HASH};
use crate::store::Store;

/// What a clean verify counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events in the log.
    pub events: u64,
    /// Workflows.
    pub workflows: usize,
    /// Nodes.
    pub nodes: usize,
    /// Content entries: one per node with small content, one per distinct large blob.
    pub content_blobs: usize,
}

/// The first inconsistency found.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The data is inconsistent.
    #[error("{0}")]
    Problem(String),
    /// The store could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn problem<T>(msg: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError::Problem(msg.into()))
}

/// Verifies the store in `dir` (which no server may have open).
pub fn verify_dir(dir: &Path) -> Result<VerifyReport, VerifyError> {
    if !dir.join("db").exists() {
        return problem(format!("{} holds no arbor store", dir.display()));
    }
    let engine = Engine::open(dir, 64 * 1024 * 1024)?;
    verify_engine(&engine, None)
}

/// Verifies an open store, comparing the rebuilt index with its live one.
pub fn verify_store(store: &Store) -> Result<VerifyReport, VerifyError> {
    verify_engine(store.engine(), Some(store.index_counts()))
}

fn verify_engine(
    engine: &Engine,
    live: Option<(usize, usize, Seq)>,
) -> Result<VerifyReport, VerifyError> {
    let mut prev = ZERO_HASH;
    let mut expected_seq: Seq = 1;
    let mut index = Index::new();
    let mut referenced: HashSet<Hash> = HashSet::new();
    let mut texts = 0usize;
    let mut legacy_texts = 0usize;
    for kv in engine.scan(0) {
        let (seq, entry) = kv?;
        if seq != expected_seq {
            return problem(format!("log gap: expected seq {expected_seq}, found {seq}"));
        }
        let r = Record::decode(&entry.record).or_else(|e| problem(format!("seq {seq}: {e}")))?;
        if r.seq != seq {
            return problem(format!("seq {seq}: record says seq {}", r.seq));
        }
        if r.prev_hash != prev {
            return problem(format!(
                "seq {seq}: prev_hash {} does not match the hash of seq {} ({})",
                hex(&r.prev_hash),
                seq - 1,
                hex(&prev)
            ));
        }
        let h = r.compute_hash()?;
        if h != r.hash {
            return problem(format!(
                "seq {seq}: stored hash {} but content hashes to {} (tampered or corrupt)",
                hex(&r.hash),
                hex(&h)
            ));
        }
        if entry.text.is_some() && r.created_node().is_none() {
            return problem(format!(
                "seq {seq}: content kept with a record that creates no node"
            ));
        }
        if let Some(n) = r.created_node() {
            let legacy = match &entry.text {
                Some(_) => None,
                None => engine.legacy_text(seq)?,
            };
            if let Some(text) = entry.text.as_ref().or(legacy.as_ref()) {
                texts += 1;
                legacy_texts += usize::from(legacy.is_some());
                if blake3::hash(text).as_bytes() != &n.content_hash {
                    return problem(format!(
                        "content: the text of seq {seq} does not hash to {} (corrupt)",
                        hex(&n.content_hash)
                    ));
                }
            } else if referenced.insert(n.content_hash) && !engine.has_content(&n.content_hash)? {
                return problem(format!(
                    "content: seq {seq} references {} which is missing",
                    hex(&n.content_hash)
                ));
            }
        }
        index
            .apply(&r)
            .or_else(|e| problem(format!("graph: {e}")))?;
        prev = r.hash;
        expected_seq += 1;
    }
    let events = expected_seq - 1;
    if engine.legacy_text_len() != legacy_texts {
        return problem(format!(
            "content: {} text entries but {legacy_texts} nodes have one (entries at seqs that create no node, or that keep their content in the log)",
            engine.legacy_text_len()
        ));
    }
    let mut blobs = texts;
    for kv in engine.scan_content() {
        let (k, v) = kv?;
        blobs += 1;
        if blake3::hash(&v).as_bytes()[..] != k[..] {
            return problem(format!(
                "content: blob under {} does not hash to its key",
                hex_slice(&k)
            ));
        }
    }
    if let Some((nodes, workflows, head)) = live {
        if (nodes, workflows, head) != (index.node_count(), index.workflow_count(), events) {
            return problem(format!(
                "live index has {nodes} nodes / {workflows} workflows at seq {head}; the log rebuilds {} / {} at seq {events}",
                index.node_count(),
                index.workflow_count()
            ));
        }
    }
    Ok(VerifyReport {
        events,
        workflows: index.workflow_count(),
        nodes: index.node_count(),
        content_blobs: blobs,
    })
}

fn hex_slice(k: &[u8]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}
