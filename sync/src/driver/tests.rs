//! The driver against the scripted sink ([`super::script`]), on tokio's paused clock:
//! retry with backoff, bisection down to a poison event and its dead letter, the cursor
//! committed only after success (arbor-kept and sink-kept), shutdown during a write and
//! during a backoff, setup again after a lost connection or a dropped schema, an idle
//! sink that stops answering, and `status` / `reset` through the trait. No real time
//! passes and no server runs.

use std::time::Duration;

use arbor_storage::{
    Durability, Intent, Meta, NewNode, NewWorkflow, Outcome, Seq, Store, StoreOptions,
};
use tempfile::TempDir;
use tokio::time::Instant;
use uuid::Uuid;

use super::script::{Call, Script, Step, NAME};
use super::*;
use crate::sink::DynSink;
use crate::{SinkStatus, SyncError, SyncSet};

fn opts() -> DriverOptions {
    DriverOptions {
        batch_size: 16,
        backoff: Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        },
        shutdown_grace: Duration::from_secs(2),
        write_timeout: Duration::from_secs(30),
        probe_interval: Duration::from_secs(1),
        probe_timeout: Duration::from_secs(2),
        lag_bound: Duration::from_secs(30),
        audit_interval: Duration::ZERO,
        audit_budget: 1000,
    }
}

/// A store holding one workflow of `events` events (seqs 1..=events).
async fn store(events: usize) -> (TempDir, Store, Uuid, Uuid) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        },
    )
    .expect("open store");
    let created = store
        .submit(
            Intent::CreateWorkflow(NewWorkflow::default()),
            Meta::default(),
        )
        .await
        .expect("create");
    let Outcome::WorkflowCreated {
        workflow_id,
        root_id,
        ..
    } = created
    else {
        panic!("unexpected {created:?}")
    };
    append(&store, workflow_id, root_id, events.saturating_sub(1)).await;
    assert_eq!(store.head(), events as Seq);
    (dir, store, workflow_id, root_id)
}

/// Appends `n` nodes under `parent`.
async fn append(store: &Store, wf: Uuid, parent: Uuid, n: usize) {
    if n == 0 {
        return;
    }
    let nodes = (0..n)
        .map(|i| NewNode::new(parent, "message", format!("m{i}")))
        .collect();
    store
        .submit(
            Intent::AppendNodes {
                workflow_id: wf,
                nodes,
            },
            Meta::default(),
        )
        .await
        .expect("append");
}

fn spawn(store: &Store, sink: &Script, opts: DriverOptions) -> SyncSet {
    SyncSet::spawn(store.clone(), vec![Box::new(sink.clone())], opts)
}

fn status(set: &SyncSet) -> SinkStatus {
    set.status().remove(0)
}

/// Waits (in virtual time) until `cond` holds; fails after ten virtual minutes.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn caught_up(set: &SyncSet, store: &Store) {
    until("the sink reaches the head", || {
        status(set).cursor == store.head()
    })
    .await;
}

fn committed(store: &Store, script: &Script) -> Option<Seq> {
    match script.cursor_home() {
        CursorHome::Arbor => store.cursor(NAME).expect("cursor"),
        CursorHome::Sink => script.cursor(),
    }
}

#[test]
fn a_new_worker_is_starting_until_set_up() {
    let s = Stats::new("t");
    assert_eq!(s.state(), SinkState::Starting);
    for st in [
        SinkState::Ok,
        SinkState::Degraded,
        SinkState::Stopped,
        SinkState::Starting,
    ] {
        s.set_state(st);
        assert_eq!(s.state(), st);
    }
}

#[tokio::test(start_paused = true)]
async fn retriable_errors_are_retried_with_backoff_and_the_cursor_moves_only_after_success() {
    for home in [CursorHome::Arbor, CursorHome::Sink] {
        let (_dir, store, ..) = store(5).await;
        let script = Script::new(home, &store);
        script.apply(&[Step::Retriable, Step::Retriable, Step::Retriable]);
        let set = spawn(&store, &script, opts());
        caught_up(&set, &store).await;
        // The same batch four times; nothing committed before the fourth succeeded.
        assert_eq!(script.applies(), vec![(1, 5, None); 4], "{home:?}");
        assert_eq!(committed(&store, &script), Some(5));
        if home == CursorHome::Sink {
            assert_eq!(store.cursor(NAME).expect("cursor"), None, "sink-kept");
        }
        assert_eq!(script.held(), (1..=5).collect::<Vec<_>>());
        // Each wait is within its backoff ceiling: 100, 200, 400 ms.
        let times: Vec<Duration> = script
            .calls()
            .into_iter()
            .filter(|(_, c)| matches!(c, Call::Apply { .. }))
            .map(|(t, _)| t)
            .collect();
        for (i, w) in times.windows(2).enumerate() {
            let ceiling = opts().backoff.ceiling(i as u32);
            assert!(w[1] - w[0] <= ceiling, "wait {i}: {:?}", w[1] - w[0]);
        }
        let st = status(&set);
        assert_eq!(
            (st.state, st.retries, st.errors, st.batches, st.events),
            (SinkState::Ok, 3, 3, 1, 5)
        );
        assert_eq!(st.last_error.as_deref(), Some("scripted: busy"));
        set.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_sink_is_degraded_while_it_retries() {
    let (_dir, store, ..) = store(3).await;
    let script = Script::new(CursorHome::Arbor, &store);
    script.then(Step::Retriable);
    let set = spawn(&store, &script, opts());
    until("degraded after retries", || {
        let st = status(&set);
        st.state == SinkState::Degraded && st.retries >= 3
    })
    .await;
    assert_eq!(store.cursor(NAME).expect("cursor"), None);
    assert_eq!(status(&set).lag_events, 3);
    set.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_poison_event_is_bisected_down_to_and_dead_lettered() {
    for home in [CursorHome::Arbor, CursorHome::Sink] {
        let (_dir, store, ..) = store(16).await;
        let script = Script::new(home, &store);
        script.poison(&[11]);
        let set = spawn(&store, &script, opts());
        caught_up(&set, &store).await;
        // Halves, left first; each acknowledged half is committed before the next call.
        assert_eq!(
            script.applies(),
            vec![
                (1, 16, None),
                (1, 8, None),
                (9, 16, Some(8)),
                (9, 12, Some(8)),
                (9, 10, Some(8)),
                (11, 12, Some(10)),
                (11, 11, Some(10)),
                (12, 12, Some(11)),
                (13, 16, Some(12)),
            ],
            "{home:?}"
        );
        let dead = store.dead_letters(NAME).expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].0, 11);
        assert!(dead[0].1.contains("poison seq 11"), "{}", dead[0].1);
        let want: Vec<Seq> = (1..=16).filter(|s| *s != 11).collect();
        assert_eq!(script.held(), want);
        assert_eq!(committed(&store, &script), Some(16));
        // The sink is told the cursor moved past the poison event, wherever the cursor
        // lives (a sink-kept one moves; an arbor-kept one's sink may keep a mark).
        let moved = script.count(&Call::StoreCursor(11));
        assert_eq!(moved, 1, "{home:?}");
        // The worker runs fine, but an acknowledged event is missing: degraded.
        let st = status(&set);
        assert_eq!(
            (st.state, st.dead_letters, st.errors),
            (SinkState::Degraded, 1, 5)
        );
        assert_eq!(st.reasons, ["1 unresolved dead letter(s)"]);
        set.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn dead_letters_are_counted_once_at_start_and_a_replayed_one_counts_once() {
    let (_dir, store, ..) = store(6).await;
    store.put_dead_letter(NAME, 3, "old").expect("put");
    store.put_dead_letter(NAME, 5, "old").expect("put");
    store.put_dead_letter("other", 4, "old").expect("put");
    let script = Script::new(CursorHome::Arbor, &store);
    // Seq 3 is still refused on this replay: it is dead-lettered again, counted once.
    script.poison(&[3]);
    let set = spawn(&store, &script, opts());
    caught_up(&set, &store).await;
    let st = status(&set);
    assert_eq!((st.dead_letters, st.errors), (2, 4));
    assert_eq!(store.dead_letters(NAME).expect("dead").len(), 2);
    set.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_write_gives_it_the_grace_then_drops_it() {
    let (_dir, store, ..) = store(4).await;
    let script = Script::new(CursorHome::Arbor, &store);
    script.apply(&[Step::Hang]);
    let set = spawn(&store, &script, opts());
    until("the write is in flight", || script.applies().len() == 1).await;
    let t0 = Instant::now();
    set.shutdown().await;
    assert_eq!(
        t0.elapsed(),
        opts().shutdown_grace,
        "waited the grace, no more"
    );
    assert_eq!(
        store.cursor(NAME).expect("cursor"),
        None,
        "nothing committed"
    );
    assert!(script.held().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_write_that_ends_within_the_grace_is_committed() {
    for home in [CursorHome::Arbor, CursorHome::Sink] {
        let (_dir, store, ..) = store(4).await;
        let script = Script::new(home, &store);
        script.apply(&[Step::Delay(Duration::from_secs(1))]);
        let set = spawn(&store, &script, opts());
        until("the write is in flight", || script.applies().len() == 1).await;
        let t0 = Instant::now();
        set.shutdown().await;
        assert!(t0.elapsed() <= Duration::from_secs(1), "{:?}", t0.elapsed());
        assert_eq!(committed(&store, &script), Some(4), "{home:?}");
        assert_eq!(script.applies().len(), 1, "no write after shutdown");
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_backoff_ends_at_once() {
    let (_dir, store, ..) = store(2).await;
    let script = Script::new(CursorHome::Arbor, &store);
    script.then(Step::Retriable);
    let slow = DriverOptions {
        backoff: Backoff {
            base: Duration::from_secs(3600),
            cap: Duration::from_secs(3600),
        },
        ..opts()
    };
    let set = spawn(&store, &script, slow);
    until("the first write failed", || status(&set).retries == 1).await;
    let t0 = Instant::now();
    set.shutdown().await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(store.cursor(NAME).expect("cursor"), None);
}

#[tokio::test(start_paused = true)]
async fn setup_runs_again_after_a_lost_connection_before_the_next_write() {
    let (_dir, store, ..) = store(5).await;
    let script = Script::new(CursorHome::Arbor, &store);
    script.apply(&[Step::Lost]);
    let set = spawn(&store, &script, opts());
    caught_up(&set, &store).await;
    let calls: Vec<Call> = script.calls().into_iter().map(|(_, c)| c).collect();
    let ready = |ready| Call::Apply {
        first: 1,
        last: 5,
        committed: None,
        ready,
    };
    assert_eq!(
        calls[..4],
        [Call::Setup, ready(true), Call::Setup, ready(true)],
        "{calls:?}"
    );
    let st = status(&set);
    assert_eq!((st.state, st.retries), (SinkState::Ok, 1));
    assert_eq!(script.held(), (1..=5).collect::<Vec<_>>());
    set.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_write_that_never_answers_counts_as_a_lost_connection() {
    let (_dir, store, ..) = store(3).await;
    let script = Script::new(CursorHome::Arbor, &store);
    script.apply(&[Step::Hang]);
    let set = spawn(&store, &script, opts());
    let t0 = Instant::now();
    caught_up(&set, &store).await;
    assert!(t0.elapsed() >= opts().write_timeout, "{:?}", t0.elapsed());
    assert_eq!(script.count(&Call::Setup), 2);
    let err = status(&set).last_error.unwrap_or_default();
    assert!(err.contains("no answer within 30s"), "{err}");
    set.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_destination_is_set_up_again_and_replayed_from_its_cursor_with_no_gap() {
    let (_dir, store, wf, root) = store(5).await;
    let script = Script::new(CursorHome::Sink, &store);
    let set = spawn(&store, &script, opts());
    caught_up(&set, &store).await;
    // While idle, the destination loses everything (a dropped schema): the next probe
    // sees it, setup runs again, the cursor is reloaded (none) and all is sent again.
    script.probe(&[Step::Dropped]);
    until("a second setup", || script.count(&Call::Setup) == 2).await;
    append(&store, wf, root, 3).await;
    caught_up(&set, &store).await;
    until("everything held again", || script.held().len() == 8).await;
    assert_eq!(script.held(), (1..=8).collect::<Vec<_>>());
    assert_eq!(script.cursor(), Some(8));
    assert_eq!(script.count(&Call::LoadCursor), 2);
    let first_after_loss = script
        .applies()
        .into_iter()
        .find(|(first, _, committed)| *first == 1 && committed.is_none());
    assert!(first_after_loss.is_some(), "{:?}", script.applies());
    set.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_sink_that_stops_answering_is_degraded_within_probe_interval_plus_timeout() {
    let (_dir, store, ..) = store(3).await;
    let script = Script::new(CursorHome::Arbor, &store);
    let set = spawn(&store, &script, opts());
    caught_up(&set, &store).await;
    let probes = script.count(&Call::Probe);
    script.probe(&[Step::Hang]);
    script.setup(&[Step::Retriable, Step::Retriable]);
    let t0 = Instant::now();
    until("degraded", || status(&set).state == SinkState::Degraded).await;
    let took = t0.elapsed();
    assert!(
        took <= opts().probe_interval + opts().probe_timeout,
        "{took:?}"
    );
    assert!(script.count(&Call::Probe) > probes);
    // It answers again: set up again (after two refusals), ok, nothing re-sent.
    until("ok again", || {
        status(&set).state == SinkState::Ok && script.count(&Call::Setup) == 4
    })
    .await;
    assert_eq!(script.applies().len(), 1);
    set.shutdown().await;
}

fn named(script: &Script) -> Vec<crate::NamedSink> {
    vec![(NAME, Ok(Box::new(script.clone()) as Box<dyn DynSink>))]
}

#[tokio::test(start_paused = true)]
async fn status_reads_the_cursor_where_it_lives_and_probes() {
    let (_dir, store, ..) = store(6).await;
    store.set_cursor(NAME, 2).expect("cursor");
    let in_sink = Script::new(CursorHome::Sink, &store);
    in_sink.set_cursor(Some(4));
    let st = &crate::statuses(&store, named(&in_sink)).await[0];
    assert_eq!((st.state, st.cursor, st.lag_events), (SinkState::Ok, 4, 2));
    let in_arbor = Script::new(CursorHome::Arbor, &store);
    let st = &crate::statuses(&store, named(&in_arbor)).await[0];
    assert_eq!((st.state, st.cursor, st.lag_events), (SinkState::Ok, 2, 4));
    in_arbor.probe(&[Step::Lost]);
    let st = &crate::statuses(&store, named(&in_arbor)).await[0];
    assert_eq!((st.state, st.cursor), (SinkState::Degraded, 2));
    assert_eq!(st.last_error.as_deref(), Some("scripted: connection lost"));
    in_sink.probe(&[Step::Hang]);
    let st = &crate::statuses(&store, named(&in_sink)).await[0];
    assert_eq!((st.state, st.cursor), (SinkState::Degraded, 0));
}

#[tokio::test(start_paused = true)]
async fn reset_moves_the_cursor_where_it_lives() {
    let (_dir, store, ..) = store(6).await;
    let mut in_sink = Script::new(CursorHome::Sink, &store);
    in_sink.set_cursor(Some(6));
    crate::reset_sink(&store, &mut in_sink, 2)
        .await
        .expect("reset");
    let calls: Vec<Call> = in_sink.calls().into_iter().map(|(_, c)| c).collect();
    assert_eq!(calls, [Call::Setup, Call::StoreCursor(2)]);
    assert_eq!(store.cursor(NAME).expect("cursor"), None);
    let mut in_arbor = Script::new(CursorHome::Arbor, &store);
    crate::reset_sink(&store, &mut in_arbor, 3)
        .await
        .expect("reset");
    assert!(in_arbor.calls().is_empty());
    assert_eq!(store.cursor(NAME).expect("cursor"), Some(3));
    assert!(matches!(
        crate::reset_sink(&store, &mut in_arbor, 7).await,
        Err(SyncError::BeyondHead { head: 6, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_retried_dead_letter_that_the_sink_takes_is_resolved_and_the_cursor_stays() {
    for home in [CursorHome::Arbor, CursorHome::Sink] {
        let (_dir, store, ..) = store(8).await;
        let script = Script::new(home, &store);
        script.poison(&[3, 5]);
        let set = spawn(&store, &script, opts());
        caught_up(&set, &store).await;
        set.shutdown().await;
        assert_eq!(committed(&store, &script), Some(8), "{home:?}");
        // Still refused: the dead letter stays, with the new error, and nothing moved.
        let mut sink = script.clone();
        let out = crate::dead::retry_sink(&store, &mut sink, Some(vec![3]))
            .await
            .expect("retry");
        assert_eq!((out.len(), out[0].resolved), (1, false));
        assert_eq!(store.dead_letters(NAME).expect("dead").len(), 2);
        // Fixed on the sink's side: both go through, one at a time, and are resolved.
        script.cure(&[3, 5]);
        let out = crate::dead::retry_sink(&store, &mut sink, None)
            .await
            .expect("retry");
        assert!(out.iter().all(|o| o.resolved), "{out:?}");
        assert_eq!(script.held(), (1..=8).collect::<Vec<Seq>>(), "{home:?}");
        assert!(store.dead_letters(NAME).expect("dead").is_empty());
        // Applying seq 5 again does not move the sink's cursor back.
        assert_eq!(committed(&store, &script), Some(8), "{home:?}");
        // Retrying a seq that is no dead letter is refused.
        assert!(matches!(
            crate::dead::retry_sink(&store, &mut sink, Some(vec![4])).await,
            Err(SyncError::NoDeadLetter { seq: 4, .. })
        ));
        // The next run is ok.
        let set = spawn(&store, &script, opts());
        until("ok", || status(&set).state == SinkState::Ok).await;
        assert_eq!(status(&set).dead_letters, 0);
        set.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_acknowledged_dead_letter_is_kept_apart_and_no_longer_degrades() {
    let (_dir, store, ..) = store(6).await;
    let script = Script::new(CursorHome::Arbor, &store);
    script.poison(&[4]);
    let set = spawn(&store, &script, opts());
    caught_up(&set, &store).await;
    assert_eq!(status(&set).state, SinkState::Degraded);
    set.shutdown().await;
    assert!(matches!(
        crate::dead::ack(&store, NAME, 5, "x"),
        Err(SyncError::NoDeadLetter { seq: 5, .. })
    ));
    crate::dead::ack(&store, NAME, 4, "poison fixture").expect("ack");
    assert!(store.dead_letters(NAME).expect("dead").is_empty());
    let listed = crate::dead::list(&store, &[NAME]).expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].acknowledged && listed[0].seq == 4);
    assert!(listed[0].error.contains("poison seq 4"), "{:?}", listed[0]);
    assert!(
        listed[0].error.contains("poison fixture"),
        "{:?}",
        listed[0]
    );
    let set = spawn(&store, &script, opts());
    until("ok", || status(&set).state == SinkState::Ok).await;
    set.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_sink_lagging_beyond_the_bound_is_degraded() {
    let (_dir, store, ..) = store(4).await;
    let script = Script::new(CursorHome::Arbor, &store);
    // Every write hangs: the worker itself never reports a failure before the timeout.
    script.apply(&[Step::Delay(Duration::from_secs(3600))]);
    let mut o = opts();
    o.lag_bound = Duration::from_millis(1);
    o.write_timeout = Duration::from_secs(7200);
    let set = spawn(&store, &script, o);
    // Wall-clock lag (the record timestamps) grows past 1 ms while the write hangs.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status(&set).lag_seconds <= 0.001 {
        assert!(std::time::Instant::now() < deadline, "lag never grew");
        std::thread::yield_now();
    }
    until("degraded by lag", || {
        let st = status(&set);
        st.state == SinkState::Degraded && st.reasons.iter().any(|r| r.contains("lag"))
    })
    .await;
    set.shutdown().await;
}

/// Opens the store in `dir` (again: a closed and dropped store can be reopened at once).
fn reopen(dir: &TempDir) -> Store {
    Store::open(
        dir.path(),
        StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        },
    )
    .expect("open store")
}

#[tokio::test]
async fn lag_is_the_age_of_arrival_not_of_an_imported_events_own_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = reopen(&dir);
    // An import of a workflow from 264 days ago.
    let (workflow_id, root_id) = arbor_testkit::import_past_workflow(&store, 264 * 86_400)
        .await
        .expect("import");
    let (events, seconds) = crate::lag(&store, 0);
    assert_eq!(events, 6);
    assert!(
        seconds < 60.0,
        "lag {seconds} s: the events' own time, not arrival"
    );
    assert!(crate::lag(&store, 3).1 < 60.0);
    // A live append after the import is measured by its own time.
    append(&store, workflow_id, root_id, 1).await;
    assert!(crate::lag(&store, 6).1 < 60.0);
    // The arrival marks survive a restart.
    store.close().await;
    drop(store);
    let store = reopen(&dir);
    let (events, seconds) = crate::lag(&store, 1);
    assert_eq!(events, 6);
    assert!(seconds < 60.0, "after a restart: lag {seconds} s");
    assert_eq!(crate::lag(&store, 7), (0, 0.0));
    store.close().await;
}

#[tokio::test(start_paused = true)]
async fn while_the_sink_cannot_be_set_up_the_last_known_cursor_gives_the_lag() {
    for home in [CursorHome::Arbor, CursorHome::Sink] {
        let (_dir, store, wf, root) = store(6).await;
        // A first run commits through seq 6 (and arbor notes it).
        let script = Script::new(home, &store);
        let set = spawn(&store, &script, opts());
        caught_up(&set, &store).await;
        set.shutdown().await;
        // The sink is down from now on; two more events arrive; arbor restarts.
        append(&store, wf, root, 2).await;
        let down = Script::new(home, &store);
        down.then(Step::Lost);
        let set = spawn(&store, &down, opts());
        until("degraded", || status(&set).state == SinkState::Degraded).await;
        let st = status(&set);
        assert_eq!((st.cursor, st.lag_events), (6, 2), "{home:?}");
        set.shutdown().await;
    }
}

/// Options with an anti-entropy round every 5 s of `budget` events.
fn auditing(budget: usize) -> DriverOptions {
    DriverOptions {
        audit_interval: Duration::from_secs(5),
        audit_budget: budget,
        ..opts()
    }
}

#[tokio::test(start_paused = true)]
async fn anti_entropy_finds_a_lost_event_and_repairs_it_without_moving_the_cursor() {
    for home in [CursorHome::Arbor, CursorHome::Sink] {
        let (_dir, store, _, _) = store(6).await;
        let script = Script::new(home, &store);
        script.audited();
        let set = spawn(&store, &script, auditing(1000));
        caught_up(&set, &store).await;
        until("a clean round", || {
            status(&set).anti_entropy.workflows_audited >= 1
        })
        .await;
        assert_eq!(status(&set).anti_entropy.divergences, 0, "{home:?}");
        // Deleted behind arbor's back.
        script.forget(&[3, 5]);
        until("the repair", || status(&set).anti_entropy.repaired == 1).await;
        let st = status(&set);
        assert_eq!(script.held(), (1..=6).collect::<Vec<Seq>>(), "{home:?}");
        assert_eq!((st.cursor, st.state), (6, SinkState::Ok), "{home:?}");
        assert_eq!(committed(&store, &script), Some(6), "{home:?}");
        assert_eq!(st.anti_entropy.divergences, 1, "{home:?}");
        assert_eq!(script.repairs(), 1, "{home:?}");
        let last = st.anti_entropy.last_divergence.expect("last divergence");
        assert_eq!((last.missing, last.repaired), (2, true), "{home:?}");
        assert_eq!(last.what, "2 of 6 events", "{home:?}");
        assert!(st.reasons.is_empty(), "{:?}", st.reasons);
        set.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_divergence_the_repair_cannot_mend_keeps_the_sink_degraded_until_it_is_whole() {
    let (_dir, store, _, _) = store(4).await;
    let script = Script::new(CursorHome::Arbor, &store);
    script.audited();
    let set = spawn(&store, &script, auditing(1000));
    caught_up(&set, &store).await;
    script.stuck(&[2]).forget(&[2]);
    until("an unrepaired divergence", || {
        status(&set).anti_entropy.unrepaired == 1
    })
    .await;
    let st = status(&set);
    assert_eq!(st.state, SinkState::Degraded);
    assert!(
        st.reasons.iter().any(|r| r.contains("not repaired")),
        "{:?}",
        st.reasons
    );
    assert_eq!(st.anti_entropy.repaired, 0);
    // Whatever deleted it stops: a later round repairs it and the sink is ok again.
    script.stuck(&[]);
    until("repaired", || status(&set).anti_entropy.unrepaired == 0).await;
    let st = status(&set);
    assert_eq!(st.state, SinkState::Ok);
    assert_eq!(st.anti_entropy.repaired, 1);
    assert_eq!(script.held(), vec![1, 2, 3, 4]);
    set.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_round_audits_up_to_its_budget_and_the_rotation_reaches_every_workflow() {
    let (_dir, store, _, _) = store(4).await;
    // Two more workflows of 4 events each (seqs 5..=8, 9..=12).
    for _ in 0..2 {
        let Outcome::WorkflowCreated {
            workflow_id,
            root_id,
            ..
        } = store
            .submit(
                Intent::CreateWorkflow(NewWorkflow::default()),
                Meta::default(),
            )
            .await
            .expect("create")
        else {
            panic!("not created")
        };
        append(&store, workflow_id, root_id, 3).await;
    }
    let script = Script::new(CursorHome::Arbor, &store);
    script.audited();
    // A budget of 4 events: one workflow a round.
    let set = spawn(&store, &script, auditing(4));
    caught_up(&set, &store).await;
    until("one round", || status(&set).anti_entropy.rounds >= 1).await;
    let st = status(&set).anti_entropy;
    assert_eq!(st.workflows_audited, st.rounds, "{st:?}");
    // The oldest workflow is audited last: within three rounds its loss is repaired.
    script.forget(&[2]);
    let rounds = status(&set).anti_entropy.rounds;
    until("repaired", || status(&set).anti_entropy.repaired == 1).await;
    assert!(status(&set).anti_entropy.rounds - rounds <= 3);
    assert_eq!(script.held(), (1..=12).collect::<Vec<Seq>>());
    set.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_sink_without_anti_entropy_is_asked_once_and_never_again() {
    let (_dir, store, _, _) = store(4).await;
    let script = Script::new(CursorHome::Arbor, &store);
    let set = spawn(&store, &script, auditing(1000));
    caught_up(&set, &store).await;
    // Twenty idle probes, a second apart: four round times.
    until("twenty probes", || script.count(&Call::Probe) >= 20).await;
    let st = status(&set).anti_entropy;
    assert_eq!(
        (st.rounds, st.workflows_audited, st.divergences),
        (1, 0, 0),
        "{st:?}"
    );
    assert_eq!(status(&set).state, SinkState::Ok);
    set.shutdown().await;
}
