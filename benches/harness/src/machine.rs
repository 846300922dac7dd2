//! The machine a run happened on, and this disk's fsync latency (the floor under every
//! fsync'd append: a group commit cannot be acknowledged faster than one fdatasync).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::stats::{Recorder, Summary};

/// What the report says about the machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// CPUs available to this process.
    pub nproc: usize,
    /// CPU model.
    pub cpu: String,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// The block device of the temp directory, its filesystem and whether it rotates.
    pub disk: String,
    /// `/proc/loadavg` when the run started (other work on the machine skews figures).
    pub load_at_start: String,
}

/// Reads `/proc` and `/sys` (fields it cannot read stay empty).
pub fn describe(tmp: &Path) -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let memory_bytes = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        memory_bytes,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        disk: disk_of(tmp, &read("/proc/mounts")),
        load_at_start: read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The mount holding `path` (longest mount-point prefix), as `device (fstype, ssd|hdd)`.
fn disk_of(path: &Path, mounts: &str) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let best = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?, f.next()?))
        })
        .filter(|(_, mp, _)| path.starts_with(mp))
        .max_by_key(|(_, mp, _)| mp.len());
    let Some((dev, mp, fs)) = best else {
        return String::new();
    };
    let name = dev.rsplit('/').next().unwrap_or(dev);
    // Partitions (vda1) have their queue on the parent device (vda).
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let rot = [name, base].iter().find_map(|n| {
        std::fs::read_to_string(format!("/sys/block/{n}/queue/rotational"))
            .ok()
            .map(|s| {
                if s.trim() == "1" {
                    "rotational"
                } else {
                    "non-rotational"
                }
            })
    });
    match rot {
        Some(r) => format!("{dev} on {mp} ({fs}, {r})"),
        None => format!("{dev} on {mp} ({fs})"),
    }
}

/// Appends `size`-byte records to a temporary file in `dir`, `fdatasync`ing after each,
/// up to `max` times or for `duration`: the latency of one durable write on this disk.
pub fn fsync_probe(
    dir: &Path,
    size: usize,
    max: u64,
    duration: Duration,
) -> anyhow::Result<Summary> {
    let mut file = tempfile::Builder::new()
        .prefix("arbor-bench-fsync-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let block = vec![0xA5u8; size.max(1)];
    let mut rec = Recorder::default();
    let start = Instant::now();
    for _ in 0..max {
        if start.elapsed() >= duration {
            break;
        }
        let t = Instant::now();
        file.write_all(&block)?;
        file.as_file().sync_data()?;
        rec.record(t.elapsed());
    }
    Ok(rec.summary(start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_mount_wins() {
        let mounts = "/dev/vda / ext4 rw 0 0\n\
                      tmpfs /tmp tmpfs rw 0 0\n\
                      /dev/vdb1 /data xfs rw 0 0\n";
        assert!(disk_of(Path::new("/data/x"), mounts).starts_with("/dev/vdb1 on /data (xfs"));
        assert!(disk_of(Path::new("/home"), mounts).starts_with("/dev/vda on / (ext4"));
        assert_eq!(disk_of(Path::new("/home"), ""), "");
    }

    #[test]
    fn describe_and_probe_run_here() {
        let dir = tempfile::tempdir().unwrap();
        let m = describe(dir.path());
        assert!(m.nproc >= 1);
        let s = fsync_probe(dir.path(), 4096, 5, Duration::from_secs(5)).unwrap();
        assert_eq!(s.count, 5);
        assert!(s.p50_us > 0.0);
    }
}
