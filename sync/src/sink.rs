//! The [`Sink`] trait: what the generic driver needs from a destination.
//!
//! A sink receives batches of [`Item`]s — log events in seq order, content resolved,
//! plus what the log implies but does not spell out (the OPTION_OF edge of an option
//! appended under a decision). `apply` must be idempotent: the driver re-sends a batch
//! after any failure, after a crash between the write and the cursor commit, and after
//! `sync reset`. Where the cursor lives is the sink's choice ([`CursorHome`]):
//!
//! - [`CursorHome::Arbor`]: the driver stores it in the arbor store after each
//!   successful `apply` (Redis, Neo4j: their writes are idempotent by construction);
//! - [`CursorHome::Sink`]: `apply` commits it in the same transaction as the rows
//!   (PostgreSQL: exactly once), and `load_cursor` / `skip` read and move it.

use std::future::Future;

use arbor_storage::{Edge, EdgeKind, Event, EventBody, Node, Seq};
use uuid::Uuid;

use crate::error::SinkError;

/// Where a sink keeps its position in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorHome {
    /// In the arbor store (`Store::cursor` / `Store::set_cursor`), under the sink's name.
    Arbor,
    /// In the destination itself, written atomically with the data.
    Sink,
}

/// One event of a batch, with what it implies.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The event, exactly as the API shows it.
    pub event: Event,
    /// For a `node.created` of type `option` whose parent is a `decision`: the decision
    /// (the log records the implied `decision -[:OPTION_OF]-> option` edge nowhere else).
    pub option_of: Option<Uuid>,
}

/// An edge an item creates, with the seq of the event that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeRow {
    /// Edge type.
    pub kind: EdgeKind,
    /// Source.
    pub from: Uuid,
    /// Target.
    pub to: Uuid,
    /// Seq of the creating event.
    pub seq: Seq,
}

impl Item {
    /// Log position.
    pub fn seq(&self) -> Seq {
        self.event.seq
    }

    /// The node this event creates (root of `workflow.created`, or `node.created`).
    pub fn node(&self) -> Option<&Node> {
        match &self.event.body {
            EventBody::WorkflowCreated(c) => Some(&c.root),
            EventBody::NodeCreated(n) => Some(n),
            _ => None,
        }
    }

    /// Every edge the event creates: PARENT_OF of a new node, the implied OPTION_OF,
    /// and an explicit `edge.created`.
    pub fn edges(&self) -> Vec<EdgeRow> {
        let seq = self.seq();
        let mut out = Vec::new();
        if let Some(n) = self.node() {
            if let Some(p) = n.parent_id {
                out.push(EdgeRow {
                    kind: EdgeKind::ParentOf,
                    from: p,
                    to: n.id,
                    seq,
                });
            }
            if let Some(d) = self.option_of {
                out.push(EdgeRow {
                    kind: EdgeKind::OptionOf,
                    from: d,
                    to: n.id,
                    seq,
                });
            }
        }
        if let EventBody::EdgeCreated(Edge { kind, from, to }) = self.event.body {
            out.push(EdgeRow {
                kind,
                from,
                to,
                seq,
            });
        }
        out
    }
}

/// A destination of the log. One driver task owns one sink; calls never overlap.
pub trait Sink: Send + 'static {
    /// Stable name: the cursor key, the dead-letter key, the metrics label.
    fn name(&self) -> &'static str;

    /// Where the cursor lives.
    fn cursor_home(&self) -> CursorHome;

    /// Connects and prepares the destination (migrations, constraints). Called before
    /// the first batch and again after a retriable failure dropped the connection.
    fn setup(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The cursor kept in the destination ([`CursorHome::Sink`] only).
    fn load_cursor(&mut self) -> impl Future<Output = Result<Option<Seq>, SinkError>> + Send {
        async { Ok(None) }
    }

    /// Writes `batch` (non-empty, seq-ordered, contiguous except for dead-lettered
    /// events). Idempotent. A [`CursorHome::Sink`] sink also commits its cursor to the
    /// last seq of the batch, atomically with the data.
    fn apply(&mut self, batch: &[Item]) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Moves the in-destination cursor past a dead-lettered event ([`CursorHome::Sink`]
    /// only; the driver moves arbor-kept cursors itself).
    fn skip(&mut self, seq: Seq) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = seq;
        async { Ok(()) }
    }
}
