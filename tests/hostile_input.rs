//! Hostile but valid input reaches every sink losslessly; input no sink can hold is
//! refused at the door (issue 10 item 2, the input side).
//!
//! Against real Redis, PostgreSQL and Neo4j (started by `tests/services/with-services.sh`;
//! the test fails loudly without them): an in-process server with all three sinks takes
//! nodes full of emoji, CJK and right-to-left text, escaped control characters other
//! than NUL, a deeply nested payload, numbers at the edges of i64/u64/f64 and metadata
//! keys that look like paths, operators or quotes. Every sink catches up with no dead
//! letter and `arbor_sync::verify_sinks` finds no difference. Then U+0000 in each kind
//! of field is a 400 naming the field, and the log does not move.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arbor_sync::{Neo4jConfig, SyncConfig};
use common::TestServer;
use serde_json::{json, Value};

const SINKS: [&str; 3] = ["redis", "postgres", "neo4j"];

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run this test under tests/services/with-services.sh \
             (`bash tests/services/with-services.sh cargo test --test hostile_input`)"
        ),
    }
}

fn sync_config() -> SyncConfig {
    SyncConfig {
        redis_url: Some(env("ARBOR_TEST_REDIS_URL")),
        postgres_url: Some(env("ARBOR_TEST_POSTGRES_URL")),
        neo4j: Some(Neo4jConfig {
            url: env("ARBOR_TEST_NEO4J_URL"),
            user: env("ARBOR_TEST_NEO4J_USER"),
            password: env("ARBOR_TEST_NEO4J_PASSWORD"),
        }),
        postgres_schema: format!("hostile_{}", uuid::Uuid::now_v7().simple()),
        ..SyncConfig::default()
    }
}

/// A payload nested `depth` levels deep (objects and arrays in turn).
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("bottom 🌳"), |inner, i| {
        if i % 2 == 0 {
            json!({ format!("level {i}"): inner })
        } else {
            json!([i, inner])
        }
    })
}

/// Waits until every sink's cursor is the log's head, each state ok.
async fn caught_up(srv: &TestServer) -> Value {
    let head = srv.head().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, h) = srv.get("/v1/health").await;
        let sinks = h["components"]["sinks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if code == 200
            && sinks.len() == 3
            && sinks
                .iter()
                .all(|s| s["cursor"] == head && s["state"] == "ok")
        {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "sinks did not catch up to {head} within 60 s: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text and JSON fields of a node, as the API or a sink holds them.
type Fields = (String, Value, Value, Option<String>);

/// Every node of `wf` as the API serves it: id → fields.
async fn from_api(srv: &TestServer, ids: &[String]) -> BTreeMap<String, Fields> {
    let mut out = BTreeMap::new();
    for id in ids {
        let (s, n) = srv.get(&format!("/v1/nodes/{id}")).await;
        assert_eq!(s, 200, "{n}");
        out.insert(id.clone(), fields_of(&n));
    }
    out
}

fn fields_of(n: &Value) -> Fields {
    (
        n["content"].as_str().expect("content").to_owned(),
        n["payload"].clone(),
        n["metadata"].clone(),
        n["agent_id"].as_str().map(str::to_owned),
    )
}

/// Every node of `wf` as PostgreSQL holds it (jsonb columns read back as JSON).
async fn from_postgres(sync: &SyncConfig, wf: &str) -> BTreeMap<String, Fields> {
    use sqlx::Row;
    let url = sync.postgres_url.as_deref().expect("postgres url");
    let pool = arbor_sync::postgres::pool(url, &sync.postgres_schema, 1).expect("pool");
    let wf: uuid::Uuid = wf.parse().expect("uuid");
    let rows = sqlx::query(
        "SELECT id, content, payload, metadata, agent_id FROM arbor_nodes WHERE workflow_id = $1",
    )
    .bind(wf)
    .fetch_all(&pool)
    .await
    .expect("read arbor_nodes");
    let mut out = BTreeMap::new();
    for r in rows {
        let id: uuid::Uuid = r.get(0);
        out.insert(
            id.to_string(),
            (r.get(1), r.get(2), r.get(3), r.get::<Option<String>, _>(4)),
        );
    }
    pool.close().await;
    out
}

/// Every node of `wf` as Neo4j holds it (payload and metadata are JSON strings there).
async fn from_neo4j(sync: &SyncConfig, wf: &str) -> BTreeMap<String, Fields> {
    let cfg = sync.neo4j.as_ref().expect("neo4j config");
    let graph = arbor_sync::neo4j::connect(cfg)
        .await
        .expect("connect neo4j");
    let mut rows = graph
        .execute(
            neo4rs::query(
                "MATCH (n:WorkflowNode {workflow_id: $wf}) \
                 RETURN n.id AS id, n.content AS content, n.payload AS payload, \
                        n.metadata AS metadata, n.agent_id AS agent_id",
            )
            .param("wf", wf),
        )
        .await
        .expect("query neo4j");
    let mut out = BTreeMap::new();
    while let Some(row) = rows.next().await.expect("neo4j row") {
        let json = |k: &str| -> Value {
            serde_json::from_str(&row.get::<String>(k).expect("json property")).expect("json")
        };
        out.insert(
            row.get::<String>("id").expect("id"),
            (
                row.get::<String>("content").expect("content"),
                json("payload"),
                json("metadata"),
                row.get::<Option<String>>("agent_id").expect("agent_id"),
            ),
        );
    }
    out
}

/// Every node of `wf` as Redis holds it (the `event` field of each stream entry).
async fn from_redis(sync: &SyncConfig, wf: &str) -> BTreeMap<String, Fields> {
    let url = sync.redis_url.as_deref().expect("redis url");
    let client = redis::Client::open(url).expect("redis client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect redis");
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(format!("workflow:events:{wf}"))
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("XRANGE");
    let mut out = BTreeMap::new();
    for (_, fields) in entries {
        let event = fields
            .chunks(2)
            .find(|kv| kv[0] == "event")
            .map(|kv| kv[1].clone())
            .expect("an event field");
        let e: Value = serde_json::from_str(&event).expect("event json");
        let body = &e["body"];
        let node = if body.get("content").is_some() {
            body
        } else {
            &body["root"]
        };
        if let Some(id) = node["id"].as_str() {
            out.insert(id.to_owned(), fields_of(node));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_reaches_every_sink_and_nul_is_refused() {
    let sync = sync_config();
    let srv = TestServer::start_with(|c| c.sync = sync.clone()).await;
    let (s, created) = srv
        .post(
            "/v1/workflows",
            json!({ "system_prompt": "שלום، مرحبا — agent 木 \u{202e}txet desrever\u{202c}", "metadata": { "": "empty key", "a.b": 1, "$where": "1 == 1", "`tick`": true, "it's \"quoted\"": null, "back\\slash": [] }, "user_id": "用户 🌳" }),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let wf = created["workflow_id"].as_str().expect("wf").to_owned();
    let root = created["root_id"].as_str().expect("root").to_owned();

    let controls: String = (1u8..0x20)
        .map(char::from)
        .chain([
            '\u{7f}', '\u{85}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{fffd}',
        ])
        .collect();
    let numbers = json!({ "u64_max": u64::MAX, "i64_min": i64::MIN, "f64_max": f64::MAX, "tiny": 5e-324, "tenth": 0.1, "neg_zero": -0.0, "int_as_float": 1.5e300 });
    let nodes = json!({ "nodes": [
        { "parent_id": root, "type": "message", "role": "user", "content": "emoji 🌳🔥👩‍👩‍👧 CJK 漢字かなカナ 한국어 RTL עברית العربية", "metadata": { "🌳": "tree", "with space": 1, "new\nline": 2, "tab\tkey": 3, "ctl\u{1}": 4, "id": "not the node id", "labels": ["x"] }, "agent_id": "agent 🤖" },
        { "parent_id": root, "type": "message", "content": controls, "payload": { "controls": controls, "quotes": "'\"`\\" } },
        { "parent_id": root, "type": "tool_call", "content": "deep", "payload": nested(100) },
        { "parent_id": root, "type": "tool_result", "content": "numbers", "payload": numbers, "metadata": { "n": numbers } },
        { "parent_id": root, "type": "message", "content": "", "payload": [null, true, "", {}, []] },
    ] });
    let (s, stored) = srv
        .post(&format!("/v1/workflows/{wf}/nodes/batch"), nodes.clone())
        .await;
    assert_eq!(s, 201, "{stored}");
    for (sent, got) in nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .zip(stored["nodes"].as_array().expect("stored"))
    {
        for f in ["content", "payload", "metadata", "agent_id"] {
            if let Some(v) = sent.get(f) {
                assert_eq!(&got[f], v, "the API echoes {f} as sent");
            }
        }
    }

    let health = caught_up(&srv).await;
    let store = srv.running.as_ref().expect("running").store().clone();
    for sink in SINKS {
        let dead = store.dead_letters(sink).expect("dead letters");
        assert!(dead.is_empty(), "{sink} dead-lettered: {dead:?}");
    }
    for s in health["components"]["sinks"].as_array().expect("sinks") {
        assert_eq!(s["dead_letters"], 0, "{s}");
    }
    let diffs = arbor_sync::verify_sinks(&store, &sync)
        .await
        .expect("verify the sinks");
    assert!(diffs.is_empty(), "the sinks differ from the log: {diffs:?}");

    // Each sink holds exactly what the API serves, field by field.
    let mut ids = vec![root.clone()];
    ids.extend(
        stored["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["id"].as_str().expect("id").to_owned()),
    );
    let api = from_api(&srv, &ids).await;
    let replicas = [
        ("postgres", from_postgres(&sync, &wf).await),
        ("neo4j", from_neo4j(&sync, &wf).await),
        ("redis", from_redis(&sync, &wf).await),
    ];
    for (sink, held) in replicas {
        assert_eq!(held.len(), api.len(), "{sink} holds every node");
        for (id, want) in &api {
            assert_eq!(held.get(id), Some(want), "{sink}: node {id}");
        }
    }

    // What no sink could hold is refused, naming the field, and stores nothing.
    let nodes_url = format!("/v1/workflows/{wf}/nodes");
    let node = |extra: Value| {
        let mut n = json!({ "parent_id": root, "type": "message", "content": "x" });
        n.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        n
    };
    let refused = [
        (
            "/v1/workflows".to_owned(),
            json!({ "system_prompt": "a\u{0}b" }),
            "system_prompt",
        ),
        (
            "/v1/workflows".to_owned(),
            json!({ "system_prompt": "x", "metadata": { "k\u{0}": 1 } }),
            "metadata key",
        ),
        (
            nodes_url.clone(),
            node(json!({ "content": "nul \u{0} content" })),
            "content",
        ),
        (
            nodes_url.clone(),
            node(json!({ "metadata": { "m": ["ok", "nul\u{0}"] } })),
            "metadata.m[1]",
        ),
        (
            nodes_url.clone(),
            node(json!({ "payload": { "deep": { "k\u{0}": 1 } } })),
            "payload.deep key",
        ),
        (
            nodes_url.clone(),
            node(json!({ "user_id": "\u{0}" })),
            "user_id",
        ),
        (
            format!("/v1/workflows/{wf}/nodes/batch"),
            json!({ "nodes": [node(json!({})), node(json!({ "agent_id": "a\u{0}" }))] }),
            "nodes[1].agent_id",
        ),
    ];
    for (url, body, field) in refused {
        let before = srv.head().await;
        let (s, b) = srv.post(&url, body.clone()).await;
        assert_eq!(s, 400, "{body}: {b}");
        let detail = b["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with(field) && detail.contains("U+0000"),
            "{body}: {detail:?} does not name {field}"
        );
        assert_eq!(
            srv.head().await,
            before,
            "a refused request stored something"
        );
    }
    let health = caught_up(&srv).await;
    for s in health["components"]["sinks"].as_array().expect("sinks") {
        assert_eq!(s["dead_letters"], 0, "{s}");
    }
}

/// Everything Redis holds, as text: every key with its value (strings, hashes, streams).
async fn redis_dump(sync: &SyncConfig) -> String {
    let url = sync.redis_url.as_deref().expect("redis url");
    let client = redis::Client::open(url).expect("redis client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .expect("KEYS");
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut con)
            .await
            .expect("TYPE");
        let value: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).query_async(&mut con).await,
            "hash" => redis::cmd("HGETALL").arg(&key).query_async(&mut con).await,
            "stream" => {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut con)
                    .await
            }
            "list" => {
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut con)
                    .await
            }
            _ => Ok(redis::Value::Nil),
        }
        .expect("read a key");
        out.push_str(&format!("{key} {value:?}\n"));
    }
    out
}

/// Every row of every table of the test's PostgreSQL schema, as JSON text.
async fn postgres_dump(sync: &SyncConfig) -> String {
    use sqlx::Row;
    let url = sync.postgres_url.as_deref().expect("postgres url");
    let pool = arbor_sync::postgres::pool(url, &sync.postgres_schema, 1).expect("pool");
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&sync.postgres_schema)
    .fetch_all(&pool)
    .await
    .expect("tables")
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert!(tables.len() >= 3, "the replica's tables: {tables:?}");
    let mut out = String::new();
    for t in tables {
        // The table names come from information_schema, not from input.
        let sql = format!("SELECT row_to_json(t)::text FROM \"{t}\" t");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&pool)
            .await
            .expect("rows");
        for r in rows {
            out.push_str(&r.get::<String, _>(0));
            out.push('\n');
        }
    }
    pool.close().await;
    out
}

/// Every node and relationship of the Neo4j database with its properties, as text.
async fn neo4j_dump(sync: &SyncConfig) -> String {
    let cfg = sync.neo4j.as_ref().expect("neo4j config");
    let graph = arbor_sync::neo4j::connect(cfg)
        .await
        .expect("connect neo4j");
    let mut out = String::new();
    // Every property as text (lists, the only non-scalar property values, joined).
    let props = |x: &str| {
        format!(
            "[k IN keys({x}) | k + '=' + CASE WHEN valueType({x}[k]) STARTS WITH 'LIST' \
             THEN reduce(s = '', v IN {x}[k] | s + toString(v) + ',') \
             ELSE toString({x}[k]) END]"
        )
    };
    for q in [
        format!("MATCH (n) RETURN {} AS p", props("n")),
        format!("MATCH ()-[r]->() RETURN {} AS p", props("r")),
    ] {
        let mut rows = graph.execute(neo4rs::query(&q)).await.expect("query neo4j");
        while let Some(row) = rows.next().await.expect("neo4j row") {
            out.push_str(&row.get::<Vec<String>>("p").expect("properties").join(" "));
            out.push('\n');
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_secrets_reach_no_sink() {
    let sync = sync_config();
    let srv = TestServer::start_with(|c| c.sync = sync.clone()).await;
    // Open mode: the first admin token through the API; the store is closed after it.
    let (s, made) = srv
        .post("/v1/tokens", json!({ "name": "ops", "role": "admin" }))
        .await;
    assert_eq!(s, 201, "{made}");
    let admin = made["token"].as_str().expect("secret").to_owned();
    let admin_id = made["id"].as_str().expect("id").to_owned();
    let secret_part = admin.rsplit('_').next().expect("secret part").to_owned();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = srv
            .client
            .request(method, srv.url(path))
            .bearer_auth(&admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req
    };
    let r = call(
        reqwest::Method::POST,
        "/v1/workflows",
        Some(json!({ "system_prompt": "keep the secret" })),
    )
    .send()
    .await
    .expect("create");
    let (s, created) = common::decode(r).await;
    assert_eq!(s, 201, "{created}");
    let wf = created["workflow_id"].as_str().expect("wf").to_owned();
    let root = created["root_id"].as_str().expect("root").to_owned();
    let r = call(
        reqwest::Method::POST,
        &format!("/v1/workflows/{wf}/nodes"),
        Some(json!({ "parent_id": root, "type": "message", "content": "marker-4f2a" })),
    )
    .send()
    .await
    .expect("append");
    assert_eq!(r.status().as_u16(), 201);
    // A second token made and revoked, and bad tokens presented.
    let r = call(
        reqwest::Method::POST,
        "/v1/tokens",
        Some(json!({ "name": "short-lived", "role": "reader" })),
    )
    .send()
    .await
    .expect("create token");
    let (_, second) = common::decode(r).await;
    let second_secret = second["token"].as_str().expect("secret").to_owned();
    let second_part = second_secret.rsplit('_').next().expect("part").to_owned();
    let r = call(
        reqwest::Method::DELETE,
        &format!("/v1/tokens/{}", second["id"].as_str().expect("id")),
        None,
    )
    .send()
    .await
    .expect("revoke");
    assert_eq!(r.status().as_u16(), 200);
    let r = srv
        .client
        .get(srv.url("/v1/workflows"))
        .bearer_auth(&second_secret)
        .send()
        .await
        .expect("revoked call");
    assert_eq!(r.status().as_u16(), 401);

    // Wait for every sink to hold the log's head.
    let head = srv.running.as_ref().expect("running").store().head();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = call(reqwest::Method::GET, "/v1/health", None)
            .send()
            .await
            .expect("health");
        let (_, h) = common::decode(r).await;
        let sinks = h["components"]["sinks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if sinks.len() == 3
            && sinks
                .iter()
                .all(|s| s["cursor"] == head && s["state"] == "ok")
        {
            break;
        }
        assert!(Instant::now() < deadline, "sinks did not catch up: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (sink, dump) in [
        ("redis", redis_dump(&sync).await),
        ("postgres", postgres_dump(&sync).await),
        ("neo4j", neo4j_dump(&sync).await),
    ] {
        // The dump is real: it holds the node and the token id as the actor.
        assert!(dump.contains("marker-4f2a"), "{sink} holds the node");
        if sink != "neo4j" {
            assert!(dump.contains(&admin_id), "{sink} records the actor");
        }
        for part in [&secret_part, &second_part] {
            assert!(!dump.contains(part.as_str()), "{sink} holds a token secret");
        }
    }
    srv.running
        .expect("running")
        .shutdown()
        .await
        .expect("shutdown");
}
