//! `arbor-bench compare --quick` against the real services, so the harness cannot rot:
//! the real binary runs every scenario on arbor (started in-process through the `arbor`
//! library, so no `arbor` binary is needed) and on every baseline, and its JSON and
//! markdown reports must be complete and well-formed. No speed is asserted.
//!
//! Needs the services: `bash tests/services/with-services.sh cargo test -p arbor-bench
//! --release`. Without their variables it fails (loudly) rather than skip. Needs wrk and
//! pgbench too (`bash benches/tools.sh`; `tests/run-all.sh` runs it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arbor_bench::report::{Report, SCHEMA};

const SERVICES: [&str; 5] = [
    "ARBOR_TEST_REDIS_URL",
    "ARBOR_TEST_POSTGRES_URL",
    "ARBOR_TEST_NEO4J_URL",
    "ARBOR_TEST_NEO4J_USER",
    "ARBOR_TEST_NEO4J_PASSWORD",
];

fn require_services() {
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|v| std::env::var(v).map_or(true, |s| s.is_empty()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} not set: run this test under the service script, e.g.\n  \
         bash tests/services/with-services.sh cargo test -p arbor-bench --release",
        missing.join(", ")
    );
}

/// Runs the binary with a hard time limit; returns (status, stdout, stderr).
fn run_bench(dir: &Path, limit: Duration) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_arbor-bench"))
        .args(["compare", "--quick", "--json"])
        .arg(dir.join("report.json"))
        .arg("--markdown")
        .arg(dir.join("report.md"))
        .env("TMPDIR", dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start arbor-bench");
    let out = std::thread::spawn({
        let mut stdout = child.stdout.take().expect("stdout");
        move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut s).ok();
            s
        }
    });
    let err = std::thread::spawn({
        let mut stderr = child.stderr.take().expect("stderr");
        move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut s).ok();
            s
        }
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("arbor-bench compare --quick did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Every `|` table row of a markdown table has as many cells as the table's header.
fn tables_are_rectangular(md: &str) {
    let mut header: Option<usize> = None;
    for line in md.lines() {
        if !line.starts_with('|') {
            header = None;
            continue;
        }
        let cells = line.replace("\\|", "").matches('|').count();
        match header {
            None => header = Some(cells),
            Some(h) => assert_eq!(cells, h, "ragged table row: {line}"),
        }
    }
}

#[test]
fn quick_compare_runs_every_scenario_on_every_system() {
    require_services();
    let dir = tempfile::tempdir().expect("tempdir");
    let (status, stdout, stderr) = run_bench(dir.path(), Duration::from_secs(600));
    assert!(
        status.success(),
        "arbor-bench compare --quick failed ({status}):\n{stderr}\n{stdout}"
    );

    let json = std::fs::read_to_string(dir.path().join("report.json")).expect("report.json");
    let report: Report = serde_json::from_str(&json).expect("the JSON report parses");
    assert_eq!(report.schema, SCHEMA);
    assert!(report.quick);
    assert!(report.machine.nproc >= 1);
    let fsync = report.fsync.as_ref().expect("fsync probe");
    assert!(fsync.count > 0 && fsync.p50_us > 0.0);
    // The idle scenario runs the real `arbor` binary: built by a workspace test run.
    let arbor_built = arbor_bench::idle::sibling_arbor().is_some();
    assert!(
        report
            .skipped
            .iter()
            .all(|s| s.scenario == "batch" || (s.scenario == "idle" && !arbor_built)),
        "nothing but the seeds' batch may be skipped: {:?}",
        report.skipped
    );

    // Every scenario, on arbor and on each of its baselines.
    let has = |scenario: &str, system: &str| {
        report
            .results
            .iter()
            .any(|r| r.scenario == scenario && r.system.starts_with(system))
    };
    for (scenario, systems) in [
        ("append", &["arbor", "seeds", "postgres", "redis"][..]),
        ("batch", &["arbor", "postgres", "redis"][..]),
        ("path", &["arbor", "seeds", "postgres"][..]),
        ("subtree", &["arbor", "seeds", "postgres"][..]),
        ("fanout", &["arbor SSE", "SSE floor", "redis pub/sub"][..]),
        (
            "sync_lag",
            &["redis sink", "postgres sink", "neo4j sink"][..],
        ),
    ] {
        for system in systems {
            assert!(has(scenario, system), "no {scenario} row for {system}");
        }
    }
    if arbor_built {
        let idle = report
            .results
            .iter()
            .find(|r| r.scenario == "idle")
            .expect("an idle-subscribers row");
        assert_eq!(idle.error, None, "idle subscribers: {idle:?}");
        assert_eq!(
            idle.summary.count, 500,
            "the one event reached every subscriber"
        );
        let per = idle.extra["bytes_per_subscriber"].as_f64().unwrap_or(0.0);
        assert!(per > 0.0, "memory per subscriber measured: {per}");
    }
    for depth in ["depth 10", "depth 1000", "depth 10000"] {
        assert!(
            report.results.iter().any(|r| r.case == depth),
            "no path row at {depth}"
        );
    }
    for r in &report.results {
        // A system too slow for the quick run's per-query limit (the seeds' Cypher at
        // depth 10 000) is a speed finding, not a broken harness.
        let timed_out = r
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no answer within"));
        assert!(
            r.summary.count > 0 || timed_out,
            "{} / {} / {}: nothing measured (first error: {:?})",
            r.scenario,
            r.case,
            r.system,
            r.error
        );
        let s = &r.summary;
        assert!(s.p50_us <= s.p99_us && s.p99_us <= s.p999_us && s.p999_us <= s.max_us);
        assert!(timed_out || (s.seconds > 0.0 && s.per_second > 0.0));
    }
    for scenario in ["append", "batch", "path", "subtree", "fanout"] {
        assert!(
            report
                .comparisons
                .iter()
                .any(|c| c.scenario == scenario && c.ratio > 0.0),
            "no ratio for {scenario}"
        );
    }
    assert_eq!(report.goals.len(), 6);
    // The instrument check: the harness's floor beside wrk's, the same appends from
    // both clients, and pgbench with fsync on and off, each with a ratio.
    for system in [
        "HTTP floor (GET /healthz), harness client",
        "HTTP floor (GET /healthz), wrk",
        "arbor, wrk",
        "arbor (durability none), wrk",
        "postgres, pgbench, fsync on",
        "postgres, pgbench, fsync off",
    ] {
        assert!(
            report
                .results
                .iter()
                .any(|r| r.system == system && r.case.contains("instrument check")),
            "no instrument row for {system}"
        );
    }
    for (arbor, baseline) in [
        (
            "HTTP floor (GET /healthz), harness client",
            "HTTP floor (GET /healthz), wrk",
        ),
        ("arbor", "arbor, wrk"),
        ("arbor", "postgres, pgbench, fsync on"),
        ("arbor (durability none)", "postgres, pgbench, fsync off"),
    ] {
        assert!(
            report
                .comparisons
                .iter()
                .any(|c| c.arbor == arbor && c.baseline == baseline && c.ratio > 0.0),
            "no ratio of {arbor} to {baseline}"
        );
    }
    assert!(
        report.goals[0].goal.starts_with("instrument") && report.goals[0].met.is_some(),
        "the floor check is measured: {:?}",
        report.goals[0]
    );

    let md = std::fs::read_to_string(dir.path().join("report.md")).expect("report.md");
    assert_eq!(md, stdout, "the markdown file is what went to stdout");
    assert!(md.starts_with("# arbor bench compare --quick\n"));
    for heading in [
        "## Systems",
        "## Single-node appends",
        "## Batch appends",
        "## Path to root",
        "## Subtree",
        "## Fan-out",
        "## Sync lag",
        "## arbor against the baselines (same run)",
        "## Goals (issue 4)",
    ] {
        assert!(md.contains(heading), "markdown lacks {heading}");
    }
    tables_are_rectangular(&md);
}
