//! Criterion benchmarks of the storage engine, in-process (DESIGN §3 targets).
//!
//! Groups, each with a baseline measured in the same run:
//! - `append`: acknowledged appends at 1 and 64 concurrent appenders, 256 B and 4 KiB
//!   content, `fsync` and `none` durability. Baseline: one 4 KiB write + fdatasync on
//!   the same disk (`baseline_fdatasync_4k`), the floor of any fsync'd acknowledgement.
//! - `path_to_root`: index-only path at depth 10, 1 000, 100 000, and the full path
//!   with nodes loaded from sled at 10 and 1 000. Baseline: the same walk over a
//!   `HashMap<Uuid, Uuid>` of parents.
//! - `rebuild`: reopening a store of `ARBOR_BENCH_REBUILD_EVENTS` events (1 000 000 by
//!   default) whose nodes carry `ARBOR_BENCH_REBUILD_CONTENT` bytes of content each (400
//!   by default, the bench harness's median; 0 for the short "node {i}" of earlier
//!   runs). Baseline: a plain scan of sled's log tree. Then `log_read` on that store:
//!   1 000 nodes read from the log at seqs spread over it, and 1 000 events read in order
//!   from a seq inside it.
//! - `record`: decoding 1 024 distinct node records as the log holds them (what every
//!   sink's catch-up and every uncached read does per event). Baseline: the same bytes through
//!   rmp_serde alone (`Record::decode_with_serde`).
//! - `render`: the JSON text of 1 024 distinct nodes of 256 B of content (what every
//!   append answers and every node-cache read renders once; prose with a quote and a
//!   line break every 44 bytes), with `node_json`.
//!   Baseline: `serde_json::to_vec` of the same nodes, the same bytes (checked).
//!
//! The allocator and its settings are the `arbor` binary's (mimalloc, transparent huge
//! pages off).
//!
//! Run: `cargo bench --bench storage` (add `-- append` etc. to pick a group).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbor_storage::{
    node_json, Durability, Intent, Meta, NewNode, NewWorkflow, Node, NodeRecord, Outcome, Record,
    RecordBody, Role, Store, StoreOptions, Timestamp,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uuid::Uuid;

/// The allocator the `arbor` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn runtime() -> tokio::runtime::Runtime {
    // As the `arbor` binary does before it starts its threads.
    arbor_storage::disable_transparent_huge_pages();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn new_workflow(store: &Store) -> Uuid {
    match store
        .submit(
            Intent::CreateWorkflow(NewWorkflow {
                system_prompt: "bench".into(),
                ..NewWorkflow::default()
            }),
            Meta::default(),
        )
        .await
        .unwrap()
    {
        Outcome::WorkflowCreated { workflow_id, .. } => workflow_id,
        o => panic!("{o:?}"),
    }
}

/// Appends a chain of `depth` nodes below the root; returns the leaf.
async fn chain(store: &Store, depth: usize) -> Uuid {
    let wf = new_workflow(store).await;
    let mut parent = store.workflow(&wf).unwrap().unwrap().root_id;
    let mut left = depth;
    while left > 0 {
        let n = left.min(10_000);
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let id = Uuid::now_v7();
            let mut node = NewNode::new(parent, "message", "step of a long chain");
            node.id = Some(id);
            nodes.push(node);
            parent = id;
        }
        store
            .submit(
                Intent::AppendNodes {
                    workflow_id: wf,
                    nodes,
                },
                Meta::default(),
            )
            .await
            .unwrap();
        left -= n;
    }
    parent
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("append");
    g.measurement_time(Duration::from_secs(8));
    g.sample_size(10);
    // Baseline: the disk's fdatasync latency for a 4 KiB write.
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("probe")).unwrap();
    let block = vec![7u8; 4096];
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_fdatasync_4k", |b| {
        b.iter(|| {
            f.write_all(&block).unwrap();
            f.sync_data().unwrap();
        })
    });
    for durability in [Durability::Fsync, Durability::None] {
        for size in [256usize, 4096] {
            for appenders in [1usize, 64] {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(
                    dir.path(),
                    StoreOptions {
                        durability,
                        ..StoreOptions::default()
                    },
                )
                .unwrap();
                let wf = rt.block_on(new_workflow(&store));
                let root = store.workflow(&wf).unwrap().unwrap().root_id;
                let content: Arc<str> = Arc::from("x".repeat(size));
                let id = BenchmarkId::new(
                    format!("{durability:?}_{size}B").to_lowercase(),
                    format!("{appenders}_appenders"),
                );
                g.throughput(Throughput::Elements(appenders as u64));
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let start = Instant::now();
                            let mut tasks = Vec::with_capacity(appenders);
                            for a in 0..appenders {
                                let store = store.clone();
                                let content = content.clone();
                                tasks.push(tokio::spawn(async move {
                                    for i in 0..iters {
                                        // Distinct content per append, as real traffic has.
                                        let text = format!("{a}/{i} {content}");
                                        store
                                            .submit(
                                                Intent::AppendNodes {
                                                    workflow_id: wf,
                                                    nodes: vec![NewNode::new(
                                                        root, "message", text,
                                                    )],
                                                },
                                                Meta::default(),
                                            )
                                            .await
                                            .unwrap();
                                    }
                                }));
                            }
                            for t in tasks {
                                t.await.unwrap();
                            }
                            start.elapsed()
                        })
                    })
                });
                rt.block_on(store.close());
            }
        }
    }
    g.finish();
}

fn path_to_root(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut g = c.benchmark_group("path_to_root");
    for depth in [10usize, 1_000, 100_000] {
        let leaf = rt.block_on(chain(&store, depth));
        // Baseline: a HashMap of parents, walked the same way.
        let path = store.path(&leaf).unwrap().unwrap();
        let parents: HashMap<Uuid, Uuid> = path
            .iter()
            .filter_map(|n| n.parent_id.map(|p| (n.id, p)))
            .collect();
        g.bench_with_input(
            BenchmarkId::new("baseline_hashmap_walk", depth),
            &leaf,
            |b, leaf| {
                b.iter(|| {
                    let mut out = vec![*leaf];
                    let mut at = *leaf;
                    while let Some(p) = parents.get(&at) {
                        out.push(*p);
                        at = *p;
                    }
                    out.reverse();
                    out
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("index", depth), &leaf, |b, leaf| {
            b.iter(|| store.path_seqs(leaf))
        });
        if depth <= 1_000 {
            g.bench_with_input(BenchmarkId::new("with_nodes", depth), &leaf, |b, leaf| {
                b.iter(|| store.path(leaf).unwrap())
            });
        }
    }
    g.finish();
    rt.block_on(store.close());
}

fn rebuild(c: &mut Criterion) {
    let events: usize = std::env::var("ARBOR_BENCH_REBUILD_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let content_bytes: usize = std::env::var("ARBOR_BENCH_REBUILD_CONTENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let filler = "the agent thought about it and answered; ";
    let content = |i: usize| match content_bytes {
        0 => format!("node {i}"),
        n => {
            let mut c = format!("node {i}: ");
            c.extend(filler.chars().cycle().take(n.saturating_sub(c.len())));
            c
        }
    };
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(
            dir.path(),
            StoreOptions {
                durability: Durability::None,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        // 1 000 workflows with bushy trees: every node's parent is a random earlier node.
        rt.block_on(async {
            let per = events / 1000;
            for _ in 0..1000 {
                let wf = new_workflow(&store).await;
                let root = store.workflow(&wf).unwrap().unwrap().root_id;
                let mut ids = vec![root];
                let mut nodes = Vec::with_capacity(per);
                for i in 0..per.saturating_sub(1) {
                    let id = Uuid::now_v7();
                    let parent = ids[(i * 7919) % ids.len()];
                    let mut n = NewNode::new(parent, "message", content(i));
                    n.id = Some(id);
                    ids.push(id);
                    nodes.push(n);
                }
                store
                    .submit(
                        Intent::AppendNodes {
                            workflow_id: wf,
                            nodes,
                        },
                        Meta::default(),
                    )
                    .await
                    .unwrap();
            }
        });
        rt.block_on(store.close());
    }
    let mut g = c.benchmark_group("rebuild");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(events as u64));
    g.bench_function("baseline_sled_scan", |b| {
        b.iter(|| {
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree("log").unwrap();
            let n = tree.iter().count();
            drop(tree);
            drop(db);
            n
        })
    });
    g.bench_function(format!("open_and_rebuild_{events}"), |b| {
        b.iter(|| {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let n = store.index_size().0;
            rt.block_on(store.close());
            n
        })
    });
    g.finish();
    // Reads from the log, not the node cache: 1 000 nodes at seqs spread over the whole
    // log (each a point read of its sled value and a decode), and 1 000 events in order
    // from a seq inside the log (a sink's or an SSE client's resume).
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let head = store.head();
    let mut g = c.benchmark_group("log_read");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("node_from_disk_1000_spread", |b| {
        let mut at = 0u64;
        b.iter(|| {
            for _ in 0..1000 {
                at = (at + 7_919) % head;
                let _ = std::hint::black_box(store.node_from_disk(at + 1));
            }
        })
    });
    g.bench_function("read_events_1000_in_order", |b| {
        let mut at = 0u64;
        b.iter(|| {
            at = (at + 104_729) % head.saturating_sub(1000).max(1);
            std::hint::black_box(store.read_events(at, 1000).unwrap())
        })
    });
    g.finish();
    rt.block_on(store.close());
}

/// Distinct node-creation records (so that the branch predictor cannot learn their
/// hashes), as a bench harness agent writes them.
fn sample_records(n: u64) -> Vec<Record> {
    let mut metadata = serde_json::Map::new();
    metadata.insert("model".into(), serde_json::json!("gpt-4o"));
    let make = |i: u64| Record {
        seq: 123_456 + i,
        id: Uuid::new_v4(),
        workflow_id: Uuid::new_v4(),
        timestamp: Timestamp(1_795_000_000_000_001 + i as i64),
        actor: "agent:planner".into(),
        body: RecordBody::NodeCreated(NodeRecord {
            id: Uuid::new_v4(),
            parent_id: Some(Uuid::new_v4()),
            node_type: "llm_message".into(),
            role: Some(Role::Assistant),
            content_hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            payload: serde_json::Value::Null,
            metadata: metadata.clone(),
            agent_id: Some("planner".into()),
            user_id: None,
            branch_id: Uuid::new_v4(),
            depth: 42,
        }),
        prev_hash: *blake3::hash(&(i + n).to_le_bytes()).as_bytes(),
        hash: *blake3::hash(&(i + 2 * n).to_le_bytes()).as_bytes(),
    };
    (0..n).map(make).collect()
}

fn record(c: &mut Criterion) {
    const RECORDS: u64 = 1024;
    let records = sample_records(RECORDS);
    let encoded: Vec<Vec<u8>> = records.iter().map(|r| r.encode().unwrap()).collect();
    for (r, bytes) in records.iter().zip(&encoded) {
        assert_eq!(&Record::decode(bytes).unwrap(), r);
    }
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(RECORDS));
    each(&mut g, "baseline_decode_with_serde", &encoded, |b| {
        Record::decode_with_serde(b).unwrap()
    });
    each(&mut g, "decode", &encoded, |b| Record::decode(b).unwrap());
    g.finish();
}

fn render(c: &mut Criterion) {
    const NODES: u64 = 1024;
    let nodes: Vec<Node> = sample_records(NODES)
        .into_iter()
        .map(|r| {
            // Prose with a quoted word and a line break in every 44 bytes.
            let prose = "lorem ipsum dolor sit amet, \"consectetur\"\n".repeat(7);
            let content = format!("{:08} {prose}", r.seq)[..256].to_owned();
            let RecordBody::NodeCreated(n) = r.body else {
                panic!("not a node record");
            };
            Node {
                id: n.id,
                workflow_id: r.workflow_id,
                parent_id: n.parent_id,
                node_type: n.node_type,
                role: n.role,
                content,
                payload: n.payload,
                metadata: n.metadata,
                agent_id: n.agent_id,
                user_id: n.user_id,
                branch_id: n.branch_id,
                depth: n.depth,
                seq: r.seq,
                timestamp: r.timestamp,
            }
        })
        .collect();
    for n in &nodes {
        assert_eq!(node_json(n).unwrap(), serde_json::to_vec(n).unwrap());
    }
    let mut g = c.benchmark_group("render");
    g.throughput(Throughput::Elements(NODES));
    each(&mut g, "baseline_serde_json", &nodes, |n| {
        serde_json::to_vec(n).unwrap()
    });
    each(&mut g, "node_json", &nodes, |n| node_json(n).unwrap());
    g.finish();
}

/// Benchmarks `f` over every item of `items` per iteration.
fn each<T, R>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    items: &[T],
    f: impl Fn(&T) -> R,
) {
    g.bench_function(name, |b| {
        b.iter(|| {
            for item in items {
                std::hint::black_box(f(item));
            }
        })
    });
}

criterion_group!(benches, append, path_to_root, rebuild, record, render);
criterion_main!(benches);
