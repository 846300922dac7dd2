//! Access control at run time (DESIGN §8) against a real server on loopback: rate limits
//! per token and per client address, revocation closing open streams, the audit log.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbor::auth::role::Role;
use arbor::auth::token::{issue, NewToken};
use arbor_storage::Store;
use common::{SseReader, TestServer};
use serde_json::{json, Value};

/// Issues a live token of `role` (and `rate`) in the store; returns (id, secret).
fn token(store: &Store, name: &str, role: Role, rate: Option<f64>) -> (String, String) {
    let new = NewToken {
        name: name.to_owned(),
        role,
        workflows: Vec::new(),
        branches: Vec::new(),
        expires_at: None,
        rate,
    };
    let (view, secret) = issue(store, new, "test").expect("issue");
    (view.token.id.to_string(), secret.expose().to_owned())
}

fn store_of(srv: &TestServer) -> Store {
    srv.running.as_ref().expect("running").store().clone()
}

/// GET `path` with `bearer`; (status, Retry-After, body).
async fn get(
    client: &reqwest::Client,
    srv: &TestServer,
    path: &str,
    bearer: &str,
) -> (u16, Option<u64>, Value) {
    let resp = client
        .get(srv.url(path))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("send");
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").parse().expect("seconds"));
    let (status, body) = common::decode(resp).await;
    (status, retry, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_gets_its_rate_and_429s_beyond_it() {
    const RATE: f64 = 50.0;
    const WINDOW: Duration = Duration::from_secs(4);
    let srv = TestServer::start().await;
    let store = store_of(&srv);
    let (_, limited) = token(&store, "limited", Role::Reader, Some(RATE));
    let (_, other) = token(&store, "other", Role::Reader, None);
    let srv = Arc::new(srv);
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut drivers = Vec::new();
    for _ in 0..8 {
        let (srv, limited, ok, refused) =
            (srv.clone(), limited.clone(), ok.clone(), refused.clone());
        drivers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while started.elapsed() < WINDOW {
                let (s, retry, body) = get(&client, &srv, "/v1/workflows", &limited).await;
                match s {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    429 => {
                        assert!(retry.is_some_and(|r| r >= 1), "Retry-After on a 429");
                        assert_eq!(body["status"], 429, "{body}");
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("unexpected {other}: {body}"),
                };
            }
        }));
    }
    // Meanwhile another token is not limited by the first one's bucket.
    let client = reqwest::Client::new();
    let (s, _, _) = get(&client, &srv, "/v1/workflows", &other).await;
    assert_eq!(s, 200);
    for d in drivers {
        d.await.expect("driver");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    // The bucket starts full (burst = 2 × rate), then refills at the rate.
    let sustained = (ok as f64 - 2.0 * RATE) / elapsed;
    eprintln!(
        "rate {RATE}/s: {ok} ok, {refused} refused in {elapsed:.2} s → sustained {sustained:.1}/s"
    );
    assert!(
        refused > ok,
        "the client went well beyond the rate ({ok} ok, {refused} refused)"
    );
    assert!(
        (sustained - RATE).abs() <= RATE * 0.1,
        "sustained {sustained:.1}/s is not within 10 % of {RATE}/s"
    );
}

#[tokio::test]
async fn failed_authentications_are_limited_per_client_address() {
    let srv = TestServer::start().await;
    let store = store_of(&srv);
    let (_, good) = token(&store, "good", Role::Reader, None);
    let client = reqwest::Client::new();
    let bad = format!("{}x", &good[..good.len() - 1]);
    for i in 0..20 {
        let (s, _, body) = get(&client, &srv, "/v1/workflows", &bad).await;
        assert_eq!(s, 401, "failure {i} is a plain 401: {body}");
    }
    let (s, retry, body) = get(&client, &srv, "/v1/workflows", &bad).await;
    assert_eq!(s, 429, "{body}");
    assert!(retry.is_some_and(|r| r >= 1));
    let (s, _, _) = get(&client, &srv, "/v1/workflows", &good).await;
    assert_eq!(
        s, 429,
        "an address over its failures is refused before its token is even checked"
    );
    // Another address (all of 127/8 is loopback) is not affected.
    let elsewhere = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("client");
    let (s, _, body) = get(&elsewhere, &srv, "/v1/workflows", &good).await;
    assert_eq!(s, 200, "{body}");
    let (s, metrics) = {
        let (_, admin) = token(&store, "admin", Role::Admin, None);
        let r = elsewhere
            .get(srv.url("/metrics"))
            .bearer_auth(admin)
            .send()
            .await
            .expect("metrics");
        (r.status().as_u16(), r.text().await.expect("text"))
    };
    assert_eq!(s, 200);
    let figure = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    assert_eq!(figure("arbor_auth_failures_total"), 20.0);
    assert_eq!(figure("arbor_rate_limited_total"), 2.0);
}

#[tokio::test]
async fn revoking_a_token_closes_its_open_streams_within_a_second() {
    let srv = TestServer::start().await;
    let (wf, root) = srv.workflow("watched").await;
    let store = store_of(&srv);
    let (_, admin) = token(&store, "admin", Role::Admin, None);
    let (reader_id, reader) = token(&store, "reader", Role::Reader, None);
    let (_, bystander) = token(&store, "bystander", Role::Reader, None);
    let client = reqwest::Client::new();
    let url = |t: &str| {
        srv.url(&format!(
            "/v1/workflows/{wf}/stream?after=0&access_token={t}"
        ))
    };
    let mut revoked_stream = SseReader::open(&client, &url(&reader), None).await;
    let mut kept_stream = SseReader::open(&client, &url(&bystander), None).await;
    for s in [&mut revoked_stream, &mut kept_stream] {
        let first = s.next(Duration::from_secs(5)).await.expect("history");
        assert_eq!(first.event.as_deref(), Some("workflow.created"));
    }
    let revoke = client
        .delete(srv.url(&format!("/v1/tokens/{reader_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoke.status().as_u16(), 200);
    let at = Instant::now();
    // Skip what was already sent; the stream must end (None), not time out.
    while revoked_stream.next(Duration::from_secs(1)).await.is_some() {}
    let closed_in = at.elapsed();
    eprintln!("stream closed {closed_in:?} after the revocation");
    assert!(closed_in < Duration::from_secs(1), "{closed_in:?}");
    let (s, _, _) = get(&client, &srv, "/v1/workflows", &reader).await;
    assert_eq!(s, 401, "its next request is refused");
    // The other token's stream goes on and sees a new node.
    let r = client
        .post(srv.url(&format!("/v1/workflows/{wf}/nodes")))
        .bearer_auth(&admin)
        .json(&json!({ "parent_id": root, "type": "message", "content": "still here" }))
        .send()
        .await
        .expect("append");
    let (s, made) = common::decode(r).await;
    assert_eq!(s, 201, "{made}");
    let node = made["id"].as_str().expect("id").to_owned();
    loop {
        let m = kept_stream
            .next(Duration::from_secs(5))
            .await
            .expect("the bystander's stream stays open");
        if m.data.contains(&node) {
            break;
        }
    }
}

#[tokio::test]
async fn the_audit_log_pages_token_events_with_filters() {
    let srv = TestServer::start().await;
    // The first token is made anonymously in open mode; then the store is closed.
    let (s, first) = srv
        .post("/v1/tokens", json!({ "name": "root", "role": "admin" }))
        .await;
    assert_eq!(s, 201, "{first}");
    let admin = first["token"].as_str().expect("secret").to_owned();
    let admin_id = first["id"].as_str().expect("id").to_owned();
    let client = reqwest::Client::new();
    let mut made = Vec::new();
    for name in ["a", "b", "c"] {
        let r = client
            .post(srv.url("/v1/tokens"))
            .bearer_auth(&admin)
            .json(&json!({ "name": name, "role": "writer" }))
            .send()
            .await
            .expect("create");
        let (s, v) = common::decode(r).await;
        assert_eq!(s, 201, "{v}");
        made.push((
            v["id"].as_str().expect("id").to_owned(),
            v["token"].as_str().expect("secret").to_owned(),
        ));
    }
    let r = client
        .delete(srv.url(&format!("/v1/tokens/{}", made[1].0)))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status().as_u16(), 200);

    let (s, _, all) = get(&client, &srv, "/v1/audit", &admin).await;
    assert_eq!(s, 200, "{all}");
    let events = all["events"].as_array().expect("events");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "token.created",
            "token.created",
            "token.created",
            "token.created",
            "token.revoked"
        ]
    );
    assert_eq!(events[0]["actor"], "anonymous");
    assert!(events[1..].iter().all(|e| e["actor"] == admin_id.as_str()));
    assert_eq!(events[4]["details"]["token_id"], made[1].0.as_str());
    assert_eq!(events[1]["details"]["token"]["name"], "a");
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(all["next_after"], 5);
    let text = all.to_string();
    for (_, secret) in &made {
        assert!(
            !text.contains(&secret[secret.len() - 40..]),
            "no secret in the audit"
        );
    }
    assert!(!text.contains("secret"), "no secret hash either: {text}");

    let (_, _, revoked) = get(&client, &srv, "/v1/audit?kind=token.revoked", &admin).await;
    assert_eq!(revoked["events"].as_array().expect("events").len(), 1);
    let (_, _, anon) = get(&client, &srv, "/v1/audit?actor=anonymous", &admin).await;
    assert_eq!(anon["events"].as_array().expect("events").len(), 1);
    // Paging: two at a time, resuming from next_after.
    let (_, _, p1) = get(&client, &srv, "/v1/audit?limit=2", &admin).await;
    assert_eq!(p1["next_after"], 2);
    let (_, _, p2) = get(&client, &srv, "/v1/audit?limit=2&after=2", &admin).await;
    let seqs: Vec<u64> = p2["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [3, 4]);
    for bad in [
        "/v1/audit?limit=0",
        "/v1/audit?bogus=1",
        "/v1/audit?after=x",
    ] {
        let (s, _, v) = get(&client, &srv, bad, &admin).await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    // Only an admin reads the audit.
    let (s, _, _) = get(&client, &srv, "/v1/audit", &made[0].1).await;
    assert_eq!(s, 403);
}
