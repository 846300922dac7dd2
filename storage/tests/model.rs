//! Property test: random sequences of workflow creations, appends, atomic batches
//! (some of them invalid), edges, choices and status changes, run against the real
//! store and against a naive in-memory model. Every outcome and every query must
//! agree, before and after a restart, and `verify` must pass.

use std::collections::HashMap;

use arbor_storage::{
    verify_dir, verify_store, AppendError, BranchInfo, Durability, Edge, EdgeKind, EventBody,
    Intent, Meta, NewNode, NewWorkflow, Outcome, Role, Store, StoreOptions, WorkflowStatus,
};
use proptest::prelude::*;
use proptest::sample::Index as Pick;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Create,
    Append {
        wf: Pick,
        parent: Pick,
        ty: u8,
        expect_leaf: bool,
    },
    Batch {
        wf: Pick,
        parent: Pick,
        len: u8,
        bad_at: Option<u8>,
    },
    CrossWorkflowParent {
        wf: Pick,
        other: Pick,
    },
    Monitor {
        wf: Pick,
        from: Pick,
        to: Pick,
    },
    Choose {
        wf: Pick,
        decision: Pick,
        option: Pick,
    },
    Status {
        wf: Pick,
        status: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Create),
        6 => (any::<Pick>(), any::<Pick>(), 0u8..5, any::<bool>())
            .prop_map(|(wf, parent, ty, expect_leaf)| Op::Append { wf, parent, ty, expect_leaf }),
        2 => (any::<Pick>(), any::<Pick>(), 1u8..6, prop::option::weighted(0.3, 0u8..6))
            .prop_map(|(wf, parent, len, bad_at)| Op::Batch { wf, parent, len, bad_at }),
        1 => (any::<Pick>(), any::<Pick>()).prop_map(|(wf, other)| Op::CrossWorkflowParent { wf, other }),
        2 => (any::<Pick>(), any::<Pick>(), any::<Pick>()).prop_map(|(wf, from, to)| Op::Monitor { wf, from, to }),
        2 => (any::<Pick>(), any::<Pick>(), any::<Pick>()).prop_map(|(wf, decision, option)| Op::Choose { wf, decision, option }),
        1 => (any::<Pick>(), 0u8..5).prop_map(|(wf, status)| Op::Status { wf, status }),
    ]
}

const TYPES: [&str; 5] = ["message", "decision", "option", "monitor", "action"];
const STATUSES: [WorkflowStatus; 5] = [
    WorkflowStatus::Running,
    WorkflowStatus::Waiting,
    WorkflowStatus::Completed,
    WorkflowStatus::Failed,
    WorkflowStatus::Cancelled,
];

#[derive(Clone, Debug)]
struct MNode {
    wf: Uuid,
    parent: Option<Uuid>,
    ty: &'static str,
    children: Vec<Uuid>,
    depth: u32,
    branch: Uuid,
}

#[derive(Clone, Debug)]
struct MWf {
    id: Uuid,
    root: Uuid,
    status: WorkflowStatus,
    nodes: Vec<Uuid>,
    /// (branch id, fork, head, length)
    branches: Vec<(Uuid, Option<Uuid>, Uuid, u32)>,
    decisions: Vec<Uuid>,
    options: HashMap<Uuid, Vec<Uuid>>,
    chosen: HashMap<Uuid, Uuid>,
    monitors: Vec<(Uuid, Uuid)>,
}

/// The naive model: plain maps and vectors, no cleverness.
#[derive(Default, Debug)]
struct Model {
    wfs: Vec<MWf>,
    nodes: HashMap<Uuid, MNode>,
    counter: u128,
}

impl Model {
    fn fresh(&mut self) -> Uuid {
        self.counter += 1;
        Uuid::from_u128(0xa5a5_0000_0000_0000_0000_0000_0000_0000 | self.counter)
    }

    fn add_node(&mut self, wf: Uuid, id: Uuid, parent: Uuid, ty: &'static str) {
        let p = self.nodes.get(&parent).cloned().unwrap();
        let w = self.wfs.iter_mut().find(|w| w.id == wf).unwrap();
        let branch = if p.children.is_empty() {
            let b = w.branches.iter_mut().find(|b| b.0 == p.branch).unwrap();
            b.2 = id;
            b.3 += 1;
            p.branch
        } else {
            w.branches.push((id, Some(parent), id, 1));
            id
        };
        w.nodes.push(id);
        if ty == "decision" {
            w.decisions.push(id);
        }
        if ty == "option" && p.ty == "decision" {
            w.options.entry(parent).or_default().push(id);
        }
        self.nodes.get_mut(&parent).unwrap().children.push(id);
        self.nodes.insert(
            id,
            MNode {
                wf,
                parent: Some(parent),
                ty,
                children: vec![],
                depth: p.depth + 1,
                branch,
            },
        );
    }

    fn path(&self, id: Uuid) -> Vec<Uuid> {
        let mut out = vec![id];
        let mut at = id;
        while let Some(p) = self.nodes[&at].parent {
            out.push(p);
            at = p;
        }
        out.reverse();
        out
    }

    fn subtree(&self, id: Uuid, max: Option<u32>) -> Vec<Uuid> {
        let base = self.nodes[&id].depth;
        let mut out = vec![];
        let mut q = std::collections::VecDeque::from([id]);
        while let Some(n) = q.pop_front() {
            out.push(n);
            if max.is_none_or(|m| self.nodes[&n].depth - base < m) {
                q.extend(self.nodes[&n].children.iter().copied());
            }
        }
        out
    }
}

fn pick<T: Copy>(v: &[T], p: &Pick) -> Option<T> {
    (!v.is_empty()).then(|| v[p.index(v.len())])
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        durability: Durability::None,
        cache_mb: 8,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut m = Model::default();
    let meta = Meta::default();
    for op in ops {
        match op {
            Op::Create => {
                let id = m.fresh();
                let root = m.fresh();
                let out = store
                    .submit(
                        Intent::CreateWorkflow(NewWorkflow {
                            id: Some(id),
                            root_id: Some(root),
                            system_prompt: format!("prompt {id}"),
                            ..NewWorkflow::default()
                        }),
                        meta.clone(),
                    )
                    .await;
                prop_assert!(
                    matches!(
                        out,
                        Ok(Outcome::WorkflowCreated {
                            replayed: false,
                            ..
                        })
                    ),
                    "{out:?}"
                );
                m.wfs.push(MWf {
                    id,
                    root,
                    status: WorkflowStatus::Running,
                    nodes: vec![root],
                    branches: vec![(root, None, root, 1)],
                    decisions: vec![],
                    options: HashMap::new(),
                    chosen: HashMap::new(),
                    monitors: vec![],
                });
                m.nodes.insert(
                    root,
                    MNode {
                        wf: id,
                        parent: None,
                        ty: "system",
                        children: vec![],
                        depth: 0,
                        branch: root,
                    },
                );
            }
            Op::Append {
                wf,
                parent,
                ty,
                expect_leaf,
            } => {
                let Some(w) = pick(&m.wfs.iter().map(|w| w.id).collect::<Vec<_>>(), &wf) else {
                    continue;
                };
                let ww = m.wfs.iter().find(|x| x.id == w).unwrap().clone();
                let parent = pick(&ww.nodes, &parent).unwrap();
                let ty = TYPES[ty as usize];
                let id = m.fresh();
                let mut n = NewNode::new(parent, ty, format!("content {id}"));
                n.id = Some(id);
                n.expect_leaf = expect_leaf;
                // Messages alternate roles (the outline carries them).
                if ty == "message" && expect_leaf {
                    n.role = Some(Role::Assistant);
                }
                let out = store
                    .submit(
                        Intent::AppendNodes {
                            workflow_id: w,
                            nodes: vec![n],
                        },
                        meta.clone(),
                    )
                    .await;
                if ww.status.is_terminal() || (expect_leaf && !m.nodes[&parent].children.is_empty())
                {
                    prop_assert!(matches!(out, Err(AppendError::Conflict(_))), "{out:?}");
                } else {
                    prop_assert!(matches!(out, Ok(Outcome::Nodes { .. })), "{out:?}");
                    m.add_node(w, id, parent, ty);
                }
            }
            Op::Batch {
                wf,
                parent,
                len,
                bad_at,
            } => {
                let Some(w) = pick(&m.wfs.iter().map(|w| w.id).collect::<Vec<_>>(), &wf) else {
                    continue;
                };
                let ww = m.wfs.iter().find(|x| x.id == w).unwrap().clone();
                let mut parent = pick(&ww.nodes, &parent).unwrap();
                let mut nodes = Vec::new();
                let mut planned = Vec::new();
                for i in 0..len {
                    let id = m.fresh();
                    let p = if bad_at == Some(i) {
                        Uuid::from_u128(u128::MAX - u128::from(i))
                    } else {
                        parent
                    };
                    let mut n = NewNode::new(p, "message", format!("batch {id}"));
                    n.id = Some(id);
                    nodes.push(n);
                    planned.push((id, parent));
                    parent = id;
                }
                let out = store
                    .submit(
                        Intent::AppendNodes {
                            workflow_id: w,
                            nodes,
                        },
                        meta.clone(),
                    )
                    .await;
                let bad = bad_at.is_some_and(|b| b < len);
                if ww.status.is_terminal() {
                    prop_assert!(matches!(out, Err(AppendError::Conflict(_))), "{out:?}");
                } else if bad {
                    prop_assert!(matches!(out, Err(AppendError::Unprocessable(_))), "{out:?}");
                } else {
                    prop_assert!(matches!(out, Ok(Outcome::Nodes { .. })), "{out:?}");
                    for (id, p) in planned {
                        m.add_node(w, id, p, "message");
                    }
                }
            }
            Op::CrossWorkflowParent { wf, other } => {
                if m.wfs.len() < 2 {
                    continue;
                }
                let a = wf.index(m.wfs.len());
                let b = (a + 1 + other.index(m.wfs.len() - 1)) % m.wfs.len();
                let (w, foreign) = (m.wfs[a].id, m.wfs[b].root);
                let out = store
                    .submit(
                        Intent::AppendNodes {
                            workflow_id: w,
                            nodes: vec![NewNode::new(foreign, "message", "x")],
                        },
                        meta.clone(),
                    )
                    .await;
                if m.wfs[a].status.is_terminal() {
                    prop_assert!(matches!(out, Err(AppendError::Conflict(_))), "{out:?}");
                } else {
                    prop_assert!(matches!(out, Err(AppendError::Unprocessable(_))), "{out:?}");
                }
            }
            Op::Monitor { wf, from, to } => {
                let Some(w) = pick(&m.wfs.iter().map(|w| w.id).collect::<Vec<_>>(), &wf) else {
                    continue;
                };
                let ww = m.wfs.iter().find(|x| x.id == w).unwrap().clone();
                let monitors: Vec<Uuid> = ww
                    .nodes
                    .iter()
                    .copied()
                    .filter(|n| m.nodes[n].ty == "monitor")
                    .collect();
                let Some(from) = pick(&monitors, &from) else {
                    continue;
                };
                let to = pick(&ww.nodes, &to).unwrap();
                let edge = Edge {
                    kind: EdgeKind::Monitors,
                    from,
                    to,
                };
                let out = store
                    .submit(
                        Intent::AddEdge {
                            workflow_id: w,
                            edge,
                        },
                        meta.clone(),
                    )
                    .await;
                let wm = m.wfs.iter_mut().find(|x| x.id == w).unwrap();
                if from == to {
                    prop_assert!(matches!(out, Err(AppendError::Unprocessable(_))), "{out:?}");
                } else if wm.monitors.contains(&(from, to)) {
                    prop_assert!(
                        matches!(out, Ok(Outcome::Edge { replayed: true, .. })),
                        "{out:?}"
                    );
                } else if wm.status.is_terminal() {
                    prop_assert!(matches!(out, Err(AppendError::Conflict(_))), "{out:?}");
                } else {
                    prop_assert!(
                        matches!(
                            out,
                            Ok(Outcome::Edge {
                                replayed: false,
                                ..
                            })
                        ),
                        "{out:?}"
                    );
                    wm.monitors.push((from, to));
                }
            }
            Op::Choose {
                wf,
                decision,
                option,
            } => {
                let Some(w) = pick(&m.wfs.iter().map(|w| w.id).collect::<Vec<_>>(), &wf) else {
                    continue;
                };
                let ww = m.wfs.iter().find(|x| x.id == w).unwrap().clone();
                let Some(d) = pick(&ww.decisions, &decision) else {
                    continue;
                };
                // Half the time a real option, otherwise any node.
                let opts = ww.options.get(&d).cloned().unwrap_or_default();
                let o = if option.index(2) == 0 && !opts.is_empty() {
                    pick(&opts, &option).unwrap()
                } else {
                    pick(&ww.nodes, &option).unwrap()
                };
                let out = store
                    .submit(
                        Intent::Choose {
                            decision_id: d,
                            option_id: o,
                        },
                        meta.clone(),
                    )
                    .await;
                let wm = m.wfs.iter_mut().find(|x| x.id == w).unwrap();
                if !opts.contains(&o) {
                    prop_assert!(matches!(out, Err(AppendError::Unprocessable(_))), "{out:?}");
                } else {
                    match wm.chosen.get(&d) {
                        Some(c) if *c == o => prop_assert!(
                            matches!(out, Ok(Outcome::Edge { replayed: true, .. })),
                            "{out:?}"
                        ),
                        Some(_) => {
                            prop_assert!(matches!(out, Err(AppendError::Conflict(_))), "{out:?}")
                        }
                        None if wm.status.is_terminal() => {
                            prop_assert!(matches!(out, Err(AppendError::Conflict(_))), "{out:?}")
                        }
                        None => {
                            prop_assert!(
                                matches!(
                                    out,
                                    Ok(Outcome::Edge {
                                        replayed: false,
                                        ..
                                    })
                                ),
                                "{out:?}"
                            );
                            wm.chosen.insert(d, o);
                        }
                    }
                }
            }
            Op::Status { wf, status } => {
                let Some(w) = pick(&m.wfs.iter().map(|w| w.id).collect::<Vec<_>>(), &wf) else {
                    continue;
                };
                let to = STATUSES[status as usize];
                let out = store
                    .submit(
                        Intent::SetStatus {
                            workflow_id: w,
                            status: to,
                        },
                        meta.clone(),
                    )
                    .await;
                let wm = m.wfs.iter_mut().find(|x| x.id == w).unwrap();
                if wm.status == to {
                    prop_assert!(
                        matches!(out, Ok(Outcome::Status { seq: None, .. })),
                        "{out:?}"
                    );
                } else if wm.status.is_terminal() {
                    prop_assert!(matches!(out, Err(AppendError::Conflict(_))), "{out:?}");
                } else {
                    prop_assert!(
                        matches!(out, Ok(Outcome::Status { seq: Some(_), .. })),
                        "{out:?}"
                    );
                    wm.status = to;
                }
            }
        }
    }
    compare(&store, &m)?;
    verify_store(&store).map_err(|e| TestCaseError::fail(e.to_string()))?;
    store.close().await;
    drop(store);
    verify_dir(dir.path()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let reopened = Store::open(dir.path(), opts).unwrap();
    compare(&reopened, &m)?;
    reopened.close().await;
    Ok(())
}

fn ids<N: std::ops::Deref<Target = arbor_storage::Node>>(nodes: &[N]) -> Vec<Uuid> {
    nodes.iter().map(|n| n.id).collect()
}

fn compare(store: &Store, m: &Model) -> Result<(), TestCaseError> {
    for (id, n) in &m.nodes {
        prop_assert_eq!(ids(&store.path(id).unwrap().unwrap()), m.path(*id));
        prop_assert_eq!(
            ids(&store.children(id).unwrap().unwrap()),
            n.children.clone()
        );
        prop_assert_eq!(
            ids(&store.subtree(id, None).unwrap().unwrap()),
            m.subtree(*id, None)
        );
        prop_assert_eq!(
            ids(&store.subtree(id, Some(1)).unwrap().unwrap()),
            m.subtree(*id, Some(1))
        );
        let node = store.node(id).unwrap().unwrap().node;
        prop_assert_eq!(node.depth, n.depth);
        prop_assert_eq!(node.branch_id, n.branch);
        prop_assert_eq!(node.workflow_id, n.wf);
    }
    for w in &m.wfs {
        let view = store.workflow(&w.id).unwrap().unwrap();
        prop_assert_eq!(view.status, w.status);
        prop_assert_eq!(view.node_count, w.nodes.len());
        prop_assert_eq!(view.root_id, w.root);
        let branches: Vec<BranchInfo> = w
            .branches
            .iter()
            .map(|(b, f, h, l)| BranchInfo {
                branch_id: *b,
                fork_node_id: *f,
                head_id: *h,
                length: *l,
            })
            .collect();
        prop_assert_eq!(store.branches(&w.id).unwrap(), branches);
        for (b, _, _, len) in &w.branches {
            let view = store.branch(&w.id, b).unwrap().unwrap();
            prop_assert_eq!(view.nodes.len() as u32, *len);
            prop_assert!(view.nodes.iter().all(|n| n.branch_id == *b));
        }
        let decisions = store.decisions(&w.id).unwrap().unwrap();
        prop_assert_eq!(
            decisions.iter().map(|d| d.decision.id).collect::<Vec<_>>(),
            w.decisions.clone()
        );
        for d in &decisions {
            prop_assert_eq!(
                ids(&d.options),
                w.options.get(&d.decision.id).cloned().unwrap_or_default()
            );
            prop_assert_eq!(
                d.chosen.as_ref().map(|c| c.id),
                w.chosen.get(&d.decision.id).copied()
            );
        }
        let all: Vec<(Uuid, Uuid)> = store
            .monitors(&w.id, false)
            .unwrap()
            .unwrap()
            .iter()
            .map(|v| (v.monitor.id, v.target.id))
            .collect();
        prop_assert_eq!(&all, &w.monitors);
        let cross: Vec<(Uuid, Uuid)> = store
            .monitors(&w.id, true)
            .unwrap()
            .unwrap()
            .iter()
            .map(|v| (v.monitor.id, v.target.id))
            .collect();
        let expected: Vec<(Uuid, Uuid)> = w
            .monitors
            .iter()
            .copied()
            .filter(|(a, b)| m.nodes[a].branch != m.nodes[b].branch)
            .collect();
        prop_assert_eq!(cross, expected);
        outline_agrees_with_the_log(store, &w.id)?;
        workflow_events_agree_with_the_log(store, &w.id)?;
        // nodes_of: the workflow's nodes among the ids asked, none of another workflow.
        let asked: Vec<Uuid> = m.nodes.keys().copied().collect();
        let got = ids(&store.nodes_of(&w.id, &asked).unwrap().unwrap());
        let expected: Vec<Uuid> = asked
            .iter()
            .copied()
            .filter(|id| m.nodes[id].wf == w.id)
            .collect();
        prop_assert_eq!(got, expected);
    }
    let listed = store
        .list_workflows(&Default::default(), None, 10_000)
        .unwrap()
        .0;
    prop_assert_eq!(
        listed
            .iter()
            .map(|v| v.workflow_id)
            .rev()
            .collect::<Vec<_>>(),
        m.wfs.iter().map(|w| w.id).collect::<Vec<_>>()
    );
    Ok(())
}

/// A workflow's events (the index's in-memory map of them) are the log's records of
/// that workflow, in order, for every start and limit.
fn workflow_events_agree_with_the_log(store: &Store, wf: &Uuid) -> Result<(), TestCaseError> {
    let all: Vec<u64> = store
        .read_records(0, usize::MAX)
        .unwrap()
        .iter()
        .filter(|r| r.workflow_id == *wf)
        .map(|r| r.seq)
        .collect();
    let starts = std::iter::once(0)
        .chain(all.iter().copied())
        .chain([store.head()]);
    for after in starts {
        for limit in [1, 2, 7, usize::MAX] {
            let want: Vec<u64> = all
                .iter()
                .copied()
                .filter(|s| *s > after)
                .take(limit)
                .collect();
            let got: Vec<u64> = store
                .read_workflow_events(wf, after, limit)
                .unwrap()
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            prop_assert_eq!(got, want, "after {} limit {}", after, limit);
        }
    }
    Ok(())
}

/// The outline (the index's view, for the web UI) says what replaying the workflow's
/// events says: the same nodes in the same order with the same parent, type, role,
/// branch and depth, and exactly the other events.
fn outline_agrees_with_the_log(store: &Store, wf: &Uuid) -> Result<(), TestCaseError> {
    let o = store.outline(wf).unwrap().unwrap();
    prop_assert_eq!(o.head, store.head());
    let mut nodes = Vec::new();
    let mut others = Vec::new();
    for e in store
        .read_workflow_events(wf, 0, usize::MAX)
        .unwrap()
        .unwrap()
    {
        match &e.body {
            EventBody::WorkflowCreated(c) => nodes.push((e.seq, c.root.clone())),
            EventBody::NodeCreated(n) => nodes.push((e.seq, n.clone())),
            _ => others.push(e),
        }
    }
    prop_assert_eq!(o.nodes.len(), nodes.len());
    for (got, (seq, n)) in o.nodes.iter().zip(&nodes) {
        prop_assert_eq!(got.seq, *seq);
        prop_assert_eq!(got.id, n.id);
        prop_assert_eq!(got.parent.map(|p| o.nodes[p as usize].id), n.parent_id);
        prop_assert_eq!(&o.types[got.node_type as usize], &n.node_type);
        prop_assert_eq!(got.role, n.role);
        prop_assert_eq!(got.branch_id, n.branch_id);
        prop_assert_eq!(got.depth, n.depth);
    }
    prop_assert_eq!(o.events, others);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_naive_model(ops in prop::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
