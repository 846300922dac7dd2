//! SSE over real HTTP: live delivery, exact resume, history from 0, beyond-head 400,
//! and a stalled reader that falls behind the broadcast and still gets everything.

mod common;

use std::time::Duration;

use common::{SseReader, TestServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn live_delivery_then_exact_resume() {
    let srv = TestServer::start().await;
    let (wf, root) = srv.workflow("p").await;
    let (other, other_root) = srv.workflow("q").await;
    let url = srv.url(&format!("/v1/workflows/{wf}/stream"));
    let mut live = SseReader::open(&srv.client, &url, None).await;
    let a = srv.node(&wf, &root, "message", "a").await;
    srv.node(&other, &other_root, "message", "not for this stream")
        .await;
    let b = srv.node(&wf, &a, "message", "b").await;

    let m1 = live.next(WAIT).await.unwrap();
    assert_eq!(m1.event.as_deref(), Some("node.created"));
    let d1: Value = serde_json::from_str(&m1.data).unwrap();
    assert_eq!(d1["body"]["id"], a.as_str());
    assert_eq!(d1["seq"].as_u64(), m1.id, "id: is the seq");
    let m2 = live.next(WAIT).await.unwrap();
    let d2: Value = serde_json::from_str(&m2.data).unwrap();
    assert_eq!(
        d2["body"]["id"],
        b.as_str(),
        "other workflows are filtered out"
    );

    // Reconnect after m1 with Last-Event-ID: exactly m2, then new events.
    let mut resumed = SseReader::open(&srv.client, &url, m1.id).await;
    let r = resumed.next(WAIT).await.unwrap();
    assert_eq!(r.id, m2.id);
    let c = srv.node(&wf, &b, "message", "c").await;
    let r = resumed.next(WAIT).await.unwrap();
    let d: Value = serde_json::from_str(&r.data).unwrap();
    assert_eq!(d["body"]["id"], c.as_str(), "no gap, no duplicate");

    // ?after=0: the whole history first, in order.
    let mut all = SseReader::open(&srv.client, &format!("{url}?after=0"), None).await;
    let kinds: Vec<String> = {
        let mut k = Vec::new();
        for _ in 0..4 {
            k.push(all.next(WAIT).await.unwrap().event.unwrap());
        }
        k
    };
    assert_eq!(
        kinds,
        [
            "workflow.created",
            "node.created",
            "node.created",
            "node.created"
        ]
    );
}

#[tokio::test]
async fn bad_positions_and_unknown_workflows_are_refused() {
    let srv = TestServer::start().await;
    let (wf, _) = srv.workflow("p").await;
    let head = srv.head().await;
    let url = srv.url(&format!("/v1/workflows/{wf}/stream?after={}", head + 1));
    let (s, b) = common::decode(srv.client.get(url).send().await.unwrap()).await;
    assert_eq!(s, 400, "{b}");
    let r = srv
        .client
        .get(srv.url(&format!("/v1/workflows/{wf}/stream")))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(common::decode(r).await.0, 400);
    let (s, _) = srv
        .get("/v1/workflows/0190f0a0-0000-7000-8000-00000000ffff/stream")
        .await;
    assert_eq!(s, 404);
    let (s, _) = srv.get(&format!("/v1/stream?after={}", head + 5)).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn global_stream_sees_every_workflow_in_seq_order() {
    let srv = TestServer::start().await;
    let mut global = SseReader::open(&srv.client, &srv.url("/v1/stream"), None).await;
    let (wf1, r1) = srv.workflow("one").await;
    let (wf2, r2) = srv.workflow("two").await;
    srv.node(&wf1, &r1, "message", "x").await;
    srv.node(&wf2, &r2, "message", "y").await;
    let mut seqs = Vec::new();
    let mut wfs = std::collections::HashSet::new();
    for _ in 0..4 {
        let m = global.next(WAIT).await.unwrap();
        let d: Value = serde_json::from_str(&m.data).unwrap();
        wfs.insert(d["workflow_id"].as_str().unwrap().to_owned());
        seqs.push(m.id.unwrap());
    }
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(wfs.len(), 2);
}

/// The broadcast holds 8 events; the reader does not read while 3 000 events of
/// ~2 KiB go by (far more than the socket buffers hold), so its pump blocks and its
/// receiver lags. When it reads again it must get all of them, in order, once.
#[tokio::test]
async fn stalled_reader_catches_up_from_the_log() {
    let srv = TestServer::start_with(|c| {
        c.broadcast_capacity = 8;
        c.durability = arbor_storage::Durability::None;
    })
    .await;
    let (wf, root) = srv.workflow("p").await;
    let url = srv.url(&format!("/v1/workflows/{wf}/stream"));
    let mut slow = SseReader::open(&srv.client, &url, None).await;
    let filler = "z".repeat(2048);
    let batch = format!("/v1/workflows/{wf}/nodes/batch");
    let mut expected = Vec::new();
    for _ in 0..30 {
        let nodes: Vec<Value> = (0..100)
            .map(|_| json!({ "parent_id": root, "type": "message", "content": filler }))
            .collect();
        let (s, b) = srv.post(&batch, json!({ "nodes": nodes })).await;
        assert_eq!(s, 201);
        expected.extend(
            b["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["seq"].as_u64().unwrap()),
        );
    }
    let mut got = Vec::with_capacity(expected.len());
    while got.len() < expected.len() {
        got.push(slow.next(WAIT).await.unwrap().id.unwrap());
    }
    assert_eq!(got, expected, "every event, in order, none twice");
    let metrics = srv
        .client
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let catchups: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("arbor_sse_catchups_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(
        catchups > 0,
        "the reader never lagged, so the test proved nothing"
    );
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_open_and_shutdown_ends_it() {
    let mut srv = TestServer::start_with(|c| c.limits.sse_heartbeat = Duration::from_secs(1)).await;
    let (wf, _) = srv.workflow("p").await;
    let r = srv
        .client
        .get(srv.url(&format!("/v1/workflows/{wf}/stream")))
        .send()
        .await
        .unwrap();
    let mut stream = Box::pin(r.bytes_stream());
    use futures_util::StreamExt;
    // `retry:` first, then (with no events) a heartbeat comment.
    let mut text = String::new();
    while !text.contains("\n\n:") {
        let chunk = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.starts_with("retry: ") && text.ends_with(":\n\n"),
        "retry, then a heartbeat comment: {text:?}"
    );
    let running = srv.running.take().unwrap();
    running.shutdown().await.unwrap();
    // The stream ends cleanly (no hang) once the server shuts down.
    let end = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(end.is_ok(), "SSE stream did not end on shutdown");
}

/// The first bytes of a stream at `url`, once they include a blank line.
async fn stream_head(client: &reqwest::Client, url: &str) -> String {
    use futures_util::StreamExt;
    let r = client.get(url).send().await.expect("open stream");
    assert_eq!(r.status().as_u16(), 200);
    let mut body = r.bytes_stream();
    let mut head = String::new();
    while !head.contains("\n\n") {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .expect("timed out waiting for the stream's first frame")
            .expect("the stream ended before its first frame")
            .expect("stream error");
        head.push_str(&String::from_utf8_lossy(&chunk));
    }
    head
}

#[tokio::test]
async fn every_stream_starts_with_the_configured_retry() {
    let srv = TestServer::start().await;
    let (wf, _) = srv.workflow("p").await;
    for path in [
        format!("/v1/workflows/{wf}/stream?after=0"),
        "/v1/stream".into(),
    ] {
        let head = stream_head(&srv.client, &srv.url(&path)).await;
        assert!(head.starts_with("retry: 1000\n\n"), "{path}: {head:?}");
    }
    let srv = TestServer::start_with(|c| c.limits.sse_retry = Duration::from_millis(250)).await;
    let head = stream_head(&srv.client, &srv.url("/v1/stream")).await;
    assert!(head.starts_with("retry: 250\n\n"), "{head:?}");
}

/// A busy stream writes at most once per `sse_coalesce`: after a write, the events that
/// follow wait out the window and then come together, in order, none lost.
#[tokio::test]
async fn a_busy_stream_coalesces_its_writes() {
    let window = Duration::from_secs(1);
    let srv = TestServer::start_with(|c| c.limits.sse_coalesce = window).await;
    let (wf, root) = srv.workflow("p").await;
    let url = srv.url(&format!("/v1/workflows/{wf}/stream"));
    let mut live = SseReader::open(&srv.client, &url, None).await;
    let a = srv.node(&wf, &root, "message", "a").await;
    let first = live.next(WAIT).await.unwrap();
    let first_at = std::time::Instant::now();
    let b = srv.node(&wf, &a, "message", "b").await;
    let c = srv.node(&wf, &b, "message", "c").await;
    let mut ids = Vec::new();
    for m in [
        &first,
        &live.next(WAIT).await.unwrap(),
        &live.next(WAIT).await.unwrap(),
    ] {
        let d: Value = serde_json::from_str(&m.data).unwrap();
        ids.push(d["body"]["id"].as_str().unwrap_or_default().to_owned());
    }
    let waited = first_at.elapsed();
    assert_eq!(ids, [a, b, c], "every event, in order");
    // `b` was written no sooner than a window after `a`'s write, which came before
    // `a` was read here: half a window is a bound no scheduling delay can break.
    assert!(
        waited >= window / 2,
        "the next write waited only {waited:?} of a {window:?} window"
    );
}
