//! The Neo4j sink against a real server: the seeds' queries (with the corrected
//! path-to-root Cypher) answered like the store, a 100 000-event workflow,
//! out-of-order batches, outage and restart, replay from 0, and a poison event.

mod common;

use arbor_storage::{BranchNodes, Decision, Monitor, Node, Store};
use arbor_sync::neo4j::{self, queries, Neo4jSink};
use arbor_sync::{SinkState, SyncConfig};
use common::*;
use neo4rs::Graph;
use serde_json::json;
use tokio::sync::RwLock;
use uuid::Uuid;

/// Outage tests stop the shared server: they run alone.
static SERVER: RwLock<()> = RwLock::const_new(());

struct Neo(Graph);

impl Replica for Neo {
    async fn path(&self, id: Uuid) -> Vec<Node> {
        queries::path(&self.0, id).await.expect("neo4j path")
    }
    async fn decisions(&self, wf: Uuid) -> Vec<Decision> {
        queries::decisions(&self.0, wf)
            .await
            .expect("neo4j decisions")
    }
    async fn branch(&self, wf: Uuid, b: Uuid) -> Option<BranchNodes> {
        queries::branch(&self.0, wf, b).await.expect("neo4j branch")
    }
    async fn monitors(&self, wf: Uuid, cross: bool) -> Vec<Monitor> {
        queries::monitors(&self.0, wf, cross)
            .await
            .expect("neo4j monitors")
    }
}

fn neo_config() -> SyncConfig {
    SyncConfig {
        neo4j: Some(neo4j()),
        ..config()
    }
}

async fn graph() -> Graph {
    neo4j::connect(&neo4j()).await.expect("connect")
}

async fn count(g: &Graph, q: &str, wf: Uuid) -> i64 {
    let rows = queries::rows(g, neo4rs::query(q).param("wf", wf.to_string()), |r| {
        r.get::<i64>("c")
            .map_err(|e| queries::ReadError::Decode(e.to_string()))
    })
    .await
    .expect("count");
    rows.first().copied().unwrap_or(0)
}

/// Every node once, no placeholder left, every edge once.
async fn assert_exact(g: &Graph, store: &Store, wf: Uuid) {
    let view = store.workflow(&wf).expect("wf").expect("wf");
    let nodes = count(
        g,
        "MATCH (n:WorkflowNode {workflow_id: $wf}) RETURN count(n) AS c",
        wf,
    )
    .await;
    let distinct = count(
        g,
        "MATCH (n:WorkflowNode {workflow_id: $wf}) RETURN count(DISTINCT n.id) AS c",
        wf,
    )
    .await;
    assert_eq!(
        (nodes, distinct),
        (view.node_count as i64, view.node_count as i64)
    );
    let parents = count(
        g,
        "MATCH (:WorkflowNode {workflow_id: $wf})-[r:PARENT_OF]->() RETURN count(r) AS c",
        wf,
    )
    .await;
    assert_eq!(
        parents,
        view.node_count as i64 - 1,
        "one PARENT_OF per non-root node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_a_realistic_workflow_and_answers_the_seed_queries() {
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let cfg = neo_config();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    let wf = realistic(&store).await;
    caught_up(&set, &store, 120).await;
    let g = graph().await;
    assert_same_answers(&store, &Neo(g.clone()), wf, 1000).await;
    assert_exact(&g, &store, wf).await;
    assert_eq!(
        arbor_sync::verify_sinks(&store, &cfg)
            .await
            .expect("verify"),
        vec![]
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_path_query_walks_the_wrong_way_and_the_documented_one_does_not() {
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let cfg = neo_config();
    let set = arbor_sync::start(store.clone(), cfg).expect("start");
    let (wf, root) = create(&store, "path", json!({})).await;
    let a = node(&store, wf, spec(root, "message", "a")).await;
    let b = node(&store, wf, spec(a, "message", "b")).await;
    caught_up(&set, &store, 60).await;
    let g = graph().await;
    // The seeds' query: from the leaf, outgoing PARENT_OF — finds no path to the root.
    let seeds = "MATCH path = (start:Node {id: $nodeId})-[:PARENT_OF*]->(root:Node) \
                 WHERE NOT (root)-[:PARENT_OF]->() RETURN length(path) AS c";
    let found = queries::rows(
        &g,
        neo4rs::query(seeds).param("nodeId", b.to_string()),
        |r| {
            r.get::<i64>("c")
                .map_err(|e| queries::ReadError::Decode(e.to_string()))
        },
    )
    .await
    .expect("seeds query");
    assert!(
        found.is_empty(),
        "the seeds' query walks down, not up: {found:?}"
    );
    // The documented one returns root … b.
    let ids = queries::rows(
        &g,
        neo4rs::query(
            &format!(
                "{} AS p RETURN [x IN nodes(p) | x.id] AS ids",
                neo4j::PATH_TO_ROOT
            )
            .replacen("RETURN path AS p", "WITH path AS p", 1),
        )
        .param("nodeId", b.to_string()),
        |r| {
            r.get::<Vec<String>>("ids")
                .map_err(|e| queries::ReadError::Decode(e.to_string()))
        },
    )
    .await
    .expect("path query");
    assert_eq!(
        ids,
        vec![vec![root.to_string(), a.to_string(), b.to_string()]]
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_replayed_batches_lose_no_edge() {
    use arbor_sync::Sink;
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let wf = realistic(&store).await;
    let items = arbor_sync::driver::read_items(&store, 0, 10_000).expect("items");
    let mut sink = Neo4jSink::new(neo4j());
    sink.setup().await.expect("setup");
    // Children before parents, one event per batch, then everything again.
    for item in items.iter().rev() {
        sink.apply(std::slice::from_ref(item)).await.expect("apply");
    }
    sink.apply(&items).await.expect("replay");
    let g = graph().await;
    assert_exact(&g, &store, wf).await;
    assert_same_answers(&store, &Neo(g), wf, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_a_100k_event_workflow() {
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let wf = synthetic(&store, 100_000, 11).await;
    let cfg = neo_config();
    let t = std::time::Instant::now();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 600).await;
    eprintln!(
        "neo4j caught up with {} events in {:?}",
        store.head(),
        t.elapsed()
    );
    let g = graph().await;
    assert_exact(&g, &store, wf).await;
    assert_same_answers(&store, &Neo(g), wf, 30).await;
    assert_eq!(
        arbor_sync::verify_sinks(&store, &cfg)
            .await
            .expect("verify"),
        vec![]
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_zero_leaves_no_duplicates() {
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let cfg = neo_config();
    let wf = realistic(&store).await;
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 60).await;
    set.shutdown().await;
    arbor_sync::reset(&store, &cfg, "neo4j", 0)
        .await
        .expect("reset");
    assert_eq!(store.cursor("neo4j").expect("cursor"), Some(0));
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start again");
    caught_up(&set, &store, 60).await;
    let g = graph().await;
    assert_exact(&g, &store, wf).await;
    assert_same_answers(&store, &Neo(g), wf, 1000).await;
    assert_eq!(
        arbor_sync::verify_sinks(&store, &cfg)
            .await
            .expect("verify"),
        vec![]
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_later_events_arrive() {
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let cfg = neo_config();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    let (wf, root) = create(&store, "poison", json!({})).await;
    append(
        &store,
        wf,
        (0..10)
            .map(|i| spec(root, "message", &format!("b{i}")))
            .collect(),
    )
    .await;
    // agent_id is indexed; Neo4j refuses a value too large for its index.
    let mut bad = spec(root, "message", "from a very verbose agent");
    bad.agent_id = Some("x".repeat(40_000));
    let bad_id = node(&store, wf, bad).await;
    let after = append(
        &store,
        wf,
        (0..10)
            .map(|i| spec(root, "message", &format!("a{i}")))
            .collect(),
    )
    .await;
    caught_up(&set, &store, 120).await;
    let dead = store.dead_letters("neo4j").expect("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let bad_seq = store.seq_of(&bad_id).expect("seq");
    assert_eq!(dead[0].0, bad_seq);
    let g = graph().await;
    let last = queries::nodes_by_id(&g, &after).await.expect("nodes");
    assert_eq!(
        last.len(),
        after.len(),
        "events after the poison one arrived"
    );
    assert!(queries::nodes_by_id(&g, &[bad_id])
        .await
        .expect("nodes")
        .is_empty());
    assert_eq!(set.status()[0].dead_letters, 1);
    assert_eq!(
        arbor_sync::verify_sinks(&store, &cfg)
            .await
            .expect("verify"),
        vec![]
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_kill_and_restart_catch_up_with_no_gap_and_no_duplicate() {
    let _g = SERVER.write().await;
    let (dir, store) = store();
    let cfg = neo_config();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    let wf = realistic(&store).await;
    caught_up(&set, &store, 120).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let (wf2, root) = create(&store, "during outage", json!({})).await;
            let mut parent = root;
            for i in 0..300 {
                parent = node(&store, wf2, spec(parent, "message", &format!("m{i}"))).await;
            }
            (wf2, parent)
        })
    };
    services_ctl("kill", "neo4j");
    let (wf2, mut parent) = writer
        .await
        .expect("appends never fail while a sink is down");
    wait_until(60, "neo4j sink to show degraded", || {
        let st = set.status();
        async move { st[0].state == SinkState::Degraded || st[0].cursor < 10 }
    })
    .await;
    set.shutdown().await;
    store.close().await;
    drop(store);
    let store = open(&dir);
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start during outage");
    for i in 0..50 {
        parent = node(&store, wf2, spec(parent, "message", &format!("late {i}"))).await;
    }
    services_ctl("start", "neo4j");
    caught_up(&set, &store, 180).await;
    let g = graph().await;
    assert_exact(&g, &store, wf).await;
    assert_exact(&g, &store, wf2).await;
    assert_same_answers(&store, &Neo(g), wf, 1000).await;
    assert_eq!(
        arbor_sync::verify_sinks(&store, &cfg)
            .await
            .expect("verify"),
        vec![]
    );
    set.shutdown().await;
}
