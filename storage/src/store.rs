//! [`Store`]: the public handle. One writer thread owns appends (group commit);
//! readers share the index behind a read-write lock and read full nodes from sled.
//!
//! Write path of one group:
//! 1. take every request waiting on the channel (up to `max_group`);
//! 2. validate each against the index plus the group's overlay, assigning seqs;
//! 3. chain the hashes and write the group: large content by hash, then the log
//!    records with their smaller content, then the commit mark (see [`crate::log`] for
//!    why that is crash-safe and what open cleans up after an interrupted group), and
//!    go on with the next group;
//! 4. the syncer thread makes every group written so far durable with one flush
//!    (`--durability fsync`), or not (`none`);
//! 5. then, group by group, applies it to the index, publishes the new head,
//!    broadcasts, and answers every request.
//!
//! A failed write or flush poisons the store: every later write is refused with
//! [`StorageError::Poisoned`] until a restart rebuilds the index from what is on disk.
//!
//! Reads answer from the index, then fetch nodes through the node cache; they return
//! plain domain results ([`WorkflowSummary`], [`NodeWithEdges`], [`Decision`],
//! [`Monitor`], [`BranchNodes`], `Arc<Node>` lists). How they look on the wire is the
//! HTTP layer's business, and so is the SSE framing of what [`Store::subscribe`] sends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::admin::{
    self, Admin, AdminBody, AdminEvent, SecretDigest, Token, TokenError, TokenSpec,
};
use crate::error::{AppendError, StorageError};
use crate::index::{BranchInfo, BranchScope, Index, IndexEvent, NodeKind};
use crate::intent::{Intent, Meta, Outcome};
use crate::log::{Engine, GroupWrite, LogEntry};
use crate::model::{Edge, Event, EventBody, Node, Role, Seq, WorkflowStatus};
use crate::node_cache::{NodeCache, NodeCacheStats, RenderedNode};
use crate::record::{decode_index_event, Hash, Record, RecordBody, ZERO_HASH};
use crate::time::Timestamp;

/// A record more than this much older than its group's write is marked as arriving then
/// (live appends are stamped a moment before their group is written).
const ARRIVAL_SLACK_MICROS: i64 = 1_000_000;
use crate::validate::{entry_content, load_content, Ctx, Pending, Prepared};

/// Whether an acknowledged append must survive power loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Flush and fdatasync once per group before acknowledging (default).
    Fsync,
    /// Acknowledge after the in-memory write; sled flushes in the background.
    None,
}

/// Figures of one committed group, for metrics.
#[derive(Clone, Copy, Debug)]
pub struct GroupStats {
    /// Requests in the group.
    pub requests: usize,
    /// Events written.
    pub events: usize,
    /// Time spent making the group durable.
    pub flush: Duration,
}

/// Called after every committed group.
pub type GroupObserver = Arc<dyn Fn(GroupStats) + Send + Sync>;

/// The default of [`StoreOptions::commit_delay`]: about two flushes of this machine's
/// disk (BENCHMARKS.md, stop 33).
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_micros(500);

/// Options of [`Store::open`].
#[derive(Clone)]
pub struct StoreOptions {
    /// Durability of acknowledged appends.
    pub durability: Durability,
    /// sled page cache size in MiB.
    pub cache_mb: u64,
    /// Budget of the decoded-node cache in MiB (0 disables it).
    pub node_cache_mb: u64,
    /// Most requests in one group.
    pub max_group: usize,
    /// Longest the syncer waits for more groups before a flush (`fsync` durability
    /// only), as PostgreSQL's `commit_delay`: it waits only while at least four
    /// submitted requests are on their way to it, and stops as soon as fewer are, so a
    /// lone appender is never delayed. Under concurrency each flush, and with it each
    /// `fdatasync`, covers more appends. `Duration::ZERO` disables it.
    pub commit_delay: Duration,
    /// Capacity of the in-memory event broadcast (a slower SSE reader falls back to the log).
    pub broadcast_capacity: usize,
    /// Called after every committed group.
    pub on_group: Option<GroupObserver>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            durability: Durability::Fsync,
            // A 1 M-event log (~650 MB on disk) fits: with 256 or 512 MiB, reading it
            // (a sink catching up) ran at less than half the speed (BENCHMARKS.md).
            cache_mb: 1024,
            node_cache_mb: 256,
            max_group: 1024,
            commit_delay: DEFAULT_COMMIT_DELAY,
            broadcast_capacity: 4096,
            on_group: None,
        }
    }
}

/// A workflow's summary, as [`Store::workflow`] and [`Store::list_workflows`] return it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowSummary {
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Status.
    pub status: WorkflowStatus,
    /// Root node id.
    pub root_id: Uuid,
    /// Nodes, root included.
    pub node_count: usize,
    /// Branches.
    pub branch_count: usize,
    /// Branch heads (the leaves).
    pub heads: Vec<Uuid>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the latest event.
    pub updated_at: Timestamp,
    /// Seq of the latest event.
    pub last_seq: Seq,
    /// Owner.
    pub user_id: Option<String>,
    /// Metadata given at creation.
    pub metadata: Map<String, Value>,
}

/// A node with its typed edges, PARENT_OF included, as [`Store::node`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeWithEdges {
    /// The node.
    pub node: Arc<Node>,
    /// Edges from this node (`from` is the node), in the order they were recorded.
    pub outgoing: Vec<Edge>,
    /// Edges to this node (`to` is the node), in the order they were recorded.
    pub incoming: Vec<Edge>,
}

/// A decision point with its options and the chosen one.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The decision node.
    pub decision: Arc<Node>,
    /// Its options (the OPTION_OF targets), in seq order.
    pub options: Vec<Arc<Node>>,
    /// The chosen option (always one of `options`), if any.
    pub chosen: Option<Arc<Node>>,
}

/// A MONITORS edge with the nodes at both ends.
#[derive(Clone, Debug, PartialEq)]
pub struct Monitor {
    /// The monitor node.
    pub monitor: Arc<Node>,
    /// The watched node.
    pub target: Arc<Node>,
}

/// A workflow's whole tree from the index, for drawing it (the web UI's first paint):
/// every node's place and type, no content; the events that are not node creations
/// (edges, status changes) in full. Consistent with the log up to `head`.
#[derive(Clone, Debug, PartialEq)]
pub struct Outline {
    /// The durable head this outline reflects (a live stream resumes after it).
    pub head: Seq,
    /// The type names `nodes` refer to, by position.
    pub types: Vec<String>,
    /// Nodes in seq order (the root first).
    pub nodes: Vec<OutlineNode>,
    /// The workflow's other events (edges, status changes) in seq order.
    pub events: Vec<Event>,
}

/// One node of an [`Outline`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutlineNode {
    /// Seq of its creating event.
    pub seq: Seq,
    /// Id.
    pub id: Uuid,
    /// The parent's position in [`Outline::nodes`] (None for the root).
    pub parent: Option<u32>,
    /// The type's position in [`Outline::types`].
    pub node_type: u32,
    /// Role, if a message.
    pub role: Option<Role>,
    /// Branch id.
    pub branch_id: Uuid,
    /// Depth (root 0).
    pub depth: u32,
}

/// A branch with its nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct BranchNodes {
    /// Branch id.
    pub branch_id: Uuid,
    /// Fork node (None for the root's branch).
    pub fork_node_id: Option<Uuid>,
    /// Nodes in seq order.
    pub nodes: Vec<Arc<Node>>,
}

/// Filters of [`Store::list_workflows`].
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<WorkflowStatus>,
    /// Only this owner.
    pub user_id: Option<String>,
    /// Only these workflows (a token's scope).
    pub within: Option<Vec<Uuid>>,
}

/// Where a node sits, from the index alone: what a scope check needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePlace {
    /// Its workflow.
    pub workflow_id: Uuid,
    /// Its branch.
    pub branch_id: Uuid,
    /// Its depth (root 0).
    pub depth: u32,
}

enum WriterMsg {
    Append {
        intent: Prepared,
        meta: Meta,
        reply: oneshot::Sender<Result<Outcome, AppendError>>,
    },
    Close(oneshot::Sender<()>),
}

struct Shared {
    dir: PathBuf,
    engine: Engine,
    index: RwLock<Index>,
    head: watch::Sender<Seq>,
    events: broadcast::Sender<Arc<Event>>,
    poisoned: Mutex<Option<String>>,
    events_total: AtomicU64,
    /// Requests submitted and not yet answered: beyond those the syncer holds, how many
    /// it may expect soon (see [`StoreOptions::commit_delay`]).
    submitted: AtomicUsize,
    /// Flushes that made groups durable (`fsync` durability).
    flushes: AtomicU64,
    nodes: NodeCache,
    admin: Admin,
}

impl Shared {
    /// `n` requests counted in [`Shared::submitted`] are answered (or about to be).
    fn answered(&self, n: usize) {
        self.submitted.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A request counted in [`Shared::submitted`] and not yet queued for the writer: takes
/// it out of the count if dropped so (`None` once queued).
struct Unsent<'a>(Option<&'a Shared>);

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.0 {
            shared.answered(1);
        }
    }
}

/// The store: log, content, index. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    tx: mpsc::Sender<WriterMsg>,
}

/// Progress of the index rebuild at open: (events done, events total).
pub type RebuildProgress<'a> = &'a mut dyn FnMut(u64, u64);

impl Store {
    /// Opens the store in `dir`, rebuilding the index from the log, and starts the writer.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StorageError> {
        Store::open_with_progress(dir, options, &mut |_, _| {})
    }

    /// [`Store::open`] reporting rebuild progress.
    pub fn open_with_progress(
        dir: &Path,
        options: StoreOptions,
        progress: RebuildProgress<'_>,
    ) -> Result<Store, StorageError> {
        let engine = Engine::open(dir, options.cache_mb.saturating_mul(1024 * 1024))?;
        let (index, last_hash, last_ts) = rebuild(&engine, progress)?;
        let admin = Admin::open(&engine)?;
        let head = index.head();
        let (events, _) = broadcast::channel(options.broadcast_capacity.max(1));
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            engine,
            index: RwLock::new(index),
            head: watch::Sender::new(head),
            events,
            poisoned: Mutex::new(None),
            events_total: AtomicU64::new(0),
            submitted: AtomicUsize::new(0),
            flushes: AtomicU64::new(0),
            nodes: NodeCache::with_mb(options.node_cache_mb),
            admin,
        });
        let (tx, rx) = mpsc::channel(options.max_group.max(1) * 4);
        let writer = Writer {
            shared: shared.clone(),
            rx,
            options,
            last_hash,
            last_ts,
            next_seq: head + 1,
            inflight: Vec::new(),
            syncer: None,
            recent_content: RecentContent::default(),
            scratch: Pending::default(),
        };
        std::thread::Builder::new()
            .name("arbor-writer".into())
            .spawn(move || writer.run())?;
        Ok(Store { shared, tx })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Submits an intent; resolves once it is durable (or refused).
    pub async fn submit(&self, intent: Intent, meta: Meta) -> Result<Outcome, AppendError> {
        if let Some(reason) = self.shared.poisoned.lock().clone() {
            return Err(StorageError::Poisoned(reason).into());
        }
        let intent = Prepared::new(intent)?;
        let (reply, rx) = oneshot::channel();
        // Counted until the writer or the syncer answers it (see `Shared::answered`);
        // until it is queued, by `unsent`, so that a caller that gives up (or a closed
        // writer) takes it out again.
        self.shared.submitted.fetch_add(1, Ordering::AcqRel);
        let mut unsent = Unsent(Some(&self.shared));
        self.tx
            .send(WriterMsg::Append {
                intent,
                meta,
                reply,
            })
            .await
            .map_err(|_| StorageError::Closed)?;
        unsent.0 = None;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Stops the writer after the requests already queued, with a final flush.
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Close(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Seq of the last durable event.
    pub fn head(&self) -> Seq {
        *self.shared.head.borrow()
    }

    /// Watches the head seq (sync workers wait on it).
    pub fn watch_head(&self) -> watch::Receiver<Seq> {
        self.shared.head.subscribe()
    }

    /// Subscribes to every durable event, in seq order. A receiver that lags is told
    /// so and must catch up from [`Store::read_events`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.shared.events.subscribe()
    }

    /// Why the store refuses writes, if it does.
    pub fn poisoned(&self) -> Option<String> {
        self.shared.poisoned.lock().clone()
    }

    /// Events appended since open.
    pub fn events_appended(&self) -> u64 {
        self.shared.events_total.load(Ordering::Relaxed)
    }

    /// Flushes (each a `fdatasync`) that made groups durable since open; with
    /// [`Store::events_appended`], how many events a flush carries.
    pub fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    /// Indexed nodes and workflows.
    pub fn index_size(&self) -> (usize, usize) {
        let ix = self.shared.index.read();
        (ix.node_count(), ix.workflow_count())
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.shared.engine.size_on_disk()
    }

    /// Seqs of the nodes from the root to `id`, root first, from the index alone (no
    /// node bodies are read): what the path-to-root benchmarks measure.
    pub fn path_seqs(&self, id: &Uuid) -> Option<Vec<Seq>> {
        self.shared.index.read().path(id)
    }

    /// Seqs of the direct children of `id` in seq order, from the index alone.
    pub fn children_seqs(&self, id: &Uuid) -> Option<Vec<Seq>> {
        self.shared.index.read().children(id)
    }

    /// Seqs of `id` and the nodes below it (breadth-first, children in seq order, down to
    /// `max_depth` levels), from the index alone.
    pub fn subtree_seqs(&self, id: &Uuid, max_depth: Option<u32>) -> Option<Vec<Seq>> {
        self.shared.index.read().subtree(id, max_depth)
    }

    /// Where node `id` sits (workflow, branch, depth).
    pub fn place(&self, id: &Uuid) -> Option<NodePlace> {
        let ix = self.shared.index.read();
        let r = ix.node_ref(id)?;
        let w = ix.workflow_at(r.wf);
        let m = ix.meta(r);
        Some(NodePlace {
            workflow_id: w.id,
            branch_id: w.node(w.branches[m.branch as usize].first).id,
            depth: m.depth,
        })
    }

    /// What a reader scoped to `branches` sees of workflow `wf` (None if it does not
    /// exist): see [`BranchScope`].
    pub fn branch_scope(&self, wf: &Uuid, branches: &[Uuid]) -> Option<BranchScope> {
        let ix = self.shared.index.read();
        ix.workflow(wf).map(|w| w.branch_scope(branches, &ix))
    }

    /// The part of each branch of `wf` that `scope` sees, in creation order.
    pub fn branches_seen(&self, wf: &Uuid, scope: &BranchScope) -> Option<Vec<BranchInfo>> {
        let ix = self.shared.index.read();
        ix.workflow(wf).map(|w| w.branches_seen(scope))
    }

    /// The log position of the event that created node `id`.
    pub fn seq_of(&self, id: &Uuid) -> Option<Seq> {
        let ix = self.shared.index.read();
        ix.node_ref(id).map(|r| ix.meta(r).seq)
    }

    /// For an event that creates an `option` node under a `decision`: that decision. The
    /// log records the implied `decision -[:OPTION_OF]-> option` edge nowhere else, so
    /// replicas ask here (the node must be indexed, i.e. at or below the head).
    pub fn implied_option_of(&self, event: &Event) -> Option<Uuid> {
        match &event.body {
            EventBody::NodeCreated(n) => self.option_parent(n.parent_id, &n.node_type),
            _ => None,
        }
    }

    /// [`Store::implied_option_of`] for a record of [`Store::read_records`].
    pub fn implied_option_of_record(&self, record: &Record) -> Option<Uuid> {
        match &record.body {
            RecordBody::NodeCreated(n) => self.option_parent(n.parent_id, &n.node_type),
            _ => None,
        }
    }

    /// The parent, if a node of type `node_type` under it implies OPTION_OF. Only an
    /// `option` node can: any other answers without the index (a sink catching up asks
    /// this of every node, and the parent's lookup is a cache miss in a large index).
    fn option_parent(&self, parent: Option<Uuid>, node_type: &str) -> Option<Uuid> {
        let child = NodeKind::of(node_type);
        if !NodeKind::implies_option_of(NodeKind::Decision, child) {
            return None;
        }
        let parent = parent?;
        let ix = self.shared.index.read();
        let p = ix.meta(ix.node_ref(&parent)?).kind();
        NodeKind::implies_option_of(p, child).then_some(parent)
    }

    /// Nodes, workflows and head of the live index, read under one lock (verify).
    pub(crate) fn index_counts(&self) -> (usize, usize, Seq) {
        let ix = self.shared.index.read();
        (ix.node_count(), ix.workflow_count(), ix.head())
    }

    /// What the footprint bench measures: the heap an index of this store's log holds.
    /// Builds a fresh index from the log, record by record, and sums the change of
    /// `live_heap` (the caller's count of live heap bytes, e.g. from a counting global
    /// allocator) across each apply, then across the final `shrink_to_fit`. Returns
    /// (nodes, heap bytes).
    #[doc(hidden)]
    pub fn measure_index_heap(
        &self,
        live_heap: &dyn Fn() -> usize,
    ) -> Result<(usize, usize), StorageError> {
        let mut index = Index::new();
        let mut grown = 0isize;
        for kv in self.shared.engine.scan(0) {
            let (_, entry) = kv?;
            let r = Record::decode(&entry.record)?;
            let before = live_heap();
            index
                .apply(&r)
                .map_err(|e| StorageError::Corrupt(format!("index rebuild: {e}")))?;
            grown += live_heap() as isize - before as isize;
        }
        let before = live_heap();
        index.shrink_to_fit();
        grown += live_heap() as isize - before as isize;
        Ok((index.node_count(), grown.max(0) as usize))
    }

    fn record(&self, seq: Seq) -> Result<Record, StorageError> {
        self.shared
            .engine
            .record(seq)?
            .ok_or_else(|| StorageError::Corrupt(format!("seq {seq} missing from log")))
    }

    /// The content (hash `h`) of the node created at `seq`.
    pub fn content_at(&self, seq: Seq, h: &Hash) -> Result<String, StorageError> {
        load_content(&self.shared.engine, seq, h)
    }

    /// The event at `seq`, content resolved.
    pub fn event(&self, seq: Seq) -> Result<Event, StorageError> {
        self.record(seq)?.into_event(|h| self.content_at(seq, h))
    }

    /// The node created by the event at `seq`, from the node cache or from disk
    /// (then cached if `seq` is durable).
    pub fn node_at(&self, seq: Seq) -> Result<Arc<Node>, StorageError> {
        if let Some(n) = self.shared.nodes.get(seq) {
            return Ok(n);
        }
        let n = Arc::new(self.node_from_disk(seq)?);
        if seq <= self.head() {
            self.shared.nodes.insert(seq, n.clone());
        }
        Ok(n)
    }

    /// The node created by the event at `seq` with its JSON text, from the node cache
    /// (the text rendered on first need and kept with the node) or from disk (then
    /// cached with its text if `seq` is durable).
    pub fn rendered_at(&self, seq: Seq) -> Result<RenderedNode, StorageError> {
        let encode = |e: serde_json::Error| StorageError::Encode(format!("node at seq {seq}: {e}"));
        if let Some(r) = self.shared.nodes.get_rendered(seq).map_err(encode)? {
            return Ok(r);
        }
        let r = RenderedNode::render(Arc::new(self.node_from_disk(seq)?)).map_err(encode)?;
        if seq <= self.head() {
            self.shared.nodes.insert_rendered(seq, &r);
        }
        Ok(r)
    }

    /// The nodes created at `seqs`, in order, each with its JSON text (see
    /// [`Store::rendered_at`]).
    pub fn rendered(&self, seqs: &[Seq]) -> Result<Vec<RenderedNode>, StorageError> {
        seqs.iter().map(|s| self.rendered_at(*s)).collect()
    }

    /// The nodes created at `seqs` with their JSON texts, only if the node cache holds
    /// every one already rendered (see [`NodeCache::all_rendered`]): never touches the
    /// disk, so an async handler may call it in place and fall back to
    /// [`Store::rendered`] on the blocking pool when it answers `None`.
    pub fn rendered_cached(&self, seqs: &[Seq]) -> Option<Vec<RenderedNode>> {
        self.shared.nodes.all_rendered(seqs)
    }

    /// The node created by the event at `seq`, read and decoded from disk, bypassing
    /// the node cache.
    pub fn node_from_disk(&self, seq: Seq) -> Result<Node, StorageError> {
        let entry = self
            .shared
            .engine
            .entry(seq)?
            .ok_or_else(|| StorageError::Corrupt(format!("seq {seq} missing from log")))?;
        Record::decode(&entry.record)?
            .into_created_node(|h| self.entry_content(seq, &entry, h))?
            .ok_or_else(|| StorageError::Corrupt(format!("seq {seq} creates no node")))
    }

    /// See [`crate::validate::entry_content`].
    fn entry_content(&self, seq: Seq, entry: &LogEntry, h: &Hash) -> Result<String, StorageError> {
        entry_content(&self.shared.engine, seq, entry, h)
    }

    /// Counters of the node cache.
    pub fn node_cache_stats(&self) -> NodeCacheStats {
        self.shared.nodes.stats()
    }

    /// The nodes at `seqs` from the node cache or disk: the disk source of the views'
    /// `*_from` helpers (never `None`).
    fn nodes_found(&self, seqs: &[Seq]) -> Result<Option<Vec<Arc<Node>>>, StorageError> {
        self.nodes_at(seqs).map(Some)
    }

    /// The nodes at `seqs` if the node cache holds every one: the memory-only source of
    /// the views' `*_from` helpers (never reads disk, never fails).
    fn nodes_in_cache(&self, seqs: &[Seq]) -> Result<Option<Vec<Arc<Node>>>, StorageError> {
        Ok(self.shared.nodes.all_cached(seqs))
    }

    fn nodes_at(&self, seqs: &[Seq]) -> Result<Vec<Arc<Node>>, StorageError> {
        seqs.iter().map(|s| self.node_at(*s)).collect()
    }

    /// Up to `limit` events after `after`, never beyond the durable head.
    pub fn read_events(&self, after: Seq, limit: usize) -> Result<Vec<Event>, StorageError> {
        self.read_events_as(after, limit, |e| e)
    }

    /// [`Store::read_events`], each event turned into a `T` by `f` as it is read (one
    /// move of each event, into a vector sized once: events are large).
    pub fn read_events_as<T>(
        &self,
        after: Seq,
        limit: usize,
        mut f: impl FnMut(Event) -> T,
    ) -> Result<Vec<T>, StorageError> {
        let head = self.head();
        let mut out = Vec::with_capacity(read_capacity(head, after, limit));
        for kv in self.shared.engine.scan(after).take(limit) {
            let (seq, entry) = kv?;
            if seq > head {
                break;
            }
            let r = Record::decode(&entry.record)?;
            out.push(f(r.into_event(|h| self.entry_content(seq, &entry, h))?));
        }
        Ok(out)
    }

    /// Up to `limit` raw records after `after`, never beyond the durable head
    /// (sync workers; content stays by hash).
    pub fn read_records(&self, after: Seq, limit: usize) -> Result<Vec<Record>, StorageError> {
        let head = self.head();
        let mut out = Vec::with_capacity(read_capacity(head, after, limit));
        for kv in self.shared.engine.scan(after).take(limit) {
            let (seq, entry) = kv?;
            if seq > head {
                break;
            }
            out.push(Record::decode(&entry.record)?);
        }
        Ok(out)
    }

    /// Up to `limit` events of workflow `wf` after `after`, never beyond the head.
    /// `None` if the workflow does not exist.
    pub fn read_workflow_events(
        &self,
        wf: &Uuid,
        after: Seq,
        limit: usize,
    ) -> Result<Option<Vec<Event>>, StorageError> {
        let head = self.head();
        let Some(seqs) = self
            .shared
            .index
            .read()
            .workflow(wf)
            .map(|w| w.seqs(after, head, limit))
        else {
            return Ok(None);
        };
        seqs.iter()
            .map(|s| self.event(*s))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// The outline of workflow `wf` (see [`Outline`]): node places and types from the
    /// index (no log reads per node), edges and status changes from the log. `None` if
    /// the workflow does not exist.
    pub fn outline(&self, wf: &Uuid) -> Result<Option<Outline>, StorageError> {
        let head = self.head();
        let found = {
            let ix = self.shared.index.read();
            ix.workflow(wf).map(|w| {
                let names = ix.type_names();
                let mut types: Vec<String> = Vec::new();
                let mut local: HashMap<u16, u32> = HashMap::new();
                let mut unnamed = Vec::new();
                let mut nodes = Vec::with_capacity(w.graph.node_count());
                for i in 0..w.graph.node_count() as u32 {
                    let m = w.node(i);
                    if m.seq > head {
                        break; // node indices are in seq order
                    }
                    let node_type = match names.name(m.ty) {
                        Some(name) => *local.entry(m.ty).or_insert_with(|| {
                            types.push(name.to_owned());
                            types.len() as u32 - 1
                        }),
                        None => {
                            unnamed.push(nodes.len());
                            u32::MAX
                        }
                    };
                    nodes.push(OutlineNode {
                        seq: m.seq,
                        id: m.id,
                        parent: (m.parent != crate::index::NONE).then_some(m.parent),
                        node_type,
                        role: m.role,
                        branch_id: w.node(w.branches[m.branch as usize].first).id,
                        depth: m.depth,
                    });
                }
                let others: Vec<Seq> = w
                    .events
                    .iter()
                    .copied()
                    .take_while(|s| *s <= head)
                    .collect();
                (nodes, types, unnamed, others)
            })
        };
        let Some((mut nodes, mut types, unnamed, others)) = found else {
            return Ok(None);
        };
        // Types the index could not intern (never in practice) come from the records.
        for at in unnamed {
            let name = self.node_at(nodes[at].seq)?.node_type.clone();
            nodes[at].node_type = match types.iter().position(|t| *t == name) {
                Some(p) => p as u32,
                None => {
                    types.push(name);
                    types.len() as u32 - 1
                }
            };
        }
        // The other events: the workflow's seqs that create no node.
        let events = others
            .into_iter()
            .map(|s| self.event(s))
            .collect::<Result<_, _>>()?;
        Ok(Some(Outline {
            head,
            types,
            nodes,
            events,
        }))
    }

    /// The nodes of workflow `wf` among `ids`, in the order asked; ids of no node of
    /// `wf` are left out. `None` if the workflow does not exist.
    pub fn nodes_of(
        &self,
        wf: &Uuid,
        ids: &[Uuid],
    ) -> Result<Option<Vec<Arc<Node>>>, StorageError> {
        let seqs = {
            let head = self.head();
            let ix = self.shared.index.read();
            if ix.workflow(wf).is_none() {
                return Ok(None);
            }
            ids.iter()
                .filter_map(|id| ix.node_ref(id))
                .filter(|r| ix.workflow_at(r.wf).id == *wf)
                .map(|r| ix.meta(r).seq)
                .filter(|seq| *seq <= head)
                .collect::<Vec<_>>()
        };
        self.nodes_at(&seqs).map(Some)
    }

    /// Whether workflow `wf` exists.
    pub fn has_workflow(&self, wf: &Uuid) -> bool {
        self.shared.index.read().workflow(wf).is_some()
    }

    /// The summary of workflow `wf`. Its metadata, if it has any, is read from its
    /// creation record.
    pub fn workflow(&self, wf: &Uuid) -> Result<Option<WorkflowSummary>, StorageError> {
        let found = {
            let ix = self.shared.index.read();
            ix.workflow(wf)
                .map(|w| (summarize(w), w.has_metadata.then_some(w.created_seq)))
        };
        let Some((mut view, created_seq)) = found else {
            return Ok(None);
        };
        if let Some(seq) = created_seq {
            self.read_metadata(&mut view, seq)?;
        }
        Ok(Some(view))
    }

    /// The summary of workflow `wf` when memory alone can give it: the workflow exists
    /// and has no metadata (most have none). Never reads the log, so it may be called
    /// where blocking is not allowed; `None` means "ask [`Store::workflow`]".
    pub fn workflow_in_memory(&self, wf: &Uuid) -> Option<WorkflowSummary> {
        let ix = self.shared.index.read();
        ix.workflow(wf).filter(|w| !w.has_metadata).map(summarize)
    }

    /// Fills `view.metadata` from the creation record at `seq`.
    fn read_metadata(&self, view: &mut WorkflowSummary, seq: Seq) -> Result<(), StorageError> {
        if let RecordBody::WorkflowCreated { metadata, .. } = self.record(seq)?.body {
            view.metadata = metadata;
        }
        Ok(())
    }

    /// Workflows newest first: up to `limit` created before `before` (a cursor from a
    /// previous page), and the cursor of the next page if there is one.
    pub fn list_workflows(
        &self,
        filter: &ListFilter,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<(Vec<WorkflowSummary>, Option<Seq>), StorageError> {
        let (mut page, more) = self.list_page(filter, before, limit);
        for (view, seq, has_metadata) in &mut page {
            if *has_metadata {
                self.read_metadata(view, *seq)?;
            }
        }
        Ok(page_of(page, more))
    }

    /// [`Store::list_workflows`] when memory alone can give the page: no workflow on it
    /// has metadata. `None` means "ask [`Store::list_workflows`]". Never reads the log;
    /// the caller bounds the work (the page's size, and the filters, which may scan many
    /// workflows to fill a page).
    pub fn list_workflows_in_memory(
        &self,
        filter: &ListFilter,
        before: Option<Seq>,
        limit: usize,
    ) -> Option<(Vec<WorkflowSummary>, Option<Seq>)> {
        let (page, more) = self.list_page(filter, before, limit);
        if page.iter().any(|(_, _, has_metadata)| *has_metadata) {
            return None;
        }
        Some(page_of(page, more))
    }

    /// Up to `limit` workflows from the index (summary, creation seq, whether it has
    /// metadata), and whether more follow.
    fn list_page(
        &self,
        filter: &ListFilter,
        before: Option<Seq>,
        limit: usize,
    ) -> (Vec<(WorkflowSummary, Seq, bool)>, bool) {
        {
            let ix = self.shared.index.read();
            let mut it = ix.list(before, |w| {
                filter.status.is_none_or(|s| w.status == s)
                    && filter.within.as_ref().is_none_or(|ws| ws.contains(&w.id))
                    && filter
                        .user_id
                        .as_deref()
                        .is_none_or(|u| w.user_id.as_deref() == Some(u))
            });
            let page: Vec<(WorkflowSummary, Seq, bool)> = it
                .by_ref()
                .take(limit)
                .map(|w| (summarize(w), w.created_seq, w.has_metadata))
                .collect();
            (page, it.next().is_some())
        }
    }

    /// A node with its edges.
    pub fn node(&self, id: &Uuid) -> Result<Option<NodeWithEdges>, StorageError> {
        self.node_with_edges(id, |seq| self.node_at(seq).map(Some))
    }

    /// [`Store::node`] when the node cache holds the node: `None` if it does not (or
    /// there is no such node). Reads nothing from disk, so a runtime worker may call it
    /// instead of handing the read to the blocking pool.
    pub fn node_cached(&self, id: &Uuid) -> Option<NodeWithEdges> {
        self.node_with_edges(id, |seq| Ok(self.shared.nodes.cached(seq)))
            .ok()
            .flatten()
    }

    /// The node `id` (by `node_at` of its seq, `None` to give up) with its edges.
    fn node_with_edges(
        &self,
        id: &Uuid,
        node_at: impl FnOnce(Seq) -> Result<Option<Arc<Node>>, StorageError>,
    ) -> Result<Option<NodeWithEdges>, StorageError> {
        let found = {
            let ix = self.shared.index.read();
            ix.node_ref(id)
                .map(|r| (ix.meta(r).seq, ix.edges(id).unwrap_or_default()))
        };
        let Some((seq, (out, inc))) = found else {
            return Ok(None);
        };
        let Some(node) = node_at(seq)? else {
            return Ok(None);
        };
        Ok(Some(NodeWithEdges {
            node,
            outgoing: out
                .into_iter()
                .map(|(kind, to)| Edge {
                    kind,
                    from: *id,
                    to,
                })
                .collect(),
            incoming: inc
                .into_iter()
                .map(|(kind, from)| Edge {
                    kind,
                    from,
                    to: *id,
                })
                .collect(),
        }))
    }

    /// The path root … `id`.
    pub fn path(&self, id: &Uuid) -> Result<Option<Vec<Arc<Node>>>, StorageError> {
        let seqs = self.path_seqs(id);
        seqs.map(|s| self.nodes_at(&s)).transpose()
    }

    /// [`Store::path`] when it is at most `max` nodes long and the node cache holds
    /// every one: `None` otherwise (or if there is no such node). Reads nothing from
    /// disk, so a runtime worker may call it instead of handing the read to the
    /// blocking pool.
    pub fn path_cached(&self, id: &Uuid, max: usize) -> Option<Vec<Arc<Node>>> {
        let seqs = self.path_seqs(id).filter(|s| s.len() <= max)?;
        self.shared.nodes.all_cached(&seqs)
    }

    /// Direct children of `id` in seq order.
    pub fn children(&self, id: &Uuid) -> Result<Option<Vec<Arc<Node>>>, StorageError> {
        let seqs = self.children_seqs(id);
        seqs.map(|s| self.nodes_at(&s)).transpose()
    }

    /// `id` and the nodes below it, breadth-first.
    pub fn subtree(
        &self,
        id: &Uuid,
        max_depth: Option<u32>,
    ) -> Result<Option<Vec<Arc<Node>>>, StorageError> {
        let seqs = self.subtree_seqs(id, max_depth);
        seqs.map(|s| self.nodes_at(&s)).transpose()
    }

    /// Decision points of `wf`, with options and the chosen one.
    pub fn decisions(&self, wf: &Uuid) -> Result<Option<Vec<Decision>>, StorageError> {
        self.decisions_from(wf, usize::MAX, |seqs| self.nodes_found(seqs))
    }

    /// [`Store::decisions`] when they hold at most `max` nodes and the node cache holds
    /// every one: `None` otherwise (or if there is no such workflow). Reads nothing from
    /// disk, so a runtime worker may call it instead of handing the read to the
    /// blocking pool.
    pub fn decisions_cached(&self, wf: &Uuid, max: usize) -> Option<Vec<Decision>> {
        self.decisions_from(wf, max, |seqs| self.nodes_in_cache(seqs))
            .ok()
            .flatten()
    }

    /// The decisions of `wf` with their nodes from `nodes` (all the seqs at once, in
    /// order; `None` gives up), if they hold at most `max` nodes.
    fn decisions_from(
        &self,
        wf: &Uuid,
        max: usize,
        nodes: impl FnOnce(&[Seq]) -> Result<Option<Vec<Arc<Node>>>, StorageError>,
    ) -> Result<Option<Vec<Decision>>, StorageError> {
        let found = {
            let ix = self.shared.index.read();
            ix.workflow(wf).map(|w| {
                w.decisions
                    .iter()
                    .map(|d| {
                        let opts: Vec<Seq> = w.options(*d).iter().map(|o| w.node(*o).seq).collect();
                        let chosen = w.chosen.get(d).map(|c| w.node(*c).seq);
                        (w.node(*d).seq, opts, chosen)
                    })
                    .collect::<Vec<_>>()
            })
        };
        let Some(list) = found else { return Ok(None) };
        // Every decision's node, its options', then its chosen option's, in one list.
        let seqs: Vec<Seq> = list
            .iter()
            .flat_map(|(d, opts, chosen)| std::iter::once(d).chain(opts).chain(chosen))
            .copied()
            .collect();
        if seqs.len() > max {
            return Ok(None);
        }
        let Some(found) = nodes(&seqs)? else {
            return Ok(None);
        };
        let mut found = found.into_iter();
        let mut next = || {
            found
                .next()
                .ok_or_else(|| StorageError::Corrupt("a decision's node went missing".into()))
        };
        list.into_iter()
            .map(|(_, opts, chosen)| {
                Ok(Decision {
                    decision: next()?,
                    options: opts.iter().map(|_| next()).collect::<Result<_, _>>()?,
                    chosen: chosen.map(|_| next()).transpose()?,
                })
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Branches of `wf` in creation order.
    pub fn branches(&self, wf: &Uuid) -> Option<Vec<BranchInfo>> {
        let ix = self.shared.index.read();
        ix.workflow(wf)
            .map(|w| w.branches.iter().map(|b| w.branch_info(b)).collect())
    }

    /// One branch with its nodes in seq order.
    pub fn branch(&self, wf: &Uuid, branch_id: &Uuid) -> Result<Option<BranchNodes>, StorageError> {
        self.branch_from(wf, branch_id, usize::MAX, |seqs| self.nodes_found(seqs))
    }

    /// [`Store::branch`] when it is at most `max` nodes long and the node cache holds
    /// every one: `None` otherwise (or if there is no such branch). Reads nothing from
    /// disk, so a runtime worker may call it instead of handing the read to the
    /// blocking pool.
    pub fn branch_cached(&self, wf: &Uuid, branch_id: &Uuid, max: usize) -> Option<BranchNodes> {
        self.branch_from(wf, branch_id, max, |seqs| self.nodes_in_cache(seqs))
            .ok()
            .flatten()
    }

    /// The branch with its nodes from `nodes` (`None` gives up), if it has at most
    /// `max`.
    fn branch_from(
        &self,
        wf: &Uuid,
        branch_id: &Uuid,
        max: usize,
        nodes: impl FnOnce(&[Seq]) -> Result<Option<Vec<Arc<Node>>>, StorageError>,
    ) -> Result<Option<BranchNodes>, StorageError> {
        let found = {
            let ix = self.shared.index.read();
            ix.workflow(wf).and_then(|w| {
                let b = w.branch_slot(branch_id, &ix)?;
                let info = w.branch_info(&w.branches[b as usize]);
                let seqs: Vec<Seq> = w.branch_nodes(b).iter().map(|i| w.node(*i).seq).collect();
                Some((info, seqs))
            })
        };
        let Some((info, seqs)) = found.filter(|(_, seqs)| seqs.len() <= max) else {
            return Ok(None);
        };
        Ok(nodes(&seqs)?.map(|nodes| BranchNodes {
            branch_id: info.branch_id,
            fork_node_id: info.fork_node_id,
            nodes,
        }))
    }

    /// MONITORS edges of `wf`; with `cross_branch` only those whose ends are on
    /// different branches.
    pub fn monitors(
        &self,
        wf: &Uuid,
        cross_branch: bool,
    ) -> Result<Option<Vec<Monitor>>, StorageError> {
        self.monitors_from(wf, cross_branch, usize::MAX, |seqs| self.nodes_found(seqs))
    }

    /// [`Store::monitors`] when they hold at most `max` nodes and the node cache holds
    /// every one: `None` otherwise (or if there is no such workflow). Reads nothing from
    /// disk, so a runtime worker may call it instead of handing the read to the
    /// blocking pool.
    pub fn monitors_cached(
        &self,
        wf: &Uuid,
        cross_branch: bool,
        max: usize,
    ) -> Option<Vec<Monitor>> {
        self.monitors_from(wf, cross_branch, max, |seqs| self.nodes_in_cache(seqs))
            .ok()
            .flatten()
    }

    /// The MONITORS edges with their nodes from `nodes` (monitor then target for each,
    /// `None` gives up), if they hold at most `max` nodes.
    fn monitors_from(
        &self,
        wf: &Uuid,
        cross_branch: bool,
        max: usize,
        nodes: impl FnOnce(&[Seq]) -> Result<Option<Vec<Arc<Node>>>, StorageError>,
    ) -> Result<Option<Vec<Monitor>>, StorageError> {
        let found = {
            let ix = self.shared.index.read();
            ix.workflow(wf).map(|w| {
                w.monitors
                    .iter()
                    .filter(|(m, t)| !cross_branch || w.node(*m).branch != w.node(*t).branch)
                    .map(|(m, t)| (w.node(*m).seq, w.node(*t).seq))
                    .collect::<Vec<_>>()
            })
        };
        let Some(list) = found.filter(|l| l.len() <= max / 2) else {
            return Ok(None);
        };
        let seqs: Vec<Seq> = list.iter().flat_map(|(m, t)| [*m, *t]).collect();
        Ok(nodes(&seqs)?.map(|found| {
            found
                .chunks_exact(2)
                .map(|pair| Monitor {
                    monitor: pair[0].clone(),
                    target: pair[1].clone(),
                })
                .collect()
        }))
    }

    /// A sink cursor.
    pub fn cursor(&self, name: &str) -> Result<Option<Seq>, StorageError> {
        self.shared.engine.cursor(name)
    }

    /// Sets a sink cursor and flushes sled before returning: the cursor survives a
    /// process crash (`kill -9`). It is not fdatasync'd, so an OS crash or power loss
    /// may bring back an older cursor (sled's flush is only `sync_file_range`, sled
    /// #1452); the sink then re-applies events it already has, which every sink's
    /// idempotent apply makes harmless.
    pub fn set_cursor(&self, name: &str, seq: Seq) -> Result<(), StorageError> {
        self.shared.engine.set_cursor(name, seq)
    }

    /// Every sink cursor.
    pub fn cursors(&self) -> Result<Vec<(String, Seq)>, StorageError> {
        self.shared.engine.cursors()
    }

    /// The store's identity: created with the store, never changes. A sink that keeps
    /// its cursor in the destination records it, so that two stores never share one.
    pub fn id(&self) -> Uuid {
        self.shared.engine.store_id()
    }

    /// When the first event after `after` reached this store (None at the head): its own
    /// time for a live append, the time its group was written for an imported one
    /// (which keeps its original time). Survives a restart. What sink lag is measured by.
    pub fn arrival_after(&self, after: Seq) -> Result<Option<Timestamp>, StorageError> {
        let Some(r) = self.read_records(after, 1)?.into_iter().next() else {
            return Ok(None);
        };
        self.shared.engine.arrival(r.seq, r.timestamp).map(Some)
    }

    /// Records a poison event of `sink`.
    pub fn put_dead_letter(&self, sink: &str, seq: Seq, error: &str) -> Result<(), StorageError> {
        self.shared.engine.put_dead_letter(sink, seq, error)
    }

    /// Unresolved poison events of `sink`: (seq, error).
    pub fn dead_letters(&self, sink: &str) -> Result<Vec<(Seq, String)>, StorageError> {
        self.shared.engine.dead_letters(sink)
    }

    /// Records `token.created` (durable before it returns) and adds the token to the
    /// table. `secret_hash` is the BLAKE3 of the secret the caller generated.
    pub fn create_token(
        &self,
        spec: TokenSpec,
        secret_hash: [u8; 32],
        actor: &str,
    ) -> Result<Token, TokenError> {
        let id = spec.id;
        let body = AdminBody::TokenCreated {
            token: spec,
            secret_hash: SecretDigest(secret_hash),
        };
        self.shared.admin.append(&self.shared.engine, actor, body)?;
        self.shared
            .admin
            .token(&id)
            .ok_or_else(|| StorageError::Corrupt(format!("token {id} not in the table")).into())
    }

    /// Records `token.revoked` and marks the token revoked at once (open streams see
    /// [`Store::watch_revocations`] move). Revoking a revoked token records nothing.
    pub fn revoke_token(&self, id: &Uuid, actor: &str) -> Result<Token, TokenError> {
        let admin = &self.shared.admin;
        match admin.token(id) {
            None => return Err(TokenError::NotFound(*id)),
            Some(t) if t.revoked_at.is_some() => return Ok(t),
            Some(_) => {}
        }
        admin.append(
            &self.shared.engine,
            actor,
            AdminBody::TokenRevoked { token_id: *id },
        )?;
        admin.token(id).ok_or_else(|| TokenError::NotFound(*id))
    }

    /// The token `id`, revoked or not.
    pub fn token(&self, id: &Uuid) -> Option<Token> {
        self.shared.admin.token(id)
    }

    /// Every token, oldest first.
    pub fn tokens(&self) -> Vec<Token> {
        self.shared.admin.tokens()
    }

    /// Whether a token was ever created in this store (revoked ones count).
    pub fn has_tokens(&self) -> bool {
        self.shared.admin.has_tokens()
    }

    /// Moves on every revocation.
    pub fn watch_revocations(&self) -> watch::Receiver<u64> {
        self.shared.admin.watch_revoked()
    }

    /// Up to `limit` events of the admin log after `after` (its own seqs).
    pub fn read_admin_events(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<AdminEvent>, StorageError> {
        admin::read(&self.shared.engine, after, limit)
    }

    /// Poison events of `sink` an operator accepted as lost: (seq, error and note).
    pub fn acked_dead_letters(&self, sink: &str) -> Result<Vec<(Seq, String)>, StorageError> {
        self.shared.engine.acked_dead_letters(sink)
    }

    /// Removes a dead letter of `sink` whose event reached the sink after all. False if
    /// there was none.
    pub fn remove_dead_letter(&self, sink: &str, seq: Seq) -> Result<bool, StorageError> {
        self.shared.engine.remove_dead_letter(sink, seq)
    }

    /// Records that an operator accepted the loss of `sink`'s dead letter `seq` (moved
    /// to the acknowledged ones, with `note`). False if there was none.
    pub fn ack_dead_letter(&self, sink: &str, seq: Seq, note: &str) -> Result<bool, StorageError> {
        self.shared.engine.ack_dead_letter(sink, seq, note)
    }

    /// The engine, for verify.
    pub(crate) fn engine(&self) -> &Engine {
        &self.shared.engine
    }
}

/// A page of [`Store::list_page`] as the list answers it: the summaries, and the cursor
/// of the next page (the last creation seq) if more follow.
fn page_of(
    page: Vec<(WorkflowSummary, Seq, bool)>,
    more: bool,
) -> (Vec<WorkflowSummary>, Option<Seq>) {
    let next = if more {
        page.last().map(|(_, s, _)| *s)
    } else {
        None
    };
    (page.into_iter().map(|(v, _, _)| v).collect(), next)
}

fn summarize(w: &crate::index::WorkflowIndex) -> WorkflowSummary {
    WorkflowSummary {
        workflow_id: w.id,
        status: w.status,
        root_id: w.node(0).id,
        node_count: w.node_count(),
        branch_count: w.branches.len(),
        heads: w.heads(),
        created_at: w.created_at,
        updated_at: w.updated_at,
        last_seq: w.last_seq,
        user_id: w.user_id.as_deref().map(str::to_owned),
        metadata: Map::new(),
    }
}

/// Rebuilds the index from the log: (index, hash of the last record, its time).
///
/// Two threads: one scans sled and decodes only what the index needs
/// ([`crate::record::decode_index_event`]) in chunks; this one applies them. The scan
/// is the floor (see `benches/storage.rs`, group `rebuild`).
fn rebuild(
    engine: &Engine,
    progress: RebuildProgress<'_>,
) -> Result<(Index, Hash, Timestamp), StorageError> {
    const CHUNK: usize = 8192;
    let started = Instant::now();
    let last = engine.last_record()?;
    let total = last.as_ref().map_or(0, |r| r.seq);
    let mut index = Index::new();
    index.reserve(usize::try_from(total).unwrap_or(0));
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<IndexEvent>, StorageError>>(4);
    let applied = std::thread::scope(|scope| -> Result<(), StorageError> {
        scope.spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            for kv in engine.scan(0) {
                let decoded = kv.and_then(|(seq, entry)| {
                    let e = decode_index_event(&entry.record)?;
                    if e.seq != seq {
                        return Err(StorageError::Corrupt(format!(
                            "log key {seq} holds seq {}",
                            e.seq
                        )));
                    }
                    Ok(e)
                });
                match decoded {
                    Ok(e) => chunk.push(e),
                    Err(err) => {
                        let _ = tx.send(Err(err));
                        return;
                    }
                }
                if chunk.len() == CHUNK
                    && tx
                        .send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))))
                        .is_err()
                {
                    return;
                }
            }
            if !chunk.is_empty() {
                let _ = tx.send(Ok(chunk));
            }
        });
        let mut next_report = 100_000;
        for chunk in rx {
            for e in chunk? {
                index
                    .apply_event(&e)
                    .map_err(|err| StorageError::Corrupt(format!("index rebuild: {err}")))?;
                if e.seq >= next_report {
                    next_report += 100_000;
                    progress(e.seq, total);
                    tracing::info!(seq = e.seq, total, "rebuilding index");
                }
            }
        }
        Ok(())
    });
    applied?;
    if index.head() != total {
        return Err(StorageError::Corrupt(format!(
            "index rebuilt up to seq {} but the log ends at {total}",
            index.head()
        )));
    }
    index.shrink_to_fit();
    progress(total, total);
    if total > 0 {
        tracing::info!(
            events = total,
            nodes = index.node_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index rebuilt from log"
        );
    }
    let (last_hash, last_ts) = match last {
        Some(r) => (r.hash, r.timestamp.min(Timestamp::now())),
        None => (ZERO_HASH, Timestamp(0)),
    };
    Ok((index, last_hash, last_ts))
}

/// The writer thread: validates each group of requests, chains and writes it to sled,
/// and hands it to the [`Syncer`]. While the syncer makes one group durable, the writer
/// validates and writes the next: the fdatasync of group N overlaps the CPU work of
/// group N+1 (with 64 appenders the writer used to wait out every fdatasync, in two
/// cohorts of 32 requests, BENCHMARKS.md). Nothing is indexed, broadcast or answered
/// before it is durable: the syncer does all three, in group order.
struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<WriterMsg>,
    options: StoreOptions,
    last_hash: Hash,
    last_ts: Timestamp,
    /// The seq the next accepted event gets (the index's head lags behind it while
    /// groups are in flight).
    next_seq: Seq,
    /// Overlays of the groups written but not yet in the index, oldest first, each with
    /// its last seq: validation reads them between this group's overlay and the index.
    inflight: Vec<(Seq, Pending)>,
    /// Groups on their way to the syncer; `None` once closed.
    syncer: Option<std::sync::mpsc::SyncSender<Written>>,
    recent_content: RecentContent,
    /// The overlay of the request being validated, merged into its group's once the
    /// request is accepted; one for all requests, so its maps keep their capacity.
    scratch: Pending,
}

/// Groups the writer may have written ahead of the one the syncer is making durable.
const GROUPS_IN_FLIGHT: usize = 2;

/// A group written to sled (or refused whole), on its way to durability and answers.
struct Written {
    drafts: Vec<crate::validate::Draft>,
    answers: Vec<(Reply, Result<Outcome, AppendError>)>,
    requests: usize,
}

/// The syncer thread: makes the groups the writer wrote durable (one fdatasync for all
/// groups waiting), then applies them to the index, moves the head, broadcasts their
/// events and answers their requests, in order. A failed flush poisons the store and
/// fails every group after it, written or not.
struct Syncer {
    shared: Arc<Shared>,
    rx: std::sync::mpsc::Receiver<Written>,
    durability: Durability,
    on_group: Option<GroupObserver>,
    /// [`StoreOptions::commit_delay`].
    commit_delay: Duration,
}

/// Requests that must be on their way to the syncer, beyond those it holds, for it to
/// wait for them before a flush (PostgreSQL's `commit_siblings` is 5 transactions).
const COMMIT_SIBLINGS: usize = 4;

/// Hashes of large content this writer stored recently, so that a large blob repeated
/// across groups is not looked up again. Bounded FIFO.
#[derive(Default)]
struct RecentContent {
    set: std::collections::HashSet<Hash>,
    order: std::collections::VecDeque<Hash>,
}

impl RecentContent {
    const CAPACITY: usize = 8192;

    fn contains(&self, h: &Hash) -> bool {
        self.set.contains(h)
    }

    fn insert(&mut self, h: Hash) {
        if self.set.insert(h) {
            self.order.push_back(h);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

type Reply = oneshot::Sender<Result<Outcome, AppendError>>;

impl Writer {
    fn run(mut self) {
        let (to_syncer, from_writer) = std::sync::mpsc::sync_channel(GROUPS_IN_FLIGHT);
        let syncer = Syncer {
            shared: self.shared.clone(),
            rx: from_writer,
            durability: self.options.durability,
            on_group: self.options.on_group.clone(),
            commit_delay: self.options.commit_delay,
        };
        let syncer = match std::thread::Builder::new()
            .name("arbor-syncer".into())
            .spawn(move || syncer.run())
        {
            Ok(handle) => {
                self.syncer = Some(to_syncer);
                Some(handle)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not start the syncer thread; store poisoned");
                *self.shared.poisoned.lock() = Some(format!("syncer thread: {e}"));
                None
            }
        };
        let mut closing = None;
        while closing.is_none() {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut group = Vec::new();
            match first {
                WriterMsg::Append {
                    intent,
                    meta,
                    reply,
                } => group.push((intent, meta, reply)),
                WriterMsg::Close(done) => closing = Some(done),
            }
            while closing.is_none() && group.len() < self.options.max_group {
                match self.rx.try_recv() {
                    Ok(WriterMsg::Append {
                        intent,
                        meta,
                        reply,
                    }) => group.push((intent, meta, reply)),
                    Ok(WriterMsg::Close(done)) => closing = Some(done),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit(group);
            }
        }
        self.rx.close();
        // Refuse whatever raced in after the close.
        while let Ok(msg) = self.rx.try_recv() {
            if let WriterMsg::Append { reply, .. } = msg {
                self.shared.answered(1);
                let _ = reply.send(Err(StorageError::Closed.into()));
            }
        }
        // The syncer finishes the groups in flight, then ends.
        self.syncer = None;
        if let Some(handle) = syncer {
            if handle.join().is_err() {
                tracing::error!("the syncer thread panicked");
            }
        }
        if let Err(e) = self.shared.engine.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
        // Release our handle on the engine before saying we are done, so that once
        // the last `Store` is dropped the database is closed and can be reopened.
        drop(self.shared);
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    fn commit(&mut self, group: Vec<(Prepared, Meta, Reply)>) {
        let requests = group.len();
        if let Some(reason) = self.shared.poisoned.lock().clone() {
            self.shared.answered(group.len());
            for (_, _, reply) in group {
                let _ = reply.send(Err(StorageError::Poisoned(reason.clone()).into()));
            }
            return;
        }
        let mut answers: Vec<(Reply, Result<Outcome, AppendError>)> =
            Vec::with_capacity(group.len());
        let mut drafts = Vec::new();
        let mut pending = Pending::default();
        {
            let index = self.shared.index.read();
            // Groups the index holds now need no overlay.
            let applied = index.head();
            self.inflight.retain(|(last, _)| *last > applied);
            let mut next_seq = self.next_seq;
            let mut last_ts = self.last_ts;
            for (intent, meta, reply) in group {
                let mut ctx = Ctx {
                    index: &index,
                    engine: &self.shared.engine,
                    group: &pending,
                    earlier: &self.inflight,
                    next_seq,
                    last_ts,
                };
                let res = ctx.validate(intent, &meta, &mut self.scratch);
                (next_seq, last_ts) = (ctx.next_seq, ctx.last_ts);
                match res {
                    Ok(acc) => {
                        drafts.extend(acc.drafts);
                        pending.merge(&mut self.scratch);
                        answers.push((reply, Ok(acc.outcome)));
                    }
                    Err(e) => {
                        // A refused request leaves nothing behind.
                        self.scratch.clear();
                        answers.push((reply, Err(e)));
                    }
                }
            }
            self.last_ts = last_ts;
        }
        if let Some(last) = drafts.last().map(|d| d.record.seq) {
            match self.write(&mut drafts) {
                Ok(()) => {
                    self.next_seq = last + 1;
                    self.inflight.push((last, pending));
                }
                Err(e) => {
                    tracing::error!(error = %e, "group write failed; store poisoned");
                    *self.shared.poisoned.lock() = Some(e.to_string());
                    fail(&self.shared, answers, &e.to_string());
                    return;
                }
            }
        }
        // Even a group that wrote nothing goes through the syncer: its answers (a replay
        // of an event still in flight, say) must not overtake the durability of the
        // groups before it.
        let written = Written {
            drafts,
            answers,
            requests,
        };
        let sent = match &self.syncer {
            Some(tx) => tx.send(written).map_err(|e| e.0),
            None => Err(written),
        };
        if let Err(lost) = sent {
            let reason = "the syncer thread is gone".to_owned();
            *self.shared.poisoned.lock() = Some(reason.clone());
            fail(&self.shared, lost.answers, &reason);
        }
    }

    /// Chains and writes the group (not durable yet).
    fn write(&mut self, drafts: &mut [crate::validate::Draft]) -> Result<(), StorageError> {
        let mut g = GroupWrite::default();
        let now = Timestamp::now();
        let stale = Timestamp(now.micros().saturating_sub(ARRIVAL_SLACK_MICROS));
        if drafts.iter().any(|d| d.record.timestamp < stale) {
            // Records older than their arrival (an import): mark when the group arrived.
            g.arrival = drafts.first().map(|d| (d.record.seq, now));
        }
        let mut seen_content = std::collections::HashSet::new();
        let mut prev = self.last_hash;
        for d in drafts.iter_mut() {
            d.record.prev_hash = prev;
            let content = d.content.take();
            // Content under the blob threshold goes in the record's log value: one key
            // per event (see `log`'s docs).
            let inline = content
                .as_ref()
                .map(|(_, text)| text.as_bytes())
                .filter(|text| !Engine::is_blob_candidate(text.len()));
            let value = crate::log::log_value(&mut d.record, inline)?;
            prev = d.record.hash;
            d.event.prev_hash = crate::record::hex(&d.record.prev_hash);
            d.event.hash = crate::record::hex(&d.record.hash);
            g.records.push((d.record.seq, value));
            if let Some((h, text)) =
                content.filter(|(_, text)| Engine::is_blob_candidate(text.len()))
            {
                if seen_content.insert(h) && !self.recent_content.contains(&h) {
                    // Large content is keyed by its hash and written once: looked up
                    // first, since sled would put each write in a new file.
                    if !self.shared.engine.has_content(&h)? {
                        g.content.push((h, text.into_bytes()));
                    }
                }
            }
        }
        self.shared.engine.write_group(&g)?;
        for (h, _) in &g.content {
            self.recent_content.insert(*h);
        }
        self.last_hash = prev;
        Ok(())
    }
}

/// Answers a group's requests after a failure: those accepted get `reason`.
fn fail(shared: &Shared, answers: Vec<(Reply, Result<Outcome, AppendError>)>, reason: &str) {
    shared.answered(answers.len());
    for (reply, res) in answers {
        let res = match res {
            Ok(_) => Err(StorageError::Poisoned(reason.to_owned()).into()),
            Err(refused) => Err(refused),
        };
        let _ = reply.send(res);
    }
}

impl Syncer {
    fn run(self) {
        while let Ok(first) = self.rx.recv() {
            // Every group waiting is made durable by one flush.
            let mut groups = vec![first];
            while let Ok(more) = self.rx.try_recv() {
                groups.push(more);
            }
            self.gather(&mut groups);
            let started = Instant::now();
            let durable = self.make_durable(&groups);
            let flush = started.elapsed();
            match durable {
                Ok(()) => {
                    for g in groups {
                        self.publish(g, flush);
                    }
                }
                Err(reason) => {
                    for g in groups {
                        fail(&self.shared, g.answers, &reason);
                    }
                }
            }
        }
    }

    /// Under concurrency, waits up to the commit delay for more groups before a flush,
    /// as long as at least [`COMMIT_SIBLINGS`] submitted requests are not yet in
    /// `groups`: they are on their way through the writer, and one flush for all of
    /// them costs the device, the kernel and the threads a fraction of several.
    fn gather(&self, groups: &mut Vec<Written>) {
        if self.commit_delay.is_zero() || self.durability != Durability::Fsync {
            return;
        }
        let deadline = Instant::now() + self.commit_delay;
        let mut held: usize = groups.iter().map(|g| g.requests).sum();
        loop {
            let submitted = self.shared.submitted.load(Ordering::Acquire);
            if submitted.saturating_sub(held) < COMMIT_SIBLINGS {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.rx.recv_timeout(left) {
                Ok(more) => {
                    held += more.requests;
                    groups.push(more);
                }
                Err(_) => return,
            }
        }
    }

    /// Makes `groups` durable (per durability); the poison reason if the store is or
    /// becomes poisoned.
    fn make_durable(&self, groups: &[Written]) -> Result<(), String> {
        if let Some(reason) = self.shared.poisoned.lock().clone() {
            return Err(reason);
        }
        let wrote = groups.iter().any(|g| !g.drafts.is_empty());
        if !wrote || self.durability != Durability::Fsync {
            return Ok(());
        }
        self.shared.engine.make_durable().map_err(|e| {
            tracing::error!(error = %e, "group flush failed; store poisoned");
            let reason = e.to_string();
            *self.shared.poisoned.lock() = Some(reason.clone());
            reason
        })?;
        self.shared.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Applies a durable group to the index, moves the head, broadcasts its events and
    /// answers its requests.
    fn publish(&self, g: Written, flush: Duration) {
        let Written {
            drafts,
            answers,
            requests,
            ..
        } = g;
        if let Some(head) = drafts.last().map(|d| d.record.seq) {
            {
                let mut index = self.shared.index.write();
                for d in &drafts {
                    if let Err(e) = index.apply(&d.record) {
                        // Validation and the index disagree: a bug. The log holds the
                        // truth; refuse further writes so a restart rebuilds cleanly.
                        tracing::error!(error = %e, "index refused a validated record");
                        *self.shared.poisoned.lock() = Some(format!("index: {e}"));
                        break;
                    }
                }
            }
            let events = drafts.len();
            self.shared.head.send_replace(head);
            self.shared
                .events_total
                .fetch_add(events as u64, Ordering::Relaxed);
            for d in drafts {
                // No receivers is fine.
                let _ = self.shared.events.send(Arc::new(d.event));
            }
            if let Some(observe) = &self.on_group {
                observe(GroupStats {
                    requests,
                    events,
                    flush,
                });
            }
        }
        self.shared.answered(answers.len());
        for (reply, res) in answers {
            let _ = reply.send(res);
        }
    }
}

/// What a read of up to `limit` events after `after` reserves, the durable head being
/// `head`: at most as many as there are (seqs can have gaps, so this bounds, not
/// counts), and no more than 16 384 up front.
fn read_capacity(head: Seq, after: Seq, limit: usize) -> usize {
    let waiting = usize::try_from(head.saturating_sub(after)).unwrap_or(usize::MAX);
    limit.min(waiting).min(16_384)
}

#[cfg(test)]
mod tests {
    //! The commit delay: a flush waits only for requests on their way, and never past
    //! its deadline.

    use std::time::{Duration, Instant};

    use uuid::Uuid;

    use super::*;
    use crate::intent::{NewNode, NewWorkflow};

    /// Longer than any test may take: a flush that waited for it would time the test out.
    const AN_HOUR: Duration = Duration::from_secs(3600);
    /// What the tests give the code under test before they call it stuck.
    const PATIENCE: Duration = Duration::from_secs(60);

    fn open(dir: &Path, durability: Durability, commit_delay: Duration) -> Store {
        let options = StoreOptions {
            durability,
            commit_delay,
            ..StoreOptions::default()
        };
        Store::open(dir, options).unwrap()
    }

    /// A new workflow's root.
    async fn root(store: &Store) -> (Uuid, Uuid) {
        let created = store
            .submit(
                Intent::CreateWorkflow(NewWorkflow {
                    system_prompt: "prompt".into(),
                    ..NewWorkflow::default()
                }),
                Meta::default(),
            )
            .await
            .unwrap();
        match created {
            Outcome::WorkflowCreated {
                workflow_id,
                root_id,
                ..
            } => (workflow_id, root_id),
            o => panic!("{o:?}"),
        }
    }

    /// Appends one node under `parent`; its id.
    async fn append(store: &Store, wf: Uuid, parent: Uuid) -> Uuid {
        let id = Uuid::now_v7();
        let mut node = NewNode::new(parent, "message", format!("node {id}"));
        node.id = Some(id);
        let intent = Intent::AppendNodes {
            workflow_id: wf,
            nodes: vec![node],
        };
        store.submit(intent, Meta::default()).await.unwrap();
        id
    }

    #[tokio::test]
    async fn a_lone_appender_never_waits_for_the_commit_delay() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Durability::Fsync, AN_HOUR);
        let (wf, mut parent) = root(&store).await;
        let flushes = store.flushes();
        let chain = async {
            for _ in 0..20 {
                parent = append(&store, wf, parent).await;
            }
        };
        tokio::time::timeout(PATIENCE, chain)
            .await
            .expect("no append waits when no other is on its way");
        assert_eq!(store.flushes() - flushes, 20, "one flush an append");
        store.close().await;
    }

    #[tokio::test]
    async fn a_flush_waits_for_requests_on_their_way_until_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let delay = Duration::from_millis(300);
        let store = open(dir.path(), Durability::Fsync, delay);
        let (wf, root) = root(&store).await;
        // Ten requests counted as submitted that never reach the syncer.
        store.shared.submitted.fetch_add(10, Ordering::AcqRel);
        let started = Instant::now();
        tokio::time::timeout(PATIENCE, append(&store, wf, root))
            .await
            .expect("the wait ends at the deadline");
        let waited = started.elapsed();
        assert!(
            waited >= delay,
            "the flush waited {waited:?}, not {delay:?}"
        );
        store.shared.answered(10);
        store.close().await;
    }

    #[tokio::test]
    async fn a_request_the_writer_never_took_is_not_counted_as_on_its_way() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Durability::Fsync, AN_HOUR);
        let (wf, root) = root(&store).await;
        store.close().await;
        let mut node = NewNode::new(root, "message", "after the close");
        node.id = Some(Uuid::now_v7());
        let intent = Intent::AppendNodes {
            workflow_id: wf,
            nodes: vec![node],
        };
        let refused = store.submit(intent, Meta::default()).await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(store.shared.submitted.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn without_fsync_nothing_waits_and_nothing_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Durability::None, AN_HOUR);
        let (wf, root) = root(&store).await;
        store.shared.submitted.fetch_add(10, Ordering::AcqRel);
        tokio::time::timeout(PATIENCE, append(&store, wf, root))
            .await
            .expect("no wait without a flush to share");
        assert_eq!(store.flushes(), 0);
        store.shared.answered(10);
        store.close().await;
    }

    /// 32 appenders of 16 nodes each, with a commit delay of an hour: every flush that
    /// waits stops when fewer than four requests are still on their way, never at the
    /// deadline, so the whole load ends, and every request is counted out again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appenders_share_flushes_and_none_is_left_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Durability::Fsync, AN_HOUR);
        let (wf, root) = root(&store).await;
        let flushes = store.flushes();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let store = store.clone();
            tasks.spawn(async move {
                let mut parent = root;
                for _ in 0..16 {
                    parent = append(&store, wf, parent).await;
                }
            });
        }
        let all = async {
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        };
        tokio::time::timeout(PATIENCE, all)
            .await
            .expect("no flush waits for requests that are not coming");
        let flushes = store.flushes() - flushes;
        assert!(flushes < 32 * 16, "{flushes} flushes for 512 appends");
        assert_eq!(store.shared.submitted.load(Ordering::Acquire), 0);
        assert_eq!(store.index_size().0, 1 + 32 * 16);
        store.close().await;
    }
}
