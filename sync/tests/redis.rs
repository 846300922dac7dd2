//! The Redis sink against a real server: streams hold exactly the log's events (same
//! JSON as the API), status hashes follow the workflow, pub/sub publishes each new
//! event once; a 100 000-event workflow; outage and restart, and a killed server noticed
//! within seconds (on a server of the test's own, [`Instance`]); replay from 0; poison.

mod common;

use arbor_storage::{Event, Seq, Store};
use arbor_sync::redis::{channel, read_workflow, stream_key, StreamState};
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
    // kill is gone with it. Everything after is there exactly once, with no gap: the
    // stream is an unbroken suffix of wf2's events, ending at its last one.
    let want: Vec<Seq> = all_events(&store, wf2).iter().map(|e| e.seq).collect();
    let got: Vec<Seq> = state_at(&server.url, wf2)
        .await
        .entries
        .iter()
        .map(|e| e.0)
        .collect();
    assert!(got.len() >= 50, "{}", got.len());
    assert_eq!(
        got[..],
        want[want.len() - got.len()..],
        "unbroken suffix, no duplicate"
    );
    // Redis lost wf's events: verify sees it, and a replay from 0 repairs it.
    let diffs = arbor_sync::verify_sinks(&store, &cfg)
        .await
        .expect("verify");
    assert!(diffs.iter().any(|d| d.workflow_id == Some(wf)), "{diffs:?}");
    set.shutdown().await;
    // The documented rebuild: a replay cannot insert below a stream's top, so the
    // streams verify flagged go first (wf2's too, if the kill took some of its first
    // events: the worker may have sent them just before).
    let mut c = conn_at(&server.url).await;
    for d in &diffs {
        if let Some(w) = d.workflow_id {
            let _: () = redis::cmd("DEL")
                .arg(stream_key(&w))
                .query_async(&mut c)
                .await
                .expect("del");
        }
    }
    arbor_sync::reset(&store, &cfg, "redis", 0)
        .await
        .expect("reset");
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 60).await;
    assert_exact_at(&server.url, &store, wf).await;
    assert_exact_at(&server.url, &store, wf2).await;
    assert_in_sync(&store, &cfg).await;
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_shows_as_degraded_within_seconds() {
    let server = Instance::start("redis").await;
    a_killed_server_shows_as_degraded(&server, redis_config_at(&server.url)).await;
}
