//! Footprint figures (not timings): index memory per node and bytes on disk per event.
//!
//! A counting global allocator measures the heap the index holds after applying
//! every record of a store of `ARBOR_BENCH_NODES` nodes (1 000 000 by default), and
//! the store reports its size on disk against the logical bytes written (records plus
//! distinct content): sled's space amplification.
//!
//! Run: `cargo bench --bench footprint`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use arbor_storage::{Durability, Intent, Meta, NewNode, NewWorkflow, Outcome, Store, StoreOptions};
use uuid::Uuid;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful either.
    let nodes: usize = std::env::var("ARBOR_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let workflows = (nodes / 1000).max(1);
    let per = nodes / workflows;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        durability: Durability::None,
        cache_mb: 64,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut logical = 0u64;
    rt.block_on(async {
        for w in 0..workflows {
            let wf = match store
                .submit(
                    Intent::CreateWorkflow(NewWorkflow {
                        system_prompt: "You are a coding agent working on a repository.".into(),
                        ..NewWorkflow::default()
                    }),
                    Meta::default(),
                )
                .await
                .unwrap()
            {
                Outcome::WorkflowCreated { workflow_id, .. } => workflow_id,
                o => panic!("{o:?}"),
            };
            let root = store.workflow(&wf).unwrap().unwrap().root_id;
            let mut ids = vec![root];
            let mut batch = Vec::with_capacity(per);
            for i in 0..per.saturating_sub(1) {
                let id = Uuid::now_v7();
                let parent = ids[(i * 7919) % ids.len()];
                let content =
                    format!("workflow {w} step {i}: ran the tests, 3 failed in src/lib.rs");
                let mut n = NewNode::new(
                    parent,
                    if i % 50 == 0 { "decision" } else { "message" },
                    content,
                );
                n.id = Some(id);
                ids.push(id);
                batch.push(n);
            }
            store
                .submit(
                    Intent::AppendNodes {
                        workflow_id: wf,
                        nodes: batch,
                    },
                    Meta::default(),
                )
                .await
                .unwrap();
        }
        store.close().await;
    });
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    let events = store.head();
    let disk = store.size_on_disk().unwrap();
    // Logical bytes: every encoded record plus each distinct content once.
    let mut seen = std::collections::HashSet::new();
    let mut after = 0;
    let mut records_bytes = 0u64;
    loop {
        let page = store.read_records(after, 10_000).unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            records_bytes += r.encode().unwrap().len() as u64;
            if let Some(n) = r.created_node() {
                if seen.insert(n.content_hash) {
                    logical += store.content_by_hash(&n.content_hash).unwrap().len() as u64;
                }
            }
        }
    }
    logical += records_bytes;
    // A fresh index of the whole log; only its own growth is counted (each apply and
    // the final shrink), not the pages read to build it.
    let (n, index_bytes) = store
        .measure_index_heap(&|| LIVE.load(Ordering::Relaxed))
        .unwrap();
    println!("| figure | value | target | ratio to target |");
    println!("|---|---|---|---|");
    println!(
        "| index heap per node ({n} nodes) | {:.1} B | ≤ 200 B | {:.2} |",
        index_bytes as f64 / n as f64,
        index_bytes as f64 / n as f64 / 200.0
    );
    println!(
        "| bytes on disk per event ({events} events) | {:.1} B | — | — |",
        disk as f64 / events as f64
    );
    println!(
        "| logical bytes per event (record + distinct content) | {:.1} B | baseline | 1.00 |",
        logical as f64 / events as f64
    );
    println!(
        "| space amplification (disk / logical) | {:.2}× | DESIGN §3 warns of up to 2× | — |",
        disk as f64 / logical as f64
    );
    rt.block_on(store.close());
}
