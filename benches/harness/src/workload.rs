//! Workloads: what the simulated agents append, built from the test kit's
//! synthetic generator ([`arbor_testkit`]).
//!
//! Agent `a` replays synthetic workflow `a` (its own seed): messages, tool actions,
//! forks, decisions with their options and choices, and monitors, with content sizes
//! from the configured distribution. Its tree is grafted onto a root the target system
//! provides (the generator's root id maps to it), so every agent extends its own
//! branches of one shared workflow. Every other generated id is replaced by a fresh id
//! from an [`IdAlloc`], so the same workload can be replayed on every system, and many
//! times on one, without id clashes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use arbor_storage::{EdgeKind, EventBody, PortableEvent, Role};
use arbor_testkit::{synthetic, ContentSize, Synthetic, SyntheticSpec};

/// The knobs of the agents' workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkloadSpec {
    /// Base seed; agent `a` uses a seed derived from it and `a`.
    pub seed: u64,
    /// Probability that a new node forks an earlier node instead of extending a tip.
    pub fanout: f64,
    /// Probability that a new node is a decision (followed by 2–4 options).
    pub decision_ratio: f64,
    /// Probability that a decision gets a choice.
    pub chosen_ratio: f64,
    /// Probability that a new node is a monitor (followed by a MONITORS edge).
    pub monitor_ratio: f64,
    /// Median content size in bytes (log-normal).
    pub content_median: usize,
    /// Spread of the content size (standard deviation of its natural log; 0 = fixed).
    pub content_sigma: f64,
    /// Largest content size in bytes.
    pub content_max: usize,
}

impl Default for WorkloadSpec {
    /// The generator's realistic defaults: a fork every 20 nodes, a decision every 33,
    /// a monitor every 50, content log-normal around 400 bytes up to 16 KiB.
    fn default() -> WorkloadSpec {
        WorkloadSpec {
            seed: 42,
            fanout: 0.05,
            decision_ratio: 0.03,
            chosen_ratio: 0.85,
            monitor_ratio: 0.02,
            content_median: 400,
            content_sigma: 1.0,
            content_max: 16 * 1024,
        }
    }
}

impl WorkloadSpec {
    /// The content size distribution.
    pub fn content(&self) -> ContentSize {
        if self.content_sigma <= 0.0 {
            ContentSize::Fixed(self.content_median.clamp(1, self.content_max.max(1)))
        } else {
            ContentSize::LogNormal {
                median: self.content_median.max(1),
                sigma: self.content_sigma,
                max: self.content_max.max(1),
            }
        }
    }

    /// The generator spec of agent `agent`, `nodes` nodes long (root included).
    pub fn synthetic_spec(&self, agent: usize, nodes: usize) -> SyntheticSpec {
        SyntheticSpec {
            seed: mix(self.seed, agent as u64),
            workflows: 1,
            nodes_per_workflow: nodes.max(2),
            fanout: self.fanout,
            decision_ratio: self.decision_ratio,
            chosen_ratio: self.chosen_ratio,
            monitor_ratio: self.monitor_ratio,
            content: self.content(),
            finish_ratio: 0.0,
            ..SyntheticSpec::default()
        }
    }
}

/// SplitMix64 of `seed` and `n`: unrelated seeds for neighbouring agents.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A node to append.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeOp {
    /// Client-chosen id.
    pub id: Uuid,
    /// Parent.
    pub parent_id: Uuid,
    /// Node type.
    #[serde(rename = "type")]
    pub node_type: String,
    /// Role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Content.
    pub content: String,
    /// Payload.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub payload: Value,
    /// Metadata.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// The agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// One write of an agent: one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Append a node.
    Node(NodeOp),
    /// Record a MONITORS or OPTION_OF edge.
    Edge {
        /// MONITORS or OPTION_OF.
        kind: EdgeKind,
        /// Source.
        from: Uuid,
        /// Target.
        to: Uuid,
    },
    /// Choose an option of a decision (CHOSEN_OPTION).
    Choose {
        /// The decision.
        decision: Uuid,
        /// The option.
        option: Uuid,
    },
}

impl Op {
    /// The op's kind for tallies: `node`, `edge` or `choose`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Node(_) => "node",
            Op::Edge { .. } => "edge",
            Op::Choose { .. } => "choose",
        }
    }
}

/// Where fresh ids come from.
#[derive(Clone, Debug)]
pub enum IdAlloc {
    /// UUIDv7 (what the server would assign).
    V7,
    /// `(tag, n)` with `n` counting up from 0 across every agent sharing the counter:
    /// a receiver (the SSE fan-out) recovers `n` from the id alone and finds the send
    /// time of the event in a table.
    Counted {
        /// High 64 bits (distinguishes runs).
        tag: u64,
        /// Next `n`.
        next: Arc<AtomicU64>,
    },
}

impl IdAlloc {
    /// A counted allocator with a random tag.
    pub fn counted() -> IdAlloc {
        IdAlloc::Counted {
            tag: rand::random::<u64>() | 1,
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A fresh id.
    pub fn next(&self) -> Uuid {
        match self {
            IdAlloc::V7 => Uuid::now_v7(),
            IdAlloc::Counted { tag, next } => {
                Uuid::from_u64_pair(*tag, next.fetch_add(1, Ordering::Relaxed))
            }
        }
    }

    /// The counter of a counted id of this allocator.
    pub fn index_of(&self, id: &Uuid) -> Option<u64> {
        match self {
            IdAlloc::V7 => None,
            IdAlloc::Counted { tag, .. } => {
                let (hi, lo) = id.as_u64_pair();
                (hi == *tag).then_some(lo)
            }
        }
    }
}

/// The ops of one agent, generated lazily (memory: 32 bytes per generated node plus
/// the id map).
pub struct AgentOps {
    inner: Synthetic,
    root: Uuid,
    remap: HashMap<Uuid, Uuid>,
    ids: IdAlloc,
    agent: String,
    nodes_only: bool,
}

impl AgentOps {
    /// Agent `agent` of `spec`, grafted onto `root`, at most `max_nodes` nodes.
    pub fn new(
        spec: &WorkloadSpec,
        agent: usize,
        root: Uuid,
        max_nodes: usize,
        ids: IdAlloc,
    ) -> AgentOps {
        AgentOps {
            inner: synthetic(&spec.synthetic_spec(agent, max_nodes.saturating_add(1))),
            root,
            remap: HashMap::new(),
            ids,
            agent: format!("bench-agent-{agent:03}"),
            nodes_only: false,
        }
    }

    /// Only node appends (batches, the SSE fan-out): edges and choices are skipped.
    pub fn nodes_only(mut self) -> AgentOps {
        self.nodes_only = true;
        self
    }

    fn mapped(&self, id: &Uuid) -> Option<Uuid> {
        self.remap.get(id).copied()
    }

    fn convert(&mut self, ev: PortableEvent) -> Option<Op> {
        match ev.body {
            EventBody::WorkflowCreated(c) => {
                self.remap.insert(c.root.id, self.root);
                None
            }
            EventBody::NodeCreated(n) => {
                let parent = self.mapped(&n.parent_id?)?;
                let id = self.ids.next();
                self.remap.insert(n.id, id);
                Some(Op::Node(NodeOp {
                    id,
                    parent_id: parent,
                    node_type: n.node_type,
                    role: n.role,
                    content: n.content,
                    payload: n.payload,
                    metadata: n.metadata,
                    agent_id: Some(self.agent.clone()),
                }))
            }
            EventBody::EdgeCreated(_) if self.nodes_only => None,
            EventBody::EdgeCreated(e) => {
                let (from, to) = (self.mapped(&e.from)?, self.mapped(&e.to)?);
                match e.kind {
                    EdgeKind::ChosenOption => Some(Op::Choose {
                        decision: from,
                        option: to,
                    }),
                    EdgeKind::ParentOf => None,
                    kind => Some(Op::Edge { kind, from, to }),
                }
            }
            EventBody::StatusChanged(_) => None,
        }
    }
}

impl Iterator for AgentOps {
    type Item = Op;

    fn next(&mut self) -> Option<Op> {
        loop {
            let ev = self.inner.next()?;
            if let Some(op) = self.convert(ev) {
                return Some(op);
            }
        }
    }
}

/// The node ops of `ops` in batches of `n` (the last one may be shorter); edges and
/// choices are skipped.
pub fn batches(ops: AgentOps, n: usize) -> impl Iterator<Item = Vec<NodeOp>> + Send {
    let mut ops = ops.nodes_only();
    let n = n.max(1);
    std::iter::from_fn(move || {
        let chunk: Vec<NodeOp> = ops
            .by_ref()
            .take(n)
            .filter_map(|o| match o {
                Op::Node(node) => Some(node),
                _ => None,
            })
            .collect();
        (!chunk.is_empty()).then_some(chunk)
    })
}

/// Up to `max_nodes` node ops of a single chain grafted onto `root` (each the parent
/// of the next), content from `spec`: the deep-path fixtures.
pub fn chain(spec: &WorkloadSpec, root: Uuid, depth: usize) -> Vec<NodeOp> {
    let chain_spec = WorkloadSpec {
        fanout: 0.0,
        decision_ratio: 0.0,
        monitor_ratio: 0.0,
        ..spec.clone()
    };
    let mut s = chain_spec.synthetic_spec(0, depth + 1);
    s.max_depth = depth.max(1);
    s.max_open_branches = 1;
    let mut ops = AgentOps {
        inner: synthetic(&s),
        root,
        remap: HashMap::new(),
        ids: IdAlloc::V7,
        agent: "bench-chain".to_owned(),
        nodes_only: true,
    };
    let mut out = Vec::with_capacity(depth);
    for op in ops.by_ref() {
        if let Op::Node(n) = op {
            out.push(n);
        }
        if out.len() == depth {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn ops(spec: &WorkloadSpec, agent: usize, n: usize) -> (Uuid, Vec<Op>) {
        let root = Uuid::now_v7();
        let v: Vec<Op> = AgentOps::new(spec, agent, root, n, IdAlloc::V7).collect();
        (root, v)
    }

    #[test]
    fn every_reference_points_at_an_earlier_node_or_the_root() {
        let spec = WorkloadSpec::default();
        let (root, v) = ops(&spec, 0, 2_000);
        let mut known: HashSet<Uuid> = HashSet::from([root]);
        for op in &v {
            match op {
                Op::Node(n) => {
                    assert!(known.contains(&n.parent_id), "parent before child");
                    assert!(known.insert(n.id), "ids are unique");
                    assert_eq!(n.agent_id.as_deref(), Some("bench-agent-000"));
                }
                Op::Edge { from, to, .. } => {
                    assert!(known.contains(from) && known.contains(to));
                }
                Op::Choose { decision, option } => {
                    assert!(known.contains(decision) && known.contains(option));
                }
            }
        }
        let nodes = v.iter().filter(|o| matches!(o, Op::Node(_))).count();
        assert_eq!(nodes, 2_000, "exactly max_nodes nodes");
    }

    #[test]
    fn the_mix_follows_the_configured_rates() {
        let spec = WorkloadSpec {
            decision_ratio: 0.05,
            monitor_ratio: 0.05,
            chosen_ratio: 1.0,
            ..WorkloadSpec::default()
        };
        let (root, v) = ops(&spec, 3, 10_000);
        let count = |t: &str| {
            v.iter()
                .filter(|o| matches!(o, Op::Node(n) if n.node_type == t))
                .count()
        };
        let decisions = count("decision");
        let monitors = count("monitor");
        let chosen = v.iter().filter(|o| matches!(o, Op::Choose { .. })).count();
        let monitor_edges = v
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Op::Edge {
                        kind: EdgeKind::Monitors,
                        ..
                    }
                )
            })
            .count();
        // A decision plus its 2–4 options is one "step" of ~4 nodes.
        assert!((200..=600).contains(&decisions), "decisions {decisions}");
        assert!((250..=700).contains(&monitors), "monitors {monitors}");
        assert_eq!(chosen, decisions, "chosen_ratio 1: every decision chosen");
        assert_eq!(monitor_edges, monitors, "one MONITORS edge per monitor");
        assert!(count("option") >= 2 * decisions);
        // Forks: several nodes hang directly below the shared root or have siblings.
        let mut children: HashMap<Uuid, usize> = HashMap::new();
        for op in &v {
            if let Op::Node(n) = op {
                *children.entry(n.parent_id).or_default() += 1;
            }
        }
        let forks = children.values().filter(|c| **c > 1).count();
        assert!(forks > 100, "forks {forks}");
        assert!(children.contains_key(&root));
    }

    #[test]
    fn content_sizes_follow_the_distribution() {
        let spec = WorkloadSpec {
            content_median: 1_000,
            content_sigma: 0.5,
            content_max: 4_000,
            decision_ratio: 0.0,
            monitor_ratio: 0.0,
            ..WorkloadSpec::default()
        };
        let (_, v) = ops(&spec, 1, 4_000);
        let mut sizes: Vec<usize> = v
            .iter()
            .filter_map(|o| match o {
                Op::Node(n) => Some(n.content.len()),
                _ => None,
            })
            .collect();
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2];
        assert!((800..=1_250).contains(&median), "median {median}");
        assert!(*sizes.last().unwrap_or(&0) <= 4_000 + 8, "max is honoured");
        let fixed = WorkloadSpec {
            content_sigma: 0.0,
            content_median: 123,
            ..spec
        };
        let (_, v) = ops(&fixed, 1, 50);
        for o in &v {
            if let Op::Node(n) = o {
                assert!(n.content.len().abs_diff(123) <= 8, "{}", n.content.len());
            }
        }
    }

    #[test]
    fn agents_differ_and_runs_repeat_in_shape() {
        let spec = WorkloadSpec::default();
        let shape = |v: &[Op]| -> Vec<(String, usize)> {
            v.iter()
                .map(|o| match o {
                    Op::Node(n) => (n.node_type.clone(), n.content.len()),
                    o => (o.kind().to_owned(), 0),
                })
                .collect()
        };
        let (_, a) = ops(&spec, 0, 300);
        let (_, a2) = ops(&spec, 0, 300);
        let (_, b) = ops(&spec, 1, 300);
        assert_eq!(shape(&a), shape(&a2), "same seed, same shape");
        assert_ne!(shape(&a), shape(&b), "agents differ");
        assert_ne!(a, a2, "fresh ids on every replay");
    }

    #[test]
    fn nodes_only_and_counted_ids() {
        let spec = WorkloadSpec::default();
        let ids = IdAlloc::counted();
        let root = Uuid::now_v7();
        let v: Vec<Op> = AgentOps::new(&spec, 0, root, 500, ids.clone())
            .nodes_only()
            .collect();
        assert_eq!(v.len(), 500);
        for (i, op) in v.iter().enumerate() {
            let Op::Node(n) = op else {
                panic!("only nodes")
            };
            assert_eq!(ids.index_of(&n.id), Some(i as u64));
        }
        assert_eq!(IdAlloc::V7.index_of(&root), None);
        assert_eq!(ids.index_of(&Uuid::now_v7()), None);
    }

    #[test]
    fn batches_keep_parents_before_children() {
        let spec = WorkloadSpec::default();
        let root = Uuid::now_v7();
        let all: Vec<Vec<NodeOp>> =
            batches(AgentOps::new(&spec, 2, root, 250, IdAlloc::V7), 100).collect();
        assert_eq!(
            all.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        let mut known = HashSet::from([root]);
        for n in all.iter().flatten() {
            assert!(known.contains(&n.parent_id));
            known.insert(n.id);
        }
    }

    #[test]
    fn chains_are_chains() {
        let spec = WorkloadSpec::default();
        let root = Uuid::now_v7();
        let c = chain(&spec, root, 1_000);
        assert_eq!(c.len(), 1_000);
        let mut parent = root;
        for n in &c {
            assert_eq!(n.parent_id, parent);
            parent = n.id;
        }
    }
}
