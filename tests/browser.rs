//! In a real browser (headless Debian chromium): what a web page on another origin can
//! and cannot do to arbor.
//!
//! Regression (issue 10): arbor parsed any body as JSON whatever its Content-Type, so a
//! page on any origin stored a node with `fetch(url, {method: 'POST', mode: 'no-cors',
//! headers: {'Content-Type': 'text/plain'}, body})` — a "simple" request that browsers
//! send without a CORS preflight.

mod common;

use common::browser::{artifact, run_page, Origin};
use common::TestServer;
use serde_json::json;

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
