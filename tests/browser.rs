//! In a real browser (headless Debian chromium): what a web page on another origin can
//! and cannot do to arbor, and how an EventSource reconnects after a restart.
//!
//! Regression (issue 10): arbor parsed any body as JSON whatever its Content-Type, so a
//! page on any origin stored a node with `fetch(url, {method: 'POST', mode: 'no-cors',
//! headers: {'Content-Type': 'text/plain'}, body})` — a "simple" request that browsers
//! send without a CORS preflight.

mod common;

use common::browser::{artifact, run_page, Origin};
use common::TestServer;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A page that fires the three kinds of simple cross-origin POST at each target URL and
/// reports how many it sent.
fn attack_page(targets: &[String], body: &str) -> String {
    let targets = serde_json::to_string(targets).expect("json");
    let body = serde_json::to_string(body).expect("json");
    format!(
        r#"<!doctype html><title>attack</title><script type="module">
const targets = {targets};
const body = {body};
let sent = 0;
for (const url of targets) {{
  for (const ct of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]) {{
    try {{
      await fetch(url, {{method: "POST", mode: "no-cors", headers: {{"Content-Type": ct}}, body}});
      sent += 1;
    }} catch (e) {{ console.error(String(e)); }}
  }}
}}
window.__result = {{sent}};
window.__done = true;
</script>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_cannot_write() {
    let server = TestServer::start().await;
    let (wf, root) = server.workflow("target").await;
    let head = server.head().await;

    // The control: a second origin that records what reaches it, so the test shows the
    // browser really sends these requests (and would not pass by sending nothing).
    let witness = Origin::start(vec![]).await;
    let node = json!({"parent_id": root, "type": "message", "role": "user", "content": "injected"});
    let targets = vec![
        format!("{}/witness", witness.base),
        server.url(&format!("/v1/workflows/{wf}/nodes")),
        server.url("/v1/workflows"),
    ];
    let page = Origin::start(vec![(
        "/attack.html",
        attack_page(&targets, &node.to_string()),
    )])
    .await;
    let result = run_page(
        &format!("{}/attack.html", page.base),
        30,
        Some(&artifact("cross-origin-attack.png")),
    )
    .await;
    assert_eq!(result, json!({"sent": 9}), "every fetch was sent");

    let seen = witness.seen();
    let types: Vec<_> = seen.iter().map(|s| s.content_type.clone()).collect();
    assert_eq!(
        seen.len(),
        3,
        "the witness got the three simple POSTs: {types:?}"
    );
    assert!(seen
        .iter()
        .all(|s| s.method == "POST" && s.body.contains("injected")));

    assert_eq!(server.head().await, head, "arbor stored nothing");
    let (status, children) = server.get(&format!("/v1/nodes/{root}/children")).await;
    assert_eq!(status, 200);
    assert_eq!(children, json!({"nodes": []}));
}

/// What the same-origin proxy of [`SameOrigin`] saw.
#[derive(Clone, Debug, Default)]
struct ProxyLog {
    /// Events the page reports it has received (its `/seen?n=` calls).
    page_seen: usize,
    /// Each stream request: when it arrived and its `Last-Event-ID` (other proxied
    /// requests, such as the browser's favicon, are not logged).
    streams: Vec<(Instant, Option<String>)>,
    /// When each upstream stream's body ended.
    ended: Vec<Instant>,
}

/// One origin for the page and the API: serves `/page.html`, records `/seen`, and
/// proxies `/v1/...` (streaming) to arbor at `upstream`, which the test switches across
/// a restart. While `upstream` is `None` (arbor is restarting) proxied requests wait.
struct SameOrigin {
    base: String,
    upstream: tokio::sync::watch::Sender<Option<String>>,
    log: tokio::sync::watch::Receiver<ProxyLog>,
    task: tokio::task::JoinHandle<()>,
}

impl SameOrigin {
    async fn start(upstream: String, page: String) -> SameOrigin {
        use axum::extract::{Query, Request};
        use axum::routing::get;
        let (up_tx, up_rx) = tokio::sync::watch::channel(Some(upstream));
        let (log_tx, log_rx) = tokio::sync::watch::channel(ProxyLog::default());
        let log_tx = std::sync::Arc::new(log_tx);
        let seen_log = log_tx.clone();
        let client = reqwest::Client::new();
        let proxy = move |req: Request| {
            let (mut up_rx, log, client) = (up_rx.clone(), log_tx.clone(), client.clone());
            async move {
                let last_id = req
                    .headers()
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let is_stream = req.uri().path().ends_with("/stream");
                if is_stream {
                    log.send_modify(|l| l.streams.push((Instant::now(), last_id.clone())));
                }
                let base = up_rx
                    .wait_for(Option::is_some)
                    .await
                    .expect("upstream sender lives")
                    .clone()
                    .unwrap_or_default();
                let mut up = client.get(format!("{base}{}", req.uri()));
                if let Some(id) = last_id {
                    up = up.header("last-event-id", id);
                }
                let resp = up.send().await.expect("arbor answers the proxy");
                let status = resp.status().as_u16();
                let ctype = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                let body = futures_util::stream::unfold(
                    (resp.bytes_stream(), log),
                    move |(mut s, log)| async move {
                        match futures_util::StreamExt::next(&mut s).await {
                            Some(Ok(b)) => Some((Ok::<_, std::io::Error>(b), (s, log))),
                            _ => {
                                if is_stream {
                                    log.send_modify(|l| l.ended.push(Instant::now()));
                                }
                                None
                            }
                        }
                    },
                );
                axum::http::Response::builder()
                    .status(status)
                    .header("content-type", ctype)
                    .body(axum::body::Body::from_stream(body))
                    .expect("a response")
            }
        };
        let router = axum::Router::new()
            .route(
                "/page.html",
                get(move || async move { axum::response::Html(page) }),
            )
            .route(
                "/seen",
                get(move |Query(q): Query<HashMap<String, usize>>| async move {
                    let n = q.get("n").copied().unwrap_or_default();
                    seen_log.send_modify(|l| l.page_seen = l.page_seen.max(n));
                    axum::http::StatusCode::NO_CONTENT
                }),
            )
            .fallback(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        SameOrigin {
            base: format!("http://{addr}"),
            upstream: up_tx,
            log: log_rx,
            task,
        }
    }

    /// Waits (up to 30 s) until the log satisfies `f`.
    async fn wait_for(&self, what: &str, f: impl FnMut(&ProxyLog) -> bool) -> ProxyLog {
        let mut rx = self.log.clone();
        let log = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(f))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *self.log.borrow()))
            .expect("proxy log sender lives")
            .clone();
        log
    }
}

impl Drop for SameOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A page that follows a workflow's stream from the start until it has seen seq
/// `target`, reporting its progress to `/seen` and then every id it received.
fn follow_page(wf: &str, target: u64) -> String {
    format!(
        r#"<!doctype html><title>follow</title><script>
const ids = [];
let opens = 0;
const es = new EventSource("/v1/workflows/{wf}/stream?after=0");
es.onopen = () => {{ opens += 1; }};
const on = (e) => {{
  const id = Number(e.lastEventId);
  ids.push(id);
  fetch("/seen?n=" + ids.length);
  if (id >= {target}) {{
    es.close();
    window.__result = {{ids, opens}};
    window.__done = true;
  }}
}};
for (const kind of ["workflow.created", "node.created"]) es.addEventListener(kind, on);
</script>"#
    )
}

/// Issue 10 item 7: arbor's streams carry `retry:`, so a browser whose stream ends in a
/// restart reconnects after that delay (1 s by default; Chromium's own default is 3 s),
/// resuming by `Last-Event-ID` with no gap and no duplicate. The page and the API share
/// one origin through a small proxy (a page elsewhere could not open the stream without
/// CORS), which also times the gap between the old stream's end and the new request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_reconnects_within_retry_after_a_restart() {
    let mut server = TestServer::start().await;
    // The restarted server runs with the default settings.
    let retry = arbor::http::Limits::default().sse_retry;
    let (wf, root) = server.workflow("follow me").await;
    let mut parent = root;
    for i in 0..3 {
        parent = server
            .node(&wf, &parent, "message", &format!("before {i}"))
            .await;
    }
    let before = server.head().await;
    let target = before + 3;
    let proxy = SameOrigin::start(server.base.clone(), follow_page(&wf, target)).await;
    let url = format!("{}/page.html", proxy.base);
    let page =
        tokio::spawn(async move { run_page(&url, 60, Some(&artifact("sse-reconnect.png"))).await });
    let n = usize::try_from(before).expect("small");
    proxy
        .wait_for("the page to see the history", |l| l.page_seen >= n)
        .await;

    proxy.upstream.send_replace(None);
    server.restart().await;
    proxy.upstream.send_replace(Some(server.base.clone()));
    let log = proxy
        .wait_for("the page to reconnect", |l| l.streams.len() >= 2)
        .await;
    for i in 0..3 {
        parent = server
            .node(&wf, &parent, "message", &format!("after {i}"))
            .await;
    }
    let result = page.await.expect("page task");

    let ids: Vec<u64> = serde_json::from_value(result["ids"].clone()).expect("ids");
    assert_eq!(
        ids,
        (1..=target).collect::<Vec<_>>(),
        "every event once, in order, across the restart"
    );
    assert_eq!(result["opens"], 2, "one reconnect: {result}");
    let (reconnected, last_id) = log.streams[1].clone();
    assert_eq!(
        last_id,
        Some(before.to_string()),
        "resumed by Last-Event-ID"
    );
    let ended = *log.ended.first().expect("the first stream ended");
    let gap = reconnected.duration_since(ended);
    eprintln!("stream ended -> browser reconnected: {gap:?} (retry {retry:?})");
    assert!(
        gap + Duration::from_millis(50) >= retry,
        "the browser waited the retry: {gap:?}"
    );
    assert!(
        gap <= retry + Duration::from_millis(750),
        "the browser reconnected within retry + 750 ms: {gap:?}"
    );
}

/// A page that, with the API at `?api=`, creates a workflow (a preflighted JSON POST),
/// opens the workflow's EventSource, appends a node, and reports what it could do and
/// read. Every step that the browser refuses is reported as `"refused"`.
const CORS_PAGE: &str = r#"<!doctype html><title>cors</title><script type="module">
const api = new URLSearchParams(location.search).get("api");
const out = {};
const json = (body) => ({method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
try {
  const r = await fetch(api + "/v1/workflows", json({system_prompt: "from another origin"}));
  out.create = r.status;
  const wf = await r.json();
  out.read_workflow_id = typeof wf.workflow_id === "string";
  const es = new EventSource(`${api}/v1/workflows/${wf.workflow_id}/stream?after=0`);
  const seen = [];
  const streamed = new Promise((resolve) => {
    es.addEventListener("node.created", (e) => { seen.push(Number(e.lastEventId)); resolve(); });
    setTimeout(resolve, 10000);
  });
  await new Promise((resolve) => { es.onopen = resolve; es.onerror = resolve; });
  const a = await fetch(`${api}/v1/workflows/${wf.workflow_id}/nodes`,
    json({parent_id: wf.root_id, type: "message", role: "user", content: "hello"}));
  out.append = a.status;
  await streamed;
  es.close();
  out.streamed = seen;
} catch (e) {
  out.refused = String(e);
}
window.__result = out;
window.__done = true;
</script>"#;

/// Issue 14 (CORS): with `--cors-origin` naming a page's origin, that page creates a
/// workflow (a preflighted JSON POST), reads the answer, appends, and follows the
/// workflow's EventSource; a page on an origin not named gets nothing: the browser
/// refuses the preflight, so nothing is stored. None is allowed by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_named_origins_may_call_the_api_from_a_browser() {
    let allowed = Origin::start(vec![("/cors.html", CORS_PAGE.to_owned())]).await;
    let other = Origin::start(vec![("/cors.html", CORS_PAGE.to_owned())]).await;
    let origin = allowed.base.clone();
    let server = TestServer::start_with(|cfg| cfg.cors_origins = vec![origin]).await;
    let api = server.url("");
    let api = api.trim_end_matches('/');

    let got = run_page(
        &format!("{}/cors.html?api={api}", allowed.base),
        40,
        Some(&artifact("cors-allowed.png")),
    )
    .await;
    assert_eq!(got["create"], 201, "{got}");
    assert_eq!(got["read_workflow_id"], true, "{got}");
    assert_eq!(got["append"], 201, "{got}");
    assert_eq!(
        got["streamed"],
        json!([2]),
        "the appended node, live: {got}"
    );
    assert_eq!(server.head().await, 2);

    let got = run_page(
        &format!("{}/cors.html?api={api}", other.base),
        40,
        Some(&artifact("cors-refused.png")),
    )
    .await;
    assert!(got["refused"].is_string(), "{got}");
    assert!(got.get("create").is_none(), "{got}");
    assert_eq!(server.head().await, 2, "the refused origin stored nothing");

    // No CORS header at all without --cors-origin, and none for an origin not named.
    let plain = TestServer::start().await;
    let client = reqwest::Client::new();
    for (srv, origin) in [
        (&plain, allowed.base.as_str()),
        (&server, other.base.as_str()),
    ] {
        let r = client
            .request(reqwest::Method::OPTIONS, srv.url("/v1/workflows"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
            .await
            .expect("preflight");
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{origin}: {:?}",
            r.headers()
        );
    }
    // The named origin's preflight is answered before authentication, with the headers
    // a page needs.
    let r = client
        .request(reqwest::Method::OPTIONS, server.url("/v1/workflows"))
        .header("Origin", &allowed.base)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, authorization",
        )
        .send()
        .await
        .expect("preflight");
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(
        h.get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(allowed.base.as_str())
    );
    let allow = h
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allow.contains("authorization") && allow.contains("content-type"),
        "{allow}"
    );
}
