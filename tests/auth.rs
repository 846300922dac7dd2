//! Access control (DESIGN §8) against the real binary and server: tokens created,
//! listed and revoked offline; their secrets shown once and nowhere after.

use serde_json::Value;

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn tokens_are_created_listed_and_revoked_offline_and_the_secret_is_shown_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let wf = "0190f5b2-0000-7000-8000-000000000001";
    let out = arbor(
        &[
            "token",
            "create",
            "--name",
            "ci bot",
            "--role",
            "writer",
            "--workflow",
            wf,
            "--expires-in",
            "30d",
            "--rate",
            "50/s",
        ],
        &data,
    );
    let created = json_lines(&ok(&out)).remove(0);
    let secret = created["token"].as_str().expect("the secret").to_owned();
    assert!(secret.starts_with("arbor_"), "{secret}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(
        secret.contains(&id.replace('-', "")),
        "the wire form names the id"
    );
    assert_eq!(created["role"], "writer");
    assert_eq!(created["workflows"], serde_json::json!([wf]));
    assert_eq!(created["rate"], 50.0);
    assert_eq!(created["created_by"], "cli");
    assert!(created["expires_at"].is_string());
    let secret_part = secret.rsplit('_').next().expect("secret part").to_owned();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&secret_part),
        "the secret is not logged"
    );

    ok(&arbor(
        &["token", "create", "--name", "root", "--role", "admin"],
        &data,
    ));
    let listed = ok(&arbor(&["token", "list"], &data));
    assert!(!listed.contains(&secret_part), "list never shows a secret");
    assert!(!listed.contains("hash"), "nor a hash: {listed}");
    let listed = json_lines(&listed);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0]["revoked_at"].is_null());
    assert!(listed.iter().all(|t| t.get("token").is_none()));

    let revoked = json_lines(&ok(&arbor(&["token", "revoke", &id], &data))).remove(0);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let listed = json_lines(&ok(&arbor(&["token", "list"], &data)));
    assert!(listed[0]["revoked_at"].is_string());
    assert!(listed[1]["revoked_at"].is_null());

    let unknown = arbor(
        &["token", "revoke", "0190f5b2-0000-7000-8000-0000000000ff"],
        &data,
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));
    let bad_role = arbor(&["token", "create", "--name", "x", "--role", "root"], &data);
    assert!(!bad_role.status.success());
    assert_eq!(json_lines(&ok(&arbor(&["token", "list"], &data))).len(), 2);

    // Token events are not workflow events: nothing reaches the workflow log, so no
    // replay, stream, export or sink sees them; verify still passes.
    let report: Value = serde_json::from_str(&ok(&arbor(&["verify"], &data))).expect("json");
    assert_eq!(report["events"], 0, "{report}");
}

mod common;

use arbor::auth::role::Role;
use arbor::auth::secret;
use arbor::auth::token::{issue, NewToken};
use arbor_storage::{Store, Timestamp, TokenSpec};
use common::{arbor, ok, TestServer};
use serde_json::json;
use uuid::Uuid;

/// Issues a live token of `role` directly in the store; returns (id, secret).
fn token(store: &Store, role: Role) -> (String, String) {
    let new = NewToken {
        name: format!("{role} test"),
        role,
        workflows: Vec::new(),
        branches: Vec::new(),
        expires_at: None,
        rate: None,
    };
    let (view, secret) = issue(store, new, "test").expect("issue");
    (view.token.id.to_string(), secret.expose().to_owned())
}

/// A token that expired long ago (the API refuses to make one; the store does not care).
fn expired(store: &Store) -> String {
    let id = Uuid::now_v7();
    let (secret, hash) = secret::generate(id).expect("randomness");
    let spec = TokenSpec {
        id,
        name: "expired".into(),
        role: "admin".into(),
        workflows: Vec::new(),
        branches: Vec::new(),
        expires_at: Some(Timestamp(1)),
        rate: None,
    };
    store.create_token(spec, hash.0, "test").expect("create");
    secret.expose().to_owned()
}

/// Sends one request with an optional bearer token; (status, WWW-Authenticate, body).
async fn call(
    srv: &TestServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
    bearer: Option<&str>,
) -> (u16, Option<String>, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = srv.client.request(m, srv.url(path));
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("send");
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned());
    if resp.url().path().ends_with("/stream") && resp.status().is_success() {
        // A stream that opened: its status is the answer; do not wait for events.
        return (resp.status().as_u16(), www, Value::Null);
    }
    let (status, v) = common::decode(resp).await;
    (status, www, v)
}

/// (method, route pattern, path, body, least role; None = open to all).
type Route = (
    &'static str,
    &'static str,
    String,
    Option<Value>,
    Option<Role>,
);

#[tokio::test]
async fn every_route_against_every_kind_of_caller() {
    // Every 401 here comes from one address: let them all through the failure limit.
    let srv = TestServer::start_with(|c| c.auth_failure_rate = 1e6).await;
    // Open mode (no token yet): the fixture is built anonymously.
    let (wf, root) = srv.workflow("matrix").await;
    let user = srv.node(&wf, &root, "message", "go").await;
    let decision = srv.node(&wf, &user, "decision", "which?").await;
    let o1 = srv.node(&wf, &decision, "option", "a").await;
    let work = srv.node(&wf, &o1, "action", "do a").await;
    let monitor = srv.node(&wf, &decision, "monitor", "watch").await;
    let store = srv.running.as_ref().expect("running").store().clone();

    let (_, admin) = token(&store, Role::Admin);
    let (_, reviewer) = token(&store, Role::Reviewer);
    let (writer_id, writer) = token(&store, Role::Writer);
    let (_, reader) = token(&store, Role::Reader);
    let (revoked_id, revoked) = token(&store, Role::Admin);
    store
        .revoke_token(&revoked_id.parse().expect("uuid"), "test")
        .expect("revoke");
    let (victim, _) = token(&store, Role::Reader);
    let expired = expired(&store);
    let unknown = {
        let (s, _) = secret::generate(Uuid::now_v7()).expect("randomness");
        s.expose().to_owned()
    };

    let node = json!({ "parent_id": root, "type": "message", "content": "more" });
    // (method, route pattern, path, body, least role; None = open to all)
    let routes: Vec<Route> = vec![
        (
            "POST",
            "/v1/workflows",
            "/v1/workflows".into(),
            Some(json!({ "system_prompt": "p" })),
            Some(Role::Writer),
        ),
        (
            "GET",
            "/v1/workflows",
            "/v1/workflows".into(),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/workflows/{wf}",
            format!("/v1/workflows/{wf}"),
            None,
            Some(Role::Reader),
        ),
        (
            "PATCH",
            "/v1/workflows/{wf}",
            format!("/v1/workflows/{wf}"),
            Some(json!({ "status": "waiting" })),
            Some(Role::Writer),
        ),
        (
            "POST",
            "/v1/workflows/{wf}/nodes",
            format!("/v1/workflows/{wf}/nodes"),
            Some(node.clone()),
            Some(Role::Writer),
        ),
        (
            "POST",
            "/v1/workflows/{wf}/nodes/batch",
            format!("/v1/workflows/{wf}/nodes/batch"),
            Some(json!({ "nodes": [node] })),
            Some(Role::Writer),
        ),
        (
            "POST",
            "/v1/workflows/{wf}/edges",
            format!("/v1/workflows/{wf}/edges"),
            Some(json!({ "type": "MONITORS", "from": monitor, "to": work })),
            Some(Role::Writer),
        ),
        (
            "GET",
            "/v1/workflows/{wf}/decisions",
            format!("/v1/workflows/{wf}/decisions"),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/workflows/{wf}/branches",
            format!("/v1/workflows/{wf}/branches"),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/workflows/{wf}/branches/{branch_id}",
            format!("/v1/workflows/{wf}/branches/{root}"),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/workflows/{wf}/monitors",
            format!("/v1/workflows/{wf}/monitors"),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/workflows/{wf}/events",
            format!("/v1/workflows/{wf}/events"),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/workflows/{wf}/outline",
            format!("/v1/workflows/{wf}/outline"),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/workflows/{wf}/labels",
            format!("/v1/workflows/{wf}/labels?ids={user}"),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/workflows/{wf}/stream",
            format!("/v1/workflows/{wf}/stream"),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/stream",
            "/v1/stream".into(),
            None,
            Some(Role::Admin),
        ),
        (
            "GET",
            "/v1/nodes/{id}",
            format!("/v1/nodes/{user}"),
            None,
            Some(Role::Reader),
        ),
        (
            "POST",
            "/v1/nodes/{id}/choose",
            format!("/v1/nodes/{decision}/choose"),
            Some(json!({ "option_id": o1 })),
            Some(Role::Writer),
        ),
        (
            "GET",
            "/v1/nodes/{id}/path",
            format!("/v1/nodes/{work}/path"),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/nodes/{id}/children",
            format!("/v1/nodes/{decision}/children"),
            None,
            Some(Role::Reader),
        ),
        (
            "GET",
            "/v1/nodes/{id}/subtree",
            format!("/v1/nodes/{user}/subtree"),
            None,
            Some(Role::Reader),
        ),
        ("GET", "/healthz", "/healthz".into(), None, None),
        ("GET", "/readyz", "/readyz".into(), None, None),
        ("GET", "/openapi.json", "/openapi.json".into(), None, None),
        ("GET", "/docs", "/docs".into(), None, None),
        ("GET", "/", "/".into(), None, None),
        ("GET", "/ui/{file}", "/ui/app.js".into(), None, None),
        (
            "GET",
            "/v1/health",
            "/v1/health".into(),
            None,
            Some(Role::Admin),
        ),
        (
            "GET",
            "/metrics",
            "/metrics".into(),
            None,
            Some(Role::Admin),
        ),
        (
            "POST",
            "/v1/tokens",
            "/v1/tokens".into(),
            Some(json!({ "name": "made", "role": "reader" })),
            Some(Role::Admin),
        ),
        (
            "GET",
            "/v1/tokens",
            "/v1/tokens".into(),
            None,
            Some(Role::Admin),
        ),
        (
            "DELETE",
            "/v1/tokens/{id}",
            format!("/v1/tokens/{victim}"),
            None,
            Some(Role::Admin),
        ),
        (
            "GET",
            "/v1/audit",
            "/v1/audit".into(),
            None,
            Some(Role::Admin),
        ),
    ];
    // Every route the router declares is in the table.
    let router_src = include_str!("../src/http/mod.rs");
    for declared in router_src.split(".route(").skip(1) {
        let pattern = declared
            .trim_start()
            .trim_start_matches('"')
            .split('"')
            .next()
            .expect("a route pattern");
        assert!(
            routes.iter().any(|r| r.1 == pattern),
            "route {pattern} is missing from the matrix"
        );
    }

    let callers: Vec<(&str, Option<&str>, Option<Role>)> = vec![
        ("no token", None, None),
        ("unknown token", Some(&unknown), None),
        ("garbage", Some("not-a-token"), None),
        ("expired", Some(&expired), None),
        ("revoked", Some(&revoked), None),
        ("reader", Some(&reader), Some(Role::Reader)),
        ("writer", Some(&writer), Some(Role::Writer)),
        ("reviewer", Some(&reviewer), Some(Role::Reviewer)),
        ("admin", Some(&admin), Some(Role::Admin)),
    ];
    for (method, pattern, path, body, least) in &routes {
        for (who, bearer, role) in &callers {
            let (status, www, v) = call(&srv, method, path, body.as_ref(), *bearer).await;
            let case = format!("{method} {pattern} as {who}: {status} {v}");
            match (least, role) {
                (None, _) => assert_eq!(status, 200, "{case}"),
                (Some(_), None) => {
                    assert_eq!(status, 401, "{case}");
                    assert!(
                        www.as_deref().is_some_and(|w| w.starts_with("Bearer")),
                        "{case}: WWW-Authenticate"
                    );
                }
                (Some(least), Some(role)) if role < least => assert_eq!(status, 403, "{case}"),
                (Some(_), Some(_)) => assert!((200..300).contains(&status), "{case}"),
            }
        }
    }

    // Appends record the token id as their actor.
    let (s, _, b) = call(
        &srv,
        "POST",
        &format!("/v1/workflows/{wf}/nodes"),
        Some(&json!({ "parent_id": root, "type": "message", "content": "by writer" })),
        Some(&writer),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let seq = b["seq"].as_u64().expect("seq");
    let events = store.read_events(seq - 1, 1).expect("read");
    assert_eq!(events[0].actor, writer_id);
}

#[tokio::test]
async fn streams_take_the_token_from_the_query_and_nothing_else_does() {
    let srv = TestServer::start().await;
    let (wf, _) = srv.workflow("q").await;
    let store = srv.running.as_ref().expect("running").store().clone();
    let (_, reader) = token(&store, Role::Reader);
    let stream = format!("/v1/workflows/{wf}/stream?after=0&access_token={reader}");
    let (s, _, _) = call(&srv, "GET", &stream, None, None).await;
    assert_eq!(s, 200, "a stream takes ?access_token=");
    let events = format!("/v1/workflows/{wf}/events?access_token={reader}");
    let (s, _, v) = call(&srv, "GET", &events, None, None).await;
    assert_eq!(s, 400, "{v}");
    let (s, _, _) = call(
        &srv,
        "GET",
        &format!("/v1/workflows/{wf}/stream"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, _) = call(
        &srv,
        "GET",
        &format!("/v1/workflows/{wf}/stream?access_token=arbor_x"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn tokens_through_the_api_and_a_revocation_takes_effect_at_once() {
    let srv = TestServer::start().await;
    // Open mode: the first token can be made through the API.
    let (s, made) = srv
        .post(
            "/v1/tokens",
            json!({ "name": "first admin", "role": "admin" }),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    let admin = made["token"].as_str().expect("secret").to_owned();
    assert_eq!(made["created_by"], "anonymous");
    // From now on the store is closed.
    let (s, _) = srv.get("/v1/workflows").await;
    assert_eq!(s, 401);
    let (s, _, w) = call(
        &srv,
        "POST",
        "/v1/tokens",
        Some(&json!({ "name": "w", "role": "writer", "rate": 5.0 })),
        Some(&admin),
    )
    .await;
    assert_eq!(s, 201, "{w}");
    let writer = w["token"].as_str().expect("secret").to_owned();
    let writer_id = w["id"].as_str().expect("id").to_owned();
    let (s, _, list) = call(&srv, "GET", "/v1/tokens", None, Some(&admin)).await;
    assert_eq!(s, 200);
    let shown = list.to_string();
    assert_eq!(list["tokens"].as_array().expect("tokens").len(), 2);
    assert!(
        !shown.contains(&writer[writer.len() - 64..])
            && !shown.contains(&admin[admin.len() - 64..]),
        "{shown}"
    );
    assert!(!shown.contains("\"token\""), "no secret in a list: {shown}");
    let (s, _, _) = call(&srv, "GET", "/v1/workflows", None, Some(&writer)).await;
    assert_eq!(s, 200);
    let (s, _, r) = call(
        &srv,
        "DELETE",
        &format!("/v1/tokens/{writer_id}"),
        None,
        Some(&admin),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert!(r["revoked_at"].is_string());
    let (s, www, _) = call(&srv, "GET", "/v1/workflows", None, Some(&writer)).await;
    assert_eq!(s, 401, "a revoked token is refused at once");
    assert!(www.is_some());
    let (s, _, _) = call(
        &srv,
        "DELETE",
        &format!("/v1/tokens/{}", Uuid::now_v7()),
        None,
        Some(&admin),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, v) = call(
        &srv,
        "POST",
        "/v1/tokens",
        Some(&json!({ "name": "x", "role": "root" })),
        Some(&admin),
    )
    .await;
    assert!((400..500).contains(&s), "{s} {v}");
}
