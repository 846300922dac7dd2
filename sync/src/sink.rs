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
//!   (PostgreSQL: exactly once), and `load_cursor` / `store_cursor` read and move it.
//!
//! `probe` is a cheap "do you answer?" (PING, `SELECT 1`, `RETURN 1`): the driver calls it
//! while the sink is idle, so a server that died shows as degraded within seconds, and
//! `arbor sync status` calls it for each configured sink.
//!
//! `audit` and `repair` are anti-entropy (see [`crate::driver`]): the worker hands a
//! sink every event of one workflow up to its cursor, the sink says whether it holds
//! all that they imply, and if not, writes them again without moving any cursor.
//!
//! [`DynSink`] is the trait as an object, so that sinks of different types can sit in one
//! list (the configured sinks); every [`Sink`] is one, and a `Box<dyn DynSink>` is a
//! [`Sink`] again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;

use arbor_storage::{Edge, EdgeKind, Event, EventBody, Node, Seq, WorkflowStatus};
use uuid::Uuid;

use crate::error::SinkError;
use crate::retry::BoxFuture;

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

/// What [`Sink::audit`] found for one workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audit {
    /// The sink does not take part in anti-entropy.
    Unsupported,
    /// The destination holds everything the workflow's events imply.
    InSync,
    /// Something is missing or differs.
    Diverged {
        /// Rows, nodes, relationships or entries missing (at least this many; a value
        /// that differs counts one).
        missing: u64,
        /// What differs, for logs and `/v1/health` (`"2 of 40 events"`, `"status"`).
        what: String,
    },
}

/// The status the workflow of `items` (all its events, in seq order) has after them.
pub fn status_after(items: &[Item]) -> Option<WorkflowStatus> {
    items.iter().rev().find_map(|i| match &i.event.body {
        EventBody::WorkflowCreated(_) => Some(WorkflowStatus::Running),
        EventBody::StatusChanged(s) => Some(s.to),
        _ => None,
    })
}

/// Seqs of `want` (sorted) absent from `have` (any order): a multiset difference.
pub fn missing_seqs(want: &[Seq], mut have: Vec<Seq>) -> Vec<Seq> {
    have.sort_unstable();
    let mut out = Vec::new();
    let mut h = have.into_iter().peekable();
    for w in want {
        while h.next_if(|x| x < w).is_some() {}
        if h.next_if_eq(w).is_none() {
            out.push(*w);
        }
    }
    out
}

/// The edges `items` create, as `TYPE from to` keys (PARENT_OF only with `parent_of`).
pub fn edge_keys(items: &[Item], parent_of: bool) -> BTreeSet<String> {
    items
        .iter()
        .flat_map(Item::edges)
        .filter(|e| parent_of || e.kind != EdgeKind::ParentOf)
        .map(|e| edge_key(e.kind.as_str(), &e.from.to_string(), &e.to.to_string()))
        .collect()
}

/// The key of one edge in [`edge_keys`].
pub fn edge_key(kind: &str, from: &str, to: &str) -> String {
    format!("{kind} {from} {to}")
}

/// Sums up an audit: per part of the replica, what is missing or differs.
#[derive(Debug, Default)]
pub struct Tally {
    missing: u64,
    what: Vec<String>,
}

impl Tally {
    /// Rows of `part` keyed by seq: `want` (sorted) against `have`.
    pub fn seqs(&mut self, part: &str, want: &[Seq], have: Vec<Seq>) {
        let m = missing_seqs(want, have).len();
        if m > 0 {
            self.missing += m as u64;
            self.what.push(format!("{m} of {} {part}", want.len()));
        }
    }

    /// Rows of `part` keyed otherwise: `want` against `have`.
    pub fn keys(&mut self, part: &str, want: &BTreeSet<String>, have: &HashSet<String>) {
        let m = want.iter().filter(|k| !have.contains(*k)).count();
        if m > 0 {
            self.missing += m as u64;
            self.what.push(format!("{m} of {} {part}", want.len()));
        }
    }

    /// A count of `part`: `have` of `want`.
    pub fn count(&mut self, part: &str, want: u64, have: u64) {
        if have < want {
            self.missing += want - have;
            self.what.push(format!("{} of {want} {part}", want - have));
        }
    }

    /// One value of `part`.
    pub fn value(&mut self, part: &str, want: &str, have: &str) {
        if want != have {
            self.missing += 1;
            self.what.push(format!("{part} {have:?}, not {want:?}"));
        }
    }

    /// A workflow's summary row (PostgreSQL's `arbor_workflows`, Redis's status hash):
    /// its `status` and `last_seq` after `items` (None: no row, or no such field).
    pub fn workflow_row(&mut self, items: &[Item], status: Option<&str>, last_seq: Option<String>) {
        self.value(
            "status",
            status_after(items).map_or("", |s| s.as_str()),
            status.unwrap_or(""),
        );
        let last = items.last().map_or(0, Item::seq).to_string();
        self.value("last_seq", &last, last_seq.as_deref().unwrap_or(""));
    }

    /// The verdict.
    pub fn audit(self) -> Audit {
        if self.missing == 0 {
            Audit::InSync
        } else {
            Audit::Diverged {
                missing: self.missing,
                what: self.what.join(", "),
            }
        }
    }
}

/// A destination of the log. One driver task owns one sink; calls never overlap.
pub trait Sink: Send + 'static {
    /// Stable name: the cursor key, the dead-letter key, the metrics label.
    fn name(&self) -> &'static str;

    /// Where the cursor lives.
    fn cursor_home(&self) -> CursorHome;

    /// Connects and prepares the destination (migrations, constraints). Called before
    /// the first batch, and again whenever a call failed with a *lost* error
    /// ([`crate::error::ErrorClass::Lost`]: the connection or the schema is gone), before
    /// anything else is sent. Idempotent.
    fn setup(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Whether the destination answers, as cheaply as possible. A dead server fails
    /// with a retriable or lost error.
    fn probe(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The cursor kept in the destination ([`CursorHome::Sink`] only; None: nothing
    /// written yet, or the tables do not exist).
    fn load_cursor(&mut self) -> impl Future<Output = Result<Option<Seq>, SinkError>> + Send {
        async { Ok(None) }
    }

    /// Moves the in-destination cursor to `seq`: past a dead-lettered event (every
    /// sink: a [`CursorHome::Arbor`] one may keep a mark of its own, as Redis does), or
    /// where `sync reset` puts it (after `setup`; [`CursorHome::Sink`] only). The driver
    /// and `reset` move arbor-kept cursors themselves.
    fn store_cursor(&mut self, seq: Seq) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = seq;
        async { Ok(()) }
    }

    /// Where the destination really is, given arbor's `cursor` ([`CursorHome::Arbor`]
    /// only; called after every `setup`): `cursor` when it holds everything up to it,
    /// or a lower seq when it lost data (a Redis restarted empty), which the driver
    /// rewinds the cursor to, so that the sink refills itself from the log.
    fn held(&mut self, cursor: Seq) -> impl Future<Output = Result<Seq, SinkError>> + Send {
        async move { Ok(cursor) }
    }

    /// Takes over a destination that holds another arbor store's replica (`sync reset
    /// --adopt`): empties it and marks it as this store's. Sinks that keep nothing of
    /// the store's identity have nothing to do.
    fn adopt(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    /// Writes `batch` (non-empty, seq-ordered, contiguous except for dead-lettered
    /// events). Idempotent. A [`CursorHome::Sink`] sink also commits its cursor to the
    /// last seq of the batch, atomically with the data.
    fn apply(&mut self, batch: &[Item]) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Anti-entropy: compares what the destination holds of `workflow` with `items`,
    /// every event of it up to the cursor (dead letters left out), in seq order. Reads
    /// only. The default takes no part ([`Audit::Unsupported`]).
    fn audit(
        &mut self,
        workflow: Uuid,
        items: &[Item],
    ) -> impl Future<Output = Result<Audit, SinkError>> + Send {
        let _ = (workflow, items);
        async { Ok(Audit::Unsupported) }
    }

    /// Writes `items` (as [`Sink::audit`] had them) again, so that the destination
    /// holds what the audit found missing; publishes nothing again and moves no
    /// cursor. The default is [`Sink::apply`], right for sinks whose `apply` is
    /// idempotent and commits no cursor.
    fn repair(
        &mut self,
        workflow: Uuid,
        items: &[Item],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = workflow;
        self.apply(items)
    }
}

/// [`Sink`] as a trait object (boxed futures). Implemented by every [`Sink`]; use it
/// through `Box<dyn DynSink>`, which is a [`Sink`].
pub trait DynSink: Send + 'static {
    /// [`Sink::name`].
    fn dyn_name(&self) -> &'static str;
    /// [`Sink::cursor_home`].
    fn dyn_cursor_home(&self) -> CursorHome;
    /// [`Sink::setup`].
    fn dyn_setup(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;
    /// [`Sink::probe`].
    fn dyn_probe(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;
    /// [`Sink::load_cursor`].
    fn dyn_load_cursor(&mut self) -> BoxFuture<'_, Result<Option<Seq>, SinkError>>;
    /// [`Sink::store_cursor`].
    fn dyn_store_cursor(&mut self, seq: Seq) -> BoxFuture<'_, Result<(), SinkError>>;
    /// [`Sink::held`].
    fn dyn_held(&mut self, cursor: Seq) -> BoxFuture<'_, Result<Seq, SinkError>>;
    /// [`Sink::adopt`].
    fn dyn_adopt(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;
    /// [`Sink::apply`].
    fn dyn_apply<'a>(&'a mut self, batch: &'a [Item]) -> BoxFuture<'a, Result<(), SinkError>>;
    /// [`Sink::audit`].
    fn dyn_audit<'a>(
        &'a mut self,
        workflow: Uuid,
        items: &'a [Item],
    ) -> BoxFuture<'a, Result<Audit, SinkError>>;
    /// [`Sink::repair`].
    fn dyn_repair<'a>(
        &'a mut self,
        workflow: Uuid,
        items: &'a [Item],
    ) -> BoxFuture<'a, Result<(), SinkError>>;
}

impl<S: Sink> DynSink for S {
    fn dyn_name(&self) -> &'static str {
        self.name()
    }
    fn dyn_cursor_home(&self) -> CursorHome {
        self.cursor_home()
    }
    fn dyn_setup(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.setup())
    }
    fn dyn_probe(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.probe())
    }
    fn dyn_load_cursor(&mut self) -> BoxFuture<'_, Result<Option<Seq>, SinkError>> {
        Box::pin(self.load_cursor())
    }
    fn dyn_store_cursor(&mut self, seq: Seq) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.store_cursor(seq))
    }
    fn dyn_held(&mut self, cursor: Seq) -> BoxFuture<'_, Result<Seq, SinkError>> {
        Box::pin(self.held(cursor))
    }
    fn dyn_adopt(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.adopt())
    }
    fn dyn_apply<'a>(&'a mut self, batch: &'a [Item]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.apply(batch))
    }
    fn dyn_audit<'a>(
        &'a mut self,
        workflow: Uuid,
        items: &'a [Item],
    ) -> BoxFuture<'a, Result<Audit, SinkError>> {
        Box::pin(self.audit(workflow, items))
    }
    fn dyn_repair<'a>(
        &'a mut self,
        workflow: Uuid,
        items: &'a [Item],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.repair(workflow, items))
    }
}

impl Sink for Box<dyn DynSink> {
    fn name(&self) -> &'static str {
        (**self).dyn_name()
    }
    fn cursor_home(&self) -> CursorHome {
        (**self).dyn_cursor_home()
    }
    async fn setup(&mut self) -> Result<(), SinkError> {
        (**self).dyn_setup().await
    }
    async fn probe(&mut self) -> Result<(), SinkError> {
        (**self).dyn_probe().await
    }
    async fn load_cursor(&mut self) -> Result<Option<Seq>, SinkError> {
        (**self).dyn_load_cursor().await
    }
    async fn store_cursor(&mut self, seq: Seq) -> Result<(), SinkError> {
        (**self).dyn_store_cursor(seq).await
    }
    async fn held(&mut self, cursor: Seq) -> Result<Seq, SinkError> {
        (**self).dyn_held(cursor).await
    }
    async fn adopt(&mut self) -> Result<(), SinkError> {
        (**self).dyn_adopt().await
    }
    async fn apply(&mut self, batch: &[Item]) -> Result<(), SinkError> {
        (**self).dyn_apply(batch).await
    }
    async fn audit(&mut self, workflow: Uuid, items: &[Item]) -> Result<Audit, SinkError> {
        (**self).dyn_audit(workflow, items).await
    }
    async fn repair(&mut self, workflow: Uuid, items: &[Item]) -> Result<(), SinkError> {
        (**self).dyn_repair(workflow, items).await
    }
}

/// Most transactions a sink that splits a batch ([`partition`]) writes it in at once.
/// Neo4j and PostgreSQL run each transaction on one thread (one backend), so one
/// transaction at a time leaves the server's other cores idle while the sink catches up
/// (`sync/examples/catchup.rs`; BENCHMARKS.md).
pub const PARALLEL_TXNS: usize = 2;

/// Fewest events per transaction when a batch is split: a small batch (the steady state)
/// stays one transaction, so a commit (and its fsync) is not paid twice for nothing.
pub const MIN_PART_EVENTS: usize = 500;

/// Splits `batch` into at most `parts` groups of whole workflows, balanced by event count
/// (largest workflow first, to the lightest group), each in the batch's own seq order; at
/// least `min_part` events per group. Workflows share no node, so the groups' transactions
/// never wait on each other's locks, and each workflow's events stay in one transaction, in
/// order (its status is kept by seq).
pub fn partition(batch: &[Item], parts: usize, min_part: usize) -> Vec<Vec<&Item>> {
    let parts = parts.min(batch.len() / min_part.max(1)).max(1);
    if parts == 1 {
        return vec![batch.iter().collect()];
    }
    // (workflow, events), in order of first appearance: the sort below is stable, so the
    // split does not depend on a hash order
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    let mut sizes: Vec<(Uuid, usize)> = Vec::new();
    for item in batch {
        let wf = item.event.workflow_id;
        let i = *index.entry(wf).or_insert_with(|| {
            sizes.push((wf, 0));
            sizes.len() - 1
        });
        sizes[i].1 += 1;
    }
    sizes.sort_by_key(|w| std::cmp::Reverse(w.1));
    let mut load = vec![0usize; parts];
    let mut group_of: HashMap<Uuid, usize> = HashMap::with_capacity(sizes.len());
    for (wf, n) in sizes {
        let (lightest, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .unwrap_or((0, &0));
        load[lightest] += n;
        group_of.insert(wf, lightest);
    }
    let mut groups: Vec<Vec<&Item>> = vec![Vec::new(); parts];
    for item in batch {
        let g = group_of.get(&item.event.workflow_id).copied().unwrap_or(0);
        groups[g].push(item);
    }
    groups.retain(|g| !g.is_empty());
    groups
}

#[cfg(test)]
mod tests {
    use super::missing_seqs;

    #[test]
    fn missing_seqs_is_a_multiset_difference() {
        assert_eq!(missing_seqs(&[1, 2, 3, 5], vec![5, 1, 9]), vec![2, 3]);
        assert_eq!(missing_seqs(&[4, 4, 7], vec![4]), vec![4, 7]);
        assert_eq!(missing_seqs(&[], vec![1]), Vec::<u64>::new());
        assert_eq!(missing_seqs(&[1, 2], vec![]), vec![1, 2]);
    }
}
