//! Validation of intents into records, against the durable index plus what earlier
//! requests of the same group have already been accepted (the [`Pending`] overlay).
//!
//! The writer validates request by request. Each request works in its own scratch
//! overlay; if it is accepted, the scratch is merged into the group's overlay, so a
//! refused request leaves no trace and an atomic batch is all or nothing.

use std::collections::HashSet;

use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;

use crate::error::{AppendError, StorageError};
use crate::index::{Index, NodeKind};
use crate::intent::{edge_event_id, Intent, Meta, NewNode, NewWorkflow, Outcome};
use crate::log::{Engine, LogEntry};
use crate::model::{
    valid_node_type, Edge, EdgeKind, Event, EventBody, Node, Role, Seq, StatusChanged,
    WorkflowCreated, WorkflowStatus,
};
use crate::record::{content_hash, Hash, NodeRecord, Record, RecordBody, ZERO_HASH};
use crate::time::Timestamp;

/// A record accepted but not yet chained or written, with its public event.
pub struct Draft {
    /// The record (hashes filled in by the writer).
    pub record: Record,
    /// The same event as readers see it.
    pub event: Event,
    /// The node's content, when the record creates a node (for the content tree).
    pub content: Option<(Hash, String)>,
}

/// An accepted request.
pub struct Accepted {
    /// What to write (empty for a replay or a no-op).
    pub drafts: Vec<Draft>,
    /// What to answer once it is durable.
    pub outcome: Outcome,
}

#[derive(Clone)]
struct PendingNode {
    wf: Uuid,
    kind: NodeKind,
    depth: u32,
    branch_id: Uuid,
    seq: Seq,
    timestamp: Timestamp,
    record: NodeRecord,
    content: String,
}

#[derive(Clone, Copy)]
struct PendingWf {
    status: WorkflowStatus,
}

/// Accepted-but-not-durable state layered over the index.
///
/// Fx-hashed: the keys are ids the writer has validated or generated, and these maps
/// are filled and read for every event on the writer thread.
#[derive(Default)]
pub struct Pending {
    workflows: FxHashMap<Uuid, PendingWf>,
    /// Root records of workflows created in this group, for replays.
    roots: FxHashMap<Uuid, (Uuid, Seq, NodeRecord, WorkflowCreatedFacts)>,
    nodes: FxHashMap<Uuid, PendingNode>,
    with_child: FxHashSet<Uuid>,
    /// Edges accepted in this group, with the seq of the event that carries them.
    edges: FxHashMap<(EdgeKind, Uuid, Uuid), Seq>,
    chosen: FxHashMap<Uuid, Uuid>,
    /// Ids of the events accepted in this group that create no node (edges, status
    /// changes): ids are unique across the log, and the index refuses a reused one.
    events: FxHashSet<Uuid>,
}

#[derive(Clone)]
struct WorkflowCreatedFacts {
    metadata: serde_json::Map<String, serde_json::Value>,
    user_id: Option<String>,
}

impl Pending {
    /// Moves everything of `other` into `self`, leaving `other` empty with its
    /// capacity (the writer reuses one scratch overlay for every request).
    pub fn merge(&mut self, other: &mut Pending) {
        self.workflows.extend(other.workflows.drain());
        self.roots.extend(other.roots.drain());
        self.nodes.extend(other.nodes.drain());
        self.with_child.extend(other.with_child.drain());
        self.edges.extend(other.edges.drain());
        self.chosen.extend(other.chosen.drain());
        self.events.extend(other.events.drain());
    }

    /// Forgets everything, keeping the capacity.
    pub fn clear(&mut self) {
        self.workflows.clear();
        self.roots.clear();
        self.nodes.clear();
        self.with_child.clear();
        self.edges.clear();
        self.chosen.clear();
        self.events.clear();
    }
}

/// What validation needs to know of a node, wherever it is.
#[derive(Clone, Copy)]
struct Facts {
    wf: Uuid,
    kind: NodeKind,
    depth: u32,
    branch_id: Uuid,
    has_child: bool,
    seq: Seq,
}

/// Everything validation reads.
pub struct Ctx<'a> {
    /// Durable state.
    pub index: &'a Index,
    /// The log (replay comparisons).
    pub engine: &'a Engine,
    /// Accepted earlier in this group.
    pub group: &'a Pending,
    /// Groups written before this one but not durable yet, hence not in the index yet
    /// (oldest first, with the last seq of each; see the writer in `store`).
    pub earlier: &'a [(Seq, Pending)],
    /// Next free seq; advanced by accepted requests only.
    pub next_seq: Seq,
    /// Time of the previous event, to keep timestamps non-decreasing.
    pub last_ts: Timestamp,
}

fn invalid(msg: impl Into<String>) -> AppendError {
    AppendError::Invalid(msg.into())
}
fn unprocessable(msg: impl Into<String>) -> AppendError {
    AppendError::Unprocessable(msg.into())
}
fn conflict(msg: impl Into<String>) -> AppendError {
    AppendError::Conflict(msg.into())
}

impl Ctx<'_> {
    /// The overlays over the index, newest first: this group's, then the earlier groups
    /// not durable yet.
    fn layers(&self) -> impl Iterator<Item = &Pending> {
        std::iter::once(self.group).chain(self.earlier.iter().rev().map(|(_, p)| p))
    }

    fn facts(&self, scratch: &Pending, id: &Uuid) -> Option<Facts> {
        let pending = scratch
            .nodes
            .get(id)
            .or_else(|| self.layers().find_map(|p| p.nodes.get(id)));
        let child = |id: &Uuid| {
            scratch.with_child.contains(id) || self.layers().any(|p| p.with_child.contains(id))
        };
        if let Some(p) = pending {
            return Some(Facts {
                wf: p.wf,
                kind: p.kind,
                depth: p.depth,
                branch_id: p.branch_id,
                has_child: child(id),
                seq: p.seq,
            });
        }
        let r = self.index.node_ref(id)?;
        let w = self.index.workflow_at(r.wf);
        let m = w.node(r.idx);
        Some(Facts {
            wf: w.id,
            kind: m.kind(),
            depth: m.depth,
            branch_id: w.node(w.branches[m.branch as usize].first).id,
            has_child: m.has_child || child(id),
            seq: m.seq,
        })
    }

    fn workflow_status(&self, scratch: &Pending, wf: &Uuid) -> Option<WorkflowStatus> {
        scratch
            .workflows
            .get(wf)
            .or_else(|| self.layers().find_map(|p| p.workflows.get(wf)))
            .map(|p| p.status)
            .or_else(|| self.index.workflow(wf).map(|w| w.status))
    }

    fn has_edge(&self, scratch: &Pending, kind: EdgeKind, from: Uuid, to: Uuid) -> bool {
        let key = (kind, from, to);
        if scratch.edges.contains_key(&key) || self.layers().any(|p| p.edges.contains_key(&key)) {
            return true;
        }
        match (self.index.node_ref(&from), self.index.node_ref(&to)) {
            (Some(a), Some(b)) if a.wf == b.wf => {
                self.index.workflow_at(a.wf).has_edge(a.idx, b.idx, kind)
            }
            _ => false,
        }
    }

    fn chosen(&self, scratch: &Pending, decision: &Uuid) -> Option<Uuid> {
        if let Some(c) = scratch
            .chosen
            .get(decision)
            .or_else(|| self.layers().find_map(|p| p.chosen.get(decision)))
        {
            return Some(*c);
        }
        let r = self.index.node_ref(decision)?;
        let w = self.index.workflow_at(r.wf);
        w.chosen.get(&r.idx).map(|o| w.node(*o).id)
    }

    /// Whether `id` is taken by anything: workflow, node, or any event id.
    fn id_taken(&self, scratch: &Pending, id: &Uuid) -> bool {
        scratch.nodes.contains_key(id)
            || self.layers().any(|p| p.nodes.contains_key(id))
            || scratch.workflows.contains_key(id)
            || self.layers().any(|p| p.workflows.contains_key(id))
            || scratch.events.contains(id)
            || self.layers().any(|p| p.events.contains(id))
            || self.index.seq_of_id(id).is_some()
    }

    /// The event time: the import's original time when given (which does not move the
    /// live clock, so a future-dated import cannot pin later timestamps), else now,
    /// never earlier than the previous live event.
    fn stamp(&mut self, preset: Option<Timestamp>) -> Timestamp {
        match preset {
            Some(t) => t,
            None => {
                let t = Timestamp::now().max(self.last_ts);
                self.last_ts = t;
                t
            }
        }
    }

    fn take_seq(&mut self) -> Seq {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// The stored node `id` with its record, from the group or the log.
    fn stored_node(
        &self,
        scratch: &Pending,
        id: &Uuid,
    ) -> Result<Option<(NodeRecord, Node)>, AppendError> {
        if let Some(p) = scratch
            .nodes
            .get(id)
            .or_else(|| self.layers().find_map(|p| p.nodes.get(id)))
        {
            let node = node_of(p.wf, p.seq, p.timestamp, &p.record, p.content.clone());
            return Ok(Some((p.record.clone(), node)));
        }
        let Some(r) = self.index.node_ref(id) else {
            return Ok(None);
        };
        let seq = self.index.meta(r).seq;
        let entry = self
            .engine
            .entry(seq)?
            .ok_or_else(|| StorageError::Corrupt(format!("indexed seq {seq} missing from log")))?;
        let record = Record::decode(&entry.record)?;
        let n = record
            .created_node()
            .filter(|n| n.id == *id)
            .ok_or_else(|| StorageError::Corrupt(format!("seq {seq} does not create node {id}")))?
            .clone();
        let node = record.node(&n, |h| entry_content(self.engine, seq, &entry, h))?;
        Ok(Some((n, node)))
    }

    /// Validates one intent. On error nothing of it is kept and `next_seq` is unchanged.
    pub fn validate(
        &mut self,
        prepared: Prepared,
        meta: &Meta,
        scratch: &mut Pending,
    ) -> Result<Accepted, AppendError> {
        let Prepared { intent, hashes } = prepared;
        let start = (self.next_seq, self.last_ts);
        let res = match intent {
            Intent::CreateWorkflow(w) => {
                let hash = hashes
                    .first()
                    .copied()
                    .unwrap_or_else(|| content_hash(&w.system_prompt));
                self.create_workflow(w, hash, meta, scratch)
            }
            Intent::AppendNodes { workflow_id, nodes } => {
                self.append_nodes(workflow_id, nodes, hashes, meta, scratch)
            }
            Intent::AddEdge { workflow_id, edge } => {
                if self.workflow_status(scratch, &workflow_id).is_none() {
                    return Err(AppendError::WorkflowNotFound(workflow_id));
                }
                self.add_edge(workflow_id, edge, meta, scratch)
            }
            Intent::Choose {
                decision_id,
                option_id,
            } => {
                let d = self
                    .facts(scratch, &decision_id)
                    .ok_or(AppendError::NodeNotFound(decision_id))?;
                let edge = Edge {
                    kind: EdgeKind::ChosenOption,
                    from: decision_id,
                    to: option_id,
                };
                self.add_edge(d.wf, edge, meta, scratch)
            }
            Intent::SetStatus {
                workflow_id,
                status,
            } => self.set_status(workflow_id, status, meta, scratch),
        };
        if res.is_err() {
            (self.next_seq, self.last_ts) = start;
        }
        res
    }

    fn create_workflow(
        &mut self,
        w: NewWorkflow,
        hash: Hash,
        meta: &Meta,
        scratch: &mut Pending,
    ) -> Result<Accepted, AppendError> {
        if let Some(id) = w.id {
            if let Some(replay) = self.replay_workflow(&w, hash, id, scratch)? {
                return Ok(replay);
            }
            if self.id_taken(scratch, &id) {
                return Err(conflict(format!(
                    "id {id} is already used by a node or event"
                )));
            }
        }
        let wf = w.id.unwrap_or_else(Uuid::now_v7);
        let root_id = w.root_id.unwrap_or_else(Uuid::now_v7);
        if root_id == wf || (w.root_id.is_some() && self.id_taken(scratch, &root_id)) {
            return Err(conflict(format!("root id {root_id} is already used")));
        }
        let seq = self.take_seq();
        let ts = self.stamp(meta.timestamp);
        let root = NodeRecord {
            id: root_id,
            parent_id: None,
            node_type: "system".into(),
            role: Some(Role::System),
            content_hash: hash,
            payload: serde_json::Value::Null,
            metadata: serde_json::Map::new(),
            agent_id: None,
            user_id: w.user_id.clone(),
            branch_id: root_id,
            depth: 0,
        };
        let root_node = node_of(wf, seq, ts, &root, w.system_prompt.clone());
        let record = Record {
            seq,
            id: wf,
            workflow_id: wf,
            timestamp: ts,
            actor: meta.actor.clone(),
            body: RecordBody::WorkflowCreated {
                root: root.clone(),
                metadata: w.metadata.clone(),
                user_id: w.user_id.clone(),
            },
            prev_hash: ZERO_HASH,
            hash: ZERO_HASH,
        };
        let event = public_event(
            &record,
            EventBody::WorkflowCreated(WorkflowCreated {
                root: root_node,
                metadata: w.metadata.clone(),
                user_id: w.user_id.clone(),
            }),
        );
        scratch.workflows.insert(
            wf,
            PendingWf {
                status: WorkflowStatus::Running,
            },
        );
        scratch.roots.insert(
            wf,
            (
                root_id,
                seq,
                root.clone(),
                WorkflowCreatedFacts {
                    metadata: w.metadata,
                    user_id: w.user_id,
                },
            ),
        );
        scratch.nodes.insert(
            root_id,
            PendingNode {
                wf,
                kind: NodeKind::System,
                depth: 0,
                branch_id: root_id,
                seq,
                timestamp: ts,
                record: root,
                content: w.system_prompt.clone(),
            },
        );
        Ok(Accepted {
            drafts: vec![Draft {
                record,
                event,
                content: Some((hash, w.system_prompt)),
            }],
            outcome: Outcome::WorkflowCreated {
                workflow_id: wf,
                root_id,
                seq,
                replayed: false,
            },
        })
    }

    fn replay_workflow(
        &self,
        w: &NewWorkflow,
        hash: Hash,
        id: Uuid,
        scratch: &Pending,
    ) -> Result<Option<Accepted>, AppendError> {
        let stored = if let Some((root_id, seq, root, facts)) = scratch
            .roots
            .get(&id)
            .or_else(|| self.layers().find_map(|p| p.roots.get(&id)))
        {
            Some((
                *root_id,
                *seq,
                root.clone(),
                facts.metadata.clone(),
                facts.user_id.clone(),
            ))
        } else if let Some(ix) = self.index.workflow(&id) {
            let seq = ix.created_seq;
            let record = self
                .engine
                .record(seq)?
                .ok_or_else(|| StorageError::Corrupt(format!("workflow seq {seq} missing")))?;
            match record.body {
                RecordBody::WorkflowCreated {
                    root,
                    metadata,
                    user_id,
                } => Some((root.id, seq, root, metadata, user_id)),
                _ => {
                    return Err(
                        StorageError::Corrupt(format!("seq {seq} is not workflow.created")).into(),
                    )
                }
            }
        } else {
            None
        };
        let Some((root_id, seq, root, metadata, user_id)) = stored else {
            return Ok(None);
        };
        let same = root.content_hash == hash
            && metadata == w.metadata
            && user_id == w.user_id
            && w.root_id.is_none_or(|r| r == root_id);
        if !same {
            return Err(conflict(format!(
                "workflow {id} exists with a different body"
            )));
        }
        Ok(Some(Accepted {
            drafts: Vec::new(),
            outcome: Outcome::WorkflowCreated {
                workflow_id: id,
                root_id,
                seq,
                replayed: true,
            },
        }))
    }

    fn append_nodes(
        &mut self,
        wf: Uuid,
        nodes: Vec<NewNode>,
        hashes: Vec<Hash>,
        meta: &Meta,
        scratch: &mut Pending,
    ) -> Result<Accepted, AppendError> {
        let hash_of = |i: usize, n: &NewNode| {
            hashes
                .get(i)
                .copied()
                .unwrap_or_else(|| content_hash(&n.content))
        };
        let status = self
            .workflow_status(scratch, &wf)
            .ok_or(AppendError::WorkflowNotFound(wf))?;
        if nodes.is_empty() {
            return Err(invalid("a batch needs at least one node"));
        }
        if nodes.len() > 1 {
            let mut seen = HashSet::with_capacity(nodes.len());
            for n in &nodes {
                if let Some(id) = n.id {
                    if !seen.insert(id) {
                        return Err(invalid(format!("id {id} appears twice in the batch")));
                    }
                }
            }
        }
        // Identical replay of the whole batch?
        let existing = nodes
            .iter()
            .filter(|n| n.id.is_some_and(|id| self.facts(scratch, &id).is_some()))
            .count();
        if existing > 0 {
            if existing != nodes.len() {
                return Err(conflict(
                    "some ids of the batch exist already and some do not",
                ));
            }
            let mut out = Vec::with_capacity(nodes.len());
            for (i, n) in nodes.iter().enumerate() {
                let id = n.id.unwrap_or_default();
                let Some((rec, node)) = self.stored_node(scratch, &id)? else {
                    return Err(conflict(format!("id {id} is taken")));
                };
                if node.workflow_id != wf || !same_node(&rec, n, hash_of(i, n)) {
                    return Err(conflict(format!("node {id} exists with a different body")));
                }
                out.push(node);
            }
            return Ok(Accepted {
                drafts: Vec::new(),
                outcome: Outcome::Nodes {
                    nodes: out,
                    replayed: true,
                },
            });
        }
        refuse_if_terminal(wf, status)?;
        let mut drafts = Vec::with_capacity(nodes.len());
        let mut out = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.into_iter().enumerate() {
            let hash = hash_of(i, &n);
            let (draft, node) = self.append_node(wf, n, hash, meta, scratch)?;
            drafts.push(draft);
            out.push(node);
        }
        Ok(Accepted {
            drafts,
            outcome: Outcome::Nodes {
                nodes: out,
                replayed: false,
            },
        })
    }

    fn append_node(
        &mut self,
        wf: Uuid,
        n: NewNode,
        hash: Hash,
        meta: &Meta,
        scratch: &mut Pending,
    ) -> Result<(Draft, Node), AppendError> {
        if !valid_node_type(&n.node_type) {
            return Err(invalid(format!(
                "type {:?} must match [a-z][a-z0-9_]{{0,31}}",
                n.node_type
            )));
        }
        if n.node_type == "system" {
            return Err(invalid("type system is reserved for the root node"));
        }
        let parent = self
            .facts(scratch, &n.parent_id)
            .filter(|p| p.wf == wf)
            .ok_or_else(|| {
                unprocessable(format!(
                    "parent {} is not a node of workflow {wf}",
                    n.parent_id
                ))
            })?;
        if n.expect_leaf && parent.has_child {
            return Err(conflict(format!(
                "parent {} is not a leaf any more",
                n.parent_id
            )));
        }
        let id = match n.id {
            Some(id) => {
                if self.id_taken(scratch, &id) {
                    return Err(conflict(format!("id {id} is already used")));
                }
                id
            }
            None => Uuid::now_v7(),
        };
        let kind = NodeKind::of(&n.node_type);
        let branch_id = if parent.has_child {
            id
        } else {
            parent.branch_id
        };
        let seq = self.take_seq();
        let ts = self.stamp(n.timestamp.or(meta.timestamp));
        let record = NodeRecord {
            id,
            parent_id: Some(n.parent_id),
            node_type: n.node_type,
            role: n.role,
            content_hash: hash,
            payload: n.payload,
            metadata: n.metadata,
            agent_id: n.agent_id,
            user_id: n.user_id,
            branch_id,
            depth: parent.depth + 1,
        };
        let node = node_of(wf, seq, ts, &record, n.content.clone());
        if NodeKind::implies_option_of(parent.kind, kind) {
            scratch
                .edges
                .insert((EdgeKind::OptionOf, n.parent_id, id), seq);
        }
        scratch.with_child.insert(n.parent_id);
        scratch.nodes.insert(
            id,
            PendingNode {
                wf,
                kind,
                depth: record.depth,
                branch_id,
                seq,
                timestamp: ts,
                record: record.clone(),
                content: n.content.clone(),
            },
        );
        let rec = Record {
            seq,
            id,
            workflow_id: wf,
            timestamp: ts,
            actor: meta.actor.clone(),
            body: RecordBody::NodeCreated(record),
            prev_hash: ZERO_HASH,
            hash: ZERO_HASH,
        };
        let event = public_event(&rec, EventBody::NodeCreated(node.clone()));
        Ok((
            Draft {
                record: rec,
                event,
                content: Some((hash, n.content)),
            },
            node,
        ))
    }

    fn add_edge(
        &mut self,
        wf: Uuid,
        edge: Edge,
        meta: &Meta,
        scratch: &mut Pending,
    ) -> Result<Accepted, AppendError> {
        if edge.kind == EdgeKind::ParentOf {
            return Err(invalid(
                "PARENT_OF edges are implied by parent_id and cannot be added",
            ));
        }
        let end = |id: &Uuid, what: &str| {
            self.facts(scratch, id)
                .filter(|f| f.wf == wf)
                .ok_or_else(|| unprocessable(format!("{what} {id} is not a node of workflow {wf}")))
        };
        let from = end(&edge.from, "from")?;
        let to = end(&edge.to, "to")?;
        if edge.from == edge.to {
            return Err(unprocessable("an edge needs two different nodes"));
        }
        match edge.kind {
            EdgeKind::ParentOf => {}
            EdgeKind::Monitors => {
                if from.kind != NodeKind::Monitor {
                    return Err(unprocessable(
                        "MONITORS must start at a node of type monitor",
                    ));
                }
            }
            EdgeKind::OptionOf => {
                if !NodeKind::implies_option_of(from.kind, to.kind) {
                    return Err(unprocessable("OPTION_OF goes from a decision to an option"));
                }
            }
            EdgeKind::ChosenOption => {
                if from.kind != NodeKind::Decision {
                    return Err(unprocessable(format!("{} is not a decision", edge.from)));
                }
                if !self.has_edge(scratch, EdgeKind::OptionOf, edge.from, edge.to) {
                    return Err(unprocessable(format!(
                        "{} is not an option of decision {}",
                        edge.to, edge.from
                    )));
                }
                if let Some(c) = self.chosen(scratch, &edge.from) {
                    if c != edge.to {
                        return Err(conflict(format!(
                            "decision {} already chose {c}",
                            edge.from
                        )));
                    }
                }
            }
        }
        if self.has_edge(scratch, edge.kind, edge.from, edge.to) {
            let key = (edge.kind, edge.from, edge.to);
            let pending = scratch
                .edges
                .get(&key)
                .or_else(|| self.layers().find_map(|p| p.edges.get(&key)));
            let seq = match pending {
                Some(seq) => *seq,
                // An explicit edge has its own event; an automatic OPTION_OF rides on
                // the option's node.created.
                None => self
                    .index
                    .seq_of_id(&edge_event_id(edge.kind, edge.from, edge.to))
                    .unwrap_or(to.seq),
            };
            return Ok(Accepted {
                drafts: Vec::new(),
                outcome: Outcome::Edge {
                    edge,
                    seq,
                    replayed: true,
                },
            });
        }
        if let Some(status) = self.workflow_status(scratch, &wf) {
            refuse_if_terminal(wf, status)?;
        }
        let seq = self.take_seq();
        let ts = self.stamp(meta.timestamp);
        let record = Record {
            seq,
            id: edge_event_id(edge.kind, edge.from, edge.to),
            workflow_id: wf,
            timestamp: ts,
            actor: meta.actor.clone(),
            body: RecordBody::EdgeCreated(edge),
            prev_hash: ZERO_HASH,
            hash: ZERO_HASH,
        };
        // The edge's id is derived from its ends; a client could have taken it first
        // (as a node or event id of its own choosing).
        if self.id_taken(scratch, &record.id) {
            return Err(conflict(format!(
                "the edge's event id {} is already used by another event",
                record.id
            )));
        }
        scratch.events.insert(record.id);
        scratch.edges.insert((edge.kind, edge.from, edge.to), seq);
        if edge.kind == EdgeKind::ChosenOption {
            scratch.chosen.insert(edge.from, edge.to);
        }
        let event = public_event(&record, EventBody::EdgeCreated(edge));
        Ok(Accepted {
            drafts: vec![Draft {
                record,
                event,
                content: None,
            }],
            outcome: Outcome::Edge {
                edge,
                seq,
                replayed: false,
            },
        })
    }

    fn set_status(
        &mut self,
        wf: Uuid,
        status: WorkflowStatus,
        meta: &Meta,
        scratch: &mut Pending,
    ) -> Result<Accepted, AppendError> {
        let current = self
            .workflow_status(scratch, &wf)
            .ok_or(AppendError::WorkflowNotFound(wf))?;
        // An imported status change whose event is already stored is a replay.
        if let Some(seq) = meta.event_id.and_then(|id| self.index.seq_of_id(&id)) {
            let stored = self.engine.record(seq)?;
            return match stored.map(|r| (r.workflow_id, r.body)) {
                Some((w, RecordBody::StatusChanged { to, .. })) if w == wf && to == status => {
                    Ok(Accepted {
                        drafts: Vec::new(),
                        outcome: Outcome::Status {
                            workflow_id: wf,
                            status: current,
                            seq: None,
                        },
                    })
                }
                _ => Err(conflict("event id is already used by another event")),
            };
        }
        if current == status {
            return Ok(Accepted {
                drafts: Vec::new(),
                outcome: Outcome::Status {
                    workflow_id: wf,
                    status,
                    seq: None,
                },
            });
        }
        if current.is_terminal() {
            return Err(conflict(format!(
                "workflow {wf} is {}; a terminal status cannot change",
                current.as_str()
            )));
        }
        let seq = self.take_seq();
        let ts = self.stamp(meta.timestamp);
        let change = StatusChanged {
            from: current,
            to: status,
        };
        let record = Record {
            seq,
            id: meta.event_id.unwrap_or_else(Uuid::now_v7),
            workflow_id: wf,
            timestamp: ts,
            actor: meta.actor.clone(),
            body: RecordBody::StatusChanged {
                from: current,
                to: status,
            },
            prev_hash: ZERO_HASH,
            hash: ZERO_HASH,
        };
        if self.id_taken(scratch, &record.id) {
            return Err(conflict(format!("event id {} is already used", record.id)));
        }
        scratch.events.insert(record.id);
        scratch.workflows.insert(wf, PendingWf { status });
        let event = public_event(&record, EventBody::StatusChanged(change));
        Ok(Accepted {
            drafts: vec![Draft {
                record,
                event,
                content: None,
            }],
            outcome: Outcome::Status {
                workflow_id: wf,
                status,
                seq: Some(seq),
            },
        })
    }
}

/// An intent with the work that needs no state done, by the caller rather than on the
/// writer thread, which every request waits for in turn: text is refused for NUL
/// ([`refuse_nul`]) and the content of every node hashed, in the intent's order
/// (issue 13: the writer's CPU per event).
#[derive(Debug)]
pub struct Prepared {
    intent: Intent,
    hashes: Vec<Hash>,
}

impl Prepared {
    /// Checks and hashes `intent` (see the type's docs).
    pub fn new(intent: Intent) -> Result<Prepared, AppendError> {
        refuse_nul(&intent)?;
        let hashes = match &intent {
            Intent::CreateWorkflow(w) => vec![content_hash(&w.system_prompt)],
            Intent::AppendNodes { nodes, .. } => {
                nodes.iter().map(|n| content_hash(&n.content)).collect()
            }
            Intent::AddEdge { .. } | Intent::Choose { .. } | Intent::SetStatus { .. } => Vec::new(),
        };
        Ok(Prepared { intent, hashes })
    }
}

/// A terminal workflow takes no new nodes or edges (identical replays still answer).
/// Refuses U+0000 anywhere in an intent's text: PostgreSQL's `text` and `jsonb` cannot
/// hold it, so a NUL accepted here would never reach that sink. Every other Unicode
/// scalar value (control characters included) reaches every sink as it is. The error
/// names the field as the API spells it (`nodes[3].metadata.k`, in a batch of several).
fn refuse_nul(intent: &Intent) -> Result<(), AppendError> {
    let found = match intent {
        Intent::CreateWorkflow(w) => nul_in_str("system_prompt", &w.system_prompt)
            .or_else(|| nul_in_map("metadata", &w.metadata))
            .or_else(|| w.user_id.as_deref().and_then(|u| nul_in_str("user_id", u))),
        Intent::AppendNodes { nodes, .. } => nodes.iter().enumerate().find_map(|(i, n)| {
            let at = |f: &str| {
                if nodes.len() > 1 {
                    format!("nodes[{i}].{f}")
                } else {
                    f.to_owned()
                }
            };
            nul_in_str(&at("content"), &n.content)
                .or_else(|| nul_in_str(&at("type"), &n.node_type))
                .or_else(|| nul_in_value(&at("payload"), &n.payload))
                .or_else(|| nul_in_map(&at("metadata"), &n.metadata))
                .or_else(|| {
                    n.agent_id
                        .as_deref()
                        .and_then(|a| nul_in_str(&at("agent_id"), a))
                })
                .or_else(|| {
                    n.user_id
                        .as_deref()
                        .and_then(|u| nul_in_str(&at("user_id"), u))
                })
        }),
        Intent::AddEdge { .. } | Intent::Choose { .. } | Intent::SetStatus { .. } => None,
    };
    match found {
        Some(field) => Err(invalid(format!(
            "{field}: U+0000 (NUL) is not allowed in text"
        ))),
        None => Ok(()),
    }
}

fn nul_in_str(field: &str, s: &str) -> Option<String> {
    s.contains('\0').then(|| field.to_owned())
}

fn nul_in_value(field: &str, v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => nul_in_str(field, s),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_in_value(&format!("{field}[{i}]"), v)),
        serde_json::Value::Object(m) => nul_in_map(field, m),
        _ => None,
    }
}

fn nul_in_map(field: &str, m: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    m.iter().find_map(|(k, v)| {
        let key = if k.contains('\0') {
            return Some(format!("{field} key {k:?}"));
        } else {
            format!("{field}.{k}")
        };
        nul_in_value(&key, v)
    })
}

fn refuse_if_terminal(wf: Uuid, status: WorkflowStatus) -> Result<(), AppendError> {
    if status.is_terminal() {
        return Err(conflict(format!(
            "workflow {wf} is {}; it takes no new nodes or edges",
            status.as_str()
        )));
    }
    Ok(())
}

/// Whether a stored node has the body `n` asks for.
fn same_node(stored: &NodeRecord, n: &NewNode, content_hash: Hash) -> bool {
    stored.parent_id == Some(n.parent_id)
        && stored.node_type == n.node_type
        && stored.role == n.role
        && stored.content_hash == content_hash
        && stored.payload == n.payload
        && stored.metadata == n.metadata
        && stored.agent_id == n.agent_id
        && stored.user_id == n.user_id
}

fn node_of(wf: Uuid, seq: Seq, ts: Timestamp, r: &NodeRecord, content: String) -> Node {
    Node {
        id: r.id,
        workflow_id: wf,
        parent_id: r.parent_id,
        node_type: r.node_type.clone(),
        role: r.role,
        content,
        payload: r.payload.clone(),
        metadata: r.metadata.clone(),
        agent_id: r.agent_id.clone(),
        user_id: r.user_id.clone(),
        branch_id: r.branch_id,
        depth: r.depth,
        seq,
        timestamp: ts,
    }
}

fn public_event(r: &Record, body: EventBody) -> Event {
    Event {
        seq: r.seq,
        id: r.id,
        workflow_id: r.workflow_id,
        timestamp: r.timestamp,
        actor: r.actor.clone(),
        body,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// Reads the content (hash `h`) of the node created at `seq` from the engine as text.
pub fn load_content(engine: &Engine, seq: Seq, h: &Hash) -> Result<String, StorageError> {
    found_content(seq, h, engine.content_at(seq, h)?)
}

/// The content (hash `h`) of the node created at `seq`, whose log entry `entry` was read
/// already: the content kept in it, else from where older stores and large content keep
/// it (without reading the entry again).
pub fn entry_content(
    engine: &Engine,
    seq: Seq,
    entry: &LogEntry,
    h: &Hash,
) -> Result<String, StorageError> {
    match &entry.text {
        Some(t) => content_string(t),
        None => found_content(seq, h, engine.content_elsewhere(seq, h)?),
    }
}

fn found_content(seq: Seq, h: &Hash, bytes: Option<sled::IVec>) -> Result<String, StorageError> {
    let bytes = bytes.ok_or_else(|| {
        StorageError::Corrupt(format!(
            "content {} of seq {seq} missing",
            crate::record::hex(h)
        ))
    })?;
    content_string(&bytes)
}

/// Stored content bytes as a string.
pub fn content_string(bytes: &[u8]) -> Result<String, StorageError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| StorageError::Corrupt(format!("content not UTF-8: {e}")))
}
