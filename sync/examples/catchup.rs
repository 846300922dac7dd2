//! Sustained catch-up throughput of each sink from a pre-filled log.
//!
//! ```text
//! ARBOR_TEST_REDIS_URL=… ARBOR_TEST_POSTGRES_URL=… ARBOR_TEST_NEO4J_URL=… \
//! ARBOR_TEST_NEO4J_USER=… ARBOR_TEST_NEO4J_PASSWORD=… \
//!   cargo run --release -p arbor-sync --example catchup -- EVENTS [SINK…]
//! ```
//!
//! Fills a temp store with EVENTS events (workflows of 1 000 chained nodes, appended
//! 1 000 per batch), then for each sink (default: every one whose variables are set)
//! starts a worker from cursor 0 and reports events/s until it reaches the head; with
//! `ARBOR_CATCHUP_REPLAY=1`, then resets the cursor to 0 and reports the replay into the
//! replica that holds every event already (what `arbor sync reset --from 0` costs).
//! PostgreSQL writes into a fresh schema; Redis and Neo4j into fresh workflow ids.

use std::time::{Duration, Instant};

use arbor_storage::{Durability, Intent, Meta, NewNode, NewWorkflow, Outcome, Store, StoreOptions};
use arbor_sync::{Neo4jConfig, SyncConfig};
use uuid::Uuid;

#[path = "support/proc.rs"]
mod proc;
use proc::{tree_cpu, var};

/// CPU seconds of this process and of each process in ARBOR_BENCH_PIDS_<SINK>
/// (comma-separated pids: the redis-server, the postmaster, the Neo4j JVM).
fn cpu_snapshot(sink: &str) -> (f64, Vec<(String, f64)>) {
    let own = tree_cpu("self");
    let watched = var(&format!("ARBOR_BENCH_PIDS_{}", sink.to_uppercase()))
        .map(|v| {
            v.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| (p.to_owned(), tree_cpu(p)))
                .collect()
        })
        .unwrap_or_default();
    (own, watched)
}

/// The allocator the `arbor` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `arbor` binary does (it applies to the runtime's threads started already).
    arbor_storage::disable_transparent_huge_pages();
    let mut args = std::env::args().skip(1);
    let events: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let only: Vec<String> = args.collect();
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path(),
        StoreOptions {
            durability: Durability::None,
            // ARBOR_CACHE_MB: sled's page cache, as `arbor serve --cache-mb`.
            cache_mb: var("ARBOR_CACHE_MB")
                .and_then(|v| v.parse().ok())
                .unwrap_or(StoreOptions::default().cache_mb),
            ..StoreOptions::default()
        },
    )?;
    let t = Instant::now();
    while store.head() < events {
        let Outcome::WorkflowCreated {
            workflow_id,
            root_id,
            ..
        } = store
            .submit(
                Intent::CreateWorkflow(NewWorkflow {
                    system_prompt: "catch-up benchmark".into(),
                    ..NewWorkflow::default()
                }),
                Meta::default(),
            )
            .await?
        else {
            return Err("unexpected outcome".into());
        };
        let mut parent = root_id;
        for _ in 0..4 {
            let mut nodes = Vec::with_capacity(250);
            for i in 0..250 {
                let id = Uuid::now_v7();
                let mut n = NewNode::new(
                    parent,
                    "message",
                    format!("message {i}: {}", "lorem ipsum ".repeat(8)),
                );
                n.id = Some(id);
                n.payload = serde_json::json!({"i": i, "tokens": 42});
                nodes.push(n);
                parent = id;
            }
            store
                .submit(Intent::AppendNodes { workflow_id, nodes }, Meta::default())
                .await?;
        }
    }
    println!("filled {} events in {:.1?}", store.head(), t.elapsed());
    // Baseline: what reading the log into sink items costs, without any sink.
    let t = Instant::now();
    let mut after = 0;
    while after < store.head() {
        let items = arbor_sync::driver::read_items(&store, after, 5000)?;
        after = items.last().map_or(store.head(), |i| i.seq());
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "log read only: {after} events in {secs:.2} s = {:.0} events/s",
        after as f64 / secs
    );
    // The same with the driver's reader (two threads per batch when catching up).
    let t = Instant::now();
    let mut after = 0;
    while after < store.head() {
        let items = arbor_sync::driver::read_batch(&store, after, 5000).await?;
        after = items.last().map_or(store.head(), |i| i.seq());
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "log read, driver reader: {after} events in {secs:.2} s = {:.0} events/s",
        after as f64 / secs
    );
    let mut configs: Vec<(&str, SyncConfig)> = Vec::new();
    let base = SyncConfig {
        // ARBOR_SYNC_BATCH: most events per sink batch (default 5 000).
        batch_size: var("ARBOR_SYNC_BATCH")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000),
        ..SyncConfig::default()
    };
    if let Some(url) = var("ARBOR_TEST_REDIS_URL") {
        configs.push((
            "redis",
            SyncConfig {
                redis_url: Some(url),
                ..base.clone()
            },
        ));
    }
    if let Some(url) = var("ARBOR_TEST_POSTGRES_URL") {
        let schema = format!("bench_{}", Uuid::new_v4().simple());
        configs.push((
            "postgres",
            SyncConfig {
                postgres_url: Some(url),
                postgres_schema: schema,
                ..base.clone()
            },
        ));
    }
    if let (Some(url), Some(user), Some(password)) = (
        var("ARBOR_TEST_NEO4J_URL"),
        var("ARBOR_TEST_NEO4J_USER"),
        var("ARBOR_TEST_NEO4J_PASSWORD"),
    ) {
        configs.push((
            "neo4j",
            SyncConfig {
                neo4j: Some(Neo4jConfig {
                    url,
                    user,
                    password,
                }),
                ..base.clone()
            },
        ));
    }
    // ARBOR_CATCHUP_REPLAY=1: then `sync reset --from 0` and replay the whole log into
    // the replica that holds it already (every batch conflicts: the path a reset takes).
    let replay = var("ARBOR_CATCHUP_REPLAY").is_some_and(|v| v == "1");
    for (name, cfg) in configs {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        pass(&store, name, &cfg, name).await?;
        if replay {
            arbor_sync::reset(&store, &cfg, name, 0).await?;
            pass(&store, name, &cfg, &format!("{name} replay")).await?;
        }
    }
    Ok(())
}

/// Runs sink `name` from its cursor to the head of `store`, and prints events/s and the
/// CPU an event of arbor and of the server, labelled `label`.
async fn pass(
    store: &Store,
    name: &str,
    cfg: &SyncConfig,
    label: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let head = store.head();
    let cpu0 = cpu_snapshot(name);
    let t = Instant::now();
    let set = arbor_sync::start(store.clone(), cfg.clone())?;
    loop {
        let st = set.status();
        if st.iter().all(|s| s.cursor >= head) {
            break;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            return Err(format!("{label} did not catch up: {st:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let st = set.status();
    println!(
        "{label}: {head} events in {secs:.2} s = {:.0} events/s (batches {}, retries {})",
        head as f64 / secs,
        st[0].batches,
        st[0].retries
    );
    let cpu1 = cpu_snapshot(name);
    let own = cpu1.0 - cpu0.0;
    let servers: f64 = cpu1.1.iter().zip(&cpu0.1).map(|(a, b)| a.1 - b.1).sum();
    println!(
        "{label}: cpu {own:.2} s arbor + {servers:.2} s server = {:.1} us/event \
         (2 idle cores: ~{:.0} events/s)",
        (own + servers) * 1e6 / head as f64,
        2.0 * head as f64 / (own + servers),
    );
    set.shutdown().await;
    Ok(())
}
