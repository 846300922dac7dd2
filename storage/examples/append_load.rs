//! In-process append load on one `Store`, for profiling the writer:
//!
//! `cargo run --release -p arbor-storage --example append_load -- [fsync|none|raw|rawpipe] APPENDERS BATCH SECONDS`
//!
//! Each appender appends `BATCH` nodes per request (distinct content, 256 B) under the
//! root of its own workflow, for `SECONDS`; prints events/s and the CPU per event of the
//! writer thread and of the syncer thread (which makes the groups durable, indexes and
//! answers them), and the bytes the process wrote per event (sled's log with its page
//! rewrites: its write amplification).
//!
//! `raw` is the engine's own limit (issue 13, goal 2): raw sled on one thread, one tree,
//! one key per event (u64 BE) with a value of an arbor event's size (its record plus
//! its content), `apply_batch` in groups of `APPENDERS × BATCH` events, each group
//! flushed and fdatasync'd as arbor's `fsync` durability does.
//!
//! `rawpipe` is arbor's pipeline without arbor: `APPENDERS` tasks each append one raw
//! value of that size at a time and wait for its answer, through a writer thread (plain
//! inserts of every request waiting) and a syncer thread (one flush and fdatasync for
//! all groups waiting, then the answers), as arbor's writer and syncer do; no validation,
//! encoding, hashing, index or broadcast. Against `raw` it prices the closed loop of
//! single appenders; against `fsync APPENDERS 1` it prices arbor's own work per event.
//! Its `BATCH` argument is instead a busy wait per event on the writer, in µs (0 for
//! none): what the loop's rate does as the writer's work per event grows.
//!
//! `ARBOR_COMMIT_DELAY_US` sets the store's commit delay, as `arbor serve` reads it
//! (default: the store's).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbor_storage::{
    Durability, GroupStats, Intent, Meta, NewNode, NewWorkflow, Outcome, Store, StoreOptions,
};

/// The allocator the `arbor` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `arbor` binary does, for arbor and the raw baseline alike.
    arbor_storage::disable_transparent_huge_pages();
    let args: Vec<String> = std::env::args().collect();
    let appenders: usize = args.get(2).map_or(Ok(4), |s| s.parse())?;
    let batch: usize = args.get(3).map_or(Ok(100), |s| s.parse())?;
    let secs: u64 = args.get(4).map_or(Ok(10), |s| s.parse())?;
    let durability = match args.get(1).map(String::as_str) {
        Some("none") => Durability::None,
        Some("raw") => return raw_sled(appenders * batch, secs, false),
        Some("raw2") => return raw_sled(appenders * batch, secs, true),
        Some("rawpipe") => return raw_pipeline(appenders, batch as u64, secs),
        _ => Durability::Fsync,
    };
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let groups = Arc::new(GroupTotals::default());
    let observed = groups.clone();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            durability,
            on_group: Some(Arc::new(move |g: GroupStats| observed.add(g))),
            commit_delay: commit_delay()?,
            ..StoreOptions::default()
        },
    )?;
    let filler = "x".repeat(240);
    let written_before = bytes_written();
    let events = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for a in 0..appenders {
            let store = store.clone();
            let filler = filler.clone();
            tasks.push(tokio::spawn(async move {
                let created = store
                    .submit(
                        Intent::CreateWorkflow(NewWorkflow {
                            system_prompt: "load".into(),
                            ..NewWorkflow::default()
                        }),
                        Meta::default(),
                    )
                    .await?;
                let Outcome::WorkflowCreated {
                    workflow_id,
                    root_id,
                    ..
                } = created
                else {
                    return Ok::<u64, arbor_storage::AppendError>(0);
                };
                let mut n = 0u64;
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let nodes = (0..batch)
                        .map(|j| {
                            i += 1;
                            NewNode::new(root_id, "message", format!("{a}/{i}/{j} {filler}"))
                        })
                        .collect();
                    store
                        .submit(Intent::AppendNodes { workflow_id, nodes }, Meta::default())
                        .await?;
                    n += batch as u64;
                }
                Ok(n)
            }));
        }
        let mut total = 0u64;
        for t in tasks {
            total += t
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        let cpu = (
            thread_cpu_ticks("arbor-writer"),
            thread_cpu_ticks("arbor-syncer"),
        );
        store.close().await;
        Ok::<(u64, (u64, u64)), String>((total, cpu))
    })?;
    let (events, (writer_ticks, syncer_ticks)) = events;
    let written = bytes_written().saturating_sub(written_before);
    // Linux clock ticks are 10 ms.
    println!(
        "{durability:?} appenders={appenders} batch={batch}: {events} events in {secs} s = {:.0} events/s; writer CPU {:.1} us/event (+ syncer {:.1}); {} bytes written/event",
        events as f64 / secs as f64,
        writer_ticks as f64 * 10_000.0 / events.max(1) as f64,
        syncer_ticks as f64 * 10_000.0 / events.max(1) as f64,
        written / events.max(1)
    );
    let n = groups.groups.load(Ordering::Relaxed).max(1);
    let flushes = store.flushes().max(1);
    println!(
        "  {n} groups, {:.1} events each; {:.0} us making each durable; {flushes} flushes, {:.1} events each",
        groups.events.load(Ordering::Relaxed) as f64 / n as f64,
        groups.flush_micros.load(Ordering::Relaxed) as f64 / n as f64,
        groups.events.load(Ordering::Relaxed) as f64 / flushes as f64,
    );
    Ok(())
}

/// Totals of the writer's groups.
#[derive(Default)]
struct GroupTotals {
    groups: AtomicU64,
    events: AtomicU64,
    flush_micros: AtomicU64,
}

impl GroupTotals {
    fn add(&self, g: GroupStats) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(g.events as u64, Ordering::Relaxed);
        self.flush_micros
            .fetch_add(g.flush.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Bytes of one event of this load in arbor: its encoded record (~300 B with ids,
/// hashes and the actor) plus its content (~256 B).
const RAW_EVENT_BYTES: usize = 560;

/// The raw-sled baseline (see the module docs), on a writer thread of its own.
fn raw_sled(group: usize, secs: u64, two_trees: bool) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_owned();
    let writer = std::thread::Builder::new()
        .name("raw-writer".into())
        .spawn(move || -> Result<(u64, u64, u64), String> {
            let db = sled::Config::new()
                .path(&path)
                .open()
                .map_err(|e| e.to_string())?;
            let log = db.open_tree("log").map_err(|e| e.to_string())?;
            let text = db.open_tree("text").map_err(|e| e.to_string())?;
            let data = std::fs::File::open(path.join("db")).map_err(|e| e.to_string())?;
            let value = vec![0x5au8; RAW_EVENT_BYTES];
            let written_before = bytes_written();
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let mut batch = sled::Batch::default();
                let mut texts = sled::Batch::default();
                for _ in 0..group {
                    seq += 1;
                    if two_trees {
                        batch.insert(&seq.to_be_bytes(), &value[..RAW_EVENT_BYTES - 256]);
                        texts.insert(&seq.to_be_bytes(), &value[..256]);
                    } else {
                        batch.insert(&seq.to_be_bytes(), value.as_slice());
                    }
                }
                if two_trees {
                    text.apply_batch(texts).map_err(|e| e.to_string())?;
                }
                log.apply_batch(batch).map_err(|e| e.to_string())?;
                db.flush().map_err(|e| e.to_string())?;
                data.sync_data().map_err(|e| e.to_string())?;
            }
            let written = bytes_written().saturating_sub(written_before);
            Ok((seq, thread_cpu_ticks("raw-writer"), written))
        })?;
    let (events, ticks, written) = writer.join().map_err(|_| "the raw writer panicked")??;
    println!(
        "raw sled ({}) group={group}: {events} events in {secs} s = {:.0} events/s; writer CPU {:.1} us/event; {} bytes written/event",
        if two_trees { "record and content, two trees" } else { "one key per event" },
        events as f64 / secs as f64,
        ticks as f64 * 10_000.0 / events.max(1) as f64,
        written / events.max(1)
    );
    Ok(())
}

/// A request to the raw pipeline's writer: a value and where to answer.
type RawRequest = (Vec<u8>, tokio::sync::oneshot::Sender<()>);

/// arbor's pipeline without arbor (the `rawpipe` mode, see the module docs): `appenders`
/// tokio tasks on two workers, a writer thread and a syncer thread, two groups in
/// flight; `work_us` of busy wait per event on the writer.
fn raw_pipeline(
    appenders: usize,
    work_us: u64,
    secs: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new().path(dir.path()).open()?;
    let log = db.open_tree("log")?;
    let data = std::fs::File::open(dir.path().join("db"))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RawRequest>(4096);
    let (to_syncer, from_writer) =
        std::sync::mpsc::sync_channel::<Vec<tokio::sync::oneshot::Sender<()>>>(2);
    let work = Duration::from_micros(work_us);
    let writer = std::thread::Builder::new()
        .name("raw-writer".into())
        .spawn(move || -> Result<(), String> {
            let mut seq = 0u64;
            while let Some(first) = rx.blocking_recv() {
                let mut group = vec![first];
                while let Ok(more) = rx.try_recv() {
                    group.push(more);
                }
                let mut answers = Vec::with_capacity(group.len());
                for (value, reply) in group {
                    seq += 1;
                    let started = Instant::now();
                    while started.elapsed() < work {
                        std::hint::spin_loop();
                    }
                    log.insert(seq.to_be_bytes(), value)
                        .map_err(|e| e.to_string())?;
                    answers.push(reply);
                }
                to_syncer.send(answers).map_err(|e| e.to_string())?;
            }
            Ok(())
        })?;
    let syncer = std::thread::Builder::new()
        .name("raw-syncer".into())
        .spawn(move || -> Result<u64, String> {
            let mut groups = 0u64;
            while let Ok(first) = from_writer.recv() {
                let mut waiting = vec![first];
                while let Ok(more) = from_writer.try_recv() {
                    waiting.push(more);
                }
                db.flush().map_err(|e| e.to_string())?;
                data.sync_data().map_err(|e| e.to_string())?;
                for group in waiting {
                    groups += 1;
                    for reply in group {
                        let _ = reply.send(());
                    }
                }
            }
            Ok(groups)
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let events = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..appenders)
            .map(|_| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let (reply, answer) = tokio::sync::oneshot::channel();
                        if tx.send((vec![0x5a; RAW_EVENT_BYTES], reply)).await.is_err() {
                            break;
                        }
                        if answer.await.is_err() {
                            break;
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0u64;
        for t in tasks {
            total += t.await.unwrap_or(0);
        }
        total
    });
    let cpu = (
        thread_cpu_ticks("raw-writer"),
        thread_cpu_ticks("raw-syncer"),
    );
    drop(tx);
    writer.join().map_err(|_| "the raw writer panicked")??;
    let groups = syncer.join().map_err(|_| "the raw syncer panicked")??;
    println!(
        "raw sled pipeline appenders={appenders} work={work_us}us: {events} events in {secs} s = {:.0} events/s; writer CPU {:.1} us/event (+ syncer {:.1}); {:.1} events a group",
        events as f64 / secs as f64,
        cpu.0 as f64 * 10_000.0 / events.max(1) as f64,
        cpu.1 as f64 * 10_000.0 / events.max(1) as f64,
        events as f64 / groups.max(1) as f64
    );
    Ok(())
}

/// Bytes this process has handed to `write`-like calls so far (`wchar` of
/// `/proc/self/io`: sled's log writes, nearly all of it here; Linux only, 0 elsewhere).
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime (clock ticks) of this process's threads named `name` (Linux only; 0
/// elsewhere).
fn thread_cpu_ticks(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut ticks = 0;
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Fields 14 and 15 of stat(5); `fields` starts at field 3.
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ticks
}

/// The commit delay `ARBOR_COMMIT_DELAY_US` asks for, else the store's default.
fn commit_delay() -> Result<Duration, std::num::ParseIntError> {
    match std::env::var("ARBOR_COMMIT_DELAY_US") {
        Ok(us) => Ok(Duration::from_micros(us.parse()?)),
        Err(_) => Ok(StoreOptions::default().commit_delay),
    }
}
