//! The systems under test: arbor and the three baselines, behind one [`Target`] so
//! every scenario drives them the same way.

pub mod arbor;
pub mod postgres;
pub mod redis;
pub mod seeds;

use anyhow::Context;
use uuid::Uuid;

use arbor_storage::{Edge, Intent, Meta, NewNode, NewWorkflow, Store};

use super::workload::{NodeOp, Op};

/// A system the append and query scenarios drive.
#[derive(Clone)]
pub enum Target {
    /// arbor over HTTP.
    Arbor(arbor::ArborHttp),
    /// arbor's store in-process (`Store::submit`, no HTTP).
    Store(Store),
    /// The seeds' design.
    Seeds(seeds::Seeds),
    /// PostgreSQL events table.
    Postgres(postgres::Postgres),
    /// Redis alone.
    Redis(redis::Redis),
}

impl Target {
    /// A fresh workflow with its root: `(workflow_id, root_id)`.
    pub async fn new_root(&self, prompt: &str) -> anyhow::Result<(Uuid, Uuid)> {
        match self {
            Target::Arbor(a) => a.create_workflow(prompt).await,
            Target::Store(st) => {
                let intent = Intent::CreateWorkflow(NewWorkflow {
                    system_prompt: prompt.to_owned(),
                    ..NewWorkflow::default()
                });
                match st.submit(intent, Meta::default()).await? {
                    arbor_storage::Outcome::WorkflowCreated {
                        workflow_id,
                        root_id,
                        ..
                    } => Ok((workflow_id, root_id)),
                    other => anyhow::bail!("unexpected outcome {other:?}"),
                }
            }
            Target::Seeds(s) => {
                let (wf, root) = (Uuid::now_v7(), Uuid::now_v7());
                s.graph.create_root(wf, root, prompt).await?;
                Ok((wf, root))
            }
            Target::Postgres(p) => {
                let (wf, root) = (Uuid::now_v7(), Uuid::now_v7());
                p.create_root(wf, root, prompt).await?;
                Ok((wf, root))
            }
            Target::Redis(_) => Ok((Uuid::now_v7(), Uuid::now_v7())),
        }
    }

    /// Applies one event.
    pub async fn apply(&self, wf: Uuid, op: &Op) -> anyhow::Result<()> {
        match self {
            Target::Arbor(a) => a.apply(wf, op).await,
            Target::Store(st) => {
                let intent = match op {
                    Op::Node(n) => Intent::AppendNodes {
                        workflow_id: wf,
                        nodes: vec![new_node(n)],
                    },
                    Op::Edge { kind, from, to } => Intent::AddEdge {
                        workflow_id: wf,
                        edge: Edge {
                            kind: *kind,
                            from: *from,
                            to: *to,
                        },
                    },
                    Op::Choose { decision, option } => Intent::Choose {
                        decision_id: *decision,
                        option_id: *option,
                    },
                };
                st.submit(intent, Meta::default()).await?;
                Ok(())
            }
            Target::Seeds(s) => s.apply(wf, op).await,
            Target::Postgres(p) => p.apply(wf, op).await,
            Target::Redis(r) => r.apply(wf, op).await,
        }
    }

    /// Applies a batch of node events in one request, if the system has batches.
    pub async fn apply_batch(&self, wf: Uuid, nodes: &[NodeOp]) -> anyhow::Result<()> {
        match self {
            Target::Arbor(a) => a.append_batch(wf, nodes).await,
            Target::Store(st) => {
                let intent = Intent::AppendNodes {
                    workflow_id: wf,
                    nodes: nodes.iter().map(new_node).collect(),
                };
                st.submit(intent, Meta::default()).await?;
                Ok(())
            }
            Target::Postgres(p) => p.insert_batch(wf, nodes).await,
            Target::Redis(r) => r.apply_batch(wf, nodes).await,
            Target::Seeds(_) => anyhow::bail!("the seeds' design has no batch write"),
        }
    }

    /// Nodes stored for `wf`, root excluded (Redis: stream entries), to check that
    /// every acknowledged write is there.
    pub async fn stored(&self, wf: Uuid) -> anyhow::Result<usize> {
        Ok(match self {
            Target::Arbor(a) => a.node_count(wf).await?.saturating_sub(1),
            Target::Store(st) => st
                .workflow(&wf)?
                .context("workflow missing")?
                .node_count
                .saturating_sub(1),
            Target::Seeds(s) => s.graph.node_count(wf).await?.saturating_sub(1),
            Target::Postgres(p) => p.node_count(wf).await?.saturating_sub(1),
            Target::Redis(r) => r.stream_len(wf).await?,
        })
    }

    /// Frees what the series stored, where the system allows it.
    pub async fn cleanup(&self, wf: Uuid) -> anyhow::Result<()> {
        match self {
            Target::Seeds(s) => s.graph.delete_workflow(wf).await,
            Target::Redis(r) => r.delete_workflow(wf).await,
            Target::Arbor(_) | Target::Store(_) | Target::Postgres(_) => Ok(()),
        }
    }
}

/// The storage intent of a node op.
fn new_node(n: &NodeOp) -> NewNode {
    NewNode {
        id: Some(n.id),
        parent_id: n.parent_id,
        node_type: n.node_type.clone(),
        role: n.role,
        content: n.content.clone(),
        payload: n.payload.clone(),
        metadata: n.metadata.clone(),
        agent_id: n.agent_id.clone(),
        user_id: None,
        expect_leaf: false,
        timestamp: None,
    }
}
