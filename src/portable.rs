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
    nodes: Vec<NewNode>,
    /// (line, expected node) per item, to check what the store derived.
    expected: Vec<(usize, arbor_storage::Node)>,
}

/// Imports JSONL from `input`; `progress` gets the bytes consumed so far.
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
                // Keep everything before the bad line, as for a refused event.
                flush(store, batch.take(), &mut report).await?;
                return Err(PortableError::Line {
                    line: line_no,
                    message: format!("not a portable event: {e}"),
                });
            }
        };
        report.events += 1;
        workflows.insert(ev.workflow_id);
        if let EventBody::NodeCreated(node) = &ev.body {
            let fits = batch.as_ref().is_some_and(|b| {
                b.workflow_id == ev.workflow_id
                    && b.actor == ev.actor
                    && b.nodes.len() < IMPORT_BATCH
            });
            if !fits {
                flush(store, batch.take(), &mut report).await?;
            }
            let parent_id = node.parent_id.ok_or_else(|| PortableError::Line {
                line: line_no,
                message: "node.created without parent_id".into(),
            })?;
            if ev.id != node.id {
                return Err(PortableError::Line {
                    line: line_no,
                    message: "node.created event id must equal the node id".into(),
                });
            }
            let b = batch.get_or_insert_with(|| NodeBatch {
                workflow_id: ev.workflow_id,
                actor: ev.actor.clone(),
                nodes: Vec::new(),
                expected: Vec::new(),
            });
            b.nodes.push(NewNode {
                id: Some(node.id),
                parent_id,
                node_type: node.node_type.clone(),
                role: node.role,
                content: node.content.clone(),
                payload: node.payload.clone(),
                metadata: node.metadata.clone(),
                agent_id: node.agent_id.clone(),
                user_id: node.user_id.clone(),
                expect_leaf: false,
                timestamp: Some(ev.timestamp),
            });
            let mut expected = node.clone();
            expected.workflow_id = ev.workflow_id;
            expected.timestamp = ev.timestamp;
            b.expected.push((line_no, expected));
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

async fn flush(
    store: &Store,
    batch: Option<NodeBatch>,
    report: &mut ImportReport,
) -> Result<(), PortableError> {
    let Some(b) = batch else { return Ok(()) };
    let first_line = b.expected.first().map_or(0, |e| e.0);
    let outcome = store
        .submit(
            Intent::AppendNodes {
                workflow_id: b.workflow_id,
                nodes: b.nodes,
            },
            Meta {
                actor: b.actor,
                event_id: None,
                timestamp: None,
            },
        )
        .await
        .map_err(|source| PortableError::Refused {
            line: first_line,
            source,
        })?;
    if let Outcome::Nodes { nodes, .. } = &outcome {
        for ((line, expected), got) in b.expected.iter().zip(nodes) {
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
    count(&outcome, report);
    Ok(())
}
