//! The decoded-node cache seen through the store: cached nodes are identical to the
//! ones decoded from disk, repeated reads hit, and nothing shown next to a node
//! (chosen option, edges, workflow status) is ever served stale.

use std::sync::Arc;

use arbor_storage::{
    Durability, Edge, EdgeKind, Intent, Meta, NewNode, NewWorkflow, Node, Outcome, Store,
    StoreOptions, WorkflowStatus,
};
use serde_json::json;
use uuid::Uuid;

fn options(node_cache_mb: u64) -> StoreOptions {
    StoreOptions {
        durability: Durability::None,
        cache_mb: 8,
        node_cache_mb,
        ..StoreOptions::default()
    }
}

async fn submit(store: &Store, intent: Intent) -> Outcome {
    store
        .submit(intent, Meta::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A workflow with a chain of `n` nodes (payload and metadata set) and a decision
/// with two options at its end: (workflow, leaf of the chain, decision, options).
async fn populate(store: &Store, n: usize) -> (Uuid, Uuid, Uuid, [Uuid; 2]) {
    let (wf, root) = match submit(
        store,
        Intent::CreateWorkflow(NewWorkflow {
            system_prompt: "you are a test".into(),
            ..NewWorkflow::default()
        }),
    )
    .await
    {
        Outcome::WorkflowCreated {
            workflow_id,
            root_id,
            ..
        } => (workflow_id, root_id),
        o => panic!("{o:?}"),
    };
    let mut parent = root;
    let mut nodes = Vec::new();
    for i in 0..n {
        let id = Uuid::now_v7();
        let mut node = NewNode::new(parent, "message", format!("step {i} ").repeat(i % 7 + 1));
        node.id = Some(id);
        node.payload = json!({"i": i, "tags": ["a", "b"]});
        node.metadata.insert("k".into(), json!(format!("v{i}")));
        node.agent_id = Some("agent".into());
        nodes.push(node);
        parent = id;
    }
    let leaf = parent;
    let decision = Uuid::now_v7();
    let opts = [Uuid::now_v7(), Uuid::now_v7()];
    let mut d = NewNode::new(leaf, "decision", "which way?");
    d.id = Some(decision);
    nodes.push(d);
    for (k, o) in opts.iter().enumerate() {
        let mut opt = NewNode::new(decision, "option", format!("option {k}"));
        opt.id = Some(*o);
        nodes.push(opt);
    }
    submit(
        store,
        Intent::AppendNodes {
            workflow_id: wf,
            nodes,
        },
    )
    .await;
    (wf, leaf, decision, opts)
}

fn assert_same_as_disk(store: &Store, nodes: &[Arc<Node>]) {
    for n in nodes {
        let disk = store
            .node_from_disk(n.seq)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(**n, disk, "cached node {} differs from disk", n.id);
        assert_eq!(
            serde_json::to_string(n).unwrap_or_default(),
            serde_json::to_string(&disk).unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_equal_disk_reads_and_hit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), options(64)).unwrap_or_else(|e| panic!("{e}"));
    let (_, leaf, _, _) = populate(&store, 200).await;

    let before = store.node_cache_stats();
    let first = store
        .path(&leaf)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(first.len(), 201);
    let after_first = store.node_cache_stats();
    assert_eq!(after_first.misses - before.misses, 201, "cold read misses");
    assert_eq!(after_first.entries, 201);
    assert!(after_first.bytes > 0 && after_first.bytes <= after_first.capacity);

    let second = store
        .path(&leaf)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    let after_second = store.node_cache_stats();
    assert_eq!(after_second.hits - after_first.hits, 201, "warm read hits");
    assert_eq!(after_second.misses, after_first.misses);
    for (a, b) in first.iter().zip(&second) {
        assert!(Arc::ptr_eq(a, b), "second read not served from the cache");
    }
    assert_same_as_disk(&store, &second);

    // The same nodes through a store without a cache, after a restart.
    store.close().await;
    drop(store);
    let plain = Store::open(dir.path(), options(0)).unwrap_or_else(|e| panic!("{e}"));
    let uncached = plain
        .path(&leaf)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(uncached, second);
    let s = plain.node_cache_stats();
    assert_eq!((s.hits, s.entries, s.bytes, s.capacity), (0, 0, 0, 0));
    plain.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_budget_still_serves_correct_nodes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // 1 MiB: far less than the subtree below with its ~4 KiB contents.
    let store = Store::open(dir.path(), options(1)).unwrap_or_else(|e| panic!("{e}"));
    let (wf, root) = match submit(
        &store,
        Intent::CreateWorkflow(NewWorkflow {
            system_prompt: "big".into(),
            ..NewWorkflow::default()
        }),
    )
    .await
    {
        Outcome::WorkflowCreated {
            workflow_id,
            root_id,
            ..
        } => (workflow_id, root_id),
        o => panic!("{o:?}"),
    };
    let nodes = (0..600)
        .map(|i| NewNode::new(root, "message", format!("{i:04}").repeat(1000)))
        .collect();
    submit(
        &store,
        Intent::AppendNodes {
            workflow_id: wf,
            nodes,
        },
    )
    .await;
    for _ in 0..3 {
        let sub = store
            .subtree(&root, None)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(sub.len(), 601);
        assert_same_as_disk(&store, &sub);
        let s = store.node_cache_stats();
        assert!(s.bytes <= s.capacity, "{s:?}");
    }
    let s = store.node_cache_stats();
    assert!(s.evictions > 0, "{s:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choices_edges_and_status_are_never_stale() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), options(64)).unwrap_or_else(|e| panic!("{e}"));
    let (wf, _, decision, opts) = populate(&store, 5).await;

    // Warm the cache with every view that holds these nodes.
    let d = store
        .decisions(&wf)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(d.len(), 1);
    assert!(d[0].chosen.is_none());
    assert_eq!(d[0].options.len(), 2);
    let before = store
        .node(&decision)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("decision missing"));
    assert!(!before
        .outgoing
        .iter()
        .any(|e| e.kind == EdgeKind::ChosenOption));
    let hits = store.node_cache_stats().hits;

    submit(
        &store,
        Intent::Choose {
            decision_id: decision,
            option_id: opts[1],
        },
    )
    .await;
    let d = store
        .decisions(&wf)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert!(
        store.node_cache_stats().hits > hits,
        "views read cached nodes"
    );
    assert_eq!(d[0].chosen.as_ref().map(|n| n.id), Some(opts[1]));
    let after = store
        .node(&decision)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("decision missing"));
    let chosen = Edge {
        kind: EdgeKind::ChosenOption,
        from: decision,
        to: opts[1],
    };
    assert!(after.outgoing.contains(&chosen));
    assert_eq!(after.node, before.node, "the node itself is immutable");
    let option = store
        .node(&opts[1])
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("option missing"));
    assert!(option.incoming.contains(&chosen));

    // Status lives in the workflow view, built from the index on every read.
    let view = |s: &Store| {
        s.workflow(&wf)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("workflow missing"))
    };
    assert_eq!(view(&store).status, WorkflowStatus::Running);
    submit(
        &store,
        Intent::SetStatus {
            workflow_id: wf,
            status: WorkflowStatus::Completed,
        },
    )
    .await;
    assert_eq!(view(&store).status, WorkflowStatus::Completed);
    let path = store
        .path(&opts[1])
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_same_as_disk(&store, &path);
    store.close().await;
}

/// `node_cached`, the read a runtime worker makes in place: the same node and edges as
/// `node` when the node is cached, `None` (and no disk read, no miss counted) when it is
/// not, or when there is no node cache at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cached_is_node_from_the_cache_or_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), options(64)).unwrap_or_else(|e| panic!("{e}"));
    let (_, leaf, decision, options_) = populate(&store, 3).await;
    assert!(
        store.node_cached(&Uuid::now_v7()).is_none(),
        "an unknown id"
    );

    for id in [leaf, decision, options_[0]] {
        let full = store
            .node(&id)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("{id} is stored"));
        let before = store.node_cache_stats();
        let cached = store
            .node_cached(&id)
            .unwrap_or_else(|| panic!("{id} was just read, so cached"));
        let after = store.node_cache_stats();
        assert!(Arc::ptr_eq(&cached.node, &full.node));
        assert_eq!(cached.outgoing, full.outgoing);
        assert_eq!(cached.incoming, full.incoming);
        assert_eq!((after.hits - before.hits, after.misses), (1, before.misses));
    }
    assert!(
        !store
            .node_cached(&decision)
            .unwrap_or_else(|| panic!("cached"))
            .outgoing
            .is_empty(),
        "the decision's OPTION_OF edges come along"
    );

    // Restarted: nothing cached yet, so nothing in place and no miss counted; the read
    // through `node` then caches it.
    store.close().await;
    drop(store);
    let store = Store::open(dir.path(), options(64)).unwrap_or_else(|e| panic!("{e}"));
    let before = store.node_cache_stats();
    assert!(store.node_cached(&leaf).is_none(), "cold");
    assert_eq!(store.node_cache_stats().misses, before.misses);
    assert!(store
        .node(&leaf)
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some());
    assert!(store.node_cached(&leaf).is_some(), "warm after a read");
    store.close().await;
    drop(store);

    // Without a node cache there is never anything in place.
    let plain = Store::open(dir.path(), options(0)).unwrap_or_else(|e| panic!("{e}"));
    assert!(plain
        .node(&leaf)
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some());
    assert!(plain.node_cached(&leaf).is_none());
    plain.close().await;
}

/// `path_cached`, the path a runtime worker answers in place (`format=messages`): the
/// same nodes as `path` once all are cached, `None` while any is not, when the path is
/// longer than the limit given, for an unknown id, or without a node cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_cached_is_path_from_the_cache_or_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), options(64)).unwrap_or_else(|e| panic!("{e}"));
    let (_, leaf, decision, _) = populate(&store, 5).await;
    store.close().await;
    drop(store);

    let store = Store::open(dir.path(), options(64)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        store.path_cached(&leaf, 100).is_none(),
        "cold after a restart"
    );
    assert!(
        store.path_cached(&Uuid::now_v7(), 100).is_none(),
        "an unknown id"
    );
    let full = store
        .path(&leaf)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the leaf is stored"));
    assert_eq!(full.len(), 6, "root and five steps");
    let cached = store
        .path_cached(&leaf, full.len())
        .unwrap_or_else(|| panic!("every node of the path was just read, so cached"));
    assert_eq!(cached.len(), full.len());
    for (c, f) in cached.iter().zip(&full) {
        assert!(Arc::ptr_eq(c, f), "the cached node itself, in path order");
    }
    assert!(
        store.path_cached(&leaf, full.len() - 1).is_none(),
        "longer than the limit"
    );
    assert!(
        store.path_cached(&decision, 100).is_none(),
        "the decision's own node was never read"
    );
    store.close().await;
    drop(store);

    let plain = Store::open(dir.path(), options(0)).unwrap_or_else(|e| panic!("{e}"));
    assert!(plain
        .path(&leaf)
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some());
    assert!(plain.path_cached(&leaf, 100).is_none());
    plain.close().await;
}

fn same_nodes(a: &[Arc<Node>], b: &[Arc<Node>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

/// `branch_cached`, `decisions_cached` and `monitors_cached`, the views a runtime
/// worker answers in place: nothing while cold (after a restart), then the very nodes
/// of `branch`, `decisions` and `monitors` once those have read them, with a chosen
/// option and a monitor among them; nothing over the limit, for an unknown workflow or
/// branch, or without a node cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_views_are_the_views_from_the_cache_or_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), options(64)).unwrap_or_else(|e| panic!("{e}"));
    let (wf, leaf, decision, opts) = populate(&store, 4).await;
    submit(
        &store,
        Intent::Choose {
            decision_id: decision,
            option_id: opts[0],
        },
    )
    .await;
    let monitor = Uuid::now_v7();
    let mut m = NewNode::new(leaf, "monitor", "watching");
    m.id = Some(monitor);
    submit(
        &store,
        Intent::AppendNodes {
            workflow_id: wf,
            nodes: vec![m],
        },
    )
    .await;
    let watched = Edge {
        kind: EdgeKind::Monitors,
        from: monitor,
        to: opts[1],
    };
    submit(
        &store,
        Intent::AddEdge {
            workflow_id: wf,
            edge: watched,
        },
    )
    .await;
    let root_branch = store
        .branches(&wf)
        .unwrap_or_else(|| panic!("branches"))
        .first()
        .map(|b| b.branch_id)
        .unwrap_or_else(|| panic!("no branch"));
    store.close().await;
    drop(store);

    let store = Store::open(dir.path(), options(64)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        store.branch_cached(&wf, &root_branch, 100).is_none(),
        "cold"
    );
    assert!(store.decisions_cached(&wf, 100).is_none(), "cold");
    assert!(store.monitors_cached(&wf, false, 100).is_none(), "cold");

    let branch = store
        .branch(&wf, &root_branch)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the root's branch"));
    let cached = store
        .branch_cached(&wf, &root_branch, branch.nodes.len())
        .unwrap_or_else(|| panic!("the branch was just read"));
    assert!(same_nodes(&cached.nodes, &branch.nodes));
    assert_eq!(
        (cached.branch_id, cached.fork_node_id),
        (branch.branch_id, branch.fork_node_id)
    );
    assert!(store
        .branch_cached(&wf, &root_branch, branch.nodes.len() - 1)
        .is_none());
    assert!(store.branch_cached(&wf, &Uuid::now_v7(), 100).is_none());

    let decisions = store
        .decisions(&wf)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(decisions.len(), 1);
    let cached = store
        .decisions_cached(&wf, 4)
        .unwrap_or_else(|| panic!("the decisions were just read"));
    assert_eq!(cached.len(), 1);
    assert!(Arc::ptr_eq(&cached[0].decision, &decisions[0].decision));
    assert!(same_nodes(&cached[0].options, &decisions[0].options));
    assert_eq!(cached[0].options.len(), 2);
    match (&cached[0].chosen, &decisions[0].chosen) {
        (Some(c), Some(d)) => assert!(Arc::ptr_eq(c, d) && c.id == opts[0]),
        other => panic!("the chosen option: {other:?}"),
    }
    assert!(
        store.decisions_cached(&wf, 3).is_none(),
        "decision, two options and the chosen one are four nodes"
    );

    let monitors = store
        .monitors(&wf, false)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(monitors.len(), 1);
    let cached = store
        .monitors_cached(&wf, false, 2)
        .unwrap_or_else(|| panic!("the monitors were just read"));
    assert_eq!(cached.len(), 1);
    assert!(Arc::ptr_eq(&cached[0].monitor, &monitors[0].monitor));
    assert!(Arc::ptr_eq(&cached[0].target, &monitors[0].target));
    assert_eq!(
        (cached[0].monitor.id, cached[0].target.id),
        (monitor, opts[1])
    );
    assert!(store.monitors_cached(&wf, false, 1).is_none());

    let unknown = Uuid::now_v7();
    assert!(store.decisions_cached(&unknown, 100).is_none());
    assert!(store.monitors_cached(&unknown, false, 100).is_none());
    store.close().await;
    drop(store);

    let plain = Store::open(dir.path(), options(0)).unwrap_or_else(|e| panic!("{e}"));
    assert!(plain
        .decisions(&wf)
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some());
    assert!(plain.decisions_cached(&wf, 100).is_none());
    assert!(plain.branch_cached(&wf, &root_branch, 100).is_none());
    plain.close().await;
}
