//! [`NodeCache`]: a bounded, sharded cache of decoded nodes, keyed by the seq of the
//! event that created them.
//!
//! Loading a node from disk costs a sled get of its record, an rmp decode and a
//! second sled get of its content (several µs); the index walk that finds it costs
//! nanoseconds. Reads of paths, subtrees, branches, decisions and monitors therefore
//! go through this cache.
//!
//! # Why a cached node is never stale
//! A [`Node`] is immutable once its event is in the log: every field of it (content,
//! payload, metadata, branch, depth, seq, time) is fixed at append. What changes later
//! (workflow status, chosen options, edges, children) is not part of [`Node`]; the
//! reads that return it (`WorkflowSummary`, `Decision::chosen`, `NodeWithEdges`'s
//! edges) build it from the index on every read. A seq is never reused, so a key always
//! names the same node. The store only inserts nodes at or below the durable head.
//!
//! # Eviction
//! The cache is split into [`SHARDS`] shards by seq, each with its share of the byte
//! budget, a map from seq to slot and a CLOCK ring: a hit sets the slot's reference
//! bit under the shard's read lock (hits on different nodes of one shard run in
//! parallel); an insert takes the write lock and sweeps the hand, clearing set bits
//! and evicting the first slot whose bit is clear, until the new node fits.
//! Sizes are approximate: the node's heap bytes (content, type, ids, payload and
//! metadata walked recursively) plus [`ENTRY_OVERHEAD`].

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Map, Value};

use crate::model::{Node, Seq};

/// Number of shards (a power of two).
pub const SHARDS: usize = 16;

/// Fixed bytes charged per entry on top of the node's own: the `Arc` header, the
/// slot, the map entry and slack for allocator rounding.
pub const ENTRY_OVERHEAD: usize = 96;

/// Counters of the decoded-node cache, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to go to disk.
    pub misses: u64,
    /// Nodes inserted.
    pub inserts: u64,
    /// Nodes evicted to stay within the budget.
    pub evictions: u64,
    /// Approximate bytes held now.
    pub bytes: u64,
    /// Nodes held now.
    pub entries: u64,
    /// The byte budget (0: the cache is disabled).
    pub capacity: u64,
}

struct Slot {
    seq: Seq,
    node: Arc<Node>,
    size: usize,
    referenced: AtomicBool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Seq, usize>,
    ring: Vec<Slot>,
    hand: usize,
    used: usize,
}

impl Shard {
    /// Evicts the slot at `i` (swap-remove: the last slot takes its place).
    fn evict_at(&mut self, i: usize) -> usize {
        let gone = self.ring.swap_remove(i);
        self.map.remove(&gone.seq);
        if let Some(moved) = self.ring.get(i) {
            self.map.insert(moved.seq, i);
        }
        self.used -= gone.size;
        gone.size
    }
}

/// A bounded cache of decoded nodes by seq. See the [module docs](self).
pub struct NodeCache {
    shards: Box<[RwLock<Shard>]>,
    shard_budget: usize,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl NodeCache {
    /// A cache holding about `budget_bytes` of nodes; 0 disables it (every lookup
    /// misses, nothing is kept).
    pub fn new(budget_bytes: u64) -> NodeCache {
        let shard_budget = usize::try_from(budget_bytes / SHARDS as u64).unwrap_or(usize::MAX);
        NodeCache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            shard_budget,
            capacity: if shard_budget == 0 { 0 } else { budget_bytes },
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }

    /// A cache of `mb` MiB (0 disables it).
    pub fn with_mb(mb: u64) -> NodeCache {
        NodeCache::new(mb.saturating_mul(1024 * 1024))
    }

    /// Whether the cache keeps anything.
    pub fn enabled(&self) -> bool {
        self.shard_budget > 0
    }

    fn shard(&self, seq: Seq) -> &RwLock<Shard> {
        // Seqs are dense: consecutive nodes land in different shards.
        &self.shards[(seq as usize) & (SHARDS - 1)]
    }

    /// The node created at `seq`, if cached (counts a hit or a miss).
    pub fn get(&self, seq: Seq) -> Option<Arc<Node>> {
        if !self.enabled() {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let found = {
            let shard = self.shard(seq).read();
            shard.map.get(&seq).map(|&i| {
                let slot = &shard.ring[i];
                slot.referenced.store(true, Ordering::Relaxed);
                slot.node.clone()
            })
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches `node`, created at `seq`, evicting others if the shard is over its
    /// budget. A node larger than a shard's budget is not kept. Inserting a seq that
    /// is already cached keeps the cached node (nodes are immutable).
    pub fn insert(&self, seq: Seq, node: Arc<Node>) {
        if !self.enabled() {
            return;
        }
        let size = node_size(&node);
        if size > self.shard_budget {
            return;
        }
        let mut shard = self.shard(seq).write();
        if shard.map.contains_key(&seq) {
            return;
        }
        let (mut freed, mut evicted) = (0usize, 0u64);
        while shard.used + size > self.shard_budget && !shard.ring.is_empty() {
            if shard.hand >= shard.ring.len() {
                shard.hand = 0;
            }
            let hand = shard.hand;
            if shard.ring[hand].referenced.swap(false, Ordering::Relaxed) {
                shard.hand += 1;
            } else {
                freed += shard.evict_at(hand);
                evicted += 1;
            }
        }
        let i = shard.ring.len();
        shard.ring.push(Slot {
            seq,
            node,
            size,
            referenced: AtomicBool::new(false),
        });
        shard.map.insert(seq, i);
        shard.used += size;
        drop(shard);
        self.inserts.fetch_add(1, Ordering::Relaxed);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.entries.fetch_sub(evicted, Ordering::Relaxed);
        self.bytes.fetch_add(size as u64, Ordering::Relaxed);
        self.bytes.fetch_sub(freed as u64, Ordering::Relaxed);
    }

    /// Counters and sizes now.
    pub fn stats(&self) -> NodeCacheStats {
        NodeCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            capacity: self.capacity,
        }
    }
}

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Approximate bytes a cached node holds: [`ENTRY_OVERHEAD`], the `Node` itself and
/// its heap (strings by capacity, payload and metadata walked).
pub fn node_size(n: &Node) -> usize {
    ENTRY_OVERHEAD
        + size_of::<Node>()
        + n.node_type.capacity()
        + n.content.capacity()
        + n.agent_id.as_ref().map_or(0, String::capacity)
        + n.user_id.as_ref().map_or(0, String::capacity)
        + value_heap(&n.payload)
        + map_heap(&n.metadata)
}

fn map_heap(m: &Map<String, Value>) -> usize {
    m.iter()
        .map(|(k, v)| {
            // Key string, value, and roughly a B-tree slot per entry.
            k.capacity() + size_of::<String>() + size_of::<Value>() + value_heap(v)
        })
        .sum()
}

fn value_heap(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => s.capacity(),
        Value::Array(a) => a
            .iter()
            .map(|x| size_of::<Value>() + value_heap(x))
            .sum::<usize>(),
        Value::Object(m) => map_heap(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use uuid::Uuid;

    fn node(seq: Seq, content_len: usize) -> Arc<Node> {
        Arc::new(Node {
            id: Uuid::now_v7(),
            workflow_id: Uuid::nil(),
            parent_id: None,
            node_type: "message".into(),
            role: None,
            content: "x".repeat(content_len),
            payload: Value::Null,
            metadata: Map::new(),
            agent_id: None,
            user_id: None,
            branch_id: Uuid::nil(),
            depth: 0,
            seq,
            timestamp: Timestamp(0),
        })
    }

    #[test]
    fn hits_after_insert_and_counts() {
        let c = NodeCache::new(1 << 20);
        assert!(c.get(1).is_none());
        let n = node(1, 10);
        c.insert(1, n.clone());
        let got = c.get(1).unwrap_or_else(|| panic!("cached node missing"));
        assert!(Arc::ptr_eq(&got, &n));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.entries), (1, 1, 1, 1));
        assert_eq!(s.bytes as usize, node_size(&n));
        // A second insert of the same seq keeps the first node.
        c.insert(1, node(1, 10));
        assert!(Arc::ptr_eq(&c.get(1).unwrap_or_else(|| panic!()), &n));
        assert_eq!(c.stats().entries, 1);
    }

    #[test]
    fn budget_is_respected_and_old_nodes_are_evicted() {
        let one = node_size(&node(0, 1000));
        // Room for about 8 nodes per shard.
        let budget = (one * 8 * SHARDS) as u64;
        let c = NodeCache::new(budget);
        for seq in 1..=10_000u64 {
            c.insert(seq, node(seq, 1000));
            assert!(c.stats().bytes <= budget, "over budget at {seq}");
        }
        let s = c.stats();
        assert!(s.evictions > 0);
        assert_eq!(s.inserts - s.evictions, s.entries);
        assert!(s.entries <= (8 * SHARDS) as u64, "{s:?}");
        assert!(s.entries >= (7 * SHARDS) as u64, "{s:?}");
        // The newest nodes are there, the oldest are gone.
        assert!(c.get(10_000).is_some());
        assert!(c.get(1).is_none());
        // Per-shard accounting adds up to the global figure.
        let used: usize = c.shards.iter().map(|s| s.read().used).sum();
        assert_eq!(used as u64, s.bytes);
        let held: usize = c.shards.iter().map(|s| s.read().ring.len()).sum();
        assert_eq!(held as u64, s.entries);
    }

    #[test]
    fn clock_keeps_recently_used_nodes() {
        let one = node_size(&node(0, 100));
        // 4 nodes per shard; use only shard 0 (seqs multiple of SHARDS).
        let c = NodeCache::new((one * 4 * SHARDS) as u64);
        let s = SHARDS as u64;
        for k in 1..=4 {
            c.insert(k * s, node(k * s, 100));
        }
        // Touch the first; the next insert must evict another one.
        assert!(c.get(s).is_some());
        c.insert(5 * s, node(5 * s, 100));
        assert!(c.get(s).is_some(), "recently used node evicted");
        assert!(c.get(5 * s).is_some());
        assert_eq!(c.stats().entries, 4);
        // Map and ring agree after swap-removes.
        let shard = c.shards[0].read();
        for (seq, &i) in &shard.map {
            assert_eq!(shard.ring[i].seq, *seq);
        }
    }

    #[test]
    fn oversized_nodes_and_disabled_cache_keep_nothing() {
        let c = NodeCache::new((node_size(&node(0, 10)) * SHARDS) as u64);
        c.insert(1, node(1, 10_000));
        assert!(c.get(1).is_none());
        assert_eq!(c.stats().bytes, 0);
        let off = NodeCache::new(0);
        assert!(!off.enabled());
        off.insert(1, node(1, 1));
        assert!(off.get(1).is_none());
        let s = off.stats();
        assert_eq!((s.entries, s.bytes, s.capacity, s.misses), (0, 0, 0, 1));
    }

    #[test]
    fn sizes_count_payload_and_metadata() {
        let plain = node(1, 0);
        let mut rich = (*plain).clone();
        rich.payload = serde_json::json!({"a": ["x".repeat(500), 1, null]});
        rich.metadata
            .insert("k".into(), Value::String("y".repeat(300)));
        assert!(node_size(&rich) >= node_size(&plain) + 800);
    }
}
