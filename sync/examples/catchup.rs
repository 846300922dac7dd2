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
//! starts a worker from cursor 0 and reports events/s until it reaches the head.
//! PostgreSQL writes into a fresh schema; Redis and Neo4j into fresh workflow ids.

use std::time::{Duration, Instant};

use arbor_storage::{Durability, Intent, Meta, NewNode, NewWorkflow, Outcome, Store, StoreOptions};
use arbor_sync::{Neo4jConfig, SyncConfig};
use uuid::Uuid;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    let mut configs: Vec<(&str, SyncConfig)> = Vec::new();
    let base = SyncConfig {
        batch_size: 5000,
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
    for (name, cfg) in configs {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let head = store.head();
        let t = Instant::now();
        let set = arbor_sync::start(store.clone(), cfg)?;
        loop {
            let st = set.status();
            if st.iter().all(|s| s.cursor >= head) {
                break;
            }
            if t.elapsed() > Duration::from_secs(1800) {
                return Err(format!("{name} did not catch up: {st:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let st = set.status();
        println!(
            "{name}: {head} events in {secs:.2} s = {:.0} events/s (batches {}, retries {})",
            head as f64 / secs,
            st[0].batches,
            st[0].retries
        );
        set.shutdown().await;
    }
    Ok(())
}
