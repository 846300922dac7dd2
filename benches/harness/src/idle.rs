//! Idle subscribers: what each open SSE stream costs the real server in memory, and
//! whether thousands of idle streams still get an event promptly.
//!
//! The server is the real `arbor serve` binary in its own process (not the harness's
//! in-process server), so its resident memory is the server's alone. The scenario:
//! 1. starts it over a temporary data directory with room for `n` connections;
//! 2. creates a workflow and reads the server's `VmRSS` (from `/proc/PID/status`);
//! 3. opens `n` subscriptions to that workflow's stream, each on its own connection,
//!    and waits until the server's `arbor_sse_subscribers` gauge counts all of them;
//! 4. reads `VmRSS` again: (after − before) / `n` is the memory per subscriber (kernel
//!    socket buffers are not in it; an idle socket's are empty);
//! 5. appends one node and measures its delivery to every subscriber.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use arbor_testkit::serve::{spawn_serve, KillOnDrop};
use serde_json::{Map, Value};

use super::fanout::{self, Fan, Receipts};
use super::systems::arbor::ArborHttp;
use super::workload::{IdAlloc, NodeOp};

/// What one idle-subscriber run measured.
#[derive(Debug)]
pub struct IdleOutcome {
    /// Subscribers opened.
    pub subscribers: usize,
    /// The server's resident memory before the subscriptions, in bytes.
    pub rss_before: u64,
    /// Its resident memory with every subscription open, in bytes.
    pub rss_after: u64,
    /// Delivery of the one event to every subscriber.
    pub receipts: Receipts,
    /// Time to open every subscription.
    pub connect_time: Duration,
}

impl IdleOutcome {
    /// Resident bytes per open subscription.
    pub fn bytes_per_subscriber(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.subscribers.max(1) as f64
    }

    /// The figures as report fields.
    pub fn extra(&self) -> Map<String, Value> {
        let mib = |b: u64| (b as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0;
        let mut m = Map::new();
        m.insert("rss_before_mib".into(), Value::from(mib(self.rss_before)));
        m.insert("rss_after_mib".into(), Value::from(mib(self.rss_after)));
        m.insert(
            "bytes_per_subscriber".into(),
            Value::from(self.bytes_per_subscriber().round()),
        );
        m.insert(
            "connect_seconds".into(),
            Value::from((self.connect_time.as_secs_f64() * 100.0).round() / 100.0),
        );
        m
    }
}

/// The `arbor` binary beside this executable (`target/release/arbor` next to
/// `target/release/arbor-bench`), if it was built.
pub fn sibling_arbor() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    // Test executables live in `deps/`, one level down.
    [dir.join("arbor"), dir.parent()?.join("arbor")]
        .into_iter()
        .find(|p| p.is_file())
}

/// `VmRSS` of process `pid`, in bytes.
pub fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    parse_vm_rss(&status).context("no VmRSS line")
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The value of gauge `name` in a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Runs the scenario against binary `bin` with `n` subscribers (see the module docs).
pub async fn measure(bin: &Path, n: usize) -> anyhow::Result<IdleOutcome> {
    let dir = tempfile::tempdir()?;
    let max = (n + 256).to_string();
    let (child, base) = {
        let (bin, path) = (bin.to_owned(), dir.path().to_owned());
        tokio::task::spawn_blocking(move || {
            spawn_serve(
                &bin,
                &path,
                "127.0.0.1:0",
                ["--max-connections", max.as_str(), "--cache-mb", "16"],
            )
        })
        .await??
    };
    let pid = child.id();
    let _server = KillOnDrop(child);
    let arbor = ArborHttp::connect(&base, Duration::from_secs(30)).await?;
    let (wf, root) = arbor.create_workflow("You are a benchmark.").await?;
    let rss_before = resident_bytes(pid)?;

    let fan = Fan::new(1);
    let ids = IdAlloc::counted();
    let path = format!("/v1/workflows/{wf}/stream");
    let started = Instant::now();
    let subs = fanout::raw_subscribers(&base, &path, n, ids.clone(), &fan).await?;
    // Every stream the client saw open is counted by the server too once its pump runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = arbor.client().get("/metrics").await?.ok("GET /metrics")?;
        let open = gauge(&String::from_utf8_lossy(&metrics), "arbor_sse_subscribers");
        if open.is_some_and(|o| o >= n as f64) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the server counts {open:?} open streams of {n} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_time = started.elapsed();
    let rss_after = resident_bytes(pid)?;

    let node = NodeOp {
        id: ids.next(),
        parent_id: root,
        node_type: "message".into(),
        role: Some(arbor_storage::Role::User),
        content: "wake up".into(),
        payload: Value::Null,
        metadata: Map::new(),
        agent_id: None,
    };
    fan.times.mark(0);
    arbor.append(wf, &node).await?;
    fan.finish(n as u64, Duration::from_secs(30)).await;
    let receipts = fanout::collect(subs).await;
    Ok(IdleOutcome {
        subscribers: n,
        rss_before,
        rss_after,
        receipts,
        connect_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_and_gauges() {
        let status = "Name:\tarbor\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let text = "# HELP arbor_sse_subscribers Open SSE streams\n\
                    # TYPE arbor_sse_subscribers gauge\n\
                    arbor_sse_subscribers_total 9\n\
                    arbor_sse_subscribers 42\n";
        assert_eq!(gauge(text, "arbor_sse_subscribers"), Some(42.0));
        assert_eq!(gauge(text, "arbor_missing"), None);
    }

    #[test]
    fn own_process_has_resident_memory() {
        let rss = resident_bytes(std::process::id()).unwrap_or(0);
        assert!(rss > 1024 * 1024, "{rss}");
    }
}
