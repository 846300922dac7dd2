//! Every row of the DESIGN §4 table, over real HTTP against the real router, with
//! each error status and a check that a refused request stores nothing.

mod common;

use common::TestServer;
use serde_json::{json, Value};

/// Sends each (status, method, path, body) and asserts it is refused with that status
/// and that the log did not move. Returns the last problem body. Method `raw` posts a
/// string body as it is (text that is not valid JSON).
async fn refuse_all(srv: &TestServer, cases: Vec<(u16, &str, String, Value)>) -> Value {
    let mut last = Value::Null;
    for (status, method, path, body) in cases {
        let before = srv.head().await;
        let (s, b) = match (method, &body) {
            ("raw", Value::String(text)) => srv.post_raw(&path, text).await,
            ("post", _) => srv.post(&path, body).await,
            _ => srv.patch(&path, body).await,
        };
        assert_eq!(
            s, status,
            "{method} {path}: expected {status}, got {s}: {b}"
        );
        assert_eq!(
            srv.head().await,
            before,
            "a refused request stored something: {b}"
        );
        last = b;
    }
    last
}

/// [`refuse_all`], and each problem's detail must contain the case's text (the field it
/// names) and no Rust type name.
async fn refuse_naming(srv: &TestServer, cases: Vec<(u16, &str, String, Value, &str)>) {
    for (status, method, path, body, names) in cases {
        let shown = body.to_string();
        let b = refuse_all(srv, vec![(status, method, path, body)]).await;
        let detail = b["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(names),
            "{shown}: detail {detail:?} does not name {names:?}"
        );
        for leak in [
            "struct ",
            "elements",
            "CreateNode",
            "Workflow",
            "u64",
            "usize",
        ] {
            assert!(
                !detail.contains(leak),
                "{shown}: detail leaks {leak:?}: {detail}"
            );
        }
    }
}

/// Asserts that `f` is refused with `status` and that the log did not move.
macro_rules! refused {
    ($srv:expr, $status:expr, $call:expr) => {{
        let before = $srv.head().await;
        let (s, b) = $call;
        assert_eq!(s, $status, "expected {} got {s}: {b}", $status);
        assert_eq!(
            $srv.head().await,
            before,
            "a refused request stored something: {b}"
        );
        b
    }};
}

#[tokio::test]
async fn workflows_create_replay_list_view_and_status() {
    let srv = TestServer::start().await;
    let id = "0190f0a0-0000-7000-8000-000000000001";
    let body = json!({ "id": id, "system_prompt": "You are a careful coding agent.", "metadata": {"repo": "arbor"}, "user_id": "ana" });
    let (s, created) = srv.post("/v1/workflows", body.clone()).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["workflow_id"], id);
    assert_eq!(created["seq"], 1);
    let (s, replay) = srv.post("/v1/workflows", body).await;
    assert_eq!(s, 200, "identical replay");
    assert_eq!(replay, created);
    refuse_all(
        &srv,
        vec![
            (
                409,
                "post",
                "/v1/workflows".to_string(),
                json!({ "id": id, "system_prompt": "other" }),
            ),
            (
                400,
                "post",
                "/v1/workflows".to_string(),
                json!({ "system_prompt": "x", "colour": 1 }),
            ),
            (
                400,
                "post",
                "/v1/workflows".to_string(),
                json!({ "metadata": {} }),
            ),
            (
                400,
                "post",
                "/v1/workflows".to_string(),
                json!({ "system_prompt": "x", "metadata": [1] }),
            ),
        ],
    )
    .await;
    refused!(srv, 400, srv.post_raw("/v1/workflows", "{not json").await);
    // Only objects are bodies; errors name the field in the API's words; text holds no
    // NUL (PostgreSQL cannot); metadata has a size limit (64 KiB by default).
    let wfs = || "/v1/workflows".to_string();
    refuse_naming(
        &srv,
        vec![
            (
                400,
                "post",
                wfs(),
                json!([null, "array prompt", null, null]),
                "must be a JSON object",
            ),
            (400, "post", wfs(), json!("prompt"), "must be a JSON object"),
            (
                400,
                "post",
                wfs(),
                json!({ "system_prompt": 5 }),
                "system_prompt: expected a string",
            ),
            (
                400,
                "post",
                wfs(),
                json!({ "system_prompt": "x", "id": "nope" }),
                "id: invalid UUID",
            ),
            (
                400,
                "post",
                wfs(),
                json!({ "system_prompt": "x", "metadata": [1] }),
                "metadata: expected an object",
            ),
            (
                400,
                "post",
                wfs(),
                json!({ "metadata": {} }),
                "missing field \"system_prompt\"",
            ),
            (
                400,
                "post",
                wfs(),
                json!({ "system_prompt": "x", "colour": 1 }),
                "unknown field \"colour\"",
            ),
            (
                400,
                "post",
                wfs(),
                json!({ "system_prompt": "nul \u{0} prompt" }),
                "system_prompt: U+0000",
            ),
            (
                400,
                "post",
                wfs(),
                json!({ "system_prompt": "x", "user_id": "a\u{0}" }),
                "user_id: U+0000",
            ),
            (
                400,
                "post",
                wfs(),
                json!({ "system_prompt": "x", "metadata": { "k": ["a", "b\u{0}"] } }),
                "metadata.k[1]: U+0000",
            ),
            (
                400,
                "post",
                wfs(),
                json!({ "system_prompt": "x", "metadata": { "k\u{0}": 1 } }),
                "metadata key",
            ),
            (
                400,
                "raw",
                wfs(),
                json!(r#"{"system_prompt": "lone \ud800 surrogate"}"#),
                "system_prompt: invalid JSON",
            ),
            (
                400,
                "raw",
                wfs(),
                json!(r#"{"system_prompt": "x"} {}"#),
                "invalid JSON: trailing characters",
            ),
            (
                413,
                "post",
                wfs(),
                json!({ "system_prompt": "x", "metadata": { "big": "m".repeat(70_000) } }),
                "metadata is 70010 bytes; the limit is 65536",
            ),
        ],
    )
    .await;

    let (s, view) = srv.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(view["status"], "running");
    assert_eq!(view["root_id"], created["root_id"]);
    assert_eq!(view["node_count"], 1);
    assert_eq!(view["branch_count"], 1);
    assert_eq!(view["heads"], json!([created["root_id"]]));
    assert_eq!(view["metadata"]["repo"], "arbor");
    assert_eq!(view["last_seq"], 1);
    let (s, _) = srv
        .get("/v1/workflows/0190f0a0-0000-7000-8000-0000000000ff")
        .await;
    assert_eq!(s, 404);
    let (s, _) = srv.get("/v1/workflows/not-a-uuid").await;
    assert_eq!(s, 400);

    // Status: running → waiting → completed; terminal refuses changes.
    let (s, v) = srv
        .patch(
            &format!("/v1/workflows/{id}"),
            json!({ "status": "waiting" }),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("waiting")));
    let (s, _) = srv
        .patch(
            &format!("/v1/workflows/{id}"),
            json!({ "status": "waiting" }),
        )
        .await;
    assert_eq!(s, 200, "same status is a no-op");
    refuse_all(
        &srv,
        vec![
            (
                400,
                "patch",
                format!("/v1/workflows/{id}").to_string(),
                json!({ "status": "sleeping" }),
            ),
            (
                404,
                "patch",
                "/v1/workflows/0190f0a0-0000-7000-8000-0000000000ff".to_string(),
                json!({ "status": "waiting" }),
            ),
        ],
    )
    .await;
    let (s, _) = srv
        .patch(
            &format!("/v1/workflows/{id}"),
            json!({ "status": "completed" }),
        )
        .await;
    assert_eq!(s, 200);
    refuse_all(
        &srv,
        vec![(
            409,
            "patch",
            format!("/v1/workflows/{id}").to_string(),
            json!({ "status": "running" }),
        )],
    )
    .await;
    let root = created["root_id"].as_str().unwrap();
    refuse_all(
        &srv,
        vec![(
            409,
            "post",
            format!("/v1/workflows/{id}/nodes").to_string(),
            json!({ "parent_id": root, "type": "message", "content": "late" }),
        )],
    )
    .await;
}

#[tokio::test]
async fn list_paginates_newest_first_with_filters() {
    let srv = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let user = if i % 2 == 0 { "even" } else { "odd" };
        let (s, b) = srv
            .post(
                "/v1/workflows",
                json!({ "system_prompt": format!("p{i}"), "user_id": user }),
            )
            .await;
        assert_eq!(s, 201);
        ids.push(b["workflow_id"].as_str().unwrap().to_owned());
    }
    let (_, w) = srv
        .patch(
            &format!("/v1/workflows/{}", ids[3]),
            json!({ "status": "failed" }),
        )
        .await;
    assert_eq!(w["status"], "failed");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/workflows?limit=3&cursor={c}"),
            None => "/v1/workflows?limit=3".to_owned(),
        };
        let (s, page) = srv.get(&path).await;
        assert_eq!(s, 200, "{page}");
        for w in page["workflows"].as_array().unwrap() {
            seen.push(w["workflow_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let (_, odd) = srv.get("/v1/workflows?user_id=odd").await;
    assert_eq!(odd["workflows"].as_array().unwrap().len(), 3);
    let (_, failed) = srv.get("/v1/workflows?status=failed").await;
    assert_eq!(failed["workflows"][0]["workflow_id"], ids[3].as_str());
    assert_eq!(failed["workflows"].as_array().unwrap().len(), 1);
    for bad in [
        "limit=0",
        "limit=5000",
        "cursor=abc",
        "status=asleep",
        "colour=red",
    ] {
        let (s, _) = srv.get(&format!("/v1/workflows?{bad}")).await;
        assert_eq!(s, 400, "{bad}");
    }
}

#[tokio::test]
async fn nodes_single_batch_idempotency_and_errors() {
    let srv = TestServer::start_with(|c| {
        c.limits.max_content_bytes = 1000;
        c.limits.max_batch_nodes = 5;
        c.limits.max_payload_bytes = 1000;
        c.limits.max_metadata_bytes = 500;
    })
    .await;
    let (wf, root) = srv.workflow("system").await;
    let (other_wf, other_root) = srv.workflow("other").await;
    let nid = "0190f0a0-0000-7000-8000-00000000a001";
    let body = json!({ "id": nid, "parent_id": root, "type": "message", "role": "user", "content": "hi", "payload": {"k": [1, 2]}, "metadata": {"m": true}, "agent_id": "a1", "user_id": "u1" });
    let (s, node) = srv
        .post(&format!("/v1/workflows/{wf}/nodes"), body.clone())
        .await;
    assert_eq!(s, 201, "{node}");
    for field in [
        "id",
        "workflow_id",
        "parent_id",
        "type",
        "role",
        "content",
        "payload",
        "metadata",
        "agent_id",
        "user_id",
        "branch_id",
        "depth",
        "seq",
        "timestamp",
    ] {
        assert!(node.get(field).is_some(), "node lacks {field}: {node}");
    }
    assert_eq!(node["depth"], 1);
    assert_eq!(
        node["branch_id"],
        root.as_str(),
        "first child continues the root branch"
    );
    assert!(node["timestamp"].as_str().unwrap().ends_with('Z'));
    let (s, again) = srv.post(&format!("/v1/workflows/{wf}/nodes"), body).await;
    assert_eq!(
        (s, &again),
        (200, &node),
        "identical replay returns the stored node"
    );

    let nodes = format!("/v1/workflows/{wf}/nodes");
    refuse_all(
        &srv,
        vec![
            (409, "post", nodes.to_string(), json!({ "id": nid, "parent_id": root, "type": "message", "content": "changed" })),
            (422, "post", nodes.to_string(), json!({ "parent_id": "0190f0a0-0000-7000-8000-00000000ffff", "type": "message", "content": "x" })),
            (422, "post", nodes.to_string(), json!({ "parent_id": other_root, "type": "message", "content": "x" })),
            (404, "post", "/v1/workflows/0190f0a0-0000-7000-8000-00000000ffff/nodes".to_string(), json!({ "parent_id": root, "type": "message", "content": "x" })),
            (400, "post", nodes.to_string(), json!({ "parent_id": root, "type": "Message", "content": "x" })),
            (400, "post", nodes.to_string(), json!({ "parent_id": root, "type": "system", "content": "x" })),
            (400, "post", nodes.to_string(), json!({ "parent_id": root, "type": "message", "content": "x", "role": "robot" })),
            (400, "post", nodes.to_string(), json!({ "parent_id": root, "type": "message", "content": "x", "extra": 1 })),
            (400, "post", nodes.to_string(), json!({ "parent_id": root, "type": "message" })),
            (413, "post", nodes.to_string(), json!({ "parent_id": root, "type": "message", "content": "x".repeat(1001) })),
            (409, "post", nodes.to_string(), json!({ "parent_id": root, "type": "message", "content": "x", "expect_leaf": true })),
        ],
    )
    .await;
    let big = "x".repeat(1000);
    let node = |extra: Value| {
        let mut n = json!({ "parent_id": root, "type": "message", "content": "x" });
        n.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        n
    };
    let batch_of = |second: Value| json!({ "nodes": [node(json!({})), second] });
    let batch = format!("/v1/workflows/{wf}/nodes/batch");
    refuse_naming(
        &srv,
        vec![
            (400, "post", nodes.clone(), json!([null, root, "message", null, "x"]), "must be a JSON object"),
            (400, "post", nodes.clone(), node(json!({ "content": 5 })), "content: expected a string"),
            (400, "post", nodes.clone(), node(json!({ "parent_id": "x" })), "parent_id: invalid UUID"),
            (400, "post", nodes.clone(), node(json!({ "expect_leaf": "yes" })), "expect_leaf: expected a boolean"),
            (400, "post", nodes.clone(), node(json!({ "metadata": "m" })), "metadata: expected an object"),
            (400, "post", nodes.clone(), node(json!({ "content": "nul \u{0} content" })), "content: U+0000"),
            (400, "post", nodes.clone(), node(json!({ "payload": { "a": [{ "b": "\u{0}" }] } })), "payload.a[0].b: U+0000"),
            (400, "post", nodes.clone(), node(json!({ "metadata": { "k": "v\u{0}" } })), "metadata.k: U+0000"),
            (400, "post", nodes.clone(), node(json!({ "agent_id": "\u{0}" })), "agent_id: U+0000"),
            (400, "raw", nodes.clone(), json!(format!(r#"{{"parent_id": "{root}", "type": "message", "content": "\udc00"}}"#)), "content: invalid JSON: lone"),
            (400, "raw", nodes.clone(), json!(format!(r#"{{"parent_id": "{root}", "type": "message", "content": "x", "payload": {{"a": [1, {{"n": 18446744073709551616}}]}}}}"#)), "payload.a[1].n: integer 18446744073709551616 is beyond the 64-bit range"),
            (400, "raw", nodes.clone(), json!(format!(r#"{{"parent_id": "{root}", "type": "message", "content": "x", "metadata": {{"k \"q\"": -9223372036854775809}}}}"#)), "metadata.k \"q\": integer -9223372036854775809"),
            (400, "raw", nodes.clone(), json!(format!(r#"{{"parent_id": "{root}", "type": "message", "content": "x", "payload": 1e400}}"#)), "payload: invalid JSON: number out of range"),
            (413, "post", nodes.clone(), node(json!({ "payload": { "p": big } })), "payload is 1008 bytes; the limit is 1000"),
            (413, "post", nodes.clone(), node(json!({ "metadata": { "m": big } })), "metadata is 1008 bytes; the limit is 500"),
            (400, "post", batch.clone(), json!({ "nodes": [node(json!({})), [null, root, "message"]] }), "nodes[1]: expected an object, not an array"),
            (400, "post", batch.clone(), json!([[null, root, "message"]]), "must be a JSON object"),
            (400, "post", batch.clone(), batch_of(node(json!({ "parent_id": 7 }))), "nodes[1].parent_id: expected a UUID string, not number"),
            (400, "post", batch.clone(), json!({ "nodes": [node(json!({})), node(json!({})), node(json!({})), node(json!({ "parent_id": "bad" }))] }), "nodes[3].parent_id: invalid UUID"),
            (400, "post", batch.clone(), batch_of(node(json!({ "content": "\u{0}" }))), "nodes[1].content: U+0000"),
            (413, "post", batch.clone(), batch_of(node(json!({ "payload": [big] }))), "nodes[1].payload is 1004 bytes"),
            (413, "post", batch.clone(), batch_of(node(json!({ "metadata": { "m": big } }))), "nodes[1].metadata is 1008 bytes"),
        ],
    )
    .await;
    // Every other character reaches the API's echo as it was sent.
    let odd = json!({ "content": "tab\t bell\u{7} esc\u{1b} del\u{7f} emoji 🌳 CJK 木 RTL שלום \u{202e}", "metadata": { "": 1, "a.b": 2, "$k": 3, "`x`": 4, "🌳": 5 }, "payload": { "f": 0.1, "big": 9_007_199_254_740_993_u64, "neg": i64::MIN, "max": u64::MAX } });
    let (s, echoed) = srv.post(&nodes, node(odd.clone())).await;
    assert_eq!(s, 201, "{echoed}");
    for f in ["content", "metadata", "payload"] {
        assert_eq!(echoed[f], odd[f], "{f} echoed as sent");
    }
    // expect_leaf on a real leaf works.
    let (s, _) = srv
        .post(
            &nodes,
            json!({ "parent_id": nid, "type": "message", "content": "x", "expect_leaf": true }),
        )
        .await;
    assert_eq!(s, 201);
    let _ = other_wf;

    // Batch: parents may be earlier items; atomic on failure.
    let batch = format!("/v1/workflows/{wf}/nodes/batch");
    let a = "0190f0a0-0000-7000-8000-00000000b001";
    let b = "0190f0a0-0000-7000-8000-00000000b002";
    let bad = refuse_all(
     &srv,
     vec![
         (422, "post", batch.to_string(), json!({ "nodes": [
            { "id": a, "parent_id": root, "type": "action", "content": "ls" },
            { "id": b, "parent_id": a, "type": "message", "content": "ok" },
            { "parent_id": "0190f0a0-0000-7000-8000-00000000ffff", "type": "message", "content": "orphan" },
        ] })),
     ],
 )
 .await;
    assert!(
        bad["detail"].as_str().unwrap().contains("not a node"),
        "{bad}"
    );
    let (s, _) = srv.get(&format!("/v1/nodes/{a}")).await;
    assert_eq!(s, 404, "nothing of a refused batch is stored");
    let good = json!({ "nodes": [
        { "id": a, "parent_id": root, "type": "action", "content": "ls" },
        { "id": b, "parent_id": a, "type": "message", "content": "ok" },
    ] });
    let (s, stored) = srv.post(&batch, good.clone()).await;
    assert_eq!(s, 201, "{stored}");
    assert_eq!(stored["nodes"][1]["depth"], 2);
    assert_eq!(
        stored["nodes"][0]["branch_id"], a,
        "second child of the root starts a branch"
    );
    let (s, replay) = srv.post(&batch, good).await;
    assert_eq!((s, &replay), (200, &stored));
    refuse_all(
        &srv,
        vec![
            (400, "post", batch.to_string(), json!({ "nodes": [] })),
            (400, "post", batch.to_string(), json!({ "nodes": [
        { "id": "0190f0a0-0000-7000-8000-00000000c001", "parent_id": root, "type": "message", "content": "1" },
        { "id": "0190f0a0-0000-7000-8000-00000000c001", "parent_id": root, "type": "message", "content": "2" },
    ] })),
        ],
    )
    .await;
    let six: Vec<Value> = (0..6)
        .map(|i| json!({ "parent_id": root, "type": "message", "content": i.to_string() }))
        .collect();
    refuse_all(
        &srv,
        vec![(413, "post", batch.to_string(), json!({ "nodes": six }))],
    )
    .await;
}

#[tokio::test]
async fn edges_choices_and_every_query() {
    let srv = TestServer::start().await;
    let (wf, root) = srv.workflow("You are an agent.").await;
    let user = srv.node(&wf, &root, "message", "fix the bug").await;
    let decision = srv.node(&wf, &user, "decision", "which fix?").await;
    let o1 = srv.node(&wf, &decision, "option", "patch").await;
    let o2 = srv.node(&wf, &decision, "option", "rewrite").await;
    let o3 = srv.node(&wf, &decision, "option", "revert").await;
    let work = srv.node(&wf, &o1, "action", "apply patch").await;
    let monitor = srv
        .node(&wf, &o2, "monitor", "watch the patch branch")
        .await;
    let (s, r) = srv
        .post(
            &format!("/v1/workflows/{wf}/nodes"),
            json!({ "parent_id": work, "type": "message", "role": "assistant", "content": "done" }),
        )
        .await;
    assert_eq!(s, 201);
    let answer = r["id"].as_str().unwrap().to_owned();

    let edges = format!("/v1/workflows/{wf}/edges");
    let (s, e) = srv
        .post(
            &edges,
            json!({ "type": "MONITORS", "from": monitor, "to": work }),
        )
        .await;
    assert_eq!(s, 201, "{e}");
    assert_eq!(e["type"], "MONITORS");
    let (s, _) = srv
        .post(
            &edges,
            json!({ "type": "MONITORS", "from": monitor, "to": work }),
        )
        .await;
    assert_eq!(s, 200, "the same edge again is a replay");
    refuse_all(
        &srv,
        vec![
            (400, "post", edges.to_string(), json!({ "type": "LIKES", "from": monitor, "to": work })),
            (400, "post", edges.to_string(), json!({ "type": "PARENT_OF", "from": root, "to": work })),
            (422, "post", edges.to_string(), json!({ "type": "MONITORS", "from": user, "to": work })),
            (422, "post", edges.to_string(), json!({ "type": "MONITORS", "from": monitor, "to": "0190f0a0-0000-7000-8000-00000000ffff" })),
            (422, "post", edges.to_string(), json!({ "type": "OPTION_OF", "from": decision, "to": work })),
            (404, "post", "/v1/workflows/0190f0a0-0000-7000-8000-00000000ffff/edges".to_string(), json!({ "type": "MONITORS", "from": monitor, "to": work })),
        ],
    )
    .await;

    // Choose.
    let (s, c) = srv
        .post(
            &format!("/v1/nodes/{decision}/choose"),
            json!({ "option_id": o1 }),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["type"], "CHOSEN_OPTION");
    let (s, _) = srv
        .post(
            &format!("/v1/nodes/{decision}/choose"),
            json!({ "option_id": o1 }),
        )
        .await;
    assert_eq!(s, 200, "choosing the same option again is a no-op");
    refuse_all(
        &srv,
        vec![
            (
                409,
                "post",
                format!("/v1/nodes/{decision}/choose").to_string(),
                json!({ "option_id": o2 }),
            ),
            (
                422,
                "post",
                format!("/v1/nodes/{decision}/choose").to_string(),
                json!({ "option_id": work }),
            ),
            (
                422,
                "post",
                format!("/v1/nodes/{user}/choose").to_string(),
                json!({ "option_id": o1 }),
            ),
            (
                404,
                "post",
                "/v1/nodes/0190f0a0-0000-7000-8000-00000000ffff/choose".to_string(),
                json!({ "option_id": o1 }),
            ),
            (
                409,
                "post",
                edges.to_string(),
                json!({ "type": "CHOSEN_OPTION", "from": decision, "to": o3 }),
            ),
        ],
    )
    .await;

    // Node with edges.
    let (s, n) = srv.get(&format!("/v1/nodes/{decision}")).await;
    assert_eq!(s, 200);
    let out: Vec<(String, String)> = n["edges"]["out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(out.contains(&("OPTION_OF".into(), o2.clone())));
    assert!(out.contains(&("CHOSEN_OPTION".into(), o1.clone())));
    assert!(out.contains(&("PARENT_OF".into(), o3.clone())));
    assert_eq!(n["edges"]["in"][0]["type"], "PARENT_OF");
    assert_eq!(n["edges"]["in"][0]["from"], user.as_str());

    // Path.
    let (s, p) = srv.get(&format!("/v1/nodes/{answer}/path")).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = p["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [&root, &user, &decision, &o1, &work, &answer].map(String::as_str)
    );
    let (_, m) = srv
        .get(&format!("/v1/nodes/{answer}/path?format=messages"))
        .await;
    assert_eq!(
        m["messages"],
        json!([{ "role": "system", "content": "You are an agent." }, { "role": "assistant", "content": "done" }])
    );
    let (s, _) = srv
        .get(&format!("/v1/nodes/{answer}/path?format=xml"))
        .await;
    assert_eq!(s, 400);
    let (s, _) = srv
        .get("/v1/nodes/0190f0a0-0000-7000-8000-00000000ffff/path")
        .await;
    assert_eq!(s, 404);

    // Children and subtree.
    let (_, ch) = srv.get(&format!("/v1/nodes/{decision}/children")).await;
    let ch: Vec<&str> = ch["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ch, [o1.as_str(), o2.as_str(), o3.as_str()]);
    let (_, st) = srv.get(&format!("/v1/nodes/{decision}/subtree")).await;
    let st: Vec<&str> = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        st,
        [&decision, &o1, &o2, &o3, &work, &monitor, &answer].map(String::as_str),
        "breadth-first"
    );
    let (_, st1) = srv
        .get(&format!("/v1/nodes/{decision}/subtree?max_depth=1"))
        .await;
    assert_eq!(st1["nodes"].as_array().unwrap().len(), 4);
    let (s, _) = srv
        .get(&format!("/v1/nodes/{decision}/subtree?max_depth=-1"))
        .await;
    assert_eq!(s, 400);
    for q in ["children", "subtree"] {
        let (s, _) = srv
            .get(&format!(
                "/v1/nodes/0190f0a0-0000-7000-8000-00000000ffff/{q}"
            ))
            .await;
        assert_eq!(s, 404);
    }

    // Decisions.
    let (_, d) = srv.get(&format!("/v1/workflows/{wf}/decisions")).await;
    let d0 = &d["decisions"][0];
    assert_eq!(d0["decision"]["id"], decision.as_str());
    assert_eq!(d0["options"].as_array().unwrap().len(), 3);
    assert_eq!(d0["chosen"]["id"], o1.as_str());

    // Branches: root branch (root, user, decision, o1, work, answer), o2's (o2, monitor), o3's.
    let (_, b) = srv.get(&format!("/v1/workflows/{wf}/branches")).await;
    let b = b["branches"].as_array().unwrap().clone();
    assert_eq!(b.len(), 3);
    assert_eq!(b[0]["branch_id"], root.as_str());
    assert_eq!(b[0]["fork_node_id"], Value::Null);
    assert_eq!(b[0]["head_id"], answer.as_str());
    assert_eq!(b[0]["length"], 6);
    assert_eq!(b[1]["branch_id"], o2.as_str());
    assert_eq!(b[1]["fork_node_id"], decision.as_str());
    assert_eq!(b[1]["head_id"], monitor.as_str());
    let (s, summary) = srv.get(&format!("/v1/workflows/{wf}/branches/{o2}")).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["content"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rewrite", "watch the patch branch"]);
    let (s, _) = srv
        .get(&format!("/v1/workflows/{wf}/branches/{user}"))
        .await;
    assert_eq!(s, 404, "a node that starts no branch is not a branch id");

    // Monitors.
    let (_, mons) = srv
        .get(&format!("/v1/workflows/{wf}/monitors?cross_branch=true"))
        .await;
    assert_eq!(mons["monitors"][0]["monitor"]["id"], monitor.as_str());
    assert_eq!(mons["monitors"][0]["target"]["id"], work.as_str());

    // Replay from the log.
    let (_, ev) = srv.get(&format!("/v1/workflows/{wf}/events?limit=3")).await;
    let evs = ev["events"].as_array().unwrap();
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[0]["kind"], "workflow.created");
    assert_eq!(evs[1]["kind"], "node.created");
    assert_eq!(evs[1]["prev_hash"], evs[0]["hash"]);
    let next = ev["next_after"].as_u64().unwrap();
    let (_, rest) = srv
        .get(&format!("/v1/workflows/{wf}/events?after={next}"))
        .await;
    let total = 3 + rest["events"].as_array().unwrap().len();
    assert_eq!(
        total as u64,
        srv.head().await,
        "one workflow: every event is its own"
    );
    for (path, code) in [
        (format!("/v1/workflows/{wf}/events?limit=0"), 400),
        (
            "/v1/workflows/0190f0a0-0000-7000-8000-00000000ffff/events".to_owned(),
            404,
        ),
        (
            "/v1/workflows/0190f0a0-0000-7000-8000-00000000ffff/decisions".to_owned(),
            404,
        ),
        (
            "/v1/workflows/0190f0a0-0000-7000-8000-00000000ffff/branches".to_owned(),
            404,
        ),
        (
            "/v1/workflows/0190f0a0-0000-7000-8000-00000000ffff/monitors".to_owned(),
            404,
        ),
        ("/v1/nope".to_owned(), 404),
    ] {
        assert_eq!(srv.get(&path).await.0, code, "{path}");
    }

    // One rule for every route's query: an unknown parameter, and each real parameter
    // malformed, is a 400 naming the parameter.
    let too_many = vec![user.as_str(); 501].join(",");
    let routes: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/v1/workflows".into(),
            vec![
                ("limit", "abc"),
                ("limit", "0"),
                ("cursor", "abc"),
                ("status", "sleeping"),
            ],
        ),
        (format!("/v1/workflows/{wf}"), vec![]),
        (format!("/v1/workflows/{wf}/decisions"), vec![]),
        (format!("/v1/workflows/{wf}/branches"), vec![]),
        (format!("/v1/workflows/{wf}/branches/{o2}"), vec![]),
        (
            format!("/v1/workflows/{wf}/monitors"),
            vec![("cross_branch", "maybe")],
        ),
        (
            format!("/v1/workflows/{wf}/events"),
            vec![("after", "-1"), ("limit", "abc"), ("limit", "0")],
        ),
        (format!("/v1/workflows/{wf}/outline"), vec![]),
        (
            format!("/v1/workflows/{wf}/labels"),
            vec![("ids", "zz"), ("ids", ""), ("ids", too_many.as_str())],
        ),
        (format!("/v1/workflows/{wf}/stream"), vec![("after", "x")]),
        ("/v1/stream".into(), vec![("after", "1.5")]),
        (format!("/v1/nodes/{user}"), vec![]),
        (format!("/v1/nodes/{user}/path"), vec![("format", "xml")]),
        (format!("/v1/nodes/{user}/children"), vec![]),
        (
            format!("/v1/nodes/{user}/subtree"),
            vec![("max_depth", "deep")],
        ),
        ("/healthz".into(), vec![]),
        ("/readyz".into(), vec![]),
        ("/v1/health".into(), vec![]),
        ("/metrics".into(), vec![]),
    ];
    for (route, params) in routes {
        let bad = [("bogus", "1")].into_iter().chain(params);
        for (param, value) in bad {
            let url = format!("{route}?{param}={value}");
            let (s, b) = srv.get(&url).await;
            assert_eq!(s, 400, "{url}: {b}");
            let detail = b["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains(param),
                "{url}: {detail:?} does not name {param}"
            );
        }
    }
    // Labels: the first line of the content of the workflow's nodes asked for; an id of
    // no node of this workflow is left out, not an error.
    let ghost = "0190f0a0-0000-7000-8000-00000000ffff";
    let (s, b) = srv
        .get(&format!("/v1/workflows/{wf}/labels?ids={user},{ghost}"))
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, node) = srv.get(&format!("/v1/nodes/{user}")).await;
    let content = node["content"].as_str().unwrap().trim_start();
    let first: String = content
        .split('\n')
        .next()
        .unwrap()
        .chars()
        .take(240)
        .collect();
    assert_eq!(b, json!({ "labels": { user.as_str(): first } }));
    // The outline: every node of the workflow once, root first, parents before
    // children, types by name; the head is the log's.
    let (s, o) = srv.get(&format!("/v1/workflows/{wf}/outline")).await;
    assert_eq!(s, 200, "{o}");
    let (_, view) = srv.get(&format!("/v1/workflows/{wf}")).await;
    let ids = o["nodes"]["id"].as_array().unwrap();
    assert_eq!(json!(ids.len()), view["node_count"]);
    assert_eq!(ids[0], view["root_id"]);
    assert_eq!(
        o["types"][o["nodes"]["type"][0].as_u64().unwrap() as usize],
        "system"
    );
    let at = ids.iter().position(|i| *i == json!(user)).unwrap();
    assert_eq!(o["nodes"]["parent"][at], json!(0), "{o}");
    assert_eq!(
        o["types"][o["nodes"]["type"][at].as_u64().unwrap() as usize],
        "message"
    );
    assert_eq!(o["head"], json!(srv.head().await));
    let (s, b) = srv
        .get(&format!("/v1/nodes/{user}/children?limit=abc&bogus=1"))
        .await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let srv = TestServer::start().await;
    let (wf, root) = srv.workflow("p").await;
    srv.node(&wf, &root, "message", "m").await;
    assert_eq!(srv.get("/healthz").await.0, 200);
    assert_eq!(srv.get("/readyz").await.0, 200);
    let (s, h) = srv.get("/v1/health").await;
    assert_eq!(s, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["components"]["index"]["nodes"], 2);
    // The root's path twice: loaded from disk once, then from the node cache.
    for _ in 0..2 {
        let (s, p) = srv.get(&format!("/v1/nodes/{root}/path")).await;
        assert_eq!(s, 200);
        assert_eq!(p["nodes"][0]["id"], root.to_string());
    }
    let text = srv
        .client
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "arbor_append_latency_seconds_bucket",
        "arbor_group_commit_events_bucket",
        "arbor_events_total 2",
        "arbor_index_nodes 2",
        "arbor_sse_subscribers 0",
        "arbor_node_cache_hits_total 1",
        "arbor_node_cache_misses_total 1",
        "arbor_node_cache_entries 1",
        "arbor_node_cache_capacity_bytes 268435456",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
}

/// `GET path`'s status, content type and body bytes.
async fn get_raw(srv: &TestServer, path: &str) -> (u16, String, Vec<u8>) {
    let r = srv.client.get(srv.url(path)).send().await.unwrap();
    let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
    (
        r.status().as_u16(),
        ctype,
        r.bytes().await.unwrap().to_vec(),
    )
}

/// POSTs a batch; the answer's bytes (serialized by type, as `{nodes}` reads were
/// before they answered from rendered texts).
async fn batch_raw(srv: &TestServer, wf: &str, nodes: Value) -> Vec<u8> {
    let r = srv
        .client
        .post(srv.url(&format!("/v1/workflows/{wf}/nodes/batch")))
        .json(&json!({ "nodes": nodes }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.bytes().await.unwrap().to_vec()
}

/// Each (path, body) answers 200, `application/json`, with exactly that body.
async fn check_bodies(srv: &TestServer, round: &str, cases: &[(String, Vec<u8>)]) {
    for (path, want) in cases {
        let (s, ctype, got) = get_raw(srv, path).await;
        assert_eq!(
            (s, ctype.as_str()),
            (200, "application/json"),
            "{round} {path}"
        );
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "{round}: {path}"
        );
    }
}

/// `…/path`, `…/children` and `…/subtree` join node texts the node cache rendered
/// once: their bytes must be exactly what serializing the nodes gives (the batch
/// answer of the same nodes), read from disk, from the cache, after a node was cached
/// without its text, and after a restart.
#[tokio::test]
async fn node_lists_are_the_bytes_serializing_the_nodes_gives() {
    let mut srv = TestServer::start().await;
    let (wf, root) = srv.workflow("p").await;
    let [a, b, c] = [0; 3].map(|_| uuid::Uuid::now_v7().to_string());
    let rich = |id: &str, parent: &str, i: u32| {
        json!({
            "id": id, "parent_id": parent, "type": "message", "role": "assistant",
            "content": format!("\"quoted\" {i}\n\ttab é 😀 \u{1} </script>"),
            "payload": {"tool": "bash", "args": [i, 0.5, null, true], "z": {}},
            "metadata": {"b": {"nested": ["x"]}, "a": -7},
            "agent_id": "agent-1", "user_id": "u",
        })
    };
    // A chain root → a → b → c in one batch; then three children of c in another.
    let chain = batch_raw(
        &srv,
        &wf,
        json!([rich(&a, &root, 1), rich(&b, &a, 2), rich(&c, &b, 3)]),
    )
    .await;
    let plain = json!({ "parent_id": c, "type": "action", "content": "" });
    let [x, y] = [0; 2].map(|_| uuid::Uuid::now_v7().to_string());
    let kids = batch_raw(&srv, &wf, json!([rich(&x, &c, 4), plain, rich(&y, &c, 5)])).await;
    let inner = |list: &[u8]| list[b"{\"nodes\":[".len()..list.len() - 2].to_vec();
    let (_, _, root_path) = get_raw(&srv, &format!("/v1/nodes/{root}/path")).await;
    let mut path_c = root_path[..root_path.len() - 2].to_vec();
    path_c.push(b',');
    path_c.extend(inner(&chain));
    path_c.extend(b"]}");
    let cases = [
        (format!("/v1/nodes/{c}/path"), path_c),
        (format!("/v1/nodes/{a}/subtree?max_depth=2"), chain),
        (format!("/v1/nodes/{c}/children"), kids),
        (
            format!("/v1/nodes/{y}/children"),
            b"{\"nodes\":[]}".to_vec(),
        ),
    ];
    check_bodies(&srv, "from disk", &cases).await;
    check_bodies(&srv, "from the cache", &cases).await;
    srv.restart().await;
    // Cached without their text first (a single-node read), then rendered in place.
    for id in [&a, &b, &c] {
        assert_eq!(srv.get(&format!("/v1/nodes/{id}")).await.0, 200);
    }
    check_bodies(&srv, "after a restart", &cases).await;
    check_bodies(&srv, "after a restart, cached", &cases).await;
    let (_, m) = srv
        .get(&format!("/v1/nodes/{c}/path?format=messages"))
        .await;
    assert_eq!(m["messages"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut srv = TestServer::start().await;
    let (wf, root) = srv.workflow("p").await;
    let a = srv.node(&wf, &root, "message", "a").await;
    let b = srv.node(&wf, &root, "message", "b").await;
    let (_, before) = srv.get(&format!("/v1/workflows/{wf}")).await;
    let (_, path_before) = srv.get(&format!("/v1/nodes/{b}/path")).await;
    srv.restart().await;
    let (_, after) = srv.get(&format!("/v1/workflows/{wf}")).await;
    assert_eq!(before, after);
    let (_, path_after) = srv.get(&format!("/v1/nodes/{b}/path")).await;
    assert_eq!(path_before, path_after);
    let c = srv.node(&wf, &a, "message", "c").await;
    let (_, n) = srv.get(&format!("/v1/nodes/{c}")).await;
    assert_eq!(n["seq"], 4, "seqs continue gap-free after a restart");
}

#[tokio::test]
async fn finished_workflows_refuse_new_work_but_answer_replays() {
    let srv = TestServer::start().await;
    let (wf, root) = srv.workflow("p").await;
    let nodes = format!("/v1/workflows/{wf}/nodes");
    let body = json!({ "id": "0190f0a0-0000-7000-8000-00000000d001", "parent_id": root, "type": "monitor", "content": "m" });
    assert_eq!(srv.post(&nodes, body.clone()).await.0, 201);
    let target = srv.node(&wf, &root, "message", "t").await;
    let edge =
        json!({ "type": "MONITORS", "from": "0190f0a0-0000-7000-8000-00000000d001", "to": target });
    let edges = format!("/v1/workflows/{wf}/edges");
    assert_eq!(srv.post(&edges, edge.clone()).await.0, 201);
    assert_eq!(
        srv.patch(
            &format!("/v1/workflows/{wf}"),
            json!({ "status": "cancelled" })
        )
        .await
        .0,
        200
    );
    // A client retrying after a lost acknowledgement still gets the stored result.
    assert_eq!(srv.post(&nodes, body).await.0, 200);
    assert_eq!(srv.post(&edges, edge).await.0, 200);
    refuse_all(
        &srv,
        vec![
            (409, "post", edges.to_string(), json!({ "type": "MONITORS", "from": "0190f0a0-0000-7000-8000-00000000d001", "to": root })),
        ],
    )
    .await;
}
