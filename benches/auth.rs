//! What access control costs an append (DESIGN §8, issue 12): HTTP single appends to a
//! real in-process server on loopback, 16 at a time over keep-alive connections, with a
//! bearer token (hash check, role check, rate-limit bucket, actor) and in open mode —
//! the baseline, measured in the same run on the same machine. Durability `none`, so
//! the request path and not the disk is what is measured (the demanding case for the
//! ratio).
//!
//! The machine is shared and noisy, so besides criterion's two figures the bench prints
//! the ratio from interleaved rounds (open then token, token then open, …, 1 000
//! appends each): drift hits both sides alike.
//!
//! Run: `cargo bench --bench auth` (the `interleaved` line is the figure to report).

use std::time::{Duration, Instant};

use arbor::auth::role::Role;
use arbor::auth::token::{issue, NewToken};
use arbor::config::ServeConfig;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};

/// Appends in flight at once.
const CONCURRENCY: u64 = 16;

struct Target {
    _running: arbor::server::Running,
    _dir: tempfile::TempDir,
    nodes_url: String,
    root: String,
    token: Option<String>,
}

async fn target(with_token: bool) -> Target {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = ServeConfig::new(dir.path(), "127.0.0.1:0".parse().expect("addr"));
    cfg.durability = arbor_storage::Durability::None;
    cfg.rate_limit = 1e9;
    let running = arbor::server::start(cfg).await.expect("start");
    let base = format!("http://{}", running.addr());
    let client = reqwest::Client::new();
    // The workflow is made in open mode; the token (if any) closes the store after.
    let created: Value = client
        .post(format!("{base}/v1/workflows"))
        .json(&json!({ "system_prompt": "bench" }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let token = with_token.then(|| {
        let new = NewToken {
            name: "bench".into(),
            role: Role::Writer,
            workflows: Vec::new(),
            branches: Vec::new(),
            expires_at: None,
            rate: None,
        };
        let (_, secret) = issue(running.store(), new, "bench").expect("issue");
        secret.expose().to_owned()
    });
    Target {
        nodes_url: format!(
            "{base}/v1/workflows/{}/nodes",
            created["workflow_id"].as_str().expect("wf")
        ),
        root: created["root_id"].as_str().expect("root").to_owned(),
        token,
        _running: running,
        _dir: dir,
    }
}

/// `n` appends, `CONCURRENCY` at a time; the wall time.
async fn appends(t: &Target, clients: &[reqwest::Client], n: u64) -> Duration {
    let body = json!({ "parent_id": t.root, "type": "message", "content": "x".repeat(256) });
    let start = Instant::now();
    let per = n.div_ceil(CONCURRENCY);
    let tasks = clients.iter().map(|c| {
        let (c, body, url, token) = (
            c.clone(),
            body.clone(),
            t.nodes_url.clone(),
            t.token.clone(),
        );
        tokio::spawn(async move {
            for _ in 0..per {
                let mut req = c.post(&url).json(&body);
                if let Some(tok) = &token {
                    req = req.bearer_auth(tok);
                }
                let status = req.send().await.expect("append").status();
                assert_eq!(status.as_u16(), 201);
            }
        })
    });
    for task in tasks.collect::<Vec<_>>() {
        task.await.expect("task");
    }
    start.elapsed() * (n as u32).max(1) / ((per * CONCURRENCY) as u32).max(1)
}

/// Rounds of the interleaved comparison, and appends per side per round.
const ROUNDS: usize = 20;
const PER_ROUND: u64 = 1_000;

/// token time / open time over interleaved rounds: (of the totals, the median round).
async fn interleaved(open: &Target, secured: &Target, clients: &[reqwest::Client]) -> (f64, f64) {
    let (mut open_total, mut token_total) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let (o, t) = if round % 2 == 0 {
            let o = appends(open, clients, PER_ROUND).await;
            (o, appends(secured, clients, PER_ROUND).await)
        } else {
            let t = appends(secured, clients, PER_ROUND).await;
            (appends(open, clients, PER_ROUND).await, t)
        };
        open_total += o;
        token_total += t;
        ratios.push(t.as_secs_f64() / o.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    (
        token_total.as_secs_f64() / open_total.as_secs_f64(),
        ratios[ROUNDS / 2],
    )
}

fn auth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let open = rt.block_on(target(false));
    let secured = rt.block_on(target(true));
    let clients: Vec<reqwest::Client> = (0..CONCURRENCY).map(|_| reqwest::Client::new()).collect();
    let (total, median) = rt.block_on(interleaved(&open, &secured, &clients));
    println!(
        "auth/interleaved: token / open time = {total:.3} over {ROUNDS} rounds of {PER_ROUND} \
         appends each (median round {median:.3})"
    );
    let mut g = c.benchmark_group("auth");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("append_open", |b| {
        b.iter_custom(|n| rt.block_on(appends(&open, &clients, n)))
    });
    g.bench_function("append_token", |b| {
        b.iter_custom(|n| rt.block_on(appends(&secured, &clients, n)))
    });
    g.finish();
}

criterion_group!(benches, auth);
criterion_main!(benches);
