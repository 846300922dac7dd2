//! Anti-entropy rounds of a worker (see the module docs of [`crate::driver`]).
//!
//! A round walks the rotation (all workflows, newest first, wrapping around) until it
//! has audited `audit_budget` events, spent [`ROUND_TIME`] (after its first workflow),
//! or come back to where it started. Per workflow:
//! the log's events up to the cursor, dead letters left out → [`Sink::audit`] →
//! if diverged, [`Sink::repair`] and a second audit that must find it whole.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use arbor_storage::{ListFilter, Seq, StorageError, Store, Timestamp};
use serde::Serialize;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use uuid::Uuid;

use super::{guarded, Flow, Worker};
use crate::sink::{Audit, Item, Sink};
use crate::verify::excluded;

/// Longest a round goes on auditing once it has audited one workflow: the worker's
/// deliveries wait meanwhile, so a round must not add much to the sink's lag.
const ROUND_TIME: Duration = Duration::from_millis(250);

/// A workflow with more events than this many budgets is not audited (reading it
/// whole would hold too much in memory at once); it is counted as skipped.
const LARGEST_IN_BUDGETS: usize = 4;

/// When the next round is due.
pub(crate) struct Schedule(Option<Interval>);

impl Schedule {
    /// Every `every` from now on (the first round after one interval); never if zero.
    pub(crate) fn new(every: Duration) -> Schedule {
        Schedule((!every.is_zero()).then(|| {
            let mut i = tokio::time::interval_at(Instant::now() + every, every);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        }))
    }

    /// Resolves when a round is due (never, when anti-entropy is off).
    pub(crate) async fn tick(&mut self) {
        match &mut self.0 {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Where the rotation over the workflows goes on.
#[derive(Default)]
pub(crate) struct Rotation {
    /// The listing cursor of the next workflow (None: start again from the newest).
    before: Option<Seq>,
    /// The sink said it takes no part: no more rounds.
    unsupported: bool,
}

/// The last divergence found, as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// The workflow.
    pub workflow_id: Uuid,
    /// What differed.
    pub what: String,
    /// Rows, nodes or entries missing (at least).
    pub missing: u64,
    /// Whether the repair made it whole.
    pub repaired: bool,
    /// When it was found (RFC 3339).
    pub found_at: String,
}

/// Anti-entropy figures of one sink, as `/v1/health` and `/metrics` show them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditStatus {
    /// Rounds run since start.
    pub rounds: u64,
    /// Workflow audits since start.
    pub workflows_audited: u64,
    /// Events those audits covered.
    pub events_audited: u64,
    /// Workflows found diverged from the log (each time it was found).
    pub divergences: u64,
    /// Of those, repaired (a second audit found the workflow whole).
    pub repaired: u64,
    /// Workflows diverged now: the repair did not mend them (or failed); they keep the
    /// sink `degraded` until a round finds them whole.
    pub unrepaired: u64,
    /// Workflows not audited for their size (more than four budgets of events).
    pub skipped: u64,
    /// The most recent divergence.
    pub last_divergence: Option<Divergence>,
}

/// Live anti-entropy counters of a worker.
#[derive(Debug, Default)]
pub(crate) struct AuditStats {
    rounds: AtomicU64,
    workflows: AtomicU64,
    events: AtomicU64,
    divergences: AtomicU64,
    repaired: AtomicU64,
    skipped: AtomicU64,
    /// Diverged workflows the repair did not mend, with what differs.
    unrepaired: Mutex<HashMap<Uuid, String>>,
    last: Mutex<Option<Divergence>>,
}

impl AuditStats {
    /// A snapshot.
    pub(crate) fn status(&self) -> AuditStatus {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AuditStatus {
            rounds: get(&self.rounds),
            workflows_audited: get(&self.workflows),
            events_audited: get(&self.events),
            divergences: get(&self.divergences),
            repaired: get(&self.repaired),
            unrepaired: self
                .unrepaired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len() as u64,
            skipped: get(&self.skipped),
            last_divergence: self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    fn whole(&self, wf: &Uuid) {
        self.unrepaired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(wf);
    }

    fn broken(&self, wf: Uuid, what: &str) {
        self.unrepaired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(wf, what.to_owned());
    }

    fn found(&self, d: Divergence) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
    }
}

/// The events of `wf` up to `upto` a sink should hold, as items.
fn workflow_items(
    store: &Store,
    wf: &Uuid,
    upto: Seq,
    excluded: &HashSet<Seq>,
) -> Result<Vec<Item>, StorageError> {
    let events = store
        .read_workflow_events(wf, 0, usize::MAX)?
        .unwrap_or_default();
    Ok(events
        .into_iter()
        .filter(|e| e.seq <= upto && !excluded.contains(&e.seq))
        .map(|event| Item {
            option_of: store.implied_option_of(&event),
            event,
        })
        .collect())
}

/// What one audit call came to.
enum Verdict {
    Whole,
    Diverged(u64, String),
    /// The sink takes no part.
    Unsupported,
    /// Shutdown, or a failure the worker handles by setting the sink up again.
    Leave(Flow),
}

impl<S: Sink> Worker<S> {
    /// One anti-entropy round.
    pub(super) async fn audit_round(&mut self) -> Flow {
        if self.rotation.unsupported {
            return Flow::Next;
        }
        let stats = self.stats.clone();
        stats.audit.rounds.fetch_add(1, Ordering::Relaxed);
        let name = self.sink.name();
        let Some(excluded) = self.with_store(move |s| excluded(s, name)).await else {
            return Flow::Stop;
        };
        let budget = self.opts.audit_budget.max(1);
        let cursor = self.stats.cursor();
        let mut spent = 0usize;
        let mut started_over = false;
        let began = Instant::now();
        while spent < budget && (spent == 0 || began.elapsed() < ROUND_TIME) {
            if *self.shutdown.borrow() {
                return Flow::Stop;
            }
            let before = self.rotation.before;
            let Some((page, next)) = self
                .with_store(move |s| s.list_workflows(&ListFilter::default(), before, 1))
                .await
            else {
                return Flow::Stop;
            };
            let Some(wf) = page.first() else {
                // Past the oldest workflow (or none at all): start again, once a round.
                self.rotation.before = None;
                if before.is_none() || started_over {
                    break;
                }
                started_over = true;
                continue;
            };
            self.rotation.before = next;
            let (id, size) = (wf.workflow_id, wf.node_count);
            if size > budget.saturating_mul(LARGEST_IN_BUDGETS) {
                stats.audit.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(sink = name, workflow = %id, nodes = size, "too large to audit");
                spent += budget / LARGEST_IN_BUDGETS;
            } else {
                let ex = excluded.clone();
                let Some(items) = self
                    .with_store(move |s| workflow_items(s, &id, cursor, &ex))
                    .await
                else {
                    return Flow::Stop;
                };
                spent += items.len().max(1);
                if !items.is_empty() {
                    let flow = self.audit_workflow(id, &items).await;
                    if flow != Flow::Next {
                        return flow;
                    }
                }
            }
            if next.is_none() {
                if started_over {
                    break;
                }
                started_over = true;
            }
        }
        Flow::Next
    }

    /// Audits one workflow, repairing it if it diverged.
    async fn audit_workflow(&mut self, wf: Uuid, items: &[Item]) -> Flow {
        let stats = self.stats.clone();
        let name = self.sink.name();
        let (missing, what) = match self.verdict(wf, items).await {
            Verdict::Whole => {
                stats.audit.whole(&wf);
                return Flow::Next;
            }
            Verdict::Unsupported => {
                self.rotation.unsupported = true;
                return Flow::Next;
            }
            Verdict::Leave(flow) => return flow,
            Verdict::Diverged(missing, what) => (missing, what),
        };
        stats.audit.divergences.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(sink = name, workflow = %wf, missing, what = %what,
            "replica diverged from the log; repairing it");
        let (grace, limit) = (self.opts.shutdown_grace, self.opts.write_timeout);
        let mut stop = self.shutdown.clone();
        let repaired = match guarded(self.sink.repair(wf, items), &mut stop, grace, limit).await {
            None => return Flow::Stop,
            Some(Err(e)) if e.is_permanent() => {
                self.stats.note_error(&e);
                tracing::error!(sink = name, workflow = %wf, error = %e, "repair refused");
                false
            }
            Some(Err(e)) => {
                self.retried(&e);
                return Flow::Restart;
            }
            Some(Ok(())) => match self.verdict(wf, items).await {
                Verdict::Whole | Verdict::Unsupported => true,
                Verdict::Diverged(left, after) => {
                    tracing::error!(sink = name, workflow = %wf, missing = left, what = %after,
                        "still diverged after the repair");
                    false
                }
                Verdict::Leave(flow) => return flow,
            },
        };
        if repaired {
            stats.audit.repaired.fetch_add(1, Ordering::Relaxed);
            stats.audit.whole(&wf);
            tracing::info!(sink = name, workflow = %wf, "replica repaired");
        } else {
            stats.audit.broken(wf, &what);
        }
        stats.audit.found(Divergence {
            workflow_id: wf,
            what,
            missing,
            repaired,
            found_at: Timestamp::now().to_string(),
        });
        Flow::Next
    }

    /// One [`Sink::audit`] call, counted.
    async fn verdict(&mut self, wf: Uuid, items: &[Item]) -> Verdict {
        let (grace, limit) = (self.opts.shutdown_grace, self.opts.write_timeout);
        let mut stop = self.shutdown.clone();
        let audited = guarded(self.sink.audit(wf, items), &mut stop, grace, limit).await;
        let audit = &self.stats.audit;
        match audited {
            None => Verdict::Leave(Flow::Stop),
            Some(Ok(Audit::Unsupported)) => Verdict::Unsupported,
            Some(Ok(a)) => {
                audit.workflows.fetch_add(1, Ordering::Relaxed);
                audit
                    .events
                    .fetch_add(items.len() as u64, Ordering::Relaxed);
                match a {
                    Audit::Diverged { missing, what } => Verdict::Diverged(missing, what),
                    _ => Verdict::Whole,
                }
            }
            // The sink refused the question itself: not worth a reconnect; try next time.
            Some(Err(e)) if e.is_permanent() => {
                self.stats.note_error(&e);
                tracing::warn!(sink = self.sink.name(), workflow = %wf, error = %e, "audit failed");
                Verdict::Leave(Flow::Next)
            }
            Some(Err(e)) => {
                self.retried(&e);
                Verdict::Leave(Flow::Restart)
            }
        }
    }
}
