//! The OpenAPI description (`GET /openapi.json`) against the server itself.
//!
//! - `the_description_names_every_route_and_nothing_else`: the routes of
//!   `src/http/mod.rs::router` (read from its source) and the operations of the
//!   description are the same (method, path) pairs; the live router serves each
//!   described operation (neither its no-route 404 nor a 405), and answers 405 to every
//!   other method on a described path.
//! - `the_description_is_valid_openapi_3_1`: openapi-spec-validator accepts it.
//! - `the_docs_page_is_self_contained`: `/docs` is public, sends its CSP with a fresh
//!   nonce, names no other origin; in headless chromium it renders every operation
//!   under that CSP (nothing refused, nothing fetched from elsewhere).
//! - `schemathesis_finds_nothing`: schemathesis fuzzes a live `arbor serve` (the real
//!   binary, the sample workflow imported, auth off; then again with auth on and an
//!   admin token) and checks every answer: no 5xx, every status, content type, header
//!   and body as described.
//!
//! The Python tools come from `tests/openapi/ensure.sh` and `tests/browser/ensure.sh`
//! (`tests/run-all.sh` runs both); a test whose tool is missing fails and says so.

mod common;

use std::collections::BTreeSet;

use arbor_testkit::serve::KillOnDrop;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{arbor, ok, TestServer};
use serde_json::{json, Value};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/sample-coding-agent.jsonl"
);

/// The methods the router's routes may use, as `axum::routing` names them.
const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// The (METHOD, path) pairs `router` declares, read from its source: every
/// `.route("PATH", get(…).post(…))` in it.
fn router_routes() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mod.rs"))
        .expect("read src/http/mod.rs");
    let body = src
        .split("pub fn router(")
        .nth(1)
        .and_then(|b| b.split("\n}\n").next())
        .expect("src/http/mod.rs has `pub fn router(`");
    for unseen in [
        "nest",
        "nest_service",
        "merge",
        "route_service",
        "any",
        "on",
    ] {
        assert!(
            calls(body, unseen).next().is_none(),
            "router calls `{unseen}(…)`: this test reads only `.route(PATH, METHOD(handler)…)` \
             calls; teach it that form (and describe the routes it adds with \
             #[utoipa::path])"
        );
    }
    let mut routes = BTreeSet::new();
    for call in body.split(".route(").skip(1) {
        // A catch-all `{*rest}` is `{rest}` in OpenAPI (which has no catch-all).
        let path = call
            .split('"')
            .nth(1)
            .expect("a route's path literal")
            .replace("{*", "{");
        // This call's arguments: up to the next call on the router.
        let call = call.split("\n        .").next().unwrap_or(call);
        let methods: Vec<&&str> = METHODS
            .iter()
            .filter(|m| calls(call, m).next().is_some())
            .collect();
        assert!(
            !methods.is_empty(),
            "no method found in route {path:?}: {call}"
        );
        for m in methods {
            routes.insert((m.to_uppercase(), path.clone()));
        }
    }
    assert!(routes.len() >= 25, "{routes:?}");
    routes
}

/// Where `src` calls a function or method named `name` (not one whose name merely ends
/// so).
fn calls<'a>(src: &'a str, name: &'a str) -> impl Iterator<Item = usize> + 'a {
    let pattern = format!("{name}(");
    src.match_indices(&pattern)
        .map(|(i, _)| i)
        .filter(|&i| {
            let before = src[..i].chars().next_back().unwrap_or(' ');
            !(before.is_alphanumeric() || before == '_')
        })
        .collect::<Vec<_>>()
        .into_iter()
}

/// The (METHOD, path) pairs a description names.
fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str())
                || ["head", "options", "trace"].contains(&&**method)
            {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// `path` with every `{param}` replaced by a UUID.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') {
                "0196a0c4-0000-7000-8000-000000000001".to_owned()
            } else {
                s.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_names_every_route_and_nothing_else() {
    let server = TestServer::start().await;
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    let routes = router_routes();
    let ops = described(&doc);
    let undescribed: Vec<_> = routes.difference(&ops).collect();
    let unserved: Vec<_> = ops.difference(&routes).collect();
    assert!(
        undescribed.is_empty() && unserved.is_empty(),
        "routes of `router` missing from /openapi.json (add #[utoipa::path] to the handler \
         and list it in ApiDoc's paths): {undescribed:?}\n\
         operations /openapi.json names that `router` does not declare: {unserved:?}"
    );

    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    for path in paths {
        let url = server.url(&concrete(path));
        for m in METHODS {
            let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).expect("method");
            let mut req = server.client.request(method.clone(), &url);
            if matches!(*m, "post" | "put" | "patch") {
                req = req.json(&json!({}));
            }
            let resp = req.send().await.expect("send");
            let status = resp.status().as_u16();
            let served = ops.contains(&(m.to_uppercase(), path.clone()));
            if served {
                assert_ne!(status, 405, "{method} {path} is described but refused");
                if status == 404 {
                    let body: Value = resp.json().await.expect("problem json");
                    assert_ne!(
                        body["detail"], "no such route",
                        "{method} {path} is described but the router has no such route"
                    );
                }
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not described");
            }
        }
    }
}

/// Writes the description of a fresh server to `dir/openapi.json`.
async fn saved_description(dir: &Path) -> std::path::PathBuf {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let text = resp.text().await.expect("body");
    let file = dir.join("openapi.json");
    std::fs::write(&file, text).expect("write the description");
    file
}

/// A tool the test needs, from the environment `tests/openapi/ensure.sh` prints.
fn tool(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the OpenAPI tests through `bash tests/run-all.sh` (it \
             installs schemathesis and openapi-spec-validator via tests/openapi/ensure.sh), \
             or `eval \"$(bash tests/openapi/ensure.sh)\"` first"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_is_valid_openapi_3_1() {
    let python = tool("ARBOR_TEST_OPENAPI_PYTHON");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = saved_description(dir.path()).await;
    let script = "import json, sys\n\
                  from openapi_spec_validator import validate\n\
                  from openapi_spec_validator.versions.shortcuts import get_spec_version\n\
                  spec = json.load(open(sys.argv[1]))\n\
                  version = get_spec_version(spec)\n\
                  validate(spec)\n\
                  print(version)\n";
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator refuses the description:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains("3.1"), "validated as {version}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_is_self_contained() {
    // Auth on: the page and the description need no token.
    let server = TestServer::start().await;
    let (s, _) = server
        .post("/v1/tokens", json!({"name": "ops", "role": "admin"}))
        .await;
    assert_eq!(s, 201);
    let (s, _) = server.get("/v1/workflows").await;
    assert_eq!(s, 401, "auth is on");
    let (s, doc) = server.get("/openapi.json").await;
    assert_eq!(s, 200, "the description is public");

    let mut nonces = BTreeSet::new();
    for _ in 0..2 {
        let resp = server
            .client
            .get(server.url("/docs"))
            .send()
            .await
            .expect("GET /docs");
        assert_eq!(resp.status(), 200, "the page is public");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with("text/html"));
        let csp = header("content-security-policy");
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .expect("a nonce")
            .to_owned();
        let html = resp.text().await.expect("page");
        assert!(
            html.contains(&format!("<script type=\"module\" nonce=\"{nonce}\">"))
                && html.contains(&format!("<style nonce=\"{nonce}\">")),
            "the inline script and style carry the CSP's nonce"
        );
        for other in [
            "http://",
            "https://",
            "src=\"//",
            "href=\"//",
            "@import",
            "url(",
        ] {
            assert!(
                !html.contains(other),
                "the page names another origin: {other}"
            );
        }
        nonces.insert(nonce);
    }
    assert_eq!(nonces.len(), 2, "each page gets its own nonce");

    // In a browser, under that CSP: every operation listed.
    let operations = described(&doc).len();
    let schemas = doc["components"]["schemas"]
        .as_object()
        .map_or(0, |s| s.len());
    let result = common::browser::run_page(
        &server.url("/docs"),
        30,
        Some(&common::browser::artifact("openapi-docs.png")),
    )
    .await;
    assert_eq!(
        result,
        json!({"operations": operations, "schemas": schemas}),
        "the page renders every operation and schema of the description"
    );
}

/// `arbor serve` on a free loopback port; killed on drop.
struct Binary {
    _child: KillOnDrop,
    base: String,
}

/// Ids to steer schemathesis to real workflows, nodes and branches (as well as the
/// random ids it makes up): the sample's (a completed workflow), and those of a running
/// workflow made here with a decision, its options and a monitor, which takes appends.
async fn seed_ids(client: &reqwest::Client, base: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.get(url).send().await.expect("GET");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")
        }
    };
    let post = |path: String, body: Value| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.post(url).json(&body).send().await.expect("POST");
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.expect("json")
        }
    };
    let running = post("/v1/workflows".into(), json!({"system_prompt": "fuzz"})).await;
    let wf = running["workflow_id"].as_str().expect("workflow_id");
    let mut parent = running["root_id"].as_str().expect("root_id").to_owned();
    for (node_type, child_of_decision) in [
        ("decision", false),
        ("option", true),
        ("option", true),
        ("monitor", false),
    ] {
        let node = post(
            format!("/v1/workflows/{wf}/nodes"),
            json!({"parent_id": parent, "type": node_type, "content": node_type}),
        )
        .await;
        if !child_of_decision {
            parent = node["id"].as_str().expect("id").to_owned();
        }
    }
    let list = get("/v1/workflows".to_owned()).await;
    let wfs: Vec<String> = list["workflows"]
        .as_array()
        .expect("workflows")
        .iter()
        .filter_map(|w| w["workflow_id"].as_str().map(str::to_owned))
        .collect();
    assert!(!wfs.is_empty(), "the sample is imported: {list}");
    let mut nodes = Vec::new();
    let mut branches = Vec::new();
    for wf in &wfs {
        let w = get(format!("/v1/workflows/{wf}")).await;
        let root = w["root_id"].as_str().expect("root").to_owned();
        let sub = get(format!("/v1/nodes/{root}/subtree")).await;
        nodes.extend(
            sub["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .filter_map(|n| n["id"].as_str().map(str::to_owned)),
        );
        let bs = get(format!("/v1/workflows/{wf}/branches")).await;
        branches.extend(
            bs["branches"]
                .as_array()
                .expect("branches")
                .iter()
                .filter_map(|b| b["branch_id"].as_str().map(str::to_owned)),
        );
    }
    (wfs, nodes, branches)
}

/// A TOML array of strings.
fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The checks of the brief: no 5xx, and every answer as described.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";

/// Runs schemathesis against `base` with `config` and `extra` arguments; fails the test
/// with its report if it found anything.
fn schemathesis(base: &str, dir: &Path, name: &str, config: &str, extra: &[&str]) {
    let bin = tool("ARBOR_TEST_SCHEMATHESIS");
    let config_file = dir.join(format!("{name}.toml"));
    std::fs::write(&config_file, config).expect("write schemathesis.toml");
    let started = Instant::now();
    let out = Command::new(&bin)
        .arg("--config-file")
        .arg(&config_file)
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--checks", CHECKS])
        // One worker: hypothesis describes its filters with `ast.parse`, which CPython
        // 3.11 (Debian 12's python3) can fail with a SystemError when threads race it.
        .args([
            "--seed",
            "14",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--no-color",
            // Nothing carried over from an earlier run (which would hold other ids).
            "--generation-database",
            "none",
        ])
        .args(extra)
        .current_dir(dir)
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "schemathesis ({name}) took {:.1?}:\n{stdout}\n{stderr}",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "schemathesis ({name}) found problems (exit {}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stdout.contains("No operations") && stdout.contains("passed"),
        "schemathesis ({name}) tested nothing:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    tool("ARBOR_TEST_SCHEMATHESIS");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("db");
    ok(&arbor(&["import", SAMPLE], &data));
    // Schemathesis also calls without a token or with a wrong one: with the default
    // limit of failed authentications per address (1/s after 20) every later call from
    // 127.0.0.1 would be 429.
    let (child, base) = common::spawn_serve(
        &data,
        ["--durability", "none", "--auth-failure-rate", "100000/s"],
    );
    let server = Binary {
        _child: KillOnDrop(child),
        base,
    };
    let client = reqwest::Client::new();
    let (wfs, nodes, branches) = seed_ids(&client, &server.base).await;

    // Real ids half of the time, made-up ones the other half. Streams: a bounded read
    // (they never end by themselves).
    let config = format!(
        r#"
[dictionaries.workflows]
values = {wfs}
[dictionaries.nodes]
values = {nodes}
[dictionaries.branches]
values = {branches}

[parameters]
"path.wf" = {{ dictionary = "workflows", probability = 0.6 }}
"path.id" = {{ dictionary = "nodes", probability = 0.6 }}
"path.branch_id" = {{ dictionary = "branches", probability = 0.6 }}
"body.parent_id" = {{ dictionary = "nodes", probability = 0.6 }}
"body.nodes[*].parent_id" = {{ dictionary = "nodes", probability = 0.6 }}
"body.from" = {{ dictionary = "nodes", probability = 0.6 }}
"body.to" = {{ dictionary = "nodes", probability = 0.6 }}
"body.option_id" = {{ dictionary = "nodes", probability = 0.6 }}

[[operations]]
include-tag = "streams"
request-timeout = 1.0
max-stream-events = 25
generation.max-examples = 5
"#,
        wfs = toml_list(&wfs),
        nodes = toml_list(&nodes),
        branches = toml_list(&branches),
    );
    let started = Instant::now();
    // Auth off (the store has no token): everything but creating a token, which would
    // turn auth on halfway through.
    schemathesis(
        &server.base,
        dir.path(),
        "open",
        &config,
        &[
            "--exclude-operation-id",
            "create_token",
            "--max-examples",
            "30",
            "--phases",
            "examples,coverage,fuzzing,stateful",
        ],
    );

    // Auth on: an admin token, token creation fuzzed too. Revoking is fuzzed apart, on
    // tokens made for it: schemathesis reuses the ids it reads (`GET /v1/tokens`) and
    // would revoke the token the run uses.
    let mut secrets: Vec<String> = Vec::new();
    let mut victims = Vec::new();
    for name in ["schemathesis", "victim-1", "victim-2", "victim-3"] {
        let mut req = client
            .post(format!("{}/v1/tokens", server.base))
            .json(&json!({"name": name, "role": "admin"}));
        // The first token ends open mode: the next ones need it.
        if let Some(first) = secrets.first() {
            req = req.bearer_auth(first);
        }
        let resp = req.send().await.expect("POST /v1/tokens");
        assert_eq!(resp.status(), 201);
        let created: Value = resp.json().await.expect("token");
        secrets.push(created["token"].as_str().expect("secret").to_owned());
        victims.push(created["id"].as_str().expect("id").to_owned());
    }
    let auth = format!("Authorization: Bearer {}", secrets[0]);
    schemathesis(
        &server.base,
        dir.path(),
        "token",
        &config,
        &[
            "--header",
            &auth,
            "--exclude-operation-id",
            "revoke_token",
            "--max-examples",
            "12",
            "--phases",
            "examples,coverage,fuzzing",
        ],
    );
    let config = format!(
        "{config}\n[dictionaries.victims]\nvalues = {}\n\n\
         [[operations]]\ninclude-operation-id = \"revoke_token\"\n\
         parameters = {{ \"path.id\" = {{ dictionary = \"victims\", probability = 1.0 }} }}\n",
        toml_list(&victims[1..])
    );
    schemathesis(
        &server.base,
        dir.path(),
        "revoke",
        &config,
        &[
            "--header",
            &auth,
            "--include-operation-id",
            "revoke_token",
            "--max-examples",
            "10",
            "--phases",
            "examples,coverage,fuzzing",
        ],
    );
    eprintln!("schemathesis runs took {:.1?}", started.elapsed());
}
