//! Established load generators run as child processes, beside the harness's own
//! client: wrk (the HTTP floor check, and the same appends as the harness sends) and
//! pgbench (PostgreSQL's own client, one INSERT per transaction). Their figures land in
//! the same [`Summary`] as every other row.
//!
//! wrk runs with a Lua script of ours whose `done` hook prints one JSON line (count,
//! errors, duration, p50/p99/p99.9/max/mean), so nothing depends on wrk's human
//! output; pgbench writes a per-transaction log (`-l`) that is read into a histogram.
//! Neither tool is installed by the harness: `benches/tools.sh` installs them
//! (apt-get), and a missing one makes its rows say so instead of failing the run.
//!
//! Only loopback targets: the URL given to wrk and pgbench is checked first.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::stats::{round3, Recorder, Summary};

/// Where `name` is on `PATH`, if anywhere.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd` to its end within `limit`; its stdout, or an error with its stderr.
async fn run(
    mut cmd: tokio::process::Command,
    what: &str,
    limit: Duration,
) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("{what} did not finish within {limit:?}"))?
        .with_context(|| format!("running {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{what} failed ({}): {} {}",
            out.status,
            err.trim(),
            stdout.trim()
        );
    }
    Ok(stdout)
}

/// A wrk run: `connections` keep-alive connections on `threads` threads for
/// `seconds` against `url`; `requests` is Lua that may define `request()` (per-request
/// bodies) and `setup(thread)`.
#[derive(Clone, Debug)]
pub struct Wrk {
    /// The wrk binary.
    pub bin: PathBuf,
    /// Connections.
    pub connections: usize,
    /// Threads.
    pub threads: usize,
    /// Whole seconds (wrk takes no fraction).
    pub seconds: u64,
}

/// The `done` hook: one line, `ARBOR-WRK {json}`.
const WRK_DONE: &str = r#"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'ARBOR-WRK {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p99":%d,"p999":%d,"max":%d,"mean":%f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"#;

#[derive(Debug, Deserialize)]
struct WrkDone {
    requests: u64,
    duration_us: u64,
    connect: u64,
    read: u64,
    write: u64,
    status: u64,
    timeout: u64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

impl Wrk {
    /// wrk on `PATH` with these settings, if it is installed.
    pub fn find(connections: usize, seconds: u64) -> Option<Wrk> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Some(Wrk {
            bin: which("wrk")?,
            connections: connections.max(1),
            threads: threads.clamp(1, connections.max(1)),
            seconds: seconds.max(1),
        })
    }

    /// Runs wrk against `url` with the Lua of `requests` (may be empty: the same
    /// request over and over); the figures as a [`Summary`].
    pub async fn run(&self, url: &str, requests: &str) -> anyhow::Result<Summary> {
        crate::check_loopback("wrk target", url)?;
        let dir = tempfile::Builder::new()
            .prefix("arbor-bench-wrk-")
            .tempdir()?;
        let script = dir.path().join("script.lua");
        std::fs::write(&script, format!("{requests}\n{WRK_DONE}"))
            .with_context(|| format!("writing {}", script.display()))?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("-t")
            .arg(self.threads.to_string())
            .arg("-c")
            .arg(self.connections.to_string())
            .arg("-d")
            .arg(format!("{}s", self.seconds))
            .arg("--timeout")
            .arg("10s")
            .arg("-s")
            .arg(&script)
            .arg(url);
        let limit = Duration::from_secs(self.seconds + 30);
        let out = run(cmd, "wrk", limit).await?;
        parse_wrk(&out)
    }
}

/// The summary of wrk's output (the `ARBOR-WRK` line of our `done` hook).
pub fn parse_wrk(out: &str) -> anyhow::Result<Summary> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("ARBOR-WRK "))
        .with_context(|| format!("wrk printed no summary: {}", out.trim()))?;
    let d: WrkDone = serde_json::from_str(line).with_context(|| format!("wrk summary {line}"))?;
    let errors = d.connect + d.read + d.write + d.status + d.timeout;
    let ok = d.requests.saturating_sub(d.status);
    let secs = d.duration_us as f64 / 1e6;
    Ok(Summary {
        count: ok,
        errors,
        seconds: round3(secs),
        per_second: if secs > 0.0 {
            round3(ok as f64 / secs)
        } else {
            0.0
        },
        p50_us: round3(d.p50),
        p99_us: round3(d.p99.max(d.p50)),
        p999_us: round3(d.p999.max(d.p99).max(d.p50)),
        max_us: round3(d.max.max(d.p999).max(d.p99).max(d.p50)),
        mean_us: round3(d.mean),
    })
}

/// A pgbench run: `clients` connections on `threads` threads for `seconds`, one
/// custom script (no vacuum, no pgbench tables).
#[derive(Clone, Debug)]
pub struct Pgbench {
    /// The pgbench binary.
    pub bin: PathBuf,
    /// Client connections.
    pub clients: usize,
    /// Threads.
    pub threads: usize,
    /// Whole seconds.
    pub seconds: u64,
}

impl Pgbench {
    /// pgbench on `PATH` (or in the newest `/usr/lib/postgresql/*/bin`), if installed.
    pub fn find(clients: usize, seconds: u64) -> Option<Pgbench> {
        let bin = which("pgbench").or_else(|| {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path().join("bin/pgbench")))
                .filter(|p| p.is_file())
                .collect();
            dirs.sort();
            dirs.pop()
        })?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Some(Pgbench {
            bin,
            clients: clients.max(1),
            threads: threads.clamp(1, clients.max(1)),
            seconds: seconds.max(1),
        })
    }

    /// Runs `script` (pgbench's script language) against `url`; per-transaction
    /// latencies from its log.
    pub async fn run(&self, url: &str, script: &str) -> anyhow::Result<Summary> {
        crate::check_loopback("pgbench target", url)?;
        let dir = tempfile::Builder::new()
            .prefix("arbor-bench-pgbench-")
            .tempdir()?;
        let file = dir.path().join("script.sql");
        std::fs::write(&file, script).with_context(|| format!("writing {}", file.display()))?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("-n")
            .arg("-c")
            .arg(self.clients.to_string())
            .arg("-j")
            .arg(self.threads.to_string())
            .arg("-T")
            .arg(self.seconds.to_string())
            .arg("-M")
            .arg("prepared")
            .arg("-f")
            .arg(&file)
            .arg("-l")
            .arg("--log-prefix")
            .arg(dir.path().join("log"))
            .arg(url);
        let limit = Duration::from_secs(self.seconds + 60);
        let out = run(cmd, "pgbench", limit).await?;
        let mut rec = Recorder::default();
        for log in logs(dir.path())? {
            let text = std::fs::read_to_string(&log)
                .with_context(|| format!("reading {}", log.display()))?;
            read_pgbench_log(&text, &mut rec);
        }
        pgbench_summary(&out, &rec)
    }
}

fn logs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("log."))
        {
            v.push(p);
        }
    }
    Ok(v)
}

/// Records the latency (third field, µs) of every transaction line of a pgbench log
/// (`client_id transaction_no time script_no time_epoch time_us`); a failed one
/// (`failed` or `skipped` in place of the time) counts as an error.
pub fn read_pgbench_log(text: &str, rec: &mut Recorder) {
    for line in text.lines() {
        match line.split_whitespace().nth(2) {
            Some(t) => match t.parse::<u64>() {
                Ok(us) => rec.record_ns(us.saturating_mul(1_000)),
                Err(_) => rec.error(),
            },
            None => continue,
        }
    }
}

/// The summary of a pgbench run: latencies from `rec`, throughput from its `tps = `
/// line (without the initial connection time), errors from `number of failed
/// transactions`.
pub fn pgbench_summary(out: &str, rec: &Recorder) -> anyhow::Result<Summary> {
    let tps: f64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .with_context(|| format!("pgbench printed no tps: {}", out.trim()))?;
    let failed: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("number of failed transactions: "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    let n = rec.count();
    let secs = if tps > 0.0 { n as f64 / tps } else { 0.0 };
    let mut s = rec.summary(Duration::from_secs_f64(secs.max(0.0)));
    s.per_second = round3(tps);
    s.errors = s.errors.max(failed);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summary_line() {
        let out = "Running 2s test @ http://127.0.0.1:1/healthz\n  2 threads and 64 connections\n\
                   ARBOR-WRK {\"requests\":200000,\"duration_us\":2000000,\"connect\":0,\"read\":1,\
                   \"write\":0,\"status\":10,\"timeout\":2,\"p50\":500,\"p99\":2100,\"p999\":4000,\
                   \"max\":9000,\"mean\":610.5}\n";
        let s = parse_wrk(out).unwrap_or_default();
        assert_eq!(s.count, 199_990);
        assert_eq!(s.errors, 13);
        assert_eq!(s.seconds, 2.0);
        assert_eq!(s.per_second, 99_995.0);
        assert_eq!(
            (s.p50_us, s.p99_us, s.p999_us, s.max_us),
            (500.0, 2_100.0, 4_000.0, 9_000.0)
        );
        assert!(parse_wrk("Running 2s test\nunable to connect").is_err());
    }

    #[test]
    fn pgbench_log_and_output() {
        let mut rec = Recorder::default();
        read_pgbench_log(
            "0 1 1500 0 1700000000 100\n1 1 2500 0 1700000000 200\n2 1 failed 0 1700000000 300\n\n",
            &mut rec,
        );
        assert_eq!(rec.count(), 2);
        assert_eq!(rec.errors(), 1);
        let out = "transaction type: script.sql\nnumber of failed transactions: 0 (0.000%)\n\
                   latency average = 5.1 ms\ntps = 11234.567890 (without initial connection time)\n";
        let s = pgbench_summary(out, &rec).unwrap_or_default();
        assert_eq!(s.per_second, 11_234.568);
        assert_eq!(s.count, 2);
        assert_eq!(s.errors, 1);
        assert!((s.p50_us - 1_500.0).abs() < 2.0, "{}", s.p50_us);
        assert!(pgbench_summary("connection refused", &rec).is_err());
    }

    #[test]
    fn tools_only_target_loopback() {
        let w = Wrk {
            bin: PathBuf::from("/nonexistent/wrk"),
            connections: 1,
            threads: 1,
            seconds: 1,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let Ok(rt) = rt else { return };
        let e = rt.block_on(w.run("http://10.1.1.1:80/", "")).err();
        assert!(e.is_some_and(|e| format!("{e}").contains("loopback")));
    }
}
