//! `arbor-bench generate`, the real binary: what it writes is the generators' output
//! byte for byte, to stdout or to `-o FILE`. Needs no services.

use std::process::{Command, Output};

use arbor_testkit as testkit;

const BIN: &str = env!("CARGO_BIN_EXE_arbor-bench");
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/sample-coding-agent.jsonl"
);

fn generate(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("generate")
        .args(args)
        .output()
        .expect("run arbor-bench generate");
    assert!(
        out.status.success(),
        "arbor-bench generate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn sample_to_stdout_is_the_shipped_file() {
    let out = generate(&["sample"]);
    let shipped = std::fs::read(SAMPLE).expect("read the shipped sample");
    assert!(out.stdout == shipped, "stdout differs from {SAMPLE}");
    let events = String::from_utf8_lossy(&shipped).lines().count();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("arbor-bench: wrote {events} events")
    );
}

#[test]
fn synthetic_and_chain_to_a_file_follow_their_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("synthetic.jsonl");
    let path = file.to_str().expect("utf-8 temp path");
    generate(&[
        "synthetic",
        "--workflows",
        "2",
        "--nodes",
        "150",
        "--seed",
        "9",
        "--decision-ratio",
        "0.1",
        "-o",
        path,
    ]);
    let spec = testkit::SyntheticSpec {
        seed: 9,
        workflows: 2,
        nodes_per_workflow: 150,
        max_depth: 10_000,
        decision_ratio: 0.1,
        ..testkit::SyntheticSpec::default()
    };
    let want =
        testkit::to_jsonl(&testkit::synthetic(&spec).collect::<Vec<_>>()).expect("serialize");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), want);

    let out = generate(&["chain", "--depth", "40", "--seed", "3"]);
    let want =
        testkit::to_jsonl(&testkit::deep_chain(3, 40).collect::<Vec<_>>()).expect("serialize");
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}
