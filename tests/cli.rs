//! The real binary's offline commands: import, export (byte-exact round trip of the
//! shipped sample), verify (clean, then tampered), and their errors.

mod common;

use arbor_storage::{log_entry, replace_log_value, LogEntry, Record};
use arbor_testkit as testkit;
use common::{arbor, ok};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/sample-coding-agent.jsonl"
);

fn sample_workflow_id() -> String {
    let first = std::fs::read_to_string(SAMPLE).unwrap();
    let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    line["workflow_id"].as_str().unwrap().to_owned()
}

#[test]
fn sample_round_trips_byte_for_byte_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&ok(&arbor(&["import", SAMPLE], dir.path()))).unwrap();
    let lines = std::fs::read_to_string(SAMPLE).unwrap().lines().count() as u64;
    assert_eq!(report["events"], lines);
    assert_eq!(report["stored"], lines);
    let again: serde_json::Value =
        serde_json::from_str(&ok(&arbor(&["import", SAMPLE], dir.path()))).unwrap();
    assert_eq!(
        again["stored"], 0,
        "a second import stores nothing: {again}"
    );
    assert_eq!(again["already_present"], lines);

    let wf = sample_workflow_id();
    let exported = ok(&arbor(&["export", "--workflow", &wf], dir.path()));
    assert_eq!(
        exported,
        std::fs::read_to_string(SAMPLE).unwrap(),
        "export(import(x)) == x"
    );

    let verified: serde_json::Value =
        serde_json::from_str(&ok(&arbor(&["verify"], dir.path()))).unwrap();
    assert_eq!(verified["events"], lines);
}

#[test]
fn verify_names_the_first_tampered_record() {
    let dir = tempfile::tempdir().unwrap();
    ok(&arbor(&["import", SAMPLE], dir.path()));
    {
        let db = sled::open(dir.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        let entry = log_entry(&log, 7).unwrap().unwrap();
        let mut r = Record::decode(&entry.record).unwrap();
        r.actor = "mallory".into();
        let value = LogEntry::join(&r.encode().unwrap(), entry.text.as_deref()).unwrap();
        replace_log_value(&log, 7, &value).unwrap();
        db.flush().unwrap();
    }
    let out = arbor(&["verify"], dir.path());
    assert!(!out.status.success(), "verify passed a tampered log");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seq 7"), "{err}");
    assert!(err.contains("tampered"), "{err}");
}

#[test]
fn verify_names_tampered_content() {
    let dir = tempfile::tempdir().unwrap();
    ok(&arbor(&["import", SAMPLE], dir.path()));
    {
        // Seq 1 creates the first workflow: its root's content (the system prompt) is
        // kept in that log value, after the record.
        let db = sled::open(dir.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        let entry = log_entry(&log, 1).unwrap().unwrap();
        assert!(entry.text.is_some(), "no content kept with seq 1");
        let value = LogEntry::join(&entry.record, Some(b"You are mallory's agent.")).unwrap();
        replace_log_value(&log, 1, &value).unwrap();
        db.flush().unwrap();
    }
    let out = arbor(&["verify"], dir.path());
    assert!(!out.status.success(), "verify passed tampered content");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("seq 1") && err.contains("does not hash"),
        "{err}"
    );
}

#[test]
fn bad_input_is_refused_without_storing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    let mut lines: Vec<&str> = sample.lines().take(3).collect();
    lines.push("{\"id\": 1}");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let store = dir.path().join("db");
    let out = arbor(&["import", file.to_str().unwrap()], &store);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4"), "{err}");
    // The three good lines before it were imported; the bad one stored nothing more.
    let wf = sample_workflow_id();
    let exported = ok(&arbor(&["export", "--workflow", &wf], &store));
    assert_eq!(exported.lines().count(), 3);
    ok(&arbor(&["verify"], &store));

    let out = arbor(
        &[
            "export",
            "--workflow",
            "0190f0a0-0000-7000-8000-00000000ffff",
        ],
        &store,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = arbor(&["verify"], &dir.path().join("nothing-here"));
    assert!(!out.status.success());
}

#[test]
fn generated_synthetic_workflows_import_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("synthetic.jsonl");
    // What `arbor-bench generate synthetic --workflows 3 --nodes 300 --seed 7 -o FILE`
    // writes (its defaults: `SyntheticSpec`'s, but 10 000 levels deep at most).
    let spec = testkit::SyntheticSpec {
        seed: 7,
        workflows: 3,
        nodes_per_workflow: 300,
        max_depth: 10_000,
        ..testkit::SyntheticSpec::default()
    };
    let out = std::fs::File::create(&file).unwrap();
    let written = testkit::write_jsonl(std::io::BufWriter::new(out), testkit::synthetic(&spec));
    assert!(written.is_ok(), "{written:?}");
    let lines = std::fs::read_to_string(&file).unwrap().lines().count() as u64;
    assert!(lines >= 900, "{lines}");
    let store = dir.path().join("db");
    let report: serde_json::Value =
        serde_json::from_str(&ok(&arbor(&["import", file.to_str().unwrap()], &store))).unwrap();
    assert_eq!(report["stored"], lines);
    assert_eq!(report["workflows"], 3);
    ok(&arbor(&["verify"], &store));
}

/// Issue 10 item 2: the NUL rule holds for import too (it lives in storage's validation,
/// which HTTP and import both pass): the line is refused, naming the field.
#[test]
fn import_refuses_nul_in_text_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nul.jsonl");
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    let mut lines: Vec<String> = sample.lines().take(3).map(str::to_owned).collect();
    let fourth = sample.lines().nth(3).unwrap();
    assert!(fourth.contains("\"kind\":\"node.created\""), "{fourth}");
    lines.push(fourth.replacen("\"content\":\"", "\"content\":\"nul \\u0000 ", 1));
    std::fs::write(&file, lines.join("\n")).unwrap();
    let store = dir.path().join("db");
    let out = arbor(&["import", file.to_str().unwrap()], &store);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 4") && err.contains("content: U+0000"),
        "{err}"
    );
    let wf = sample_workflow_id();
    let exported = ok(&arbor(&["export", "--workflow", &wf], &store));
    assert_eq!(exported.lines().count(), 3, "the NUL line stored nothing");
}
