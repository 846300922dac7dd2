//! Token scope (DESIGN §8 "Scope"): a token limited to workflows sees nothing of the
//! others (404, exactly as for a workflow that does not exist; left out of lists,
//! replays and streams); a token limited to branches sees the nodes of those branches
//! and their ancestors, in every read and stream, and appends only on its branches.
//!
//! The table test runs the real binary (`arbor serve`), with tokens made through the
//! API; the property test builds random trees and scopes on an in-process server and
//! checks every read against a naive model (visible = nodes of the listed branches and
//! their ancestors).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use arbor_testkit::serve::KillOnDrop;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use uuid::Uuid;

use arbor::auth::role::Role;
use arbor::auth::token::{issue, NewToken};
use common::{SseReader, TestServer};

/// A JSON client with an optional bearer token.
#[derive(Clone)]
struct Api {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            client: reqwest::Client::new(),
            token: None,
        }
    }

    fn with(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(m, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        common::decode(req.send().await.expect("send")).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    /// Appends a node (201 expected); returns its id.
    async fn node(&self, wf: &str, parent: &str, ty: &str) -> String {
        let (s, b) = self
            .post(
                &format!("/v1/workflows/{wf}/nodes"),
                json!({ "parent_id": parent, "type": ty, "content": ty }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["id"].as_str().expect("id").to_owned()
    }

    /// Sets workflow `wf`'s status; returns the HTTP status.
    async fn status(&self, wf: &str, status: &str) -> u16 {
        let path = format!("/v1/workflows/{wf}");
        self.call("PATCH", &path, Some(json!({ "status": status })))
            .await
            .0
    }

    /// Appends a message with id `id` under `parent` in `wf`.
    async fn node_with_id(&self, wf: &str, id: &str, parent: &str) -> (u16, Value) {
        let body = json!({ "id": id, "parent_id": parent, "type": "message", "content": id });
        self.post(&format!("/v1/workflows/{wf}/nodes"), body).await
    }

    /// Opens the SSE stream at `path`, the token in the query.
    async fn stream(&self, path: &str) -> SseReader {
        let token = self.token.as_deref().expect("a token");
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}access_token={token}", self.base);
        SseReader::open(&self.client, &url, None).await
    }
}

/// `arbor serve` on a free loopback port; killed on drop.
struct Binary {
    _child: KillOnDrop,
    base: String,
}

impl Binary {
    fn start(dir: &Path) -> Binary {
        let (child, base) = common::spawn_serve(dir, ["--durability", "none"]);
        Binary {
            _child: KillOnDrop(child),
            base,
        }
    }
}

/// Makes a token through the API; returns its secret.
async fn token(admin: &Api, role: &str, workflows: &[&str], branches: &[&str]) -> String {
    let (s, t) = admin
        .post(
            "/v1/tokens",
            json!({ "name": role, "role": role, "workflows": workflows, "branches": branches }),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    t["token"].as_str().expect("secret").to_owned()
}

fn node_ids(v: &Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect()
}

fn set(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).clone()).collect()
}

/// Reads stream messages until one of kind `until`; returns the node ids of the
/// `node.created` events, after checking that ids (seqs) only increase.
async fn nodes_until(sse: &mut SseReader, until: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut last = 0;
    loop {
        let m = sse
            .next(Duration::from_secs(10))
            .await
            .expect("stream open");
        let id = m.id.expect("an id");
        assert!(id > last, "seqs increase: {id} after {last}");
        last = id;
        let data: Value = serde_json::from_str(&m.data).expect("json");
        match m.event.as_deref() {
            Some("node.created") => {
                seen.insert(data["body"]["id"].as_str().expect("id").to_owned());
            }
            Some(kind) if kind == until => return seen,
            _ => {}
        }
    }
}

/// `method pattern` (`{}` = the id) answers for `hidden` exactly what it answers for
/// `ghost`, an id that does not exist: 404, the same problem but for the id.
async fn answers_as_absent(
    api: &Api,
    (method, pattern, body): (&str, &str, &Option<Value>),
    hidden: &str,
    ghost: &str,
) {
    let (s, seen) = api
        .call(method, &pattern.replace("{}", hidden), body.clone())
        .await;
    let (t, absent) = api
        .call(method, &pattern.replace("{}", ghost), body.clone())
        .await;
    assert_eq!((s, t), (404, 404), "{method} {pattern}: {seen} / {absent}");
    assert_eq!(
        seen.to_string().replace(hidden, "X"),
        absent.to_string().replace(ghost, "X"),
        "{method} {pattern}: existence not revealed"
    );
}

#[tokio::test]
async fn scoped_tokens_against_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Binary::start(dir.path());
    let open = Api::new(&server.base);
    // Open mode: the first admin token through the API, then everything with it.
    let (s, first) = open
        .post("/v1/tokens", json!({ "name": "root", "role": "admin" }))
        .await;
    assert_eq!(s, 201, "{first}");
    let admin = open.with(first["token"].as_str().expect("secret"));

    // Workflow A:            root ─ m1 ─ a1 ─ a2 (decision) ─ o1 (option), o2 (option)
    //   branch B forks at m1:          └ b1 ─ b2 (monitor) ─ b3,  and c1 forks at b1
    let (s, w) = admin
        .post("/v1/workflows", json!({ "system_prompt": "A" }))
        .await;
    assert_eq!(s, 201, "{w}");
    let a = w["workflow_id"].as_str().expect("id").to_owned();
    let root = w["root_id"].as_str().expect("id").to_owned();
    let m1 = admin.node(&a, &root, "message").await;
    let a1 = admin.node(&a, &m1, "message").await;
    let a2 = admin.node(&a, &a1, "decision").await;
    let o1 = admin.node(&a, &a2, "option").await;
    let o2 = admin.node(&a, &a2, "option").await;
    let b1 = admin.node(&a, &m1, "message").await;
    let b2 = admin.node(&a, &b1, "monitor").await;
    let b3 = admin.node(&a, &b2, "message").await;
    let c1 = admin.node(&a, &b1, "message").await;
    for (from, to) in [(&b2, &a1), (&b2, &m1)] {
        let (s, e) = admin
            .post(
                &format!("/v1/workflows/{a}/edges"),
                json!({ "type": "MONITORS", "from": from, "to": to }),
            )
            .await;
        assert_eq!(s, 201, "{e}");
    }
    let (s, _) = admin
        .post(
            &format!("/v1/nodes/{a2}/choose"),
            json!({ "option_id": o1 }),
        )
        .await;
    assert_eq!(s, 200);
    // Workflow B, outside every scope below.
    let (_, w) = admin
        .post("/v1/workflows", json!({ "system_prompt": "B" }))
        .await;
    let b = w["workflow_id"].as_str().expect("id").to_owned();
    let b_root = w["root_id"].as_str().expect("id").to_owned();
    let b_node = admin.node(&b, &b_root, "message").await;

    let only_a = admin.with(&token(&admin, "writer", &[&a], &[]).await);
    let on_b = admin.with(&token(&admin, "writer", &[&a], &[&b1]).await);
    let admin_a = admin.with(&token(&admin, "admin", &[&a], &[]).await);

    // 1. Workflow scope: B answers exactly what a workflow that does not exist answers.
    let ghost = Uuid::now_v7().to_string();
    let labels_of_b = format!("/v1/workflows/{{}}/labels?ids={b_root}");
    let per_workflow = [
        ("GET", "/v1/workflows/{}", None),
        (
            "PATCH",
            "/v1/workflows/{}",
            Some(json!({ "status": "waiting" })),
        ),
        (
            "POST",
            "/v1/workflows/{}/nodes",
            Some(json!({ "parent_id": b_root, "type": "message", "content": "x" })),
        ),
        (
            "POST",
            "/v1/workflows/{}/nodes/batch",
            Some(json!({ "nodes": [{ "parent_id": b_root, "type": "message", "content": "x" }] })),
        ),
        (
            "POST",
            "/v1/workflows/{}/edges",
            Some(json!({ "type": "MONITORS", "from": b_node, "to": b_root })),
        ),
        ("GET", "/v1/workflows/{}/decisions", None),
        ("GET", "/v1/workflows/{}/branches", None),
        (
            "GET",
            &format!("/v1/workflows/{{}}/branches/{b_root}"),
            None,
        ),
        ("GET", "/v1/workflows/{}/monitors", None),
        ("GET", "/v1/workflows/{}/events", None),
        ("GET", "/v1/workflows/{}/outline", None),
        ("GET", &labels_of_b, None),
        ("GET", "/v1/workflows/{}/stream?after=0", None),
    ];
    for (method, pattern, body) in &per_workflow {
        answers_as_absent(&only_a, (method, pattern, body), &b, &ghost).await;
        // The same route on A is not refused by the scope (streams stay open, and B's
        // root is no branch of A).
        if pattern.contains("stream") || pattern.contains("branches/") {
            continue;
        }
        let (s, v) = only_a.call(method, &pattern.replace("{}", &a), None).await;
        assert!(s != 404 && s != 403, "{method} {pattern} on A: {s} {v}");
    }
    let per_node = [
        ("GET", "/v1/nodes/{}", None),
        ("GET", "/v1/nodes/{}/path", None),
        ("GET", "/v1/nodes/{}/children", None),
        ("GET", "/v1/nodes/{}/subtree", None),
        (
            "POST",
            "/v1/nodes/{}/choose",
            Some(json!({ "option_id": b_root })),
        ),
    ];
    // Read by the admin first, so that B's node is in the node cache: a cached node is
    // answered in place (no hop to the blocking pool), and must be as hidden.
    let (s, v) = admin.get(&format!("/v1/nodes/{b_node}")).await;
    assert_eq!(s, 200, "{v}");
    for (method, pattern, body) in &per_node {
        answers_as_absent(&only_a, (method, pattern, body), &b_node, &ghost).await;
    }
    for token in [&only_a, &on_b] {
        let (s, list) = token.get("/v1/workflows").await;
        assert_eq!(s, 200, "{list}");
        let listed: Vec<&str> = list["workflows"]
            .as_array()
            .expect("workflows")
            .iter()
            .map(|w| w["workflow_id"].as_str().expect("id"))
            .collect();
        assert_eq!(listed, [a.as_str()], "only A is listed");
        let (s, e) = token
            .post("/v1/workflows", json!({ "system_prompt": "mine" }))
            .await;
        assert_eq!(s, 403, "a scoped token creates no workflow: {e}");
    }
    // A scoped admin may not mint a wider token, nor manage or audit tokens.
    let (s, e) = admin_a
        .post("/v1/tokens", json!({ "name": "wider", "role": "admin" }))
        .await;
    assert_eq!(s, 403, "{e}");
    for path in ["/v1/tokens", "/v1/audit"] {
        let (s, e) = admin_a.get(path).await;
        assert_eq!(s, 403, "{path}: {e}");
    }
    // The global stream (admin) of a workflow-scoped admin carries A only.
    let mut all = admin_a.stream("/v1/stream?after=0").await;
    let s = admin.status(&b, "waiting").await;
    assert_eq!(s, 200);
    let s = admin.status(&a, "waiting").await;
    assert_eq!(s, 200);
    let streamed = nodes_until(&mut all, "workflow.status_changed").await;
    assert!(streamed.contains(&b3) && !streamed.contains(&b_node));

    // 2. Branch scope (branch b1 of A): root, m1, b1, b2, b3 are seen; nothing else.
    let visible = set(&[&root, &m1, &b1, &b2, &b3]);
    for n in [&root, &m1, &a1, &a2, &o1, &o2, &b1, &b2, &b3, &c1] {
        let (s, v) = on_b.get(&format!("/v1/nodes/{n}")).await;
        let want = if visible.contains(n) { 200 } else { 404 };
        assert_eq!(s, want, "node {n}: {v}");
        if s == 200 {
            for e in v["edges"]["out"].as_array().expect("out") {
                assert!(visible.contains(e["to"].as_str().expect("to")), "{v}");
            }
            for e in v["edges"]["in"].as_array().expect("in") {
                assert!(visible.contains(e["from"].as_str().expect("from")), "{v}");
            }
        }
    }
    let (_, v) = on_b.get(&format!("/v1/nodes/{m1}/children")).await;
    assert_eq!(node_ids(&v, "nodes"), set(&[&b1]));
    let (_, v) = on_b.get(&format!("/v1/nodes/{root}/subtree")).await;
    assert_eq!(node_ids(&v, "nodes"), visible);
    let (_, v) = on_b.get(&format!("/v1/nodes/{b3}/path")).await;
    assert_eq!(node_ids(&v, "nodes"), visible);
    let (_, v) = on_b.get(&format!("/v1/workflows/{a}/branches")).await;
    assert_eq!(
        v,
        json!({ "branches": [
            { "branch_id": root, "fork_node_id": null, "head_id": m1, "length": 2 },
            { "branch_id": b1, "fork_node_id": m1, "head_id": b3, "length": 3 },
        ]})
    );
    let (s, v) = on_b
        .get(&format!("/v1/workflows/{a}/branches/{root}"))
        .await;
    assert_eq!((s, node_ids(&v, "nodes")), (200, set(&[&root, &m1])));
    for hidden in [&o2, &c1] {
        let (s, _) = on_b
            .get(&format!("/v1/workflows/{a}/branches/{hidden}"))
            .await;
        assert_eq!(s, 404);
    }
    let (_, v) = on_b.get(&format!("/v1/workflows/{a}/decisions")).await;
    assert_eq!(v, json!({ "decisions": [] }));
    let (_, v) = on_b.get(&format!("/v1/workflows/{a}/monitors")).await;
    let monitors = v["monitors"].as_array().expect("monitors");
    assert_eq!(monitors.len(), 1, "{v}");
    assert_eq!(monitors[0]["target"]["id"], m1.as_str());
    let (_, v) = on_b.get(&format!("/v1/workflows/{a}")).await;
    assert_eq!(
        (v["node_count"].clone(), v["branch_count"].clone()),
        (json!(5), json!(2))
    );
    let (_, v) = on_b.get(&format!("/v1/workflows/{a}/events")).await;
    for e in v["events"].as_array().expect("events") {
        let body = &e["body"];
        let touched = match e["kind"].as_str().expect("kind") {
            "workflow.created" => vec![body["root"]["id"].clone()],
            "node.created" => vec![body["id"].clone()],
            "edge.created" => vec![body["from"].clone(), body["to"].clone()],
            _ => vec![],
        };
        for id in touched {
            assert!(visible.contains(id.as_str().expect("id")), "{e}");
        }
    }

    // Appends: on its branch only.
    let mut sse = on_b
        .stream(&format!("/v1/workflows/{a}/stream?after=0"))
        .await;
    let b4 = on_b.node(&a, &b3, "monitor").await;
    let refused = [
        (
            &b3,
            409,
            "b3 is no longer a leaf: a fork would leave the scope",
        ),
        (&b1, 409, "b1 has a child: a fork would leave the scope"),
        (&m1, 403, "m1 is seen only as an ancestor"),
        (&a1, 404, "a1 is not seen"),
    ];
    for (parent, status, why) in refused {
        let (s, v) = on_b
            .post(
                &format!("/v1/workflows/{a}/nodes"),
                json!({ "parent_id": parent, "type": "message", "content": "x" }),
            )
            .await;
        assert_eq!(s, status, "{why}: {v}");
    }
    let edges = [(&b4, &m1, 201), (&m1, &b2, 403), (&b2, &a1, 404)];
    for (from, to, status) in edges {
        let (s, v) = on_b
            .post(
                &format!("/v1/workflows/{a}/edges"),
                json!({ "type": "MONITORS", "from": from, "to": to }),
            )
            .await;
        assert_eq!(s, status, "{from} → {to}: {v}");
    }
    let (s, _) = on_b
        .post(
            &format!("/v1/nodes/{a2}/choose"),
            json!({ "option_id": o2 }),
        )
        .await;
    assert_eq!(s, 404);
    let s = on_b.status(&a, "running").await;
    assert_eq!(s, 403);
    // The stream: catch-up and live alike carry only what the token sees.
    let hidden = admin.node(&a, &o2, "message").await;
    let s = admin.status(&a, "running").await;
    assert_eq!(s, 200);
    let mut streamed = nodes_until(&mut sse, "workflow.status_changed").await;
    streamed.extend(nodes_until(&mut sse, "workflow.status_changed").await);
    // The root comes in `workflow.created`.
    streamed.insert(root.clone());
    let mut want = visible.clone();
    want.insert(b4);
    assert_eq!(streamed, want, "the stream carries the visible nodes only");
    assert!(!streamed.contains(&hidden));

    // Branches listed before they exist: `f` comes into view when it is created (a
    // fork at a1, which the live stream then shows, and a1 with it), and `g` is a fork
    // the token itself may make.
    let (f, g) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let ahead = admin.with(&token(&admin, "writer", &[&a], &[&b1, &f, &g]).await);
    let (s, _) = ahead.get(&format!("/v1/nodes/{a1}")).await;
    assert_eq!(s, 404);
    let mut live = ahead.stream(&format!("/v1/workflows/{a}/stream")).await;
    let (s, v) = admin.node_with_id(&a, &f, &a1).await;
    assert_eq!(s, 201, "{v}");
    let f2 = admin.node(&a, &f, "message").await;
    let (s, v) = ahead.node_with_id(&a, &g, &b1).await;
    assert_eq!(s, 201, "a fork listed in advance: {v}");
    assert_eq!(v["branch_id"], g.as_str());
    let s = admin.status(&a, "waiting").await;
    assert_eq!(s, 200);
    let streamed = nodes_until(&mut live, "workflow.status_changed").await;
    assert_eq!(streamed, set(&[&f, &f2, &g]));
    let (s, _) = ahead.get(&format!("/v1/nodes/{a1}")).await;
    assert_eq!(s, 200, "a1 is now an ancestor of a listed branch");
    let (s, _) = ahead.get(&format!("/v1/nodes/{a2}")).await;
    assert_eq!(s, 404);
}

/// One random tree: node `i + 1` has parent `parents[i]` (0 = the root) and type
/// `types[i]`; `monitors` are (monitor, target) node numbers; `scope` picks nodes whose
/// branches the token gets, `ghost` adds a branch id that does not exist.
#[derive(Clone, Debug)]
struct Case {
    parents: Vec<usize>,
    types: Vec<&'static str>,
    monitors: Vec<(usize, usize)>,
    scope: Vec<usize>,
    ghost: bool,
}

fn cases() -> impl Strategy<Value = Case> {
    (1usize..24).prop_flat_map(|n| {
        (
            (0..n).map(|i| 0..=i).collect::<Vec<_>>(),
            prop::collection::vec(
                prop::sample::select(vec!["message", "decision", "option", "monitor"]),
                n,
            ),
            prop::collection::vec((0..=n, 0..=n), 0..4),
            prop::collection::vec(0..=n, 0..3),
            any::<bool>(),
        )
            .prop_map(|(parents, types, monitors, scope, ghost)| Case {
                parents,
                types,
                monitors,
                scope,
                ghost,
            })
    })
}

/// The naive model: who is whose parent, each node's branch, and what a scope sees.
struct Model {
    ids: Vec<String>,
    parent: Vec<Option<usize>>,
    branch: Vec<usize>,
    visible: BTreeSet<usize>,
}

impl Model {
    fn new(case: &Case, ids: Vec<String>) -> Model {
        let n = ids.len();
        let mut parent = vec![None];
        let mut branch = vec![0];
        let mut has_child = vec![false; n];
        for (i, p) in case.parents.iter().enumerate() {
            parent.push(Some(*p));
            branch.push(if has_child[*p] { i + 1 } else { branch[*p] });
            has_child[*p] = true;
        }
        let listed: BTreeSet<usize> = case.scope.iter().map(|s| branch[*s]).collect();
        let mut visible = BTreeSet::new();
        for i in (0..n).filter(|i| listed.contains(&branch[*i])) {
            let mut at = Some(i);
            while let Some(x) = at {
                visible.insert(x);
                at = parent[x];
            }
        }
        Model {
            ids,
            parent,
            branch,
            visible,
        }
    }

    fn seen(&self, id: &str) -> bool {
        self.ids
            .iter()
            .position(|x| x == id)
            .is_some_and(|i| self.visible.contains(&i))
    }

    fn names(&self, nodes: impl IntoIterator<Item = usize>) -> BTreeSet<String> {
        nodes.into_iter().map(|i| self.ids[i].clone()).collect()
    }

    fn below(&self, i: usize) -> Vec<usize> {
        let mut out = vec![i];
        let mut k = 0;
        while k < out.len() {
            let at = out[k];
            out.extend((0..self.ids.len()).filter(|c| self.parent[*c] == Some(at)));
            k += 1;
        }
        out
    }
}

/// Builds the case on a fresh server in open mode, then reads everything with a token
/// scoped to the case's branches and compares with the model.
async fn check(case: Case) -> Result<(), TestCaseError> {
    let srv = TestServer::start_with(|c| c.durability = arbor_storage::Durability::None).await;
    let open = Api::new(&srv.base);
    let (_, w) = open
        .post("/v1/workflows", json!({ "system_prompt": "p" }))
        .await;
    let wf = w["workflow_id"].as_str().expect("id").to_owned();
    let mut ids = vec![w["root_id"].as_str().expect("id").to_owned()];
    ids.extend((0..case.parents.len()).map(|_| Uuid::now_v7().to_string()));
    let batch: Vec<Value> = case
        .parents
        .iter()
        .zip(&case.types)
        .enumerate()
        .map(|(i, (p, t))| json!({ "id": ids[i + 1], "parent_id": ids[*p], "type": t, "content": t }))
        .collect();
    let (s, v) = open
        .post(
            &format!("/v1/workflows/{wf}/nodes/batch"),
            json!({ "nodes": batch }),
        )
        .await;
    prop_assert_eq!(s, 201, "{}", v);
    for (m, t) in &case.monitors {
        open.post(
            &format!("/v1/workflows/{wf}/edges"),
            json!({ "type": "MONITORS", "from": ids[*m], "to": ids[*t] }),
        )
        .await;
    }
    for (i, (p, t)) in case.parents.iter().zip(&case.types).enumerate() {
        if *t == "option" && case.types.get(p.wrapping_sub(1)) == Some(&"decision") {
            open.post(
                &format!("/v1/nodes/{}/choose", ids[*p]),
                json!({ "option_id": ids[i + 1] }),
            )
            .await;
        }
    }
    let model = Model::new(&case, ids.clone());
    let mut branches: Vec<String> = case
        .scope
        .iter()
        .map(|s| ids[model.branch[*s]].clone())
        .collect();
    // No branch at all would be no scope: then always the branch that does not exist.
    if case.ghost || branches.is_empty() {
        branches.push(Uuid::now_v7().to_string());
    }
    let store = srv.running.as_ref().expect("running").store().clone();
    let new = NewToken {
        name: "scoped".into(),
        role: Role::Admin,
        workflows: Vec::new(),
        branches: branches.iter().map(|b| b.parse().expect("uuid")).collect(),
        expires_at: None,
        rate: None,
    };
    let (_, secret) = issue(&store, new, "test").expect("issue");
    let api = open.with(secret.expose());

    let (s, v) = api.get(&format!("/v1/workflows/{wf}")).await;
    if model.visible.is_empty() {
        prop_assert_eq!(s, 404, "nothing seen: the workflow is out of scope: {}", v);
        let (_, list) = api.get("/v1/workflows").await;
        prop_assert_eq!(&list["workflows"], &json!([]));
        return Ok(());
    }
    prop_assert_eq!(s, 200, "{}", v);
    HIDDEN_CHECKED.fetch_add(ids.len() - model.visible.len(), Ordering::Relaxed);
    prop_assert_eq!(v["node_count"].as_u64(), Some(model.visible.len() as u64));
    for h in v["heads"].as_array().expect("heads") {
        prop_assert!(model.seen(h.as_str().expect("id")), "head {}", h);
    }
    for (i, id) in ids.iter().enumerate() {
        let seen = model.visible.contains(&i);
        let (s, v) = api.get(&format!("/v1/nodes/{id}")).await;
        prop_assert_eq!(s, if seen { 200 } else { 404 }, "node {}: {}", i, v);
        if seen {
            for e in v["edges"]["out"].as_array().expect("out") {
                prop_assert!(model.seen(e["to"].as_str().expect("to")), "{}", v);
            }
            for e in v["edges"]["in"].as_array().expect("in") {
                prop_assert!(model.seen(e["from"].as_str().expect("from")), "{}", v);
            }
        }
        let (s, v) = api.get(&format!("/v1/nodes/{id}/path")).await;
        prop_assert_eq!(s, if seen { 200 } else { 404 }, "path {}: {}", i, v);
        let (s, v) = api.get(&format!("/v1/nodes/{id}/children")).await;
        prop_assert_eq!(s, if seen { 200 } else { 404 }, "children {}: {}", i, v);
        if seen {
            let want =
                (0..ids.len()).filter(|c| model.parent[*c] == Some(i) && model.visible.contains(c));
            prop_assert_eq!(node_ids(&v, "nodes"), model.names(want));
        }
        let (s, v) = api.get(&format!("/v1/nodes/{id}/subtree")).await;
        prop_assert_eq!(s, if seen { 200 } else { 404 }, "subtree {}: {}", i, v);
        if seen {
            let want = model
                .below(i)
                .into_iter()
                .filter(|c| model.visible.contains(c));
            prop_assert_eq!(node_ids(&v, "nodes"), model.names(want));
        }
    }
    // Branches: each with something seen, reporting only its seen part.
    let mut per_branch: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in &model.visible {
        per_branch.entry(model.branch[*i]).or_default().push(*i);
    }
    let (_, v) = api.get(&format!("/v1/workflows/{wf}/branches")).await;
    let listed: BTreeMap<String, (String, u64)> = v["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .map(|b| {
            (
                b["branch_id"].as_str().expect("id").to_owned(),
                (
                    b["head_id"].as_str().expect("id").to_owned(),
                    b["length"].as_u64().expect("length"),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (String, u64)> = per_branch
        .iter()
        .map(|(b, nodes)| {
            let head = nodes.iter().max().expect("a node");
            (ids[*b].clone(), (ids[*head].clone(), nodes.len() as u64))
        })
        .collect();
    prop_assert_eq!(listed, want);
    for b in (0..ids.len()).filter(|b| model.branch[*b] == *b) {
        let (s, v) = api
            .get(&format!("/v1/workflows/{wf}/branches/{}", ids[b]))
            .await;
        match per_branch.get(&b) {
            Some(nodes) => {
                prop_assert_eq!(s, 200, "{}", v);
                prop_assert_eq!(node_ids(&v, "nodes"), model.names(nodes.clone()));
            }
            None => prop_assert_eq!(s, 404, "branch {}: {}", b, v),
        }
    }
    let (_, v) = api.get(&format!("/v1/workflows/{wf}/decisions")).await;
    for d in v["decisions"].as_array().expect("decisions") {
        prop_assert!(
            model.seen(d["decision"]["id"].as_str().expect("id")),
            "{}",
            d
        );
        for o in d["options"].as_array().expect("options") {
            prop_assert!(model.seen(o["id"].as_str().expect("id")), "{}", d);
        }
        if let Some(c) = d["chosen"]["id"].as_str() {
            prop_assert!(model.seen(c), "{}", d);
        }
    }
    let (_, v) = api.get(&format!("/v1/workflows/{wf}/monitors")).await;
    for m in v["monitors"].as_array().expect("monitors") {
        prop_assert!(
            model.seen(m["monitor"]["id"].as_str().expect("id")),
            "{}",
            m
        );
        prop_assert!(model.seen(m["target"]["id"].as_str().expect("id")), "{}", m);
    }
    // Replay and stream: exactly the seen nodes, and edges between seen nodes.
    let (_, v) = api.get(&format!("/v1/workflows/{wf}/events")).await;
    let mut replayed = BTreeSet::new();
    for e in v["events"].as_array().expect("events") {
        let body = &e["body"];
        match e["kind"].as_str().expect("kind") {
            "workflow.created" => {
                replayed.insert(body["root"]["id"].as_str().expect("id").to_owned());
            }
            "node.created" => {
                replayed.insert(body["id"].as_str().expect("id").to_owned());
            }
            "edge.created" => {
                prop_assert!(model.seen(body["from"].as_str().expect("id")), "{}", e);
                prop_assert!(model.seen(body["to"].as_str().expect("id")), "{}", e);
            }
            _ => {}
        }
    }
    prop_assert_eq!(&replayed, &model.names(model.visible.clone()));
    // The outline (the web UI's view): exactly the seen nodes, each with a seen parent,
    // and edges between seen nodes; labels only of seen nodes.
    let (s, o) = api.get(&format!("/v1/workflows/{wf}/outline")).await;
    prop_assert_eq!(s, 200, "{}", o);
    let outlined: Vec<String> = serde_json::from_value(o["nodes"]["id"].clone()).expect("ids");
    let parents = o["nodes"]["parent"].as_array().expect("parents");
    for (i, p) in parents.iter().enumerate() {
        prop_assert!(
            p.is_null() == (i == 0),
            "only the root lacks a parent: {}",
            o
        );
        if let Some(p) = p.as_u64() {
            prop_assert!((p as usize) < i, "parents come first: {}", o);
        }
    }
    prop_assert_eq!(
        outlined.iter().cloned().collect::<BTreeSet<_>>(),
        model.names(model.visible.clone())
    );
    for e in o["events"].as_array().expect("events") {
        if e["kind"] == "edge.created" {
            prop_assert!(model.seen(e["body"]["from"].as_str().expect("id")), "{}", e);
            prop_assert!(model.seen(e["body"]["to"].as_str().expect("id")), "{}", e);
        }
    }
    let (s, l) = api
        .get(&format!("/v1/workflows/{wf}/labels?ids={}", ids.join(",")))
        .await;
    prop_assert_eq!(s, 200, "{}", l);
    let labelled: BTreeSet<String> = l["labels"]
        .as_object()
        .expect("labels")
        .keys()
        .cloned()
        .collect();
    prop_assert_eq!(labelled, model.names(model.visible.clone()));
    let mut sse = api
        .stream(&format!("/v1/workflows/{wf}/stream?after=0"))
        .await;
    let s = api.status(&wf, "completed").await;
    // A branch-scoped token may not change the status; an admin without scope may.
    prop_assert_eq!(s, 403);
    let s = open
        .with(&unscoped_admin(&store))
        .status(&wf, "completed")
        .await;
    prop_assert_eq!(s, 200);
    let mut streamed = nodes_until(&mut sse, "workflow.status_changed").await;
    let root = ids[0].clone();
    // The root comes in `workflow.created`.
    streamed.insert(root);
    prop_assert_eq!(streamed, model.names(model.visible.clone()));
    Ok(())
}

fn unscoped_admin(store: &arbor_storage::Store) -> String {
    let new = NewToken {
        name: "admin".into(),
        role: Role::Admin,
        workflows: Vec::new(),
        branches: Vec::new(),
        expires_at: None,
        rate: None,
    };
    let (_, secret) = issue(store, new, "test").expect("issue");
    secret.expose().to_owned()
}

/// Nodes the property test found hidden from a token that saw part of their workflow
/// (so it cannot pass by never hiding anything).
static HIDDEN_CHECKED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn no_read_leaks_a_node_outside_the_branch_scope() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&cases(), |case| rt.block_on(check(case)))
        .unwrap_or_else(|e| panic!("{e}"));
    let hidden = HIDDEN_CHECKED.load(Ordering::Relaxed);
    assert!(hidden > 20, "only {hidden} hidden nodes were checked");
}
