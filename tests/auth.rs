//! Access control (DESIGN §8) against the real binary and server: tokens created,
//! listed and revoked offline; their secrets shown once and nowhere after.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_arbor");

fn arbor(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run arbor")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "arbor failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn tokens_are_created_listed_and_revoked_offline_and_the_secret_is_shown_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let wf = "0190f5b2-0000-7000-8000-000000000001";
    let out = arbor(
        &[
            "token",
            "create",
            "--name",
            "ci bot",
            "--role",
            "writer",
            "--workflow",
            wf,
            "--expires-in",
            "30d",
            "--rate",
            "50/s",
        ],
        &data,
    );
    let created = json_lines(&ok(&out)).remove(0);
    let secret = created["token"].as_str().expect("the secret").to_owned();
    assert!(secret.starts_with("arbor_"), "{secret}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(
        secret.contains(&id.replace('-', "")),
        "the wire form names the id"
    );
    assert_eq!(created["role"], "writer");
    assert_eq!(created["workflows"], serde_json::json!([wf]));
    assert_eq!(created["rate"], 50.0);
    assert_eq!(created["created_by"], "cli");
    assert!(created["expires_at"].is_string());
    let secret_part = secret.rsplit('_').next().expect("secret part").to_owned();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&secret_part),
        "the secret is not logged"
    );

    ok(&arbor(
        &["token", "create", "--name", "root", "--role", "admin"],
        &data,
    ));
    let listed = ok(&arbor(&["token", "list"], &data));
    assert!(!listed.contains(&secret_part), "list never shows a secret");
    assert!(!listed.contains("hash"), "nor a hash: {listed}");
    let listed = json_lines(&listed);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0]["revoked_at"].is_null());
    assert!(listed.iter().all(|t| t.get("token").is_none()));

    let revoked = json_lines(&ok(&arbor(&["token", "revoke", &id], &data))).remove(0);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let listed = json_lines(&ok(&arbor(&["token", "list"], &data)));
    assert!(listed[0]["revoked_at"].is_string());
    assert!(listed[1]["revoked_at"].is_null());

    let unknown = arbor(
        &["token", "revoke", "0190f5b2-0000-7000-8000-0000000000ff"],
        &data,
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));
    let bad_role = arbor(&["token", "create", "--name", "x", "--role", "root"], &data);
    assert!(!bad_role.status.success());
    assert_eq!(json_lines(&ok(&arbor(&["token", "list"], &data))).len(), 2);

    // Token events are not workflow events: nothing reaches the workflow log, so no
    // replay, stream, export or sink sees them; verify still passes.
    let report: Value = serde_json::from_str(&ok(&arbor(&["verify"], &data))).expect("json");
    assert_eq!(report["events"], 0, "{report}");
}
