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
//! metadata walked recursively) plus [`ENTRY_OVERHEAD`], and its JSON text once
//! rendered.
//!
//! # Rendered JSON
//! Reads that answer with whole nodes (path, children, subtree over HTTP) would
//! otherwise encode every node to JSON on every request, which costs far more than
//! the walk. [`NodeCache::get_rendered`] gives the node with its JSON text
//! ([`RenderedNode`]): rendered on the first such read of a cached node, kept in its
//! slot and charged to the budget ([`RENDERED_OVERHEAD`] plus the text's length),
//! dropped with the node on eviction. A node is immutable, so its text is never
//! stale. Reads that want only the decoded node ([`NodeCache::get`]) never render.

use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use serde_json::{Map, Value};

use crate::model::{Node, Seq};

/// Number of shards (a power of two).
pub const SHARDS: usize = 16;

/// Fixed bytes charged per entry on top of the node's own: the `Arc` header, the
/// slot, the map entry and slack for allocator rounding.
pub const ENTRY_OVERHEAD: usize = 96;

/// Fixed bytes charged for a node's rendered JSON on top of its length: the shared
/// slice's header and slack for allocator rounding.
pub const RENDERED_OVERHEAD: usize = 32;

/// A node and its JSON text: exactly what `serde_json::to_vec(&*node)` writes, so the
/// text can stand for the node in any JSON answer (an item of `{"nodes":[…]}`).
#[derive(Clone, Debug)]
pub struct RenderedNode {
    /// The decoded node.
    pub node: Arc<Node>,
    /// Its JSON text (compact, fields in declaration order).
    pub json: Arc<[u8]>,
}

impl RenderedNode {
    /// Renders `node`'s JSON text.
    pub fn render(node: Arc<Node>) -> Result<RenderedNode, serde_json::Error> {
        let json = crate::json::node_json(&node)?.into();
        Ok(RenderedNode { node, json })
    }
}

/// Bytes charged to the cache's budget for a node's JSON text.
fn text_size(json: &[u8]) -> usize {
    RENDERED_OVERHEAD + json.len()
}

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
    /// The node's JSON text, once a [`NodeCache::get_rendered`] asked for it.
    json: Option<Arc<[u8]>>,
    /// Bytes charged: the node's, plus its text's when rendered.
    size: usize,
    referenced: AtomicBool,
}

#[derive(Default)]
struct Shard {
    /// Keyed by seq with FxHash: a seq is a dense integer that needs no DoS-proof
    /// hash, and a path of 1 000 nodes is 1 000 lookups.
    map: FxHashMap<Seq, usize>,
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

    /// Sweeps the CLOCK hand, evicting, until `need` more bytes fit in `budget` (or
    /// the shard is empty). Returns the bytes freed and the slots evicted.
    fn make_room(&mut self, need: usize, budget: usize) -> (usize, u64) {
        let (mut freed, mut evicted) = (0usize, 0u64);
        while self.used + need > budget && !self.ring.is_empty() {
            if self.hand >= self.ring.len() {
                self.hand = 0;
            }
            let hand = self.hand;
            if self.ring[hand].referenced.swap(false, Ordering::Relaxed) {
                self.hand += 1;
            } else {
                freed += self.evict_at(hand);
                evicted += 1;
            }
        }
        (freed, evicted)
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
        self.lookup(seq, |slot| slot.node.clone())
    }

    /// The node created at `seq` if cached, counting a hit; `None`, counting nothing,
    /// if it is not (the caller's fallback read counts the miss). Reads nothing from
    /// disk: fit for a runtime worker.
    pub fn cached(&self, seq: Seq) -> Option<Arc<Node>> {
        let node = self.peek(seq, |slot| slot.node.clone())?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(node)
    }

    /// The node created at `seq` with its JSON text, if cached (counts a hit or a
    /// miss). The first such read of a cached node renders the text and keeps it in
    /// the node's slot, charged to the budget; later reads share it.
    pub fn get_rendered(&self, seq: Seq) -> Result<Option<RenderedNode>, serde_json::Error> {
        let found = self.lookup(seq, |slot| (slot.node.clone(), slot.json.clone()));
        match found {
            None => Ok(None),
            Some((node, Some(json))) => Ok(Some(RenderedNode { node, json })),
            Some((node, None)) => {
                let r = RenderedNode::render(node)?;
                self.attach(seq, &r);
                Ok(Some(r))
            }
        }
    }

    /// The nodes at `seqs` with their JSON texts, if every one is cached with its text
    /// already rendered; `None` at the first that is not (nothing rendered, nothing
    /// read from disk: a caller may run this where it must not block). Marks the nodes
    /// found referenced; a complete answer counts one hit per node, an incomplete one
    /// counts nothing (the caller's fallback counts).
    pub fn all_rendered(&self, seqs: &[Seq]) -> Option<Vec<RenderedNode>> {
        self.all(seqs, |slot| {
            slot.json.clone().map(|json| RenderedNode {
                node: slot.node.clone(),
                json,
            })
        })
    }

    /// The nodes at `seqs`, if every one is cached (rendered or not); `None` at the
    /// first that is not. Counts and marks as [`NodeCache::all_rendered`] does.
    pub fn all_cached(&self, seqs: &[Seq]) -> Option<Vec<Arc<Node>>> {
        self.all(seqs, |slot| Some(slot.node.clone()))
    }

    /// `take` of the slot of every seq of `seqs`, in order, or `None` at the first that
    /// is not cached or that `take` refuses.
    fn all<T>(&self, seqs: &[Seq], take: impl Fn(&Slot) -> Option<T>) -> Option<Vec<T>> {
        if !self.enabled() {
            return None;
        }
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            let shard = self.shard(seq).read();
            let slot = &shard.ring[*shard.map.get(&seq)?];
            out.push(take(slot)?);
            slot.referenced.store(true, Ordering::Relaxed);
        }
        self.hits.fetch_add(out.len() as u64, Ordering::Relaxed);
        Some(out)
    }

    /// `f` of the slot of `seq` under the shard's read lock, marking it referenced;
    /// counts a hit or a miss.
    fn lookup<T>(&self, seq: Seq, f: impl FnOnce(&Slot) -> T) -> Option<T> {
        let found = self.peek(seq, f);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// `f` of the slot of `seq` under the shard's read lock, marking it referenced;
    /// counts nothing. `None` if it is not cached or there is no cache.
    fn peek<T>(&self, seq: Seq, f: impl FnOnce(&Slot) -> T) -> Option<T> {
        if !self.enabled() {
            return None;
        }
        let shard = self.shard(seq).read();
        shard.map.get(&seq).map(|&i| {
            let slot = &shard.ring[i];
            slot.referenced.store(true, Ordering::Relaxed);
            f(slot)
        })
    }

    /// Keeps `r`'s text in the slot of `r`'s seq if the node is still cached without
    /// one, evicting others if the shard goes over its budget. A node whose text
    /// would take it over a shard's budget keeps no text.
    fn attach(&self, seq: Seq, r: &RenderedNode) {
        let extra = text_size(&r.json);
        let mut shard = self.shard(seq).write();
        let wants = |shard: &Shard| {
            shard
                .map
                .get(&seq)
                .copied()
                .filter(|&i| shard.ring[i].json.is_none())
        };
        let fits = wants(&shard).is_some_and(|i| shard.ring[i].size + extra <= self.shard_budget);
        if !fits {
            return;
        }
        // Room first: evicting may move the slot (swap-remove) or, in a shard that
        // holds little else, evict it.
        let (freed, evicted) = shard.make_room(extra, self.shard_budget);
        let added = match wants(&shard) {
            Some(i) => {
                let slot = &mut shard.ring[i];
                slot.json = Some(r.json.clone());
                slot.size += extra;
                shard.used += extra;
                extra
            }
            None => 0,
        };
        drop(shard);
        self.account(0, added, freed, evicted);
    }

    /// Caches `node`, created at `seq`, evicting others if the shard is over its
    /// budget. A node larger than a shard's budget is not kept. Inserting a seq that
    /// is already cached keeps the cached node (nodes are immutable).
    pub fn insert(&self, seq: Seq, node: Arc<Node>) {
        self.insert_slot(seq, node, None);
    }

    /// Caches `r`'s node with its text, as [`NodeCache::insert`] does (both are
    /// charged; a seq already cached keeps what it has).
    pub fn insert_rendered(&self, seq: Seq, r: &RenderedNode) {
        self.insert_slot(seq, r.node.clone(), Some(r.json.clone()));
    }

    fn insert_slot(&self, seq: Seq, node: Arc<Node>, json: Option<Arc<[u8]>>) {
        if !self.enabled() {
            return;
        }
        let text = json.as_deref().map_or(0, text_size);
        let size = node_size(&node) + text;
        if size > self.shard_budget {
            return;
        }
        let mut shard = self.shard(seq).write();
        if shard.map.contains_key(&seq) {
            return;
        }
        let (freed, evicted) = shard.make_room(size, self.shard_budget);
        let i = shard.ring.len();
        shard.ring.push(Slot {
            seq,
            node,
            json,
            size,
            referenced: AtomicBool::new(false),
        });
        shard.map.insert(seq, i);
        shard.used += size;
        drop(shard);
        self.account(1, size, freed, evicted);
    }

    /// Updates the counters after a change to a shard: `inserted` slots of `added`
    /// bytes in, `evicted` slots of `freed` bytes out.
    fn account(&self, inserted: u64, added: usize, freed: usize, evicted: u64) {
        self.inserts.fetch_add(inserted, Ordering::Relaxed);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        self.entries.fetch_add(inserted, Ordering::Relaxed);
        self.entries.fetch_sub(evicted, Ordering::Relaxed);
        self.bytes.fetch_add(added as u64, Ordering::Relaxed);
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

    /// `all_rendered` answers only when every node is cached with its text, in the
    /// order asked, and renders nothing itself.
    #[test]
    fn all_rendered_is_all_or_nothing() {
        let c = NodeCache::new(1 << 20);
        for seq in 1..=3 {
            c.insert(seq, node(seq, 10));
        }
        assert!(c.all_rendered(&[1, 2]).is_none(), "cached but not rendered");
        for seq in [1, 2] {
            assert!(matches!(c.get_rendered(seq), Ok(Some(_))));
        }
        let hits = c.stats().hits;
        let got = c
            .all_rendered(&[2, 1])
            .unwrap_or_else(|| panic!("both are rendered"));
        assert_eq!(got.iter().map(|r| r.node.seq).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(c.stats().hits, hits + 2, "one hit per node");
        assert!(c.all_rendered(&[1, 3]).is_none(), "3 has no text yet");
        assert!(c.all_rendered(&[1, 9]).is_none(), "9 is not cached");
        assert_eq!(
            c.stats().hits,
            hits + 2,
            "an incomplete answer counts nothing"
        );
        assert_eq!(c.all_rendered(&[]).map(|v| v.len()), Some(0));
        assert!(NodeCache::new(0).all_rendered(&[]).is_none(), "disabled");
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

    /// A node with escapes, non-ASCII text, payload and metadata to render.
    fn rich(seq: Seq) -> Arc<Node> {
        let mut n = (*node(seq, 0)).clone();
        n.content = "line \"one\"\n\ttab \u{1} é 😀 </script>".into();
        n.role = Some(crate::model::Role::Assistant);
        n.parent_id = Some(Uuid::now_v7());
        n.payload = serde_json::json!({"tool": "bash", "args": [1, 2.5, null, true], "z": {}});
        n.metadata
            .insert("b".into(), serde_json::json!({"nested": ["x"]}));
        n.metadata.insert("a".into(), Value::from(-7));
        n.agent_id = Some("agent".into());
        n.timestamp = Timestamp(1_790_000_000_123_456);
        Arc::new(n)
    }

    #[test]
    fn rendered_text_is_serde_json_of_the_node_and_is_charged_once() {
        let c = NodeCache::new(1 << 20);
        assert!(c.get_rendered(1).expect("render").is_none(), "a miss");
        let n = rich(1);
        c.insert(1, n.clone());
        assert_eq!(c.stats().bytes as usize, node_size(&n));
        let r = c
            .get_rendered(1)
            .expect("render")
            .unwrap_or_else(|| panic!("cached node missing"));
        assert!(Arc::ptr_eq(&r.node, &n));
        let expected = serde_json::to_vec(&*n).expect("json");
        assert_eq!(&*r.json, &expected[..]);
        let charged = node_size(&n) + RENDERED_OVERHEAD + expected.len();
        assert_eq!(c.stats().bytes as usize, charged);
        // A second read shares the kept text and charges nothing more.
        let again = c
            .get_rendered(1)
            .expect("render")
            .unwrap_or_else(|| panic!("cached node missing"));
        assert!(Arc::ptr_eq(&again.json, &r.json));
        assert_eq!(c.stats().bytes as usize, charged);
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.entries), (2, 1, 1, 1));
        // A plain read does not see the text and does not render.
        assert!(Arc::ptr_eq(&c.get(1).unwrap_or_else(|| panic!()), &n));
        // Inserted with its text: both charged, the same text given back.
        let r2 = RenderedNode::render(rich(2)).expect("render");
        c.insert_rendered(2, &r2);
        let back = c
            .get_rendered(2)
            .expect("render")
            .unwrap_or_else(|| panic!("cached node missing"));
        assert!(Arc::ptr_eq(&back.json, &r2.json));
        assert_eq!(
            c.stats().bytes as usize,
            charged + node_size(&r2.node) + RENDERED_OVERHEAD + r2.json.len()
        );
        // Per-shard accounting adds up to the global figure.
        let used: usize = c.shards.iter().map(|s| s.read().used).sum();
        assert_eq!(used as u64, c.stats().bytes);
    }

    #[test]
    fn rendered_text_counts_against_the_budget_and_goes_with_eviction() {
        let one = node_size(&node(0, 1000));
        // Room for 4 plain nodes per shard, or 2 with their text; use shard 0 only.
        let per_shard = one * 4;
        let c = NodeCache::new((per_shard * SHARDS) as u64);
        let s = SHARDS as u64;
        for k in 1..=4 {
            c.insert(k * s, node(k * s, 1000));
        }
        assert_eq!(c.stats().entries, 4);
        // Rendering texts makes room: others are evicted, the budget holds.
        for k in 1..=4 {
            c.get_rendered(k * s).expect("render");
            assert!(c.stats().bytes as usize <= per_shard, "{:?}", c.stats());
        }
        let st = c.stats();
        assert!(st.evictions > 0, "{st:?}");
        assert_eq!(st.inserts - st.evictions, st.entries);
        check_shard(&c, 0);
        // Nodes inserted with their text evict old ones; an evicted node's text goes
        // with it: the bytes held are only those of the nodes still there.
        for k in 5..=40 {
            let r = RenderedNode::render(node(k * s, 1000)).expect("render");
            c.insert_rendered(k * s, &r);
            assert!(c.stats().bytes as usize <= per_shard);
        }
        assert!(c.get_rendered(s).expect("render").is_none());
        check_shard(&c, 0);
        assert!(c.shards[0]
            .read()
            .ring
            .iter()
            .all(|slot| slot.json.is_some()));
    }

    /// Shard `i` holds what the counters say: each slot charged its node and its
    /// text, the map and the ring agree, and it is the only shard in use.
    fn check_shard(c: &NodeCache, i: usize) {
        let st = c.stats();
        let shard = c.shards[i].read();
        assert_eq!(shard.used as u64, st.bytes, "{st:?}");
        assert_eq!(shard.ring.len() as u64, st.entries, "{st:?}");
        for slot in &shard.ring {
            let text = slot.json.as_deref().map_or(0, text_size);
            assert_eq!(slot.size, node_size(&slot.node) + text);
        }
        for (seq, &at) in &shard.map {
            assert_eq!(shard.ring[at].seq, *seq);
        }
    }

    #[test]
    fn a_text_over_the_shard_budget_is_rendered_but_not_kept() {
        let n = node(1, 1000);
        // The node fits a shard, node and text together do not.
        let c = NodeCache::new(((node_size(&n) + 10) * SHARDS) as u64);
        c.insert(1, n.clone());
        let r = c
            .get_rendered(1)
            .expect("render")
            .unwrap_or_else(|| panic!("cached node missing"));
        assert_eq!(&*r.json, &serde_json::to_vec(&*n).expect("json")[..]);
        assert_eq!(c.stats().bytes as usize, node_size(&n));
        assert!(c.shards[1].read().ring[0].json.is_none());
        // Nor is one inserted with its text; a disabled cache keeps nothing either.
        c.insert_rendered(2, &RenderedNode::render(node(2, 1000)).expect("render"));
        assert_eq!(c.stats().entries, 1);
        let off = NodeCache::new(0);
        off.insert_rendered(1, &r);
        assert!(off.get_rendered(1).expect("render").is_none());
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
