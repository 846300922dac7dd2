//! Sync-out end to end, through the real binary against real Redis, PostgreSQL and
//! Neo4j (started by `tests/services/with-services.sh`; the test fails loudly without
//! them):
//!
//! - `outage_then_kill_9_then_exact_replicas`: for each service in turn, `arbor serve`
//!   with all three sinks; appends over HTTP; the service is killed while appends go on
//!   (every append still succeeds, `/v1/health` shows that sink degraded with a lag and
//!   its error); arbor itself is killed with SIGKILL during the outage; arbor and the
//!   service restart; every sink catches up (lag 0); arbor stops on SIGTERM; and
//!   `arbor verify --sinks` finds no difference. The test Redis keeps nothing across a
//!   kill (no persistence), so for Redis the documented rebuild runs before verify:
//!   flush, `arbor sync reset redis --from 0`, catch up again.
//! - `lag_under_steady_load`: `ARBOR_LAG_RATE` (default 5 000) events/s for
//!   `ARBOR_LAG_SECONDS` (default 10) with all three sinks on, appended by 50 agents in
//!   batches of `ARBOR_LAG_BATCH` (default 10) chained nodes — one HTTP request per event
//!   cannot reach 5 000/s on 2 cores that also run the three services; samples each
//!   sink's `lag_seconds` from `/v1/health` every 50 ms and prints the p50/p99/max (the
//!   figure for the issue); asserts only that the load ran and every sink caught up
//!   afterwards.
//!
//! - `verify_fails_on_a_damaged_replica_and_anti_entropy_repairs_it`: a PostgreSQL
//!   node row deleted behind arbor's back makes `arbor verify --sinks` exit non-zero;
//!   `arbor serve --anti-entropy-interval 200ms` finds it, puts it back (`/v1/health`
//!   and `/metrics` say so), and `verify --sinks` exits 0 again.
//!
//! One test function per scenario; they kill, load or damage the shared services, so
//! they hold a lock and run one at a time.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_arbor");

/// Both tests use the shared services: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run this test under tests/services/with-services.sh \
             (e.g. `bash tests/services/with-services.sh cargo test --release --test sync_e2e`)"
        ),
    }
}

/// The sink flags shared by `serve`, `sync` and `verify`.
struct Sinks {
    redis: String,
    postgres: String,
    schema: String,
    neo4j: String,
    neo4j_user: String,
    neo4j_password: String,
}

impl Sinks {
    fn from_env() -> Sinks {
        Sinks {
            redis: env("ARBOR_TEST_REDIS_URL"),
            postgres: env("ARBOR_TEST_POSTGRES_URL"),
            schema: format!("e2e_{}", uuid::Uuid::now_v7().simple()),
            neo4j: env("ARBOR_TEST_NEO4J_URL"),
            neo4j_user: env("ARBOR_TEST_NEO4J_USER"),
            neo4j_password: env("ARBOR_TEST_NEO4J_PASSWORD"),
        }
    }

    fn args(&self) -> Vec<String> {
        [
            ("--redis-url", &self.redis),
            ("--postgres-url", &self.postgres),
            ("--postgres-schema", &self.schema),
            ("--neo4j-url", &self.neo4j),
            ("--neo4j-user", &self.neo4j_user),
            ("--neo4j-password", &self.neo4j_password),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v.clone()])
        .collect()
    }
}

fn ctl(action: &str, service: &str) {
    let script = env("ARBOR_TEST_SERVICES_CTL");
    let status = Command::new("bash")
        .args([script.as_str(), action, service])
        .status()
        .expect("run services ctl");
    assert!(status.success(), "ctl {action} {service}: {status}");
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &Path, sinks: &Sinks) -> Server {
        Server::start_with(dir, sinks, &[])
    }

    fn start_with(dir: &Path, sinks: &Sinks, extra: &[&str]) -> Server {
        let mut args = vec!["--durability".to_owned(), "fsync".to_owned()];
        args.extend(sinks.args());
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let (child, base) = common::spawn_serve(dir, args);
        Server { child, base }
    }

    fn kill_9(mut self) {
        self.child.kill().expect("kill -9 arbor");
        self.child.wait().expect("reap arbor");
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait arbor") {
                assert!(st.success(), "arbor exited with {st} on SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "arbor did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn health(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let r = client
        .get(format!("{base}/v1/health"))
        .send()
        .await
        .expect("GET /v1/health");
    let code = r.status().as_u16();
    (code, r.json().await.expect("health json"))
}

fn sink<'a>(h: &'a Value, name: &str) -> &'a Value {
    h["components"]["sinks"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no sink {name} in {h}"))
}

/// Polls `/v1/health` until `ok(code, body)` or the deadline.
async fn wait_health(
    client: &reqwest::Client,
    base: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (code, h) = health(client, base).await;
        if ok(code, &h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}; last health ({code}): {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_caught_up(code: u16, h: &Value) -> bool {
    code == 200
        && h["components"]["sinks"].as_array().is_some_and(|a| {
            a.len() == 3 && a.iter().all(|s| s["lag_events"] == 0 && s["state"] == "ok")
        })
}

async fn create_workflow(client: &reqwest::Client, base: &str) -> (String, String) {
    let r = client
        .post(format!("{base}/v1/workflows"))
        .json(&json!({ "system_prompt": "sync e2e" }))
        .send()
        .await
        .expect("create workflow");
    assert_eq!(r.status().as_u16(), 201, "create workflow");
    let v: Value = r.json().await.expect("json");
    (
        v["workflow_id"].as_str().expect("workflow_id").to_owned(),
        v["root_id"].as_str().expect("root_id").to_owned(),
    )
}

/// Appends one node under `parent`; its id.
async fn append(client: &reqwest::Client, base: &str, wf: &str, parent: &str, i: u64) -> String {
    let r = client
        .post(format!("{base}/v1/workflows/{wf}/nodes"))
        .json(&json!({ "parent_id": parent, "type": "message", "content": format!("step {i}") }))
        .send()
        .await
        .expect("append");
    assert_eq!(r.status().as_u16(), 201, "append {i} must succeed");
    let v: Value = r.json().await.expect("json");
    v["id"].as_str().expect("node id").to_owned()
}

/// Appends `k` chained nodes under `parent` in one batch; the last one's id.
async fn append_chain(
    client: &reqwest::Client,
    base: &str,
    wf: &str,
    parent: &str,
    i: u64,
    k: u64,
) -> String {
    let mut nodes = Vec::new();
    let mut prev = parent.to_owned();
    for j in 0..k {
        let id = uuid::Uuid::now_v7().to_string();
        nodes.push(json!({
            "id": id, "parent_id": prev, "type": "message", "content": format!("step {i}.{j}")
        }));
        prev = id;
    }
    let r = client
        .post(format!("{base}/v1/workflows/{wf}/nodes/batch"))
        .json(&json!({ "nodes": nodes }))
        .send()
        .await
        .expect("append batch");
    assert_eq!(r.status().as_u16(), 201, "batch {i} must succeed");
    prev
}

/// Appends in a loop until `stop`; (appended count, last node id).
fn appender(
    client: reqwest::Client,
    base: String,
    wf: String,
    mut parent: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, String)> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            parent = append(&client, &base, &wf, &parent, n).await;
            n += 1;
        }
        (n, parent)
    })
}

fn run_cli(args: &[String]) {
    let out = Command::new(BIN).args(args).output().expect("run arbor");
    assert!(
        out.status.success(),
        "arbor {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn verify_sinks(dir: &Path, sinks: &Sinks) {
    run_cli(&verify_args(dir, sinks));
}

fn verify_args(dir: &Path, sinks: &Sinks) -> Vec<String> {
    let mut args = vec![
        "verify".to_owned(),
        "--sinks".to_owned(),
        "--data-dir".to_owned(),
        dir.display().to_string(),
    ];
    args.extend(sinks.args());
    args
}

/// One outage of `service`, as the module docs describe.
async fn outage(client: &reqwest::Client, service: &str) {
    let sinks = Sinks::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &sinks);
    let base = server.base.clone();
    let (wf, root) = create_workflow(client, &base).await;
    wait_health(
        client,
        &base,
        120,
        "every sink to catch up at start",
        all_caught_up,
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let task = appender(client.clone(), base.clone(), wf.clone(), root, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl("kill", service);
    let t = Instant::now();
    let h = wait_health(
        client,
        &base,
        60,
        &format!("{service} to show degraded"),
        |code, h| {
            let s = sink(h, service);
            code == 200
                && h["status"] == "degraded"
                && s["state"] == "degraded"
                && s["lag_events"].as_u64().is_some_and(|l| l > 0)
                && s["last_error"].is_string()
        },
    )
    .await;
    eprintln!(
        "{service} down: degraded after {:.1?}: {}",
        t.elapsed(),
        sink(&h, service)
    );
    // Appends go on during the outage, then arbor dies with them in flight... after
    // the appender stopped, so every append it made was acknowledged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (n, tip) = task.await.expect("appender");
    assert!(n > 0, "appends during the outage");
    server.kill_9();

    let server = Server::start(dir.path(), &sinks);
    let base = server.base.clone();
    // Still down for a moment after the restart: appends succeed.
    let mut tip = tip;
    for i in 0..20 {
        tip = append(client, &base, &wf, &tip, 100_000 + i).await;
    }
    ctl("start", service);
    for i in 0..20 {
        tip = append(client, &base, &wf, &tip, 200_000 + i).await;
    }
    let t = Instant::now();
    wait_health(client, &base, 180, "every sink to catch up", all_caught_up).await;
    eprintln!("{service} back: caught up in {:.1?}", t.elapsed());
    server.stop();

    if service == "redis" {
        // The test Redis lost what it had when it was killed (no persistence): rebuild
        // it as documented, then it must be exact too.
        let out = Command::new("redis-cli")
            .args(["-u", sinks.redis.as_str(), "FLUSHDB"])
            .output()
            .expect("redis-cli FLUSHDB");
        assert!(out.status.success(), "FLUSHDB: {out:?}");
        let mut args: Vec<String> = ["sync", "reset", "redis", "--from", "0", "--data-dir"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(dir.path().display().to_string());
        args.extend(sinks.args());
        run_cli(&args);
        let server = Server::start(dir.path(), &sinks);
        wait_health(client, &server.base, 180, "redis to rebuild", all_caught_up).await;
        server.stop();
    }
    verify_sinks(dir.path(), &sinks);
}

#[test]
fn outage_then_kill_9_then_exact_replicas() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = reqwest::Client::new();
    for service in ["redis", "postgres", "neo4j"] {
        let t = Instant::now();
        rt.block_on(outage(&client, service));
        eprintln!("{service} outage scenario: {:.1?}", t.elapsed());
    }
}

#[test]
fn lag_under_steady_load() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let secs: u64 = std::env::var("ARBOR_LAG_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rate: u64 = std::env::var("ARBOR_LAG_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let batch: u64 = std::env::var("ARBOR_LAG_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|b| *b > 0)
        .unwrap_or(10);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sinks = Sinks::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &sinks);
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    rt.block_on(async {
        wait_health(&client, &base, 120, "every sink at start", all_caught_up).await;
        // 50 workflows, each a chain appended by its own task; together `rate` appends/s,
        // paced per 10 ms tick.
        const WORKERS: u64 = 50;
        let mut tips = Vec::new();
        for _ in 0..WORKERS {
            tips.push(create_workflow(&client, &base).await);
        }
        eprintln!(
            "started, {WORKERS} workflows created in {:.1?}",
            t0.elapsed()
        );
        let sent = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for (wf, root) in tips {
            let client = client.clone();
            let base = base.clone();
            let sent = sent.clone();
            tasks.push(tokio::spawn(async move {
                let mut parent = root;
                let mut i = 0u64;
                let per_worker = rate as f64 / WORKERS as f64;
                while Instant::now() < end {
                    // Where this worker should be by now (events).
                    let due = (start.elapsed().as_secs_f64() * per_worker) as u64;
                    if i + batch > due {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    parent = if batch == 1 {
                        append(&client, &base, &wf, &parent, i).await
                    } else {
                        append_chain(&client, &base, &wf, &parent, i, batch).await
                    };
                    i += batch;
                    sent.fetch_add(batch, Ordering::Relaxed);
                }
            }));
        }
        // Sample each sink's lag while the load runs.
        let mut samples: [Vec<f64>; 3] = Default::default();
        while Instant::now() < end {
            let (_, h) = health(&client, &base).await;
            for (i, name) in ["redis", "postgres", "neo4j"].iter().enumerate() {
                if let Some(l) = sink(&h, name)["lag_seconds"].as_f64() {
                    samples[i].push(l);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for t in tasks {
            t.await.expect("load task");
        }
        let total = sent.load(Ordering::Relaxed);
        let achieved = total as f64 / start.elapsed().as_secs_f64();
        eprintln!(
            "load: {total} events in {:.1?} = {achieved:.0}/s (target {rate}/s, batches of {batch})",
            start.elapsed()
        );
        for (i, name) in ["redis", "postgres", "neo4j"].iter().enumerate() {
            let s = &mut samples[i];
            s.sort_by(f64::total_cmp);
            let pct = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
            eprintln!(
                "lag {name}: {} samples, p50 {:.3} s, p99 {:.3} s, max {:.3} s",
                s.len(),
                pct(0.5),
                pct(0.99),
                pct(1.0)
            );
        }
        assert!(total > 0);
        let t = Instant::now();
        wait_health(
            &client,
            &base,
            300,
            "every sink to catch up after the load",
            all_caught_up,
        )
        .await;
        eprintln!("caught up {:.1?} after the load ended", t.elapsed());
    });
    let t = Instant::now();
    server.stop();
    eprintln!("stopped in {:.1?}", t.elapsed());
    let t = Instant::now();
    verify_sinks(dir.path(), &sinks);
    eprintln!("verify --sinks in {:.1?}", t.elapsed());
}

#[test]
fn verify_fails_on_a_damaged_replica_and_anti_entropy_repairs_it() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = reqwest::Client::new();
    let sinks = Sinks::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let server = Server::start_with(dir.path(), &sinks, &["--anti-entropy-interval", "0s"]);
        let (wf, root) = create_workflow(&client, &server.base).await;
        append_chain(&client, &server.base, &wf, &root, 0, 20).await;
        wait_health(&client, &server.base, 120, "every sink caught up", all_caught_up).await;
        server.stop();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&sinks.postgres)
            .await
            .expect("connect to postgres");
        let deleted = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DELETE FROM \"{schema}\".arbor_nodes WHERE seq = (SELECT max(seq) - 3 FROM \"{schema}\".arbor_nodes)",
            schema = sinks.schema
        )))
        .execute(&pool)
        .await
        .expect("delete a node row");
        assert_eq!(deleted.rows_affected(), 1);
        pool.close().await;
    });
    // The damage is visible: verify exits non-zero and names the sink and the table.
    let out = Command::new(BIN)
        .args(verify_args(dir.path(), &sinks))
        .output()
        .expect("run verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "verify passed a damaged replica: {stdout}"
    );
    assert!(
        stdout.contains("postgres") && stdout.contains("nodes"),
        "{stdout}"
    );
    rt.block_on(async {
        let server = Server::start_with(dir.path(), &sinks, &["--anti-entropy-interval", "200ms"]);
        let h = wait_health(&client, &server.base, 60, "the repair", |code, h| {
            all_caught_up(code, h) && sink(h, "postgres")["anti_entropy"]["repaired"] == 1
        })
        .await;
        let pg = &sink(&h, "postgres")["anti_entropy"];
        assert_eq!(pg["unrepaired"], 0, "{h}");
        assert_eq!(pg["last_divergence"]["what"], "1 of 21 nodes", "{h}");
        for name in ["redis", "neo4j"] {
            assert_eq!(sink(&h, name)["anti_entropy"]["divergences"], 0, "{h}");
        }
        let metrics = client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        assert!(
            metrics.contains("arbor_sink_repairs_total{sink=\"postgres\"} 1\n"),
            "{metrics}"
        );
        server.stop();
    });
    verify_sinks(dir.path(), &sinks);
}
