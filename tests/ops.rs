//! Operations: the one configuration (`--config` and `ARBOR_*` honoured by `sync` and
//! `verify --sinks` as by `serve`; secrets masked in `--help`, logs, health and
//! errors), the request timeout (a body that arrives too slowly gets a problem+json
//! 408, other clients are served meanwhile, SSE streams outlive the timeout), request
//! spans in the debug logs, and `/metrics` exporting every `_total` series as a counter.
//!
//! Sinks here point at a loopback port nobody listens on: they are real clients that
//! fail to connect, which is all these tests need (no service runs).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_arbor");
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/sample-coding-agent.jsonl"
);

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn arbor(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run arbor")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

/// A data directory holding the shipped sample.
fn imported_store(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("db");
    let out = arbor(
        &[
            "import",
            SAMPLE,
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    data
}

#[test]
fn sync_and_verify_read_the_config_file_and_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = imported_store(dir.path());
    let config = dir.path().join("arbor.toml");
    let redis = format!("redis://:file-secret-1@127.0.0.1:{}/0", closed_port());
    std::fs::write(
        &config,
        format!("data_dir = {:?}\nredis_url = {redis:?}\n", data.display()),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8");
    let secrets = ["file-secret-1", "env-secret-2"];

    // `sync reset` finds the sink and the data directory in the file alone.
    let out = arbor(
        &["sync", "reset", "redis", "--from", "2", "--config", config],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret("sync reset", &text(&out), &secrets);

    // `sync status` too: the sink is down (degraded), its cursor is where reset put it.
    let out = arbor(&["sync", "status", "--config", config], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret("sync status", &text(&out), &secrets);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status.as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(status[0]["name"], "redis");
    assert_eq!(status[0]["state"], "degraded");
    assert_eq!(status[0]["cursor"], 2);

    // The environment beats the file, and adds to it.
    let postgres = format!(
        "postgres://arbor:env-secret-2@127.0.0.1:{}/x",
        closed_port()
    );
    let out = arbor(
        &["sync", "status", "--config", config],
        &[("ARBOR_POSTGRES_URL", postgres.as_str())],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret("sync status", &text(&out), &secrets);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let names: Vec<&str> = status
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["redis", "postgres"]);

    // `verify --sinks` checks the log, then fails on the unreachable sink — without
    // showing its password.
    let out = arbor(&["verify", "--sinks", "--config", config], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("redis"), "{}", text(&out));
    assert_no_secret("verify --sinks", &text(&out), &secrets);

    // A flag beats the file: another data directory has no store.
    let elsewhere = dir.path().join("elsewhere");
    let out = arbor(
        &[
            "sync",
            "status",
            "--config",
            config,
            "--data-dir",
            elsewhere.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("holds no arbor store"),
        "{}",
        text(&out)
    );
}

#[test]
fn help_never_shows_a_secret_from_the_environment() {
    let secrets = [
        ("ARBOR_REDIS_URL", "redis://:help-secret-1@h:6379/"),
        ("ARBOR_POSTGRES_URL", "postgres://u:help-secret-2@h/db"),
        ("ARBOR_NEO4J_URL", "bolt://u:help-secret-3@h:7687"),
        ("ARBOR_NEO4J_PASSWORD", "help-secret-4"),
    ];
    for cmd in [
        &["serve", "--help"][..],
        &["sync", "status", "--help"],
        &["verify", "--help"],
    ] {
        let out = arbor(cmd, &secrets);
        assert!(out.status.success(), "{}", text(&out));
        let help = text(&out);
        assert!(help.contains("--config"), "{help}");
        assert!(help.contains("--redis-url"), "{help}");
        assert_no_secret(
            &cmd.join(" "),
            &help,
            &[
                "help-secret-1",
                "help-secret-2",
                "help-secret-3",
                "help-secret-4",
            ],
        );
    }
    let help = text(&arbor(&["serve", "--help"], &[]));
    assert!(help.contains("--request-timeout"), "{help}");
}

/// Lines of a child's stderr, read on a thread.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Waits for a line matching `pred`; panics after `within`.
    fn wait_for(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no such line ({e}); saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Everything, once the child has ended.
    fn rest(mut self) -> String {
        self.seen.extend(self.rx.iter());
        self.seen.join("\n")
    }
}

#[tokio::test]
async fn secrets_reach_no_log_line_and_no_health_report() {
    let secrets = [
        "redis-pw-1",
        "pg-pw-2",
        "neo-pw-3",
        "bolt-pw-4",
        "token-5",
        "query-6",
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--durability", "none"])
        .arg("--redis-url")
        .arg(format!("redis://:redis-pw-1@127.0.0.1:{port}/0"))
        .arg("--postgres-url")
        .arg(format!("postgres://arbor:pg-pw-2@127.0.0.1:{port}/x"))
        .arg("--neo4j-url")
        .arg(format!("bolt://neo4j:bolt-pw-4@127.0.0.1:{port}"))
        .args(["--neo4j-password", "neo-pw-3"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn arbor serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Lines {
        rx,
        seen: Vec::new(),
    };
    let startup = lines.wait_for(Duration::from_secs(30), |l| l.contains("passwords masked"));
    assert!(startup.contains("redis://:***@127.0.0.1"), "{startup}");
    let listening = lines.wait_for(Duration::from_secs(30), |l| l.contains("arbor listening"));
    let v: Value = serde_json::from_str(&listening).expect("JSON log line");
    let base = format!("http://{}", v["fields"]["addr"].as_str().expect("addr"));

    // The sinks fail and say why (the Neo4j sink may still be connecting: it is not
    // waited for).
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        let h: Value = client
            .get(format!("{base}/v1/health"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("health JSON");
        let sinks = h["components"]["sinks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let failed = |name: &str| {
            sinks
                .iter()
                .any(|s| s["name"] == name && s["last_error"].is_string())
        };
        if sinks.len() == 3 && failed("redis") && failed("postgres") {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "sinks never reported errors: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
    };
    assert_no_secret("/v1/health", &health.to_string(), &secrets);

    // A request with a bearer token and a secret in its query string.
    let r = client
        .get(format!("{base}/v1/workflows?access_token=query-6"))
        .header("authorization", "Bearer token-5")
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    lines.wait_for(Duration::from_secs(10), |l| {
        l.contains("finished processing request") && l.contains("\"path\":\"/v1/workflows\"")
    });
    child.kill().expect("kill");
    child.wait().expect("wait");
    let log = lines.rest();
    assert!(status == 200 || status == 400, "{status}");
    assert_no_secret("the log", &log, &secrets);
}

/// Reads one HTTP/1.1 response (head and a `content-length` body) from `stream`.
async fn read_response(stream: &mut tokio::net::TcpStream) -> (String, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if body.len() >= len {
                return (
                    head.to_owned(),
                    serde_json::from_str(body).expect("JSON body"),
                );
            }
        }
    }
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_gets_408_while_others_are_served() {
    let timeout = Duration::from_millis(400);
    let server = TestServer::start_with(|c| c.limits.request_timeout = timeout).await;
    let addr = server.running.as_ref().expect("running").addr();
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    slow.write_all(
        b"POST /v1/workflows HTTP/1.1\r\nhost: arbor\r\ncontent-type: application/json\r\n\
          content-length: 64\r\n\r\n{\"system_prompt\": ",
    )
    .await
    .expect("write");
    // The stalled request holds up nobody.
    let (wf, _) = server.workflow("served while another request stalls").await;

    let (head, body) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut slow))
        .await
        .expect("the stalled request is answered");
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    assert_eq!(body["status"], 408, "{body}");
    assert!(body["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/timeout")));

    // Nothing of the stalled request was stored; the server still serves.
    let (s, list) = server.get("/v1/workflows").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = list["workflows"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|w| w["workflow_id"].as_str())
        .collect();
    assert_eq!(ids, [wf.as_str()]);
    server.workflow("and after it").await;
}

#[tokio::test]
async fn an_sse_stream_outlives_the_request_timeout() {
    let timeout = Duration::from_millis(200);
    let server = TestServer::start_with(|c| {
        c.limits.request_timeout = timeout;
        c.limits.sse_heartbeat = Duration::from_secs(1);
    })
    .await;
    let (wf, root) = server.workflow("streamed").await;
    let r = server
        .client
        .get(server.url(&format!("/v1/workflows/{wf}/stream")))
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status().as_u16(), 200);
    let opened = Instant::now();
    let mut body = Box::pin(r.bytes_stream());
    let mut seen = String::new();
    // Reads the stream until `seen` holds `what`.
    let mut read_until = async |what: &str, seen: &mut String| {
        while !seen.contains(what) {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("a chunk in time")
                .expect("the stream goes on")
                .expect("chunk");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    // The first heartbeat comes after the timeout: the stream was not cut.
    read_until(":\n\n", &mut seen).await;
    assert!(opened.elapsed() > timeout, "{:?}", opened.elapsed());
    let id = server
        .node(&wf, &root, "message", "after the timeout")
        .await;
    read_until(&id, &mut seen).await;
    assert!(seen.contains("event: node.created"), "{seen}");
}

#[tokio::test]
async fn metrics_export_every_total_as_a_counter() {
    let redis = format!("redis://127.0.0.1:{}/0", closed_port());
    let server = TestServer::start_with(|c| c.sync.redis_url = Some(redis)).await;
    let (wf, root) = server.workflow("measured").await;
    let id = server.node(&wf, &root, "message", "one").await;
    let (s, _) = server.get(&format!("/v1/nodes/{id}/path")).await;
    assert_eq!(s, 200);

    let scrape = || async {
        let r = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.expect("text")
    };
    let text = scrape().await;
    let types: std::collections::BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    for name in [
        "arbor_events_total",
        "arbor_sse_catchups_total",
        "arbor_node_cache_hits_total",
        "arbor_node_cache_misses_total",
        "arbor_node_cache_evictions_total",
        "arbor_sink_batches_total",
        "arbor_sink_retries_total",
        "arbor_sink_errors_total",
        "arbor_sink_dead_letters_total",
    ] {
        assert_eq!(types.get(name), Some(&"counter"), "{name}:\n{text}");
    }
    for (name, kind) in &types {
        if name.ends_with("_total") {
            assert_eq!(*kind, "counter", "{name}");
        }
    }
    assert!(text.contains("arbor_events_total 2\n"), "{text}");
    assert!(
        text.contains("arbor_sink_dead_letters_total{sink=\"redis\"} 0\n"),
        "{text}"
    );
    assert_eq!(types.get("arbor_sink_lag_events"), Some(&"gauge"));

    // The health report has the same sink, typed, with its dead letters.
    let (s, health) = server.get("/v1/health").await;
    assert_eq!(s, 200);
    assert_eq!(health["status"], json!("degraded"), "{health}");
    let sink = &health["components"]["sinks"][0];
    assert_eq!(sink["name"], "redis");
    assert_eq!(sink["dead_letters"], 0);
    assert!(sink["state"] == "starting" || sink["state"] == "degraded");
}
