//! A scripted in-memory sink for the driver's tests (not a model of any real service).
//!
//! Each call to `setup`, `probe` or `apply` takes the next [`Step`] of its own script
//! (and [`Step::Ok`] once the script is empty, unless [`Script::then`] says otherwise),
//! then, if that step succeeds, does what a sink does: it holds the seqs it was given,
//! refuses any batch holding a poison seq, and keeps its cursor when it is a
//! [`CursorHome::Sink`] sink. Every call is logged with what the driver had committed at
//! that moment, so a test can check the whole conversation afterwards.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arbor_storage::{Seq, Store};
use tokio::time::Instant;

use crate::error::SinkError;
use crate::sink::{Audit, CursorHome, Item, Sink, Tally};

/// The name the scripted sink reports (its cursor and dead-letter key in arbor).
pub const NAME: &str = "script";

/// The outcome of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Succeeds (an `apply` still fails permanently on a poison seq).
    Ok,
    /// Fails with a retriable error.
    Retriable,
    /// The connection is lost: fails, and every `apply` fails until `setup` ran again.
    Lost,
    /// The destination lost everything (a dropped schema): as [`Step::Lost`], and what
    /// it held, its cursor included, is gone.
    Dropped,
    /// Never answers (until the driver drops the call).
    Hang,
    /// Succeeds after this long.
    Delay(Duration),
}

/// One call the driver made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `setup`.
    Setup,
    /// `probe`.
    Probe,
    /// `load_cursor`.
    LoadCursor,
    /// `store_cursor(seq)`.
    StoreCursor(Seq),
    /// `apply` of the seqs `first..=last`.
    Apply {
        /// First seq of the batch.
        first: Seq,
        /// Last seq of the batch.
        last: Seq,
        /// The committed cursor when the call came (arbor's or the sink's, per home).
        committed: Option<Seq>,
        /// Whether `setup` had run since the last loss.
        ready: bool,
    },
}

#[derive(Default)]
struct State {
    setup: VecDeque<Step>,
    probe: VecDeque<Step>,
    apply: VecDeque<Step>,
    /// Taken when a script is empty.
    then: Option<Step>,
    poison: BTreeSet<Seq>,
    /// Seqs a repair cannot bring back.
    stuck: BTreeSet<Seq>,
    /// Whether the sink takes part in anti-entropy.
    audits: bool,
    /// Repairs so far.
    repairs: usize,
    ready: bool,
    held: BTreeSet<Seq>,
    cursor: Option<Seq>,
    calls: Vec<(Duration, Call)>,
}

/// The scripted sink. Clones share one state: the test keeps one, the driver owns another.
#[derive(Clone)]
pub struct Script {
    state: Arc<Mutex<State>>,
    home: CursorHome,
    /// The store whose arbor-kept cursor `apply` logs as committed.
    store: Store,
    /// When the script was made (call times are relative to it).
    born: Instant,
}

impl Script {
    /// A sink keeping its cursor in `home`, replicating `store`.
    pub fn new(home: CursorHome, store: &Store) -> Script {
        Script {
            state: Arc::default(),
            home,
            store: store.clone(),
            born: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends steps to the script of `setup`.
    pub fn setup(&self, steps: &[Step]) -> &Script {
        self.lock().setup.extend(steps);
        self
    }

    /// Appends steps to the script of `probe`.
    pub fn probe(&self, steps: &[Step]) -> &Script {
        self.lock().probe.extend(steps);
        self
    }

    /// Appends steps to the script of `apply`.
    pub fn apply(&self, steps: &[Step]) -> &Script {
        self.lock().apply.extend(steps);
        self
    }

    /// The step of every call once its script is empty (default [`Step::Ok`]).
    pub fn then(&self, step: Step) -> &Script {
        self.lock().then = Some(step);
        self
    }

    /// Seqs that make any batch holding them fail permanently.
    pub fn poison(&self, seqs: &[Seq]) -> &Script {
        self.lock().poison.extend(seqs);
        self
    }

    /// Seqs the sink no longer refuses (the poison was fixed on the sink's side).
    pub fn cure(&self, seqs: &[Seq]) -> &Script {
        let mut st = self.lock();
        for s in seqs {
            st.poison.remove(s);
        }
        drop(st);
        self
    }

    /// Takes part in anti-entropy: `audit` compares what it holds, `repair` adds back.
    pub fn audited(&self) -> &Script {
        self.lock().audits = true;
        self
    }

    /// Loses `seqs` behind the driver's back (a row deleted in the destination).
    pub fn forget(&self, seqs: &[Seq]) -> &Script {
        let mut st = self.lock();
        for s in seqs {
            st.held.remove(s);
        }
        drop(st);
        self
    }

    /// Seqs a repair cannot bring back (something keeps deleting them); replaces the
    /// earlier set (`&[]`: every seq can be repaired again).
    pub fn stuck(&self, seqs: &[Seq]) -> &Script {
        self.lock().stuck = seqs.iter().copied().collect();
        self
    }

    /// Repairs so far.
    pub fn repairs(&self) -> usize {
        self.lock().repairs
    }

    /// The calls so far, with when they came (since the script was made).
    pub fn calls(&self) -> Vec<(Duration, Call)> {
        self.lock().calls.clone()
    }

    /// The `apply` calls so far, as `(first, last, committed)`.
    pub fn applies(&self) -> Vec<(Seq, Seq, Option<Seq>)> {
        self.calls()
            .into_iter()
            .filter_map(|(_, c)| match c {
                Call::Apply {
                    first,
                    last,
                    committed,
                    ..
                } => Some((first, last, committed)),
                _ => None,
            })
            .collect()
    }

    /// How many calls equal to `call` were made.
    pub fn count(&self, call: &Call) -> usize {
        self.calls().iter().filter(|(_, c)| c == call).count()
    }

    /// The seqs the destination holds.
    pub fn held(&self) -> Vec<Seq> {
        self.lock().held.iter().copied().collect()
    }

    /// The cursor kept in the destination.
    pub fn cursor(&self) -> Option<Seq> {
        self.lock().cursor
    }

    /// Sets the cursor kept in the destination (as if written before).
    pub fn set_cursor(&self, seq: Option<Seq>) {
        self.lock().cursor = seq;
    }

    /// Logs `call` and takes the next step of `script` (the state lock held once).
    fn next(&self, call: Call, script: fn(&mut State) -> &mut VecDeque<Step>) -> Step {
        let mut st = self.lock();
        st.calls.push((self.born.elapsed(), call));
        let then = st.then.unwrap_or(Step::Ok);
        script(&mut st).pop_front().unwrap_or(then)
    }

    /// Plays `step`.
    async fn play(&self, step: Step) -> Result<(), SinkError> {
        match step {
            Step::Ok => Ok(()),
            Step::Retriable => Err(SinkError::retriable("scripted: busy")),
            Step::Lost => {
                self.lock().ready = false;
                Err(SinkError::lost("scripted: connection lost"))
            }
            Step::Dropped => {
                let mut st = self.lock();
                st.ready = false;
                st.held.clear();
                st.cursor = None;
                Err(SinkError::lost("scripted: schema gone"))
            }
            Step::Hang => std::future::pending().await,
            Step::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}

impl Sink for Script {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cursor_home(&self) -> CursorHome {
        self.home
    }

    async fn setup(&mut self) -> Result<(), SinkError> {
        let step = self.next(Call::Setup, |s| &mut s.setup);
        self.play(step).await?;
        self.lock().ready = true;
        Ok(())
    }

    async fn probe(&mut self) -> Result<(), SinkError> {
        let step = self.next(Call::Probe, |s| &mut s.probe);
        self.play(step).await
    }

    async fn load_cursor(&mut self) -> Result<Option<Seq>, SinkError> {
        let mut st = self.lock();
        st.calls.push((self.born.elapsed(), Call::LoadCursor));
        Ok(st.cursor)
    }

    async fn store_cursor(&mut self, seq: Seq) -> Result<(), SinkError> {
        let mut st = self.lock();
        st.calls.push((self.born.elapsed(), Call::StoreCursor(seq)));
        st.cursor = Some(seq);
        Ok(())
    }

    async fn apply(&mut self, batch: &[Item]) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Err(SinkError::permanent("scripted: empty batch"));
        };
        let (first, last) = (first.seq(), last.seq());
        let committed = match self.home {
            CursorHome::Arbor => self.store.cursor(NAME).ok().flatten(),
            CursorHome::Sink => self.cursor(),
        };
        let ready = self.lock().ready;
        let call = Call::Apply {
            first,
            last,
            committed,
            ready,
        };
        let step = self.next(call, |s| &mut s.apply);
        self.play(step).await?;
        let mut st = self.lock();
        if !st.ready {
            return Err(SinkError::lost("scripted: apply before setup"));
        }
        if let Some(p) = batch.iter().find(|i| st.poison.contains(&i.seq())) {
            return Err(SinkError::permanent(format!(
                "scripted: poison seq {}",
                p.seq()
            )));
        }
        st.held.extend(batch.iter().map(Item::seq));
        if self.home == CursorHome::Sink {
            st.cursor = Some(last);
        }
        Ok(())
    }

    async fn audit(&mut self, _workflow: uuid::Uuid, items: &[Item]) -> Result<Audit, SinkError> {
        let st = self.lock();
        if !st.audits {
            return Ok(Audit::Unsupported);
        }
        let want: Vec<Seq> = items.iter().map(Item::seq).collect();
        let mut t = Tally::default();
        t.seqs("events", &want, st.held.iter().copied().collect());
        Ok(t.audit())
    }

    async fn repair(&mut self, _workflow: uuid::Uuid, items: &[Item]) -> Result<(), SinkError> {
        let mut st = self.lock();
        st.repairs += 1;
        let back: Vec<Seq> = items
            .iter()
            .map(Item::seq)
            .filter(|s| !st.stuck.contains(s))
            .collect();
        st.held.extend(back);
        Ok(())
    }
}
