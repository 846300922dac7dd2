//! An independent checker of portable event streams: replays events one by one and
//! refuses anything `arbor import` would refuse (DESIGN §2 rules), and counts what it
//! saw. It keeps a few dozen bytes per node, so it is meant for tests and for files up
//! to a few million nodes, not for the 1 000 000-workflow streams of the benches.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::Value;
use uuid::Uuid;

use arbor_storage::{
    edge_event_id, valid_node_type, EdgeKind, EventBody, PortableEvent, Role, Timestamp,
    WorkflowStatus,
};

/// Figures of a checked stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// Events.
    pub events: usize,
    /// Workflows.
    pub workflows: usize,
    /// Nodes, roots included.
    pub nodes: usize,
    /// Branches (the roots' branches included).
    pub branches: usize,
    /// `decision` nodes.
    pub decisions: usize,
    /// `option` nodes under a decision (implicit OPTION_OF).
    pub options: usize,
    /// CHOSEN_OPTION edges.
    pub chosen: usize,
    /// `monitor` nodes.
    pub monitor_nodes: usize,
    /// MONITORS edges.
    pub monitors: usize,
    /// MONITORS edges whose ends are on different branches.
    pub cross_branch_monitors: usize,
    /// Explicit OPTION_OF edges (between a decision and an option that is not its child).
    pub explicit_options: usize,
    /// Status changes.
    pub status_changes: usize,
    /// Deepest node.
    pub max_depth: u32,
    /// Largest content, in bytes.
    pub max_content: usize,
    /// Sum of content sizes, in bytes.
    pub content_bytes: u64,
}

/// Why a stream was refused: the offending event's position (0-based) and the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckError {
    /// Position of the event in the stream.
    pub position: usize,
    /// Its id.
    pub event_id: Uuid,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event #{} ({}): {}",
            self.position, self.event_id, self.reason
        )
    }
}

impl std::error::Error for CheckError {}

#[derive(Clone, Copy)]
struct CNode {
    wf: Uuid,
    depth: u32,
    branch: Uuid,
    is_decision: bool,
    is_option: bool,
    is_monitor: bool,
    has_child: bool,
}

struct CWf {
    status: WorkflowStatus,
    last_ts: Timestamp,
}

/// The checker. Feed it events in order with [`Checker::push`].
#[derive(Default)]
pub struct Checker {
    ids: HashSet<Uuid>,
    nodes: HashMap<Uuid, CNode>,
    workflows: HashMap<Uuid, CWf>,
    edges: HashSet<(EdgeKind, Uuid, Uuid)>,
    chosen: HashMap<Uuid, Uuid>,
    stats: CheckStats,
}

impl Checker {
    /// An empty checker.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// What has been seen so far.
    pub fn stats(&self) -> &CheckStats {
        &self.stats
    }

    /// Checks one event against everything before it.
    pub fn push(&mut self, ev: &PortableEvent) -> Result<(), CheckError> {
        let position = self.stats.events;
        self.apply(ev).map_err(|reason| CheckError {
            position,
            event_id: ev.id,
            reason,
        })?;
        self.stats.events += 1;
        Ok(())
    }

    fn apply(&mut self, ev: &PortableEvent) -> Result<(), String> {
        if !self.ids.insert(ev.id) {
            return Err(format!("event id {} used twice", ev.id));
        }
        if ev.actor.is_empty() {
            return Err("empty actor".into());
        }
        if let EventBody::WorkflowCreated(_) = ev.body {
        } else {
            let wf = self
                .workflows
                .get_mut(&ev.workflow_id)
                .ok_or_else(|| format!("workflow {} not created yet", ev.workflow_id))?;
            if ev.timestamp <= wf.last_ts {
                return Err(format!(
                    "timestamp {} not after the workflow's previous event ({})",
                    ev.timestamp, wf.last_ts
                ));
            }
            wf.last_ts = ev.timestamp;
        }
        match &ev.body {
            EventBody::WorkflowCreated(c) => {
                let r = &c.root;
                if ev.id != ev.workflow_id {
                    return Err("workflow.created id must be the workflow id".into());
                }
                if self.workflows.contains_key(&ev.workflow_id) {
                    return Err("workflow created twice".into());
                }
                if r.workflow_id != ev.workflow_id
                    || r.parent_id.is_some()
                    || r.node_type != "system"
                    || r.role != Some(Role::System)
                    || r.depth != 0
                    || r.branch_id != r.id
                    || r.seq != 0
                    || r.timestamp != ev.timestamp
                    || r.id == ev.workflow_id
                {
                    return Err("root must be system/system, depth 0, its own branch, seq 0, at the event's time, with an id of its own".into());
                }
                if r.payload != Value::Null
                    || !r.metadata.is_empty()
                    || r.agent_id.is_some()
                    || r.user_id != c.user_id
                {
                    return Err("root must carry exactly what the store gives it (no payload, metadata or agent; the workflow's user)".into());
                }
                if !self.ids.insert(r.id) || self.nodes.contains_key(&r.id) {
                    return Err(format!("root id {} used twice", r.id));
                }
                self.workflows.insert(
                    ev.workflow_id,
                    CWf {
                        status: WorkflowStatus::Running,
                        last_ts: ev.timestamp,
                    },
                );
                self.nodes.insert(
                    r.id,
                    CNode {
                        wf: ev.workflow_id,
                        depth: 0,
                        branch: r.id,
                        is_decision: false,
                        is_option: false,
                        is_monitor: false,
                        has_child: false,
                    },
                );
                self.stats.workflows += 1;
                self.stats.nodes += 1;
                self.stats.branches += 1;
                self.count_content(r.content.len());
            }
            EventBody::NodeCreated(n) => {
                if ev.id != n.id {
                    return Err("node.created id must be the node id".into());
                }
                if n.workflow_id != ev.workflow_id || n.timestamp != ev.timestamp || n.seq != 0 {
                    return Err("node must name the event's workflow and time, with seq 0".into());
                }
                let status = self.workflows.get(&ev.workflow_id).map(|w| w.status);
                if status.is_some_and(WorkflowStatus::is_terminal) {
                    return Err("node appended to a finished workflow".into());
                }
                if !valid_node_type(&n.node_type) || n.node_type == "system" {
                    return Err(format!("bad node type {:?}", n.node_type));
                }
                let parent_id = n.parent_id.ok_or("only the root has no parent")?;
                let parent = self
                    .nodes
                    .get_mut(&parent_id)
                    .filter(|p| p.wf == ev.workflow_id)
                    .ok_or_else(|| format!("parent {parent_id} unknown in this workflow"))?;
                let branch = if parent.has_child {
                    n.id
                } else {
                    parent.branch
                };
                if n.branch_id != branch {
                    return Err(format!(
                        "branch_id {} but the tree implies {branch}",
                        n.branch_id
                    ));
                }
                if n.depth != parent.depth + 1 {
                    return Err(format!(
                        "depth {} but the tree implies {}",
                        n.depth,
                        parent.depth + 1
                    ));
                }
                parent.has_child = true;
                let under_decision = parent.is_decision;
                let is_option = n.node_type == "option";
                let me = CNode {
                    wf: ev.workflow_id,
                    depth: n.depth,
                    branch,
                    is_decision: n.node_type == "decision",
                    is_option,
                    is_monitor: n.node_type == "monitor",
                    has_child: false,
                };
                if is_option && under_decision {
                    self.edges.insert((EdgeKind::OptionOf, parent_id, n.id));
                    self.stats.options += 1;
                }
                if branch == n.id {
                    self.stats.branches += 1;
                }
                self.stats.decisions += usize::from(me.is_decision);
                self.stats.monitor_nodes += usize::from(me.is_monitor);
                self.stats.nodes += 1;
                self.stats.max_depth = self.stats.max_depth.max(n.depth);
                self.count_content(n.content.len());
                self.nodes.insert(n.id, me);
            }
            EventBody::EdgeCreated(e) => {
                if ev.id != edge_event_id(e.kind, e.from, e.to) {
                    return Err("edge event id must be edge_event_id(kind, from, to)".into());
                }
                let from = self
                    .nodes
                    .get(&e.from)
                    .filter(|f| f.wf == ev.workflow_id)
                    .copied()
                    .ok_or_else(|| format!("from {} unknown in this workflow", e.from))?;
                let to = self
                    .nodes
                    .get(&e.to)
                    .filter(|f| f.wf == ev.workflow_id)
                    .copied()
                    .ok_or_else(|| format!("to {} unknown in this workflow", e.to))?;
                if e.from == e.to {
                    return Err("edge from a node to itself".into());
                }
                if !self.edges.insert((e.kind, e.from, e.to)) {
                    return Err(format!(
                        "{} edge recorded twice (or implied already)",
                        e.kind.as_str()
                    ));
                }
                match e.kind {
                    EdgeKind::ParentOf => return Err("PARENT_OF is implied, never sent".into()),
                    EdgeKind::Monitors => {
                        if !from.is_monitor {
                            return Err("MONITORS must start at a monitor".into());
                        }
                        self.stats.monitors += 1;
                        if from.branch != to.branch {
                            self.stats.cross_branch_monitors += 1;
                        }
                    }
                    EdgeKind::OptionOf => {
                        if !from.is_decision || !to.is_option {
                            return Err("OPTION_OF goes from a decision to an option".into());
                        }
                        self.stats.explicit_options += 1;
                    }
                    EdgeKind::ChosenOption => {
                        if !self.edges.contains(&(EdgeKind::OptionOf, e.from, e.to)) {
                            return Err(
                                "CHOSEN_OPTION to something that is not an option of the decision"
                                    .into(),
                            );
                        }
                        if self.chosen.insert(e.from, e.to).is_some() {
                            return Err("decision chosen twice".into());
                        }
                        self.stats.chosen += 1;
                    }
                }
            }
            EventBody::StatusChanged(s) => {
                let wf = self
                    .workflows
                    .get_mut(&ev.workflow_id)
                    .ok_or("status change of an unknown workflow")?;
                if s.from != wf.status || s.from == s.to || s.from.is_terminal() {
                    return Err(format!(
                        "status change {} -> {} while {}",
                        s.from.as_str(),
                        s.to.as_str(),
                        wf.status.as_str()
                    ));
                }
                wf.status = s.to;
                self.stats.status_changes += 1;
            }
        }
        Ok(())
    }

    fn count_content(&mut self, len: usize) {
        self.stats.max_content = self.stats.max_content.max(len);
        self.stats.content_bytes += len as u64;
    }
}

/// Checks a whole stream.
pub fn check<'a>(
    events: impl IntoIterator<Item = &'a PortableEvent>,
) -> Result<CheckStats, CheckError> {
    let mut c = Checker::new();
    for ev in events {
        c.push(ev)?;
    }
    Ok(c.stats)
}
