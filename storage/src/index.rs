//! The in-memory workflow index: one petgraph graph per workflow, derived from the log.
//!
//! Nodes hold only what traversals need ([`NodeMeta`], 40 bytes): id, seq, parent,
//! depth, branch, type (interned, see [`TypeNames`]) and role. Content and everything
//! else stays in sled and is fetched by seq. `parent` is kept in the node itself so that the path to the root is a chain
//! of array lookups; the graph's edges serve children, subtrees and the typed edges.
//!
//! Invariants (checked by [`Index::apply`], which rebuild and verify rely on):
//! - node indices within a workflow are in seq order;
//! - a node's parent is in the same workflow, with depth one less;
//! - a node continues its parent's branch iff it is the parent's first child;
//!   otherwise it starts a branch whose id is its own id;
//! - a decision has at most one CHOSEN_OPTION, and it is one of its OPTION_OF targets.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use uuid::Uuid;

use crate::model::Edge;
use crate::model::{EdgeKind, Role, Seq, WorkflowStatus};
use crate::record::{NodeRecord, Record, RecordBody};
use crate::time::Timestamp;

/// Marks "no node" in `u32` node references (the root's parent, the root branch's fork).
pub const NONE: u32 = u32::MAX;

/// The node types traversals distinguish; every other type is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NodeKind {
    /// Root.
    System,
    /// A decision point.
    Decision,
    /// An option of a decision.
    Option,
    /// A monitor.
    Monitor,
    /// Anything else (message, action, custom types).
    Other,
}

impl NodeKind {
    /// The OPTION_OF rule, in its one place: OPTION_OF joins a `decision` to an
    /// `option`. A node of type `option` appended under a `decision` implies
    /// `decision -[:OPTION_OF]-> option` (recorded nowhere else in the log), and an
    /// explicit OPTION_OF edge is accepted only between such a pair.
    pub fn implies_option_of(parent: NodeKind, child: NodeKind) -> bool {
        parent == NodeKind::Decision && child == NodeKind::Option
    }

    /// Classifies a type name.
    pub fn of(type_name: &str) -> NodeKind {
        match type_name {
            "system" => NodeKind::System,
            "decision" => NodeKind::Decision,
            "option" => NodeKind::Option,
            "monitor" => NodeKind::Monitor,
            _ => NodeKind::Other,
        }
    }
}

/// What the index needs of one record: no content, payload, metadata or hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexEvent {
    /// Log position.
    pub seq: Seq,
    /// The event's id (for a node, the node's id; for a workflow, the workflow's).
    pub id: Uuid,
    /// Workflow.
    pub workflow_id: Uuid,
    /// Server time.
    pub timestamp: Timestamp,
    /// What happened.
    pub body: IndexBody,
}

/// The part of a record body the index needs.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexBody {
    /// A workflow and its root.
    WorkflowCreated {
        /// The root.
        root: IndexNode,
        /// Owner (list filter).
        user_id: Option<Box<str>>,
        /// Whether it was created with metadata (which stays in the log: a workflow
        /// without any is answered from memory, see [`WorkflowIndex::has_metadata`]).
        has_metadata: bool,
    },
    /// A node.
    NodeCreated(IndexNode),
    /// An edge.
    EdgeCreated(Edge),
    /// A status change.
    StatusChanged {
        /// Before.
        from: WorkflowStatus,
        /// After.
        to: WorkflowStatus,
    },
}

/// The part of a node the index needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IndexNode {
    /// Id.
    pub id: Uuid,
    /// Parent.
    pub parent_id: Option<Uuid>,
    /// Kind from the type name.
    pub kind: NodeKind,
    /// The type name.
    pub node_type: TypeName,
    /// Role, if the node is a message.
    pub role: Option<Role>,
    /// Stored branch id (checked against the tree).
    pub branch_id: Uuid,
    /// Stored depth (checked against the tree).
    pub depth: u32,
}

impl IndexNode {
    /// What the index needs of a node whose type is `node_type`.
    pub fn new(
        id: Uuid,
        parent_id: Option<Uuid>,
        node_type: &str,
        role: Option<Role>,
        branch_id: Uuid,
        depth: u32,
    ) -> IndexNode {
        IndexNode {
            id,
            parent_id,
            kind: NodeKind::of(node_type),
            node_type: TypeName::new(node_type),
            role,
            branch_id,
            depth,
        }
    }
}

/// A node type name held inline (no allocation per decoded record): valid type names
/// are at most 32 bytes (`valid_node_type`); a longer one (never stored by this
/// version) is kept as "not interned" and read from the log when asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TypeName {
    len: u8,
    bytes: [u8; 32],
}

impl TypeName {
    /// `name`, or the "too long" marker.
    pub fn new(name: &str) -> TypeName {
        let mut bytes = [0u8; 32];
        match bytes.get_mut(..name.len()) {
            Some(dst) => {
                dst.copy_from_slice(name.as_bytes());
                TypeName {
                    len: name.len() as u8,
                    bytes,
                }
            }
            None => TypeName {
                len: u8::MAX,
                bytes,
            },
        }
    }

    /// The name, or None when it was too long to hold.
    pub fn as_str(&self) -> Option<&str> {
        let b = self.bytes.get(..usize::from(self.len))?;
        std::str::from_utf8(b).ok()
    }
}

impl std::fmt::Debug for TypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Type id of a node whose type is not interned (the table is full, or the name too
/// long): its type is read from its record.
pub const TYPE_NOT_INTERNED: u16 = u16::MAX;

/// Most distinct type names interned; later ones are [`TYPE_NOT_INTERNED`], so a
/// client inventing types cannot grow the table without bound.
pub const MAX_TYPE_NAMES: usize = 16_384;

/// Node type names interned to `u16` ids shared by all workflows. Ids 0–3 are the
/// types traversals distinguish (system, decision, option, monitor), so a node's
/// [`NodeKind`] follows from its id.
#[derive(Debug)]
pub struct TypeNames {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, u16>,
}

impl Default for TypeNames {
    fn default() -> TypeNames {
        let mut t = TypeNames {
            names: Vec::new(),
            ids: HashMap::new(),
        };
        for name in ["system", "decision", "option", "monitor"] {
            t.intern(TypeName::new(name));
        }
        t
    }
}

impl TypeNames {
    /// The id of `name`, interning it if there is room.
    pub fn intern(&mut self, name: TypeName) -> u16 {
        let Some(s) = name.as_str() else {
            return TYPE_NOT_INTERNED;
        };
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        if self.names.len() >= MAX_TYPE_NAMES {
            return TYPE_NOT_INTERNED;
        }
        let id = self.names.len() as u16;
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    /// The name of type id `id` (None for [`TYPE_NOT_INTERNED`]).
    pub fn name(&self, id: u16) -> Option<&str> {
        self.names.get(usize::from(id)).map(|n| &**n)
    }
}

/// The kind of a node of type id `ty` (see [`TypeNames`]).
fn kind_of_type_id(ty: u16) -> NodeKind {
    match ty {
        0 => NodeKind::System,
        1 => NodeKind::Decision,
        2 => NodeKind::Option,
        3 => NodeKind::Monitor,
        _ => NodeKind::Other,
    }
}

impl IndexNode {
    fn of(n: &NodeRecord) -> IndexNode {
        IndexNode::new(
            n.id,
            n.parent_id,
            &n.node_type,
            n.role,
            n.branch_id,
            n.depth,
        )
    }
}

impl IndexEvent {
    /// The index's view of a full record.
    pub fn of(r: &Record) -> IndexEvent {
        IndexEvent {
            seq: r.seq,
            id: r.id,
            workflow_id: r.workflow_id,
            timestamp: r.timestamp,
            body: match &r.body {
                RecordBody::WorkflowCreated {
                    root,
                    user_id,
                    metadata,
                } => IndexBody::WorkflowCreated {
                    root: IndexNode::of(root),
                    user_id: user_id.as_deref().map(Box::from),
                    has_metadata: !metadata.is_empty(),
                },
                RecordBody::NodeCreated(n) => IndexBody::NodeCreated(IndexNode::of(n)),
                RecordBody::EdgeCreated(e) => IndexBody::EdgeCreated(*e),
                RecordBody::StatusChanged { from, to } => IndexBody::StatusChanged {
                    from: *from,
                    to: *to,
                },
            },
        }
    }
}

/// What the index keeps per node.
#[derive(Clone, Copy, Debug)]
pub struct NodeMeta {
    /// Node id.
    pub id: Uuid,
    /// Seq of the creating event: the key to the full node in the log.
    pub seq: Seq,
    /// Parent's index in the same graph, or [`NONE`].
    pub parent: u32,
    /// Depth (root 0).
    pub depth: u32,
    /// Branch slot in [`WorkflowIndex::branches`].
    pub branch: u32,
    /// Type id in [`Index::type_names`] (its [`NodeKind`] follows from it).
    pub ty: u16,
    /// Role, if the node is a message.
    pub role: Option<Role>,
    /// Whether the node has a child yet (decides first-child branch continuation).
    pub has_child: bool,
}

impl NodeMeta {
    /// Kind, for edge rules.
    pub fn kind(&self) -> NodeKind {
        kind_of_type_id(self.ty)
    }
}

/// A branch: a chain of first children.
#[derive(Clone, Copy, Debug)]
pub struct BranchMeta {
    /// First node (its id is the branch id).
    pub first: u32,
    /// The node the branch forked from, or [`NONE`] for the root's branch.
    pub fork: u32,
    /// Latest node of the branch.
    pub head: u32,
    /// Number of nodes.
    pub length: u32,
}

/// One workflow's graph and summary state.
#[derive(Debug)]
pub struct WorkflowIndex {
    /// Workflow id.
    pub id: Uuid,
    /// Status.
    pub status: WorkflowStatus,
    /// Owner (for list filters).
    pub user_id: Option<Box<str>>,
    /// Seq of `workflow.created` (the list order and cursor).
    pub created_seq: Seq,
    /// Whether it was created with metadata. The metadata stays in its creation record
    /// (it may be large, and most workflows have none): a summary of a workflow without
    /// any needs no read of the log.
    pub has_metadata: bool,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the latest event.
    pub updated_at: Timestamp,
    /// Seq of the latest event.
    pub last_seq: Seq,
    /// The tree plus typed edges; node 0 is the root.
    pub graph: DiGraph<NodeMeta, EdgeKind, u32>,
    /// Branches in creation order; slot 0 is the root's.
    pub branches: Vec<BranchMeta>,
    /// Decision nodes in seq order.
    pub decisions: Vec<u32>,
    /// decision → chosen option.
    pub chosen: HashMap<u32, u32>,
    /// (monitor, target) pairs in seq order.
    pub monitors: Vec<(u32, u32)>,
    /// Seqs of the workflow's events that create no node (edges, status changes), in
    /// order. With the graph's nodes (which are in seq order) these are all its events:
    /// see [`WorkflowIndex::seqs`].
    pub events: Vec<Seq>,
}

/// Where a node lives: workflow slot and node index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRef {
    /// Slot in the index's workflow list.
    pub wf: u32,
    /// Node index within that workflow's graph.
    pub idx: u32,
}

/// A branch as the API reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct BranchInfo {
    /// Branch id (id of its first node).
    pub branch_id: Uuid,
    /// Fork node id (None for the root's branch).
    pub fork_node_id: Option<Uuid>,
    /// Latest node.
    pub head_id: Uuid,
    /// Number of nodes.
    pub length: u32,
}

/// What a reader scoped to some branches sees of one workflow (DESIGN §8): the nodes
/// of those branches and their ancestors up to the root. Nodes carry their branch and
/// depth, so [`BranchScope::sees`] needs no index: a branch is a chain of first
/// children, so the visible part of each branch is everything down to some depth.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BranchScope {
    /// Branch id → how much of it is seen.
    reach: HashMap<Uuid, Reach>,
    /// Whether any listed branch exists in the workflow (else nothing is seen).
    present: bool,
}

/// How much of a branch a [`BranchScope`] sees.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Reach {
    /// Deepest seen node's depth (`u32::MAX`: the whole branch, listed in scope).
    depth: u32,
    /// Deepest seen node (a fork point), for the branch report.
    head: Uuid,
    /// Nodes seen.
    length: u32,
}

impl Reach {
    const WHOLE: Reach = Reach {
        depth: u32::MAX,
        head: Uuid::nil(),
        length: u32::MAX,
    };
}

impl BranchScope {
    /// Whether a node of branch `branch_id` at `depth` is seen.
    pub fn sees(&self, branch_id: &Uuid, depth: u32) -> bool {
        self.present && self.reach.get(branch_id).is_some_and(|r| depth <= r.depth)
    }

    /// Whether branch `branch_id` is in scope: wholly seen, and appended to.
    pub fn owns(&self, branch_id: &Uuid) -> bool {
        self.present && self.reach.get(branch_id) == Some(&Reach::WHOLE)
    }

    /// Whether nothing of the workflow is seen (no listed branch is in it).
    pub fn is_empty(&self) -> bool {
        !self.present
    }
}

/// The index refused a record: the log and the invariants disagree.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("seq {seq}: {reason}")]
pub struct IndexError {
    /// The offending record.
    pub seq: Seq,
    /// What is wrong.
    pub reason: String,
}

/// All workflows.
#[derive(Debug, Default)]
pub struct Index {
    workflows: Vec<WorkflowIndex>,
    by_wf: HashMap<Uuid, u32>,
    by_node: HashMap<Uuid, NodeRef>,
    /// Ids of the events that create no node (edges, status changes) → their seq.
    /// Node and workflow ids are found through `by_node` and `by_wf`.
    by_event: HashMap<Uuid, Seq>,
    types: TypeNames,
    head: Seq,
}

fn err(seq: Seq, reason: impl Into<String>) -> IndexError {
    IndexError {
        seq,
        reason: reason.into(),
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// Seq of the last applied record.
    pub fn head(&self) -> Seq {
        self.head
    }

    /// Number of indexed nodes.
    pub fn node_count(&self) -> usize {
        self.by_node.len()
    }

    /// Number of workflows.
    pub fn workflow_count(&self) -> usize {
        self.workflows.len()
    }

    /// Reserves room for `nodes` more nodes (before a bulk rebuild).
    pub fn reserve(&mut self, nodes: usize) {
        self.by_node.reserve(nodes);
    }

    /// Releases spare capacity after a bulk rebuild.
    pub fn shrink_to_fit(&mut self) {
        for w in &mut self.workflows {
            w.graph.shrink_to_fit();
            w.branches.shrink_to_fit();
            w.decisions.shrink_to_fit();
            w.monitors.shrink_to_fit();
            w.events.shrink_to_fit();
        }
        self.workflows.shrink_to_fit();
        self.by_node.shrink_to_fit();
        self.by_wf.shrink_to_fit();
        self.by_event.shrink_to_fit();
    }

    /// Applies one record. Records must come in seq order, each one valid against
    /// what came before; anything else is an [`IndexError`] and changes nothing.
    pub fn apply(&mut self, r: &Record) -> Result<(), IndexError> {
        self.apply_event(&IndexEvent::of(r))
    }

    /// Applies what the index needs of one record (see [`IndexEvent`]); the rebuild
    /// decodes only that much of each record.
    pub fn apply_event(&mut self, r: &IndexEvent) -> Result<(), IndexError> {
        if r.seq != self.head + 1 {
            return Err(err(r.seq, format!("expected seq {}", self.head + 1)));
        }
        match &r.body {
            IndexBody::WorkflowCreated {
                root,
                user_id,
                has_metadata,
            } => {
                if self.id_known(&r.workflow_id) {
                    return Err(err(r.seq, "workflow created twice or its id reused"));
                }
                if self.id_known(&root.id) || root.parent_id.is_some() {
                    return Err(err(r.seq, "root node id reused or root has a parent"));
                }
                if root.branch_id != root.id || root.depth != 0 {
                    return Err(err(r.seq, "root branch or depth is wrong"));
                }
                let slot = u32::try_from(self.workflows.len())
                    .map_err(|_| err(r.seq, "too many workflows"))?;
                let mut graph = DiGraph::default();
                graph.add_node(NodeMeta {
                    id: root.id,
                    seq: r.seq,
                    parent: NONE,
                    depth: 0,
                    branch: 0,
                    ty: self.types.intern(root.node_type),
                    role: root.role,
                    has_child: false,
                });
                self.workflows.push(WorkflowIndex {
                    id: r.workflow_id,
                    status: WorkflowStatus::Running,
                    user_id: user_id.clone(),
                    created_seq: r.seq,
                    has_metadata: *has_metadata,
                    created_at: r.timestamp,
                    updated_at: r.timestamp,
                    last_seq: r.seq,
                    graph,
                    branches: vec![BranchMeta {
                        first: 0,
                        fork: NONE,
                        head: 0,
                        length: 1,
                    }],
                    decisions: Vec::new(),
                    chosen: HashMap::new(),
                    monitors: Vec::new(),
                    events: Vec::new(),
                });
                self.by_wf.insert(r.workflow_id, slot);
                self.by_node.insert(root.id, NodeRef { wf: slot, idx: 0 });
            }
            IndexBody::NodeCreated(n) => {
                let slot = self.slot(r)?;
                if self.id_known(&n.id) {
                    return Err(err(r.seq, format!("node id {} reused", n.id)));
                }
                let parent_id = n
                    .parent_id
                    .ok_or_else(|| err(r.seq, "non-root node without parent"))?;
                let p = self
                    .by_node
                    .get(&parent_id)
                    .copied()
                    .filter(|p| p.wf == slot)
                    .ok_or_else(|| err(r.seq, format!("parent {parent_id} not in workflow")))?;
                let kind = n.kind;
                let w = &mut self.workflows[slot as usize];
                let parent = w.graph[NodeIndex::new(p.idx as usize)];
                let idx = u32::try_from(w.graph.node_count())
                    .map_err(|_| err(r.seq, "workflow too large"))?;
                let (branch, branch_id) = if parent.has_child {
                    (
                        u32::try_from(w.branches.len())
                            .map_err(|_| err(r.seq, "too many branches"))?,
                        n.id,
                    )
                } else {
                    let b = w.branches[parent.branch as usize];
                    (parent.branch, w.graph[NodeIndex::new(b.first as usize)].id)
                };
                if n.branch_id != branch_id || n.depth != parent.depth + 1 {
                    return Err(err(
                        r.seq,
                        "stored branch_id or depth disagrees with the tree",
                    ));
                }
                if parent.has_child {
                    w.branches.push(BranchMeta {
                        first: idx,
                        fork: p.idx,
                        head: idx,
                        length: 1,
                    });
                } else {
                    let b = &mut w.branches[branch as usize];
                    b.head = idx;
                    b.length += 1;
                }
                let pi = NodeIndex::new(p.idx as usize);
                w.graph[pi].has_child = true;
                let ni = w.graph.add_node(NodeMeta {
                    id: n.id,
                    seq: r.seq,
                    parent: p.idx,
                    depth: parent.depth + 1,
                    branch,
                    ty: self.types.intern(n.node_type),
                    role: n.role,
                    has_child: false,
                });
                w.graph.add_edge(pi, ni, EdgeKind::ParentOf);
                if NodeKind::implies_option_of(parent.kind(), kind) {
                    w.graph.add_edge(pi, ni, EdgeKind::OptionOf);
                }
                if kind == NodeKind::Decision {
                    w.decisions.push(idx);
                }
                self.by_node.insert(n.id, NodeRef { wf: slot, idx });
            }
            IndexBody::EdgeCreated(e) => {
                let slot = self.slot(r)?;
                self.refuse_known_event_id(r)?;
                let from = self.local(slot, e.from, r.seq)?;
                let to = self.local(slot, e.to, r.seq)?;
                let w = &mut self.workflows[slot as usize];
                match e.kind {
                    EdgeKind::ParentOf => return Err(err(r.seq, "explicit PARENT_OF edge")),
                    EdgeKind::Monitors => w.monitors.push((from, to)),
                    EdgeKind::OptionOf => {
                        if !NodeKind::implies_option_of(
                            w.graph[NodeIndex::new(from as usize)].kind(),
                            w.graph[NodeIndex::new(to as usize)].kind(),
                        ) {
                            return Err(err(r.seq, "OPTION_OF must go decision → option"));
                        }
                    }
                    EdgeKind::ChosenOption => {
                        if !w.has_edge(from, to, EdgeKind::OptionOf) {
                            return Err(err(r.seq, "CHOSEN_OPTION target is not an option"));
                        }
                        if w.chosen.contains_key(&from) {
                            return Err(err(r.seq, "decision chosen twice"));
                        }
                        w.chosen.insert(from, to);
                    }
                }
                w.graph.add_edge(
                    NodeIndex::new(from as usize),
                    NodeIndex::new(to as usize),
                    e.kind,
                );
                w.events.push(r.seq);
                self.by_event.insert(r.id, r.seq);
            }
            IndexBody::StatusChanged { from, to } => {
                let slot = self.slot(r)?;
                self.refuse_known_event_id(r)?;
                let w = &mut self.workflows[slot as usize];
                if w.status != *from || w.status.is_terminal() {
                    return Err(err(
                        r.seq,
                        "status change does not follow the current status",
                    ));
                }
                w.status = *to;
                w.events.push(r.seq);
                self.by_event.insert(r.id, r.seq);
            }
        }
        let slot = self.by_wf[&r.workflow_id];
        let w = &mut self.workflows[slot as usize];
        w.last_seq = r.seq;
        w.updated_at = r.timestamp;
        self.head = r.seq;
        Ok(())
    }

    /// Whether `id` names anything already indexed: a workflow, a node or an event.
    fn id_known(&self, id: &Uuid) -> bool {
        self.by_node.contains_key(id)
            || self.by_wf.contains_key(id)
            || self.by_event.contains_key(id)
    }

    /// Refuses an event (that creates no node) whose id is already taken.
    fn refuse_known_event_id(&self, r: &IndexEvent) -> Result<(), IndexError> {
        if self.id_known(&r.id) {
            return Err(err(r.seq, format!("event id {} reused", r.id)));
        }
        Ok(())
    }

    /// The seq of the event that introduced `id`: a workflow's creation, a node's, or
    /// an edge's or status change's own id. `None` if no indexed event has that id.
    pub fn seq_of_id(&self, id: &Uuid) -> Option<Seq> {
        if let Some(r) = self.by_node.get(id) {
            return Some(self.workflows[r.wf as usize].node(r.idx).seq);
        }
        if let Some(slot) = self.by_wf.get(id) {
            return Some(self.workflows[*slot as usize].created_seq);
        }
        self.by_event.get(id).copied()
    }

    fn slot(&self, r: &IndexEvent) -> Result<u32, IndexError> {
        self.by_wf
            .get(&r.workflow_id)
            .copied()
            .ok_or_else(|| err(r.seq, format!("unknown workflow {}", r.workflow_id)))
    }

    fn local(&self, slot: u32, id: Uuid, seq: Seq) -> Result<u32, IndexError> {
        self.by_node
            .get(&id)
            .filter(|n| n.wf == slot)
            .map(|n| n.idx)
            .ok_or_else(|| err(seq, format!("edge end {id} not in workflow")))
    }

    /// Where node `id` lives.
    pub fn node_ref(&self, id: &Uuid) -> Option<NodeRef> {
        self.by_node.get(id).copied()
    }

    /// The workflow with id `wf`.
    pub fn workflow(&self, wf: &Uuid) -> Option<&WorkflowIndex> {
        self.by_wf.get(wf).map(|s| &self.workflows[*s as usize])
    }

    /// The workflow in slot `slot`.
    pub fn workflow_at(&self, slot: u32) -> &WorkflowIndex {
        &self.workflows[slot as usize]
    }

    /// The interned node type names.
    pub fn type_names(&self) -> &TypeNames {
        &self.types
    }

    /// The node at `r`.
    pub fn meta(&self, r: NodeRef) -> &NodeMeta {
        &self.workflows[r.wf as usize].graph[NodeIndex::new(r.idx as usize)]
    }

    /// Seqs of the nodes from the root to `id`, root first.
    pub fn path(&self, id: &Uuid) -> Option<Vec<Seq>> {
        let r = self.node_ref(id)?;
        let g = &self.workflows[r.wf as usize].graph;
        let mut at = g[NodeIndex::new(r.idx as usize)];
        let mut out = Vec::with_capacity(at.depth as usize + 1);
        out.push(at.seq);
        while at.parent != NONE {
            at = g[NodeIndex::new(at.parent as usize)];
            out.push(at.seq);
        }
        out.reverse();
        Some(out)
    }

    /// Seqs of the direct children of `id`, in seq order.
    pub fn children(&self, id: &Uuid) -> Option<Vec<Seq>> {
        let r = self.node_ref(id)?;
        let w = &self.workflows[r.wf as usize];
        Some(
            w.children(r.idx)
                .into_iter()
                .map(|c| w.graph[NodeIndex::new(c as usize)].seq)
                .collect(),
        )
    }

    /// Seqs of `id` and the nodes below it, breadth-first, children in seq order,
    /// down to `max_depth` levels below `id` (unbounded when `None`).
    pub fn subtree(&self, id: &Uuid, max_depth: Option<u32>) -> Option<Vec<Seq>> {
        let r = self.node_ref(id)?;
        let w = &self.workflows[r.wf as usize];
        let base = w.graph[NodeIndex::new(r.idx as usize)].depth;
        let mut out = Vec::new();
        let mut queue = std::collections::VecDeque::from([r.idx]);
        while let Some(i) = queue.pop_front() {
            let m = w.graph[NodeIndex::new(i as usize)];
            out.push(m.seq);
            if max_depth.is_some_and(|d| m.depth - base >= d) {
                continue;
            }
            queue.extend(w.children(i));
        }
        Some(out)
    }

    /// Typed edges of `id`: (outgoing (kind, to), incoming (kind, from)), oldest first.
    #[allow(clippy::type_complexity)]
    pub fn edges(&self, id: &Uuid) -> Option<(Vec<(EdgeKind, Uuid)>, Vec<(EdgeKind, Uuid)>)> {
        let r = self.node_ref(id)?;
        let g = &self.workflows[r.wf as usize].graph;
        let n = NodeIndex::new(r.idx as usize);
        let mut out: Vec<_> = g
            .edges_directed(n, Direction::Outgoing)
            .map(|e| (e.id(), *e.weight(), g[e.target()].id))
            .collect();
        let mut inc: Vec<_> = g
            .edges_directed(n, Direction::Incoming)
            .map(|e| (e.id(), *e.weight(), g[e.source()].id))
            .collect();
        out.sort_by_key(|e| e.0);
        inc.sort_by_key(|e| e.0);
        Some((
            out.into_iter().map(|(_, k, t)| (k, t)).collect(),
            inc.into_iter().map(|(_, k, f)| (k, f)).collect(),
        ))
    }

    /// Workflows newest first, starting below `before` (a `created_seq`), filtered.
    pub fn list<'a>(
        &'a self,
        before: Option<Seq>,
        mut keep: impl FnMut(&WorkflowIndex) -> bool + 'a,
    ) -> impl Iterator<Item = &'a WorkflowIndex> + 'a {
        let end = match before {
            Some(b) => self.workflows.partition_point(|w| w.created_seq < b),
            None => self.workflows.len(),
        };
        self.workflows[..end].iter().rev().filter(move |w| keep(w))
    }
}

impl WorkflowIndex {
    /// The node at local index `i`.
    pub fn node(&self, i: u32) -> &NodeMeta {
        &self.graph[NodeIndex::new(i as usize)]
    }

    /// Local indices of the children of `i`, in seq order.
    pub fn children(&self, i: u32) -> Vec<u32> {
        let mut c: Vec<u32> = self
            .graph
            .edges_directed(NodeIndex::new(i as usize), Direction::Outgoing)
            .filter(|e| *e.weight() == EdgeKind::ParentOf)
            .map(|e| e.target().index() as u32)
            .collect();
        c.sort_unstable();
        c
    }

    /// Whether an edge `kind` from `from` to `to` exists.
    pub fn has_edge(&self, from: u32, to: u32, kind: EdgeKind) -> bool {
        self.graph
            .edges_connecting(NodeIndex::new(from as usize), NodeIndex::new(to as usize))
            .any(|e| *e.weight() == kind)
    }

    /// Local indices of the OPTION_OF targets of decision `d`, in seq order.
    pub fn options(&self, d: u32) -> Vec<u32> {
        let mut o: Vec<u32> = self
            .graph
            .edges_directed(NodeIndex::new(d as usize), Direction::Outgoing)
            .filter(|e| *e.weight() == EdgeKind::OptionOf)
            .map(|e| e.target().index() as u32)
            .collect();
        o.sort_unstable();
        o
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// Seqs of this workflow's events in `(after, max]`, at most `limit`, in order: the
    /// nodes' creations (node indices are in seq order) merged with [`Self::events`].
    pub fn seqs(&self, after: Seq, max: Seq, limit: usize) -> Vec<Seq> {
        let nodes = self.graph.node_count();
        // The first node after `after`, by binary search over the seq-ordered nodes.
        let (mut lo, mut hi) = (0usize, nodes);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.graph[NodeIndex::new(mid)].seq <= after {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut i = lo;
        let mut j = self.events.partition_point(|s| *s <= after);
        let mut out = Vec::new();
        while out.len() < limit {
            let node = (i < nodes).then(|| self.graph[NodeIndex::new(i)].seq);
            let next = match (node, self.events.get(j).copied()) {
                (Some(n), Some(e)) if n < e => {
                    i += 1;
                    n
                }
                (Some(n), None) => {
                    i += 1;
                    n
                }
                (_, Some(e)) => {
                    j += 1;
                    e
                }
                (None, None) => break,
            };
            if next > max {
                break;
            }
            out.push(next);
        }
        out
    }

    /// The branch report for slot `b`.
    pub fn branch_info(&self, b: &BranchMeta) -> BranchInfo {
        BranchInfo {
            branch_id: self.node(b.first).id,
            fork_node_id: (b.fork != NONE).then(|| self.node(b.fork).id),
            head_id: self.node(b.head).id,
            length: b.length,
        }
    }

    /// The branch slot whose id is `branch_id`.
    pub fn branch_slot(&self, branch_id: &Uuid, index: &Index) -> Option<u32> {
        let r = index.node_ref(branch_id)?;
        let m = index.meta(r);
        let b = self.branches.get(m.branch as usize)?;
        (index.workflow_at(r.wf).id == self.id && self.node(b.first).id == *branch_id)
            .then_some(m.branch)
    }

    /// Local indices of the nodes of branch slot `b`, first to head.
    pub fn branch_nodes(&self, b: u32) -> Vec<u32> {
        let meta = self.branches[b as usize];
        let mut out = Vec::with_capacity(meta.length as usize);
        let mut at = meta.head;
        loop {
            out.push(at);
            if at == meta.first {
                break;
            }
            at = self.node(at).parent;
        }
        out.reverse();
        out
    }

    /// What a reader scoped to `branches` sees of this workflow (DESIGN §8): each listed
    /// branch whole, and the ancestors of its first node. A listed id that is not a
    /// branch of this workflow (yet) is kept whole, so nodes it gets later are seen.
    pub fn branch_scope(&self, branches: &[Uuid], index: &Index) -> BranchScope {
        let mut scope = BranchScope::default();
        for b in branches {
            scope.reach.insert(*b, Reach::WHOLE);
            let Some(slot) = self.branch_slot(b, index) else {
                continue;
            };
            scope.present = true;
            let mut fork = self.branches[slot as usize].fork;
            while fork != NONE {
                let f = self.node(fork);
                let branch = self.branches[f.branch as usize];
                let first = self.node(branch.first);
                let reach = scope.reach.entry(first.id).or_insert(Reach {
                    depth: 0,
                    head: f.id,
                    length: 0,
                });
                // Seen this deep already (or whole): its ancestors are in too.
                if reach.length > 0 && reach.depth >= f.depth {
                    break;
                }
                *reach = Reach {
                    depth: f.depth,
                    head: f.id,
                    length: f.depth - first.depth + 1,
                };
                fork = branch.fork;
            }
        }
        scope
    }

    /// The part of each branch that `scope` sees, in branch order.
    pub fn branches_seen(&self, scope: &BranchScope) -> Vec<BranchInfo> {
        if scope.is_empty() {
            return Vec::new();
        }
        self.branches
            .iter()
            .filter_map(|b| {
                let info = self.branch_info(b);
                match scope.reach.get(&info.branch_id)? {
                    r if *r == Reach::WHOLE => Some(info),
                    r => Some(BranchInfo {
                        head_id: r.head,
                        length: r.length,
                        ..info
                    }),
                }
            })
            .collect()
    }

    /// Ids of the branch heads (the leaves), in branch order.
    pub fn heads(&self) -> Vec<Uuid> {
        self.branches.iter().map(|b| self.node(b.head).id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{NodeRecord, ZERO_HASH};

    fn node(id: u128, parent: Option<u128>, t: &str, branch: u128, depth: u32) -> NodeRecord {
        NodeRecord {
            id: Uuid::from_u128(id),
            parent_id: parent.map(Uuid::from_u128),
            node_type: t.into(),
            role: None,
            content_hash: ZERO_HASH,
            payload: serde_json::Value::Null,
            metadata: Default::default(),
            agent_id: None,
            user_id: None,
            branch_id: Uuid::from_u128(branch),
            depth,
        }
    }

    fn rec(seq: Seq, body: RecordBody) -> Record {
        Record {
            seq,
            id: Uuid::from_u128(1000 + u128::from(seq)),
            workflow_id: Uuid::from_u128(99),
            timestamp: Timestamp(seq as i64),
            actor: "a".into(),
            body,
            prev_hash: ZERO_HASH,
            hash: ZERO_HASH,
        }
    }

    /// root(1) → 2 → 3, 2 → 4 (fork), decision 3 → options 5, 6.
    fn sample() -> Index {
        let mut ix = Index::new();
        let recs = vec![
            rec(
                1,
                RecordBody::WorkflowCreated {
                    root: node(1, None, "system", 1, 0),
                    metadata: Default::default(),
                    user_id: None,
                },
            ),
            rec(
                2,
                RecordBody::NodeCreated(node(2, Some(1), "message", 1, 1)),
            ),
            rec(
                3,
                RecordBody::NodeCreated(node(3, Some(2), "decision", 1, 2)),
            ),
            rec(
                4,
                RecordBody::NodeCreated(node(4, Some(2), "monitor", 4, 2)),
            ),
            rec(5, RecordBody::NodeCreated(node(5, Some(3), "option", 1, 3))),
            rec(6, RecordBody::NodeCreated(node(6, Some(3), "option", 6, 3))),
        ];
        for r in &recs {
            ix.apply(r).unwrap();
        }
        ix
    }

    #[test]
    fn path_children_subtree_and_branches() {
        let ix = sample();
        let id = Uuid::from_u128;
        assert_eq!(ix.path(&id(5)), Some(vec![1, 2, 3, 5]));
        assert_eq!(ix.children(&id(2)), Some(vec![3, 4]));
        assert_eq!(ix.subtree(&id(2), None), Some(vec![2, 3, 4, 5, 6]));
        assert_eq!(ix.subtree(&id(2), Some(1)), Some(vec![2, 3, 4]));
        assert_eq!(ix.subtree(&id(2), Some(0)), Some(vec![2]));
        let w = ix.workflow(&id(99)).unwrap();
        let infos: Vec<_> = w.branches.iter().map(|b| w.branch_info(b)).collect();
        assert_eq!(infos.len(), 3);
        assert_eq!(infos[0].head_id, id(5));
        assert_eq!(infos[0].length, 4);
        assert_eq!(infos[1].fork_node_id, Some(id(2)));
        assert_eq!(w.options(2), vec![4, 5]);
        assert_eq!(w.heads(), vec![id(5), id(4), id(6)]);
        let b = w.branch_slot(&id(4), &ix).unwrap();
        assert_eq!(w.branch_nodes(b), vec![3]);
        assert_eq!(w.branch_slot(&id(2), &ix), None, "2 is not a branch start");
    }

    #[test]
    fn node_meta_stays_40_bytes_with_its_type_and_role() {
        assert_eq!(std::mem::size_of::<NodeMeta>(), 40);
    }

    #[test]
    fn type_names_intern_up_to_the_cap_then_mark_the_rest() {
        let mut t = TypeNames::default();
        assert_eq!(t.intern(TypeName::new("decision")), 1, "kinds come first");
        assert_eq!(kind_of_type_id(1), NodeKind::Decision);
        let msg = t.intern(TypeName::new("message"));
        assert_eq!(t.intern(TypeName::new("message")), msg);
        assert_eq!(t.name(msg), Some("message"));
        assert_eq!(kind_of_type_id(msg), NodeKind::Other);
        let long = "x".repeat(33);
        assert_eq!(TypeName::new(&long).as_str(), None);
        assert_eq!(t.intern(TypeName::new(&long)), TYPE_NOT_INTERNED);
        for i in 0..MAX_TYPE_NAMES {
            t.intern(TypeName::new(&format!("t{i}")));
        }
        assert_eq!(t.intern(TypeName::new("one_too_many")), TYPE_NOT_INTERNED);
        assert_eq!(t.name(TYPE_NOT_INTERNED), None);
        assert_eq!(
            t.intern(TypeName::new("message")),
            msg,
            "known names still resolve"
        );
    }

    #[test]
    fn rejects_out_of_order_and_inconsistent_records() {
        let mut ix = sample();
        let bad_depth = rec(
            7,
            RecordBody::NodeCreated(node(7, Some(2), "message", 7, 5)),
        );
        assert!(ix.apply(&bad_depth).is_err());
        let skip = rec(
            9,
            RecordBody::NodeCreated(node(7, Some(2), "message", 7, 2)),
        );
        assert!(ix.apply(&skip).is_err());
        let choose_non_option = rec(
            7,
            RecordBody::EdgeCreated(Edge {
                kind: EdgeKind::ChosenOption,
                from: Uuid::from_u128(3),
                to: Uuid::from_u128(4),
            }),
        );
        assert!(ix.apply(&choose_non_option).is_err());
        assert_eq!(ix.head(), 6, "failed applies change nothing");
    }
}
