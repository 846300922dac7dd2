//! `arbor import` and `arbor export`: workflows as JSONL of portable events.
//!
//! Export writes each event of a workflow as one [`PortableEvent`] line (no seqs, no
//! hashes: those belong to the store). Import replays the lines through the same
//! validation as the API, keeping ids, timestamps and actors, and checks that what
//! the store derived (branch ids, depths) equals what the file says. Importing an
//! exported workflow and exporting it again gives the same bytes; importing a file
//! twice is a no-op the second time.

use std::io::{BufRead, Write};

use arbor_storage::{
    AppendError, EventBody, Intent, Meta, NewNode, NewWorkflow, Outcome, PortableEvent, Store,
    Timestamp,
};
use uuid::Uuid;

/// Nodes per submitted batch during import.
const IMPORT_BATCH: usize = 1000;

/// Errors of import and export.
#[derive(Debug, thiserror::Error)]
pub enum PortableError {
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not a portable event.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The store refused an event.
    #[error("line {line} refused")]
    Refused {
        /// 1-based line number.
        line: usize,
        /// Why.
        source: AppendError,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] arbor_storage::StorageError),
    /// The workflow does not exist.
    #[error("workflow {0} not found")]
    NotFound(Uuid),
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Events read.
    pub events: usize,
    /// Events newly stored.
    pub stored: usize,
    /// Events already present (identical).
    pub already_present: usize,
    /// Workflows seen.
    pub workflows: usize,
    /// The workflows seen, in the order the input first names them.
    #[serde(skip)]
    pub workflow_ids: Vec<Uuid>,
}

/// Writes workflow `wf` as JSONL; returns the number of events.
pub fn export(store: &Store, wf: &Uuid, out: &mut dyn Write) -> Result<usize, PortableError> {
    let mut after = 0;
    let mut n = 0;
    loop {
        let page = store
            .read_workflow_events(wf, after, 1000)?
            .ok_or(PortableError::NotFound(*wf))?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            serde_json::to_writer(&mut *out, &PortableEvent::from_event(e))
                .map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            n += 1;
        }
    }
    out.flush()?;
    Ok(n)
}

/// Nodes waiting to be submitted as one batch.
struct NodeBatch {
    workflow_id: Uuid,
    actor: String,
    /// (line, node as the file says it) per item: what to submit, and what to check
    /// the store derived.
    nodes: Vec<(usize, arbor_storage::Node)>,
}

/// The node of a `node.created` line (event `id` in `workflow_id` at `timestamp`),
/// checked: it has a parent and the event's id.
fn checked_node(
    mut node: arbor_storage::Node,
    (id, workflow_id, timestamp): (Uuid, Uuid, Timestamp),
    line: usize,
) -> Result<arbor_storage::Node, PortableError> {
    if node.parent_id.is_none() {
        return Err(PortableError::Line {
            line,
            message: "node.created without parent_id".into(),
        });
    }
    if id != node.id {
        return Err(PortableError::Line {
            line,
            message: "node.created event id must equal the node id".into(),
        });
    }
    node.workflow_id = workflow_id;
    node.timestamp = timestamp;
    Ok(node)
}

/// Imports JSONL from `input`; `progress` gets the bytes consumed so far.
///
/// On a bad line (unparseable, invalid, or refused by the store) every line before it
/// is stored, the bad one and those after it are not, and the error names its line.
pub async fn import(
    store: &Store,
    input: &mut dyn BufRead,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportReport, PortableError> {
    let mut report = ImportReport::default();
    let mut batch: Option<NodeBatch> = None;
    let mut workflows = std::collections::HashSet::new();
    let mut line = String::new();
    let mut line_no = 0;
    let mut consumed = 0u64;
    loop {
        line.clear();
        let n = input.read_line(&mut line)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        consumed += n as u64;
        if line.trim().is_empty() {
            continue;
        }
        let ev: PortableEvent = match serde_json::from_str(&line) {
            Ok(ev) => ev,
            Err(e) => {
                flush(store, batch.take(), &mut report).await?;
                return Err(PortableError::Line {
                    line: line_no,
                    message: format!("not a portable event: {e}"),
                });
            }
        };
        report.events += 1;
        if workflows.insert(ev.workflow_id) {
            report.workflow_ids.push(ev.workflow_id);
        }
        if let EventBody::NodeCreated(node) = ev.body {
            let fits = batch.as_ref().is_some_and(|b| {
                b.workflow_id == ev.workflow_id
                    && b.actor == ev.actor
                    && b.nodes.len() < IMPORT_BATCH
            });
            if !fits {
                flush(store, batch.take(), &mut report).await?;
            }
            let node = match checked_node(node, (ev.id, ev.workflow_id, ev.timestamp), line_no) {
                Ok(node) => node,
                Err(e) => {
                    flush(store, batch.take(), &mut report).await?;
                    return Err(e);
                }
            };
            batch
                .get_or_insert_with(|| NodeBatch {
                    workflow_id: ev.workflow_id,
                    actor: ev.actor,
                    nodes: Vec::new(),
                })
                .nodes
                .push((line_no, node));
            progress(consumed);
            continue;
        }
        flush(store, batch.take(), &mut report).await?;
        let meta = Meta {
            actor: ev.actor.clone(),
            event_id: None,
            timestamp: Some(ev.timestamp),
        };
        let (intent, meta) = match ev.body {
            EventBody::WorkflowCreated(c) => {
                let root = &c.root;
                if ev.id != ev.workflow_id
                    || root.parent_id.is_some()
                    || !root.payload.is_null()
                    || !root.metadata.is_empty()
                    || root.agent_id.is_some()
                    || root.user_id != c.user_id
                {
                    return Err(PortableError::Line {
                        line: line_no,
                        message: "workflow.created: id must equal workflow_id and the root may \
                                  carry only the system prompt and the workflow's user_id"
                            .into(),
                    });
                }
                (
                    Intent::CreateWorkflow(NewWorkflow {
                        id: Some(ev.workflow_id),
                        root_id: Some(c.root.id),
                        system_prompt: c.root.content,
                        metadata: c.metadata,
                        user_id: c.user_id,
                    }),
                    meta,
                )
            }
            EventBody::EdgeCreated(edge) => (
                Intent::AddEdge {
                    workflow_id: ev.workflow_id,
                    edge,
                },
                meta,
            ),
            EventBody::StatusChanged(s) => (
                Intent::SetStatus {
                    workflow_id: ev.workflow_id,
                    status: s.to,
                },
                Meta {
                    event_id: Some(ev.id),
                    ..meta
                },
            ),
            EventBody::NodeCreated(_) => continue,
        };
        let outcome =
            store
                .submit(intent, meta)
                .await
                .map_err(|source| PortableError::Refused {
                    line: line_no,
                    source,
                })?;
        count(&outcome, &mut report);
        progress(consumed);
    }
    flush(store, batch.take(), &mut report).await?;
    report.workflows = workflows.len();
    Ok(report)
}

fn count(outcome: &Outcome, report: &mut ImportReport) {
    let (n, replayed) = match outcome {
        Outcome::WorkflowCreated { replayed, .. } | Outcome::Edge { replayed, .. } => {
            (1, *replayed)
        }
        Outcome::Nodes { nodes, replayed } => (nodes.len(), *replayed),
        Outcome::Status { seq, .. } => (1, seq.is_none()),
    };
    if replayed {
        report.already_present += n;
    } else {
        report.stored += n;
    }
}

/// Stores a batch. A batch is all or nothing, so when the store refuses one of several
/// nodes the batch goes again node by node: the lines before the refused one are stored
/// and the error names the refused line itself.
async fn flush(
    store: &Store,
    batch: Option<NodeBatch>,
    report: &mut ImportReport,
) -> Result<(), PortableError> {
    let Some(b) = batch else { return Ok(()) };
    match append(store, &b, &b.nodes).await {
        Err(PortableError::Refused { .. }) if b.nodes.len() > 1 => {
            for one in b.nodes.chunks(1) {
                let outcome = append(store, &b, one).await?;
                count(&outcome, report);
            }
            Ok(())
        }
        Err(e) => Err(e),
        Ok(outcome) => {
            count(&outcome, report);
            Ok(())
        }
    }
}

/// Submits `nodes` of batch `b` as one append and checks that what the store derived
/// (branch, depth) is what the file says.
async fn append(
    store: &Store,
    b: &NodeBatch,
    nodes: &[(usize, arbor_storage::Node)],
) -> Result<Outcome, PortableError> {
    let first_line = nodes.first().map_or(0, |n| n.0);
    let new_nodes = nodes
        .iter()
        .map(|(_, node)| NewNode {
            id: Some(node.id),
            parent_id: node.parent_id.unwrap_or_default(),
            node_type: node.node_type.clone(),
            role: node.role,
            content: node.content.clone(),
            payload: node.payload.clone(),
            metadata: node.metadata.clone(),
            agent_id: node.agent_id.clone(),
            user_id: node.user_id.clone(),
            expect_leaf: false,
            timestamp: Some(node.timestamp),
        })
        .collect();
    let outcome = store
        .submit(
            Intent::AppendNodes {
                workflow_id: b.workflow_id,
                nodes: new_nodes,
            },
            Meta {
                actor: b.actor.clone(),
                event_id: None,
                timestamp: None,
            },
        )
        .await
        .map_err(|source| PortableError::Refused {
            line: first_line,
            source,
        })?;
    if let Outcome::Nodes { nodes: stored, .. } = &outcome {
        for ((line, expected), got) in nodes.iter().zip(stored) {
            let mut got = got.clone();
            got.seq = 0;
            if got != *expected {
                return Err(PortableError::Line {
                    line: *line,
                    message: format!(
                        "stored node differs from the file (file says branch {} depth {}, \
                         the tree gives branch {} depth {})",
                        expected.branch_id, expected.depth, got.branch_id, got.depth
                    ),
                });
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_storage::{Durability, StoreOptions};
    use serde_json::Value;

    fn open(dir: &std::path::Path) -> Store {
        let options = StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        };
        Store::open(dir, options).expect("open store")
    }

    /// The JSONL lines of a workflow: its creation and a chain of three nodes.
    async fn chain_lines() -> (Uuid, Vec<Value>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let created = store
            .submit(
                Intent::CreateWorkflow(NewWorkflow {
                    id: None,
                    root_id: None,
                    system_prompt: "be brief".into(),
                    metadata: Default::default(),
                    user_id: None,
                }),
                Meta::default(),
            )
            .await
            .expect("create");
        let Outcome::WorkflowCreated {
            workflow_id,
            mut root_id,
            ..
        } = created
        else {
            panic!("{created:?}")
        };
        for i in 0..3 {
            let n = NewNode::new(root_id, "message", format!("step {i}"));
            let out = store
                .submit(
                    Intent::AppendNodes {
                        workflow_id,
                        nodes: vec![n],
                    },
                    Meta::default(),
                )
                .await
                .expect("append");
            let Outcome::Nodes { nodes, .. } = out else {
                panic!("{out:?}")
            };
            root_id = nodes[0].id;
        }
        let mut out = Vec::new();
        export(&store, &workflow_id, &mut out).expect("export");
        store.close().await;
        let lines = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        (workflow_id, lines)
    }

    /// Imports `lines` into a fresh store; returns the error and how many lines of the
    /// workflow the store then holds.
    async fn import_lines(wf: Uuid, lines: &[Value]) -> (PortableError, usize) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let err = import(&store, &mut text.as_bytes(), &mut |_| {})
            .await
            .expect_err("a bad line fails the import");
        let mut out = Vec::new();
        let kept = export(&store, &wf, &mut out).unwrap_or(0);
        store.close().await;
        (err, kept)
    }

    /// Regression: `import` returned on a bad `node.created` line (no `parent_id`, or an
    /// event id other than the node's) without flushing the nodes it had batched, so
    /// the good lines before the bad one were lost — the CLI promises to keep them.
    #[tokio::test]
    async fn lines_before_an_invalid_node_line_are_stored() {
        let (wf, lines) = chain_lines().await;
        assert_eq!(lines.len(), 4, "workflow.created and three nodes");
        type Breakage = (&'static str, fn(&mut Value));
        let breakages: [Breakage; 2] = [
            ("no parent_id", |l| l["body"]["parent_id"] = Value::Null),
            ("another event id", |l| {
                l["id"] = Value::String(Uuid::now_v7().to_string())
            }),
        ];
        for (what, break_it) in breakages {
            let mut bad = lines.clone();
            break_it(&mut bad[3]);
            let (err, kept) = import_lines(wf, &bad).await;
            assert!(
                matches!(err, PortableError::Line { line: 4, .. }),
                "{what}: {err:?}"
            );
            assert_eq!(kept, 3, "{what}: the three lines before the bad one");
        }
    }

    /// A node the store refuses in the middle of a batch (the batch is all or nothing):
    /// the lines before it are stored all the same, and the error names its line, not
    /// the batch's first.
    #[tokio::test]
    async fn lines_before_a_refused_node_are_stored() {
        let (wf, mut lines) = chain_lines().await;
        lines[3]["body"]["parent_id"] = Value::String(Uuid::now_v7().to_string());
        let (err, kept) = import_lines(wf, &lines).await;
        assert!(
            matches!(err, PortableError::Refused { line: 4, .. }),
            "{err:?}"
        );
        assert_eq!(kept, 3);
    }
}
