//! Operations: the one configuration (`--config` and `ARBOR_*` honoured by `sync` and
//! `verify --sinks` as by `serve`; secrets masked in `--help`, logs, health and
//! errors), the request timeout (a body that arrives too slowly gets a problem+json
//! 408, other clients are served meanwhile, SSE streams outlive the timeout), request
//! spans in the debug logs, `/metrics` exporting every `_total` series as a counter,
//! and slow clients: slowloris connections closed within `--header-timeout` while others
//! are served, `--max-connections` held (late clients wait, then are served), idle
//! keep-alive connections closed.
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

/// Spawns `cmd` (an `arbor serve`), its stderr read line by line.
fn spawn_watched(mut cmd: Command) -> (std::process::Child, Lines) {
    let mut child = cmd
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
    let lines = Lines {
        rx,
        seen: Vec::new(),
    };
    (child, lines)
}

/// The address of `arbor serve --log-format json`, from its log.
fn listening_addr(lines: &mut Lines) -> String {
    let listening = lines.wait_for(Duration::from_secs(30), |l| l.contains("arbor listening"));
    let v: Value = serde_json::from_str(&listening).expect("JSON log line");
    v["fields"]["addr"].as_str().expect("addr").to_owned()
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
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
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
        .env("RUST_LOG", "debug");
    let (mut child, mut lines) = spawn_watched(cmd);
    let startup = lines.wait_for(Duration::from_secs(30), |l| l.contains("passwords masked"));
    assert!(startup.contains("redis://:***@127.0.0.1"), "{startup}");
    let base = format!("http://{}", listening_addr(&mut lines));

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

/// A workflow's SSE stream, as an open response body.
type Stream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

async fn open_stream(server: &TestServer, wf: &str) -> Stream {
    let r = server
        .client
        .get(server.url(&format!("/v1/workflows/{wf}/stream")))
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status().as_u16(), 200);
    Box::pin(r.bytes_stream())
}

/// Reads `body` until `seen` holds `what`.
async fn read_until(body: &mut Stream, what: &str, seen: &mut String) {
    while !seen.contains(what) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("a chunk in time")
            .expect("the stream goes on")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
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
    let mut body = open_stream(&server, &wf).await;
    let opened = Instant::now();
    let mut seen = String::new();
    // The first heartbeat comes after the timeout: the stream was not cut.
    read_until(&mut body, ":\n\n", &mut seen).await;
    assert!(opened.elapsed() > timeout, "{:?}", opened.elapsed());
    let id = server
        .node(&wf, &root, "message", "after the timeout")
        .await;
    read_until(&mut body, &id, &mut seen).await;
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
        text.contains("arbor_sink_dead_letters{sink=\"redis\"} 0\n"),
        "{text}"
    );
    // Unresolved dead letters go down when resolved: a gauge, never a `_total`.
    assert_eq!(types.get("arbor_sink_dead_letters"), Some(&"gauge"));
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

/// A slowloris client on `addr`: sends a request head a byte every 50 ms and never
/// finishes it. Resolves with how long the server took to close the connection
/// (measured from `since`); panics if it is still open after `within`.
async fn slowloris(addr: std::net::SocketAddr, since: Instant, within: Duration) -> Duration {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let closed = async {
        let _ = tcp
            .write_all(b"GET /v1/workflows HTTP/1.1\r\nhost: arbor\r\nx-slow: ")
            .await;
        let mut tick = tokio::time::interval(Duration::from_millis(50)); // the client's pace
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                r = tcp.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return since.elapsed(),
                    Ok(_) => {} // a 408 or similar before the close
                },
                _ = tick.tick() => {
                    if tcp.write_all(b"a").await.is_err() {
                        return since.elapsed();
                    }
                }
            }
        }
    };
    tokio::time::timeout(within, closed)
        .await
        .expect("the server closed the slow connection")
}

/// Waits until `cond` holds; panics after `within`.
async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await; // poll interval
    }
}

#[tokio::test]
async fn slow_request_heads_are_closed_within_the_header_timeout_while_others_are_served() {
    let timeout = Duration::from_millis(500);
    let server = TestServer::start_with(|c| c.header_timeout = timeout).await;
    let running = server.running.as_ref().expect("running");
    let addr = running.addr();
    let started = Instant::now();
    let slow: Vec<_> = (0..20)
        .map(|_| tokio::spawn(slowloris(addr, started, Duration::from_secs(10))))
        .collect();
    wait_until(Duration::from_secs(10), "20 slow connections", || {
        running.open_connections() >= 20
    })
    .await;

    // Served while twenty connections dribble their heads.
    let (wf, root) = server.workflow("served beside slowloris").await;
    server.node(&wf, &root, "message", "still served").await;
    let (s, _) = server.get("/v1/workflows").await;
    assert_eq!(s, 200);
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "the slow connections were still open while others were served"
    );

    for t in slow {
        let closed_after = t.await.expect("slowloris task");
        assert!(closed_after >= timeout, "closed after {closed_after:?}");
    }
    assert!(
        started.elapsed() < timeout + Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn at_the_connection_cap_new_clients_wait_and_are_served_when_slots_free() {
    let cap = 4;
    let timeout = Duration::from_millis(600);
    let server = TestServer::start_with(|c| {
        c.max_connections = cap;
        c.header_timeout = timeout;
    })
    .await;
    let running = server.running.as_ref().expect("running");
    let addr = running.addr();

    // Watch the gauge for the whole test: it never goes above the cap.
    let gauge = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let most = tokio::spawn({
        let gauge = gauge.clone();
        async move {
            let mut most = 0;
            while !*stopped.borrow() {
                most = most.max(gauge.load(std::sync::atomic::Ordering::Relaxed));
                let _ = tokio::time::timeout(Duration::from_millis(1), stopped.changed()).await;
            }
            most
        }
    });
    let sample = |running: &arbor::server::Running| {
        let n = running.open_connections();
        gauge.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
        n
    };

    // Ten slowloris clients against four slots: four are served (and timed out), six
    // wait in the backlog for their turn.
    let started = Instant::now();
    let slow: Vec<_> = (0..10)
        .map(|_| tokio::spawn(slowloris(addr, started, Duration::from_secs(20))))
        .collect();
    wait_until(Duration::from_secs(10), "the cap to fill", || {
        sample(running) == cap as i64
    })
    .await;

    // A real client queues behind them, and is served once they are gone.
    let client = reqwest::Client::new();
    let url = server.url("/v1/workflows");
    let mut request = tokio::spawn(async move { client.get(url).send().await });
    let answered = loop {
        sample(running);
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(5), &mut request).await {
            break r
                .expect("request task")
                .expect("the waiting client is served");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the waiting client was never served"
        );
    };
    assert_eq!(answered.status().as_u16(), 200);
    assert!(
        started.elapsed() >= timeout,
        "the client waited for a slot: {:?}",
        started.elapsed()
    );
    for t in slow {
        let closed_after = t.await.expect("slowloris task");
        assert!(closed_after >= timeout, "closed after {closed_after:?}");
    }
    sample(running);
    stop.send_replace(true);
    let most = most.await.expect("sampler");
    assert_eq!(
        most, cap as i64,
        "the server held more than {cap} connections"
    );

    // /metrics exports the gauge.
    let text = reqwest::get(server.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("# TYPE arbor_http_connections gauge"),
        "{text}"
    );
}

/// How long after `since` the server closed `tcp` (whatever it sent first); panics if
/// it is still open 10 s later.
async fn closed_after(tcp: &mut tokio::net::TcpStream, since: Instant, what: &str) -> Duration {
    let mut buf = [0u8; 1024];
    let closed = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {:?}", since.elapsed()))
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_stream_is_not() {
    let timeout = Duration::from_millis(300);
    let server = TestServer::start_with(|c| {
        c.header_timeout = timeout;
        c.limits.sse_heartbeat = Duration::from_secs(1);
    })
    .await;
    let running = server.running.as_ref().expect("running");
    let (wf, _) = server.workflow("streamed past the idle timeout").await;

    // One request on a keep-alive connection, then silence: the server closes it.
    let mut idle = tokio::net::TcpStream::connect(running.addr())
        .await
        .expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: arbor\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
        let n = idle.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before the response");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();

    // Meanwhile an SSE stream on its own connection.
    let mut body = open_stream(&server, &wf).await;

    let closed = closed_after(&mut idle, answered, "the idle connection").await;
    assert!(closed >= timeout, "closed after {closed:?}");

    // The stream lives on past the idle timeout: its heartbeat (1 s) arrives.
    read_until(&mut body, ":\n\n", &mut String::new()).await;
    assert!(answered.elapsed() > timeout, "{:?}", answered.elapsed());
    assert_eq!(running.open_connections(), 1, "only the stream is open");
}

#[test]
fn connection_limits_are_settings() {
    let help = text(&arbor(&["serve", "--help"], &[]));
    assert!(help.contains("--header-timeout"), "{help}");
    assert!(help.contains("--max-connections"), "{help}");
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, env, want) in [
        (&["--header-timeout", "0s"][..], &[][..], "header timeout"),
        (
            &[],
            &[("ARBOR_MAX_CONNECTIONS", "0")][..],
            "max connections",
        ),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir"];
        all.push(dir.path().to_str().expect("utf-8"));
        all.extend_from_slice(args);
        let out = arbor(&all, env);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(want), "{}", text(&out));
    }
}

fn sample_workflow_id() -> String {
    let sample = std::fs::read_to_string(SAMPLE).expect("read the sample");
    let first: Value =
        serde_json::from_str(sample.lines().next().expect("a line")).expect("JSON line");
    first["workflow_id"]
        .as_str()
        .expect("workflow_id")
        .to_owned()
}

/// Every command that opens the store, run beside a server holding it, fails with one
/// line that says so and what to do instead; a port in use is said once too. Regression
/// (issue 10): the lock error came three times, without the hint, and the port error
/// twice.
#[tokio::test]
async fn beside_a_running_server_each_command_says_so_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = imported_store(dir.path());
    let d = data.to_str().expect("utf-8");
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--durability", "none", "--data-dir", d]);
    let (mut child, mut lines) = spawn_watched(cmd);
    let addr = listening_addr(&mut lines);
    let wf = sample_workflow_id();
    let events = format!("GET /v1/workflows/{wf}/events?after=0");

    for (args, hint) in [
        (
            &["serve", "--listen", "127.0.0.1:0", "--data-dir", d][..],
            "only one server",
        ),
        (&["import", SAMPLE, "--data-dir", d], "stop it first"),
        (
            &["export", "--workflow", &wf, "--data-dir", d],
            events.as_str(),
        ),
        (&["verify", "--data-dir", d], "stop it first"),
        (&["workflows", "--data-dir", d], "GET /v1/workflows"),
        (&["sync", "status", "--data-dir", d], "--url"),
    ] {
        let out = arbor(args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        let what = args[..2].join(" ");
        assert!(!out.status.success(), "{what}: {}", text(&out));
        assert_eq!(err.lines().count(), 1, "{what}: one line:\n{err}");
        assert!(err.contains("is a server running on it?"), "{what}: {err}");
        assert!(err.contains(hint), "{what}: {err}");
        assert_eq!(
            err.matches(d).count(),
            1,
            "{what} names the directory once: {err}"
        );
    }

    let other = dir.path().join("other");
    let out = arbor(
        &[
            "serve",
            "--listen",
            &addr,
            "--data-dir",
            other.to_str().expect("utf-8"),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches(addr.as_str()).count(), 1, "{err}");
    assert!(err.contains("already in use"), "{err}");
    assert!(err.contains("--listen"), "{err}");

    // The HTTP equivalents named above answer.
    let base = format!("http://{addr}");
    let list: Value = reqwest::get(format!("{base}/v1/workflows"))
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(list["workflows"][0]["workflow_id"], wf.as_str(), "{list}");
    let r = reqwest::get(format!("{base}/v1/workflows/{wf}/events?after=0"))
        .await
        .expect("events");
    assert_eq!(r.status().as_u16(), 200);
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// `import` names the workflows it stored with their node counts, and `arbor workflows`
/// lists them offline exactly as `GET /v1/workflows` does.
#[tokio::test]
async fn import_names_its_workflows_and_workflows_lists_them_as_the_api_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("db");
    let d = data.to_str().expect("utf-8");
    let out = arbor(&["import", SAMPLE, "--data-dir", d], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let stored = report["stored_workflows"]
        .as_array()
        .expect("stored_workflows");
    assert_eq!(stored.len(), 1, "{report}");
    assert_eq!(stored[0]["workflow_id"], sample_workflow_id().as_str());
    let sample = std::fs::read_to_string(SAMPLE).expect("read the sample");
    let created = sample
        .lines()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            v["kind"] == "node.created" || v["kind"] == "workflow.created"
        })
        .count();
    assert_eq!(stored[0]["node_count"], created, "{report}");

    let out = arbor(&["workflows", "--data-dir", d], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let offline: Value = serde_json::from_slice(&out.stdout).expect("list JSON");

    let running = arbor::server::start(common::config(&data))
        .await
        .expect("start");
    let online: Value = reqwest::get(format!("http://{}/v1/workflows", running.addr()))
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    running.shutdown().await.expect("shutdown");
    assert_eq!(offline["workflows"], online["workflows"]);
    assert_eq!(
        offline["workflows"][0]["node_count"],
        stored[0]["node_count"]
    );
}

/// A client that connects and sends nothing, or only the start of the HTTP/2 preface,
/// is closed within the header timeout like any slow head. Regression: hyper's protocol
/// detection has no timeout, and such a client held its slot for ever.
#[tokio::test]
async fn a_silent_client_is_closed_within_the_header_timeout() {
    let timeout = Duration::from_millis(300);
    let server = TestServer::start_with(|c| c.header_timeout = timeout).await;
    let addr = server.running.as_ref().expect("running").addr();
    for sent in [&b""[..], b"PRI * HTTP/2.0"] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(sent).await.expect("write");
        let since = Instant::now();
        let closed = closed_after(&mut tcp, since, &format!("after {sent:?}")).await;
        assert!(closed >= timeout - Duration::from_millis(50), "{closed:?}");
    }

    // Both protocols still get through the read-ahead: HTTP/2 (prior knowledge) and 1.1.
    for flag in ["--http2-prior-knowledge", "--http1.1"] {
        let url = server.url("/healthz");
        let out = tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_version} %{http_code}",
                ])
                .args([flag, &url])
                .output()
        })
        .await
        .expect("curl task")
        .expect("run curl");
        let got = String::from_utf8_lossy(&out.stdout);
        let want = if flag.contains("http2") {
            "2 200"
        } else {
            "1.1 200"
        };
        assert_eq!(got, want, "{flag}: {}", text(&out));
    }
}

/// Runs curl with `args`; (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl (it is needed by the README walkthrough too)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir`, read as bytes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                out.push((path, bytes));
            }
        }
    }
    out
}

#[tokio::test]
async fn tls_with_a_token_and_the_secret_is_nowhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf-8 path");
    // Without a token, a non-loopback bind is refused.
    let refused = arbor(&["serve", "--listen", "0.0.0.0:0", "--data-dir", d], &[]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("without access tokens"),
        "{}",
        text(&refused)
    );
    let made = arbor(
        &[
            "token",
            "create",
            "--name",
            "ops",
            "--role",
            "admin",
            "--data-dir",
            d,
        ],
        &[],
    );
    let made: Value = serde_json::from_slice(&made.stdout).expect("token JSON");
    let admin = made["token"].as_str().expect("secret").to_owned();
    let secret_part = admin.rsplit('_').next().expect("secret part").to_owned();

    // A self-signed certificate for localhost and 127.0.0.1, made here.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).expect("write key");

    // Served on loopback: tests never open a port beyond it.
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--data-dir", d])
        .arg("--tls-cert")
        .arg(&cert_pem)
        .arg("--tls-key")
        .arg(&key_pem)
        .env("RUST_LOG", "debug");
    let (mut child, mut lines) = spawn_watched(cmd);
    let startup = lines.wait_for(Duration::from_secs(30), |l| l.contains("passwords masked"));
    assert!(startup.contains("tls=on"), "{startup}");
    let port = listening_addr(&mut lines)
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let base = format!("https://localhost:{port}");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let cacert = cert_pem.to_str().expect("utf-8 path");
    let bearer = format!("Authorization: Bearer {admin}");
    // curl trusting the certificate made above, `localhost` resolved to 127.0.0.1.
    let https = |args: &[&str]| {
        let mut all = vec!["--resolve", resolve.as_str(), "--cacert", cacert];
        all.extend_from_slice(args);
        curl(&all)
    };

    // curl verifies the certificate against the one made above.
    let (rc, body, err) = https(&[&format!("{base}/healthz")]);
    assert_eq!(rc, 0, "{err}");
    assert!(body.contains("ok"), "{body}");
    let (rc, body, err) = https(&[
        "-H",
        &bearer,
        "--json",
        r#"{"system_prompt":"over TLS"}"#,
        &format!("{base}/v1/workflows"),
    ]);
    assert_eq!(rc, 0, "{err}");
    let created: Value = serde_json::from_str(&body).expect("workflow JSON");
    let wf = created["workflow_id"]
        .as_str()
        .expect("workflow_id")
        .to_owned();
    // Without the token: 401 over TLS; without trusting the certificate: curl refuses;
    // plain HTTP on the TLS port gets no answer.
    let (rc, body, _) = https(&[
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &format!("{base}/v1/workflows"),
    ]);
    assert_eq!((rc, body.as_str()), (0, "401"));
    let (rc, _, err) = curl(&["--resolve", &resolve, &format!("{base}/healthz")]);
    assert_ne!(rc, 0, "an unverified certificate is refused: {err}");
    let (rc, _, _) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert_ne!(rc, 0, "no plain HTTP on the TLS port");
    // Bad tokens of every shape, some carrying part of the real secret.
    for bad in [
        format!("Authorization: Bearer {}x", &admin[..admin.len() - 1]),
        format!("Authorization: Bearer {secret_part}"),
        format!("Authorization: Basic {secret_part}"),
    ] {
        let (_, body, _) = https(&["-H", &bad, &format!("{base}/v1/workflows")]);
        assert!(
            body.contains("401") && !body.contains(&secret_part),
            "{body}"
        );
    }
    let (_, metrics, _) = https(&["-H", &bearer, &format!("{base}/metrics")]);
    assert!(metrics.contains("arbor_auth_failures_total"), "{metrics}");
    let (_, listed, _) = https(&["-H", &bearer, &format!("{base}/v1/tokens")]);
    let (_, audit, _) = https(&["-H", &bearer, &format!("{base}/v1/audit")]);
    assert!(audit.contains("token.created"), "{audit}");
    child.kill().expect("kill");
    child.wait().expect("wait");
    let logs = lines.rest();
    let exported = arbor(&["export", "--workflow", &wf, "--data-dir", d], &[]);
    assert!(text(&exported).contains("over TLS"), "{}", text(&exported));
    let listed_offline = arbor(&["token", "list", "--data-dir", d], &[]);
    for (what, shown) in [
        ("the server's debug log", logs.as_str()),
        ("/metrics", metrics.as_str()),
        ("GET /v1/tokens", listed.as_str()),
        ("GET /v1/audit", audit.as_str()),
        ("arbor export (what every sink reads)", &text(&exported)),
        ("arbor token list", &text(&listed_offline)),
    ] {
        assert_no_secret(what, shown, &[&secret_part]);
    }
    // Stored hashed: no file of the data directory holds the secret.
    for (path, bytes) in files_under(&data) {
        assert!(
            !bytes
                .windows(secret_part.len())
                .any(|w| w == secret_part.as_bytes()),
            "{} holds the secret",
            path.display()
        );
    }
}
