//! Footprint figures (not timings): index memory per node and bytes on disk per event.
//!
//! A counting global allocator measures the heap the index holds after applying
//! every record of a store of `ARBOR_BENCH_NODES` nodes (1 000 000 by default), and
//! the store reports its size on disk against the logical bytes written (records plus
//! distinct content): sled's space amplification, beside raw sled holding the same
//! bytes in three layouts (one tree, one key per event, as arbor; two trees keyed by
//! seq, as arbor until the content moved into the log value; two trees with the content
//! keyed by hash, as arbor before issue 13).
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
    // As the `arbor` binary does.
    arbor_storage::disable_transparent_huge_pages();
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
                    logical += store.content_at(r.seq, &n.content_hash).unwrap().len() as u64;
                }
            }
        }
    }
    let content_bytes = logical;
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
    // The engine's own floor, measured the same way: raw sled holding the same bytes.
    let record_len = (records_bytes / events) as usize;
    let content_len = (content_bytes / events) as usize;
    let one = raw_sled_disk(events, (logical / events) as usize, None);
    let by_seq = raw_sled_disk(events, record_len, Some((content_len, ContentKey::Seq)));
    let by_hash = raw_sled_disk(events, record_len, Some((content_len, ContentKey::Hash)));
    for (what, raw) in [
        (
            "one tree, one key per event (record and content as one value, as arbor before packs)",
            one,
        ),
        (
            "two trees (record; content under the same seq, as arbor before)",
            by_seq,
        ),
        (
            "two trees (record; content under a 32-byte hash, as arbor before issue 13)",
            by_hash,
        ),
    ] {
        println!(
            "| raw sled, {what}: space amplification | {:.2}× | arbor at {:.2}× of it | — |",
            raw as f64 / logical as f64,
            disk as f64 / raw as f64
        );
    }
}

/// How the raw-sled baseline keys its second tree.
#[derive(Clone, Copy)]
enum ContentKey {
    /// The same u64 BE seq as the record: sequential inserts.
    Seq,
    /// A 32-byte hash: inserts all over the tree.
    Hash,
}

/// Bytes on disk of a fresh sled database after `events` inserts of `value_len`-byte
/// values under u64 BE keys (and, with `content`, as many values of that size in a
/// second tree, keyed as it says), in groups of 1 000 with `apply_batch`, flushed,
/// closed and reopened — arbor's write pattern without arbor.
fn raw_sled_disk(events: u64, value_len: usize, content: Option<(usize, ContentKey)>) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                // xorshift: incompressible enough, and sled does not compress anyway.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    {
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(64 << 20)
            .open()
            .unwrap();
        let log = db.open_tree("log").unwrap();
        let blobs = db.open_tree("content").unwrap();
        let mut seq = 0u64;
        while seq < events {
            let mut batch = sled::Batch::default();
            let mut content_batch = sled::Batch::default();
            for _ in 0..1000.min(events - seq) {
                seq += 1;
                batch.insert(&seq.to_be_bytes(), bytes(value_len));
                match content {
                    Some((len, ContentKey::Seq)) => {
                        content_batch.insert(&seq.to_be_bytes(), bytes(len));
                    }
                    Some((len, ContentKey::Hash)) => content_batch.insert(bytes(32), bytes(len)),
                    None => {}
                }
            }
            if content.is_some() {
                blobs.apply_batch(content_batch).unwrap();
            }
            log.apply_batch(batch).unwrap();
        }
        db.flush().unwrap();
    }
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    db.size_on_disk().unwrap()
}
