//! The Redis sink against a real server: streams hold exactly the log's events (same
//! JSON as the API), status hashes follow the workflow, pub/sub publishes each new
//! event once; a 100 000-event workflow, refilled after Redis lost it; outage and
//! restart (a Redis that restarts empty is refilled by the sink), a flushed Redis refilled without re-publishing history,
//! and a killed server noticed within seconds (on a server of the test's own,
//! [`Instance`]); replay from 0; poison; two stores on one Redis; `--redis-maxlen 0`;
//! the seeds' message shape.

mod common;

use arbor_storage::{Event, Seq, Store};
use arbor_sync::redis::{
    channel, read_marks, read_workflow, status_key, stream_key, StreamState, LEGACY_HWM_KEY,
    MARK_KEY,
};
use arbor_sync::{SinkState, SyncConfig};
use common::*;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde_json::json;
use uuid::Uuid;

/// A sink of the shared server, or of `url`.
fn redis_config_at(url: &str) -> SyncConfig {
    SyncConfig {
        redis_url: Some(url.to_owned()),
        redis_maxlen: 1_000_000,
        ..config()
    }
}

fn redis_config() -> SyncConfig {
    redis_config_at(&redis_url())
}

async fn conn_at(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

fn all_events(store: &Store, wf: Uuid) -> Vec<Event> {
    store
        .read_workflow_events(&wf, 0, usize::MAX)
        .expect("read")
        .expect("wf")
}

async fn conn() -> MultiplexedConnection {
    conn_at(&redis_url()).await
}

async fn state_at(url: &str, wf: Uuid) -> StreamState {
    read_workflow(&mut conn_at(url).await, &wf)
        .await
        .expect("read redis")
}

async fn state(wf: Uuid) -> StreamState {
    state_at(&redis_url(), wf).await
}

/// The stream holds every event of `wf` once, in order, as the API's JSON.
async fn assert_exact(store: &Store, wf: Uuid) {
    assert_exact_at(&redis_url(), store, wf).await
}

async fn assert_exact_at(url: &str, store: &Store, wf: Uuid) {
    let want = all_events(store, wf);
    let got = state_at(url, wf).await;
    let seqs: Vec<Seq> = got.entries.iter().map(|e| e.0).collect();
    let want_seqs: Vec<Seq> = want.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs, want_seqs,
        "stream ids = the workflow's seqs, no gap, no duplicate"
    );
    for ((_, kind, json), ev) in got.entries.iter().zip(&want) {
        let parsed: Event = serde_json::from_str(json).expect("event json");
        assert_eq!(&parsed, ev);
        assert_eq!(kind, ev.kind());
    }
    let last = want.last().expect("events");
    assert_eq!(got.status.get("last_seq"), Some(&last.seq.to_string()));
    let status = store.workflow(&wf).expect("wf").expect("wf").status;
    assert_eq!(
        got.status.get("status").map(String::as_str),
        Some(status.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_a_realistic_workflow_streams_status_and_pubsub() {
    let (_dir, store) = store();
    let cfg = redis_config();
    // Subscribe before anything happens: the workflow id is chosen up front.
    let (wf0, _) = create(&store, "warm-up", json!({})).await;
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 60).await;
    let wf = {
        let client = redis::Client::open(redis_url()).expect("url");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
        pubsub.psubscribe("workflow:*").await.expect("psubscribe");
        let wf = realistic(&store).await;
        caught_up(&set, &store, 60).await;
        let want = all_events(&store, wf);
        let mut got = Vec::new();
        let mut msgs = pubsub.on_message();
        while got.len() < want.len() {
            let msg = tokio::time::timeout(std::time::Duration::from_secs(30), msgs.next())
                .await
                .expect("published in time")
                .expect("message");
            if msg.get_channel_name() == channel(&wf) {
                let ev: Event =
                    serde_json::from_str(&msg.get_payload::<String>().expect("payload"))
                        .expect("json");
                got.push(ev);
            }
        }
        assert_eq!(got, want, "each event published once, in order");
        wf
    };
    assert_exact(&store, wf).await;
    assert_exact(&store, wf0).await;
    assert_in_sync(&store, &cfg).await;
    assert_eq!(set.status()[0].state, SinkState::Ok);
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_a_100k_event_workflow_with_a_capped_stream() {
    let (_dir, store) = store();
    let wf = synthetic(&store, 100_000, 5).await;
    let cfg = SyncConfig {
        redis_maxlen: 10_000,
        ..redis_config()
    };
    let t = std::time::Instant::now();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 300).await;
    eprintln!(
        "redis caught up with {} events in {:?}",
        store.head(),
        t.elapsed()
    );
    let got = state(wf).await;
    assert!(
        got.entries.len() >= 10_000 && got.entries.len() < 20_000,
        "{}",
        got.entries.len()
    );
    assert_eq!(got.entries.last().map(|e| e.0), Some(store.head()));
    assert_in_sync(&store, &cfg).await;
    // Redis loses this store's keys (as a restart empty would, on a server shared with
    // other tests): the sink refills the whole log by itself.
    let _: () = redis::cmd("DEL")
        .arg(format!("{MARK_KEY}{}", store.id()))
        .arg(stream_key(&wf))
        .arg(status_key(&wf))
        .query_async(&mut conn().await)
        .await
        .expect("del");
    let t = std::time::Instant::now();
    refilled(&store, &cfg).await;
    eprintln!(
        "redis lost {} events: refilled and verified in {:?}",
        store.head(),
        t.elapsed()
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_zero_leaves_no_duplicates() {
    let (_dir, store) = store();
    let cfg = redis_config();
    let wf = realistic(&store).await;
    let (set, after_reset) = replay_from_zero(&store, &cfg).await;
    assert_eq!(after_reset.state, SinkState::Ok);
    assert_exact(&store, wf).await;
    assert_in_sync(&store, &cfg).await;
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_later_events_arrive() {
    let (_dir, store) = store();
    let cfg = redis_config();
    // Something else owns the stream key of this workflow: Redis answers WRONGTYPE.
    let (bad_wf, _) = create(&store, "someone else's key", json!({})).await;
    let _: () = redis::cmd("SET")
        .arg(stream_key(&bad_wf))
        .arg("not a stream")
        .query_async(&mut conn().await)
        .await
        .expect("set");
    let (wf, root) = create(&store, "fine", json!({})).await;
    append(
        &store,
        wf,
        (0..30)
            .map(|i| spec(root, "message", &format!("m{i}")))
            .collect(),
    )
    .await;
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 60).await;
    let dead = store.dead_letters("redis").expect("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, 1);
    assert!(dead[0].1.contains("WRONGTYPE"), "{}", dead[0].1);
    assert_exact(&store, wf).await;
    assert_only_dead_letter(&set, &store, &cfg, "redis", 1).await;
    set.shutdown().await;
    // The foreign key is removed; the retry writes the event and resolves it.
    let _: () = redis::cmd("DEL")
        .arg(stream_key(&bad_wf))
        .query_async(&mut conn().await)
        .await
        .expect("del");
    let out = arbor_sync::dead::retry(&store, &cfg, "redis", Some(vec![1]))
        .await
        .expect("retry");
    assert!(out[0].resolved, "{out:?}");
    assert!(store.dead_letters("redis").expect("dead").is_empty());
    assert_in_sync(&store, &cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_kill_and_restart_catch_up_with_no_gap_and_no_duplicate() {
    let server = Instance::start("redis").await;
    let cfg = redis_config_at(&server.url);
    let AfterOutage {
        store,
        set,
        before: wf,
        during: wf2,
        ..
    } = outage(&server, &cfg, |_| {}).await;
    // The test Redis keeps nothing across a kill (no RDB/AOF): what was sent before the
    // kill went with it. The sink noticed on reconnect (its mark in Redis was gone) and
    // refilled everything from the log by itself: no `sync reset`, no manual rebuild.
    refilled(&store, &cfg).await;
    assert_exact_at(&server.url, &store, wf).await;
    assert_exact_at(&server.url, &store, wf2).await;
    let st = only(&set);
    assert_eq!((st.state, st.lag_events), (SinkState::Ok, 0), "{st:?}");
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_shows_as_degraded_within_seconds() {
    let server = Instance::start("redis").await;
    a_killed_server_shows_as_degraded(&server, redis_config_at(&server.url)).await;
}

/// Waits until `verify --sinks` finds nothing between the log and the sinks of `cfg`.
async fn refilled(store: &Store, cfg: &SyncConfig) {
    wait_until(120, "the sink to refill redis", || {
        let (store, cfg) = (store.clone(), cfg.clone());
        async move {
            arbor_sync::verify_sinks(&store, &cfg)
                .await
                .is_ok_and(|d| d.is_empty())
        }
    })
    .await;
}

/// Issue 11, item 1: a Redis that lost everything (FLUSHALL; the outage test restarts one
/// without persistence) used to stay empty below the cursor while health said ok. The
/// sink notices (its mark in Redis is gone), refills from the log by itself, status
/// hashes included, and publishes none of that history: the first message a subscriber
/// gets afterwards is the next live event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_is_refilled_by_the_sink_without_republishing_history() {
    let server = Instance::start("redis").await;
    let cfg = redis_config_at(&server.url);
    let (_dir, store) = store();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    let wf = realistic(&store).await;
    let (wf2, root2) = create(&store, "second", json!({})).await;
    node(&store, wf2, spec(root2, "message", "m")).await;
    caught_up(&set, &store, 120).await;
    assert_in_sync(&store, &cfg).await;
    let client = redis::Client::open(server.url.as_str()).expect("url");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.psubscribe("workflow:*").await.expect("psubscribe");
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut conn_at(&server.url).await)
        .await
        .expect("flushall");
    let t = std::time::Instant::now();
    refilled(&store, &cfg).await;
    eprintln!(
        "redis flushed with {} events in the log: refilled and verified in {:?}",
        store.head(),
        t.elapsed()
    );
    assert_exact_at(&server.url, &store, wf).await;
    assert_exact_at(&server.url, &store, wf2).await;
    let st = only(&set);
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("lost data")),
        "the loss was noticed and said: {st:?}"
    );
    assert_eq!((st.state, st.lag_events), (SinkState::Ok, 0), "{st:?}");
    // Nothing was published during the refill: the first message is the live event.
    let live = node(&store, wf2, spec(root2, "message", "live")).await;
    let live_seq = store.seq_of(&live).expect("seq");
    let mut msgs = pubsub.on_message();
    let msg = tokio::time::timeout(std::time::Duration::from_secs(30), msgs.next())
        .await
        .expect("published in time")
        .expect("message");
    let ev: Event =
        serde_json::from_str(&msg.get_payload::<String>().expect("payload")).expect("json");
    assert_eq!(
        (msg.get_channel_name(), ev.seq),
        (channel(&wf2).as_str(), live_seq),
        "the first message after the loss is the live event, not history"
    );
    drop(msgs);
    caught_up(&set, &store, 60).await;
    assert_in_sync(&store, &cfg).await;
    set.shutdown().await;
}

/// Two stores on one Redis keep apart marks: one store's loss and refill does not move
/// the other's, and each store's sink holds its own workflows exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_redis_keep_their_own_marks() {
    let server = Instance::start("redis").await;
    let cfg = redis_config_at(&server.url);
    let (_d1, s1) = store();
    let (_d2, s2) = store();
    let a = arbor_sync::start(s1.clone(), cfg.clone()).expect("start 1");
    let b = arbor_sync::start(s2.clone(), cfg.clone()).expect("start 2");
    let (w1, r1) = create(&s1, "one", json!({})).await;
    node(&s1, w1, spec(r1, "message", "a")).await;
    let (w2, r2) = create(&s2, "two", json!({})).await;
    for i in 0..20 {
        node(&s2, w2, spec(r2, "message", &format!("b{i}"))).await;
    }
    caught_up(&a, &s1, 60).await;
    caught_up(&b, &s2, 60).await;
    let mut c = conn_at(&server.url).await;
    let mut done = Vec::new();
    for s in [&s1, &s2] {
        let key = format!("{MARK_KEY}{}", s.id());
        done.push(read_marks(&mut c, &key).await.expect("marks").done);
    }
    assert_eq!(done, [Some(s1.head()), Some(s2.head())]);
    assert_exact_at(&server.url, &s1, w1).await;
    assert_exact_at(&server.url, &s2, w2).await;
    assert_in_sync(&s1, &cfg).await;
    assert_in_sync(&s2, &cfg).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Issue 11, item 4: `--redis-maxlen 0` keeps every entry (MAXLEN used to be at least 1,
/// `~ 10000` by default, with no way to lift it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxlen_zero_keeps_every_entry() {
    let (_dir, store) = store();
    let cfg = SyncConfig {
        redis_maxlen: 0,
        ..redis_config()
    };
    let wf = synthetic(&store, 1_500, 3).await;
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 120).await;
    assert_exact(&store, wf).await;
    assert_in_sync(&store, &cfg).await;
    set.shutdown().await;
}

/// Issue 11, item 4: `--redis-message-shape seeds` publishes the seeds' message
/// `{id, workflowId, type, content, parentId, metadata}` for each new node (and nothing
/// for other events); the stream keeps arbor's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_message_shape_is_published_when_asked() {
    let (_dir, store) = store();
    let cfg = SyncConfig {
        redis_message_shape: arbor_sync::redis::MessageShape::Seeds,
        ..redis_config()
    };
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    let wf = Uuid::new_v4();
    let client = redis::Client::open(redis_url()).expect("url");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(channel(&wf)).await.expect("subscribe");
    let root = match store
        .submit(
            arbor_storage::Intent::CreateWorkflow(arbor_storage::NewWorkflow {
                id: Some(wf),
                system_prompt: "seeds".into(),
                ..arbor_storage::NewWorkflow::default()
            }),
            arbor_storage::Meta::default(),
        )
        .await
        .expect("create")
    {
        arbor_storage::Outcome::WorkflowCreated { root_id, .. } => root_id,
        other => panic!("unexpected {other:?}"),
    };
    let mut n = spec(root, "message", "hello");
    n.metadata = serde_json::from_value(json!({"model": "m"})).expect("metadata");
    let child = node(&store, wf, n).await;
    set_status(&store, wf, arbor_storage::WorkflowStatus::Waiting).await;
    let after = node(&store, wf, spec(root, "message", "after")).await;
    caught_up(&set, &store, 60).await;
    let mut msgs = pubsub.on_message();
    let mut got = Vec::new();
    for _ in 0..3 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(30), msgs.next())
            .await
            .expect("published in time")
            .expect("message");
        let v: serde_json::Value =
            serde_json::from_str(&msg.get_payload::<String>().expect("payload")).expect("json");
        got.push(v);
    }
    assert_eq!(
        got,
        [
            json!({"id": root, "workflowId": wf, "type": "system", "content": "seeds",
                   "parentId": null, "metadata": {}}),
            json!({"id": child, "workflowId": wf, "type": "message", "content": "hello",
                   "parentId": root, "metadata": {"model": "m"}}),
            json!({"id": after, "workflowId": wf, "type": "message", "content": "after",
                   "parentId": root, "metadata": {}}),
        ],
        "node messages only: nothing for the status change between them"
    );
    assert_exact(&store, wf).await;
    assert_in_sync(&store, &cfg).await;
    set.shutdown().await;
}

/// Upgrade: a Redis written by an earlier arbor holds the legacy high-water mark
/// (`arbor:sync:hwm:{first event id}`) and no mark hash. That is taken over, not taken
/// for a loss: no refill (`refill` stays unset), and replication goes on in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_mark_is_taken_over_without_a_refill() {
    let server = Instance::start("redis").await;
    let cfg = redis_config_at(&server.url);
    let (_dir, store) = store();
    let wf = realistic(&store).await;
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 60).await;
    set.shutdown().await;
    let mut c = conn_at(&server.url).await;
    let key = format!("{MARK_KEY}{}", store.id());
    let first = store.event(1).expect("first event").id;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("del");
    let _: () = redis::cmd("SET")
        .arg(format!("{LEGACY_HWM_KEY}{first}"))
        .arg(store.head())
        .query_async(&mut c)
        .await
        .expect("set");
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start again");
    let (wf2, root) = create(&store, "after the upgrade", json!({})).await;
    node(&store, wf2, spec(root, "message", "m")).await;
    caught_up(&set, &store, 60).await;
    let marks = read_marks(&mut c, &key).await.expect("marks");
    assert_eq!(
        (marks.done, marks.refill),
        (Some(store.head()), 0),
        "{marks:?}"
    );
    assert_exact_at(&server.url, &store, wf).await;
    assert_exact_at(&server.url, &store, wf2).await;
    assert_in_sync(&store, &cfg).await;
    set.shutdown().await;
}

/// Issue 11, item 5: a stream entry deleted from the middle of a workflow's stream
/// (XADD cannot put it back below the top) and the status hash's `status` field are
/// found and rebuilt by anti-entropy, and nothing is published again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_rebuilds_a_stream_missing_an_entry_without_republishing() {
    let cfg = redis_config();
    let client = redis::Client::open(redis_url()).expect("url");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.psubscribe("workflow:*").await.expect("psubscribe");
    let (_dir, store, set, wf) = repaired_after(&cfg, |wf| async move {
        let mut c = conn().await;
        let before = read_workflow(&mut c, &wf).await.expect("read");
        let (middle, _, _) = before.entries[before.entries.len() / 2].clone();
        // MULTI/EXEC, so that an audit (also one) sees all of the damage or none of it.
        let (deleted, _): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("XDEL")
            .arg(stream_key(&wf))
            .arg(format!("{middle}-0"))
            .cmd("HDEL")
            .arg(status_key(&wf))
            .arg("status")
            .query_async(&mut c)
            .await
            .expect("xdel, hdel");
        assert_eq!(deleted, 1);
    })
    .await;
    assert_exact(&store, wf).await;
    let last = only(&set).anti_entropy.last_divergence.expect("divergence");
    assert!(last.what.contains("stream entries"), "{last:?}");
    assert!(last.what.contains("status"), "{last:?}");
    // Everything published so far arrives before a sentinel sent now: the history of
    // the realistic workflow once, and nothing from the rebuild.
    let mut c = conn().await;
    let _: u64 = redis::cmd("PUBLISH")
        .arg("workflow:sentinel")
        .arg("end")
        .query_async(&mut c)
        .await
        .expect("publish");
    let mut msgs = pubsub.on_message();
    let mut seqs = Vec::new();
    let ours = arbor_sync::redis::channel(&wf);
    while let Some(msg) = msgs.next().await {
        let payload: String = msg.get_payload().expect("payload");
        if msg.get_channel_name() == "workflow:sentinel" && payload == "end" {
            break;
        }
        if msg.get_channel_name() != ours {
            continue; // another test's workflow
        }
        let event: serde_json::Value = serde_json::from_str(&payload).expect("event json");
        seqs.push(event["seq"].as_u64().expect("seq"));
    }
    let want: Vec<u64> = (1..=store.head()).collect();
    assert_eq!(seqs, want, "each event published once, in order");
    set.shutdown().await;
}
