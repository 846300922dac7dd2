//! The README's curl walkthrough, run verbatim against the real binary.
//!
//! The README is the first thing a newcomer runs; this test copies its `sh` block under
//! "A branching workflow with curl" out of README.md, starts `arbor serve` where the
//! README says it listens (127.0.0.1:7700), runs the block with `bash -e`, and checks
//! every line it prints. Regression (issue 10): the walkthrough clobbered `$USER` and
//! defined `id()`, its outputs ran together without newlines, and its last step exited
//! 28; none of that was noticed because nothing ran it.
//!
//! The offline block (import the sample, list workflows, export one, verify) runs
//! verbatim too, with `arbor` on `PATH` as `cargo install --path .` puts it, in a
//! directory laid out like a checkout (`data/sample-coding-agent.jsonl`), so the
//! default data directory is used. Regression (issue 10): `arbor` was never put on
//! `PATH`, and `import` printed no workflow id for `export` to take.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arbor_testkit::serve::KillOnDrop;
use serde_json::Value;

/// The README.
fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md")
}

/// The first `sh` block after `heading` in the README.
fn block(heading: &str) -> String {
    let readme = readme();
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has the section {heading:?}"));
    let start = section.find("```sh\n").expect("an sh block") + "```sh\n".len();
    let len = section[start..].find("```").expect("the block ends");
    section[start..start + len].to_owned()
}

/// The README's walkthrough block.
fn walkthrough() -> String {
    block("## A branching workflow with curl")
}

/// Runs `script` in `bash` with `-e -o pipefail`; its stdout and stderr, once it has
/// succeeded.
fn run(what: &str, mut bash: Command, script: &str) -> (String, String) {
    let out = bash
        .args(["-e", "-o", "pipefail", "-c", script])
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// `PATH` with the built `arbor` first, as `cargo install --path .` leaves it.
fn path_with_arbor() -> std::ffi::OsString {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_arbor"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&rest))).expect("PATH")
}

/// The server of the README's first command, on its default address; killed on drop.
struct Server {
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new(env!("CARGO_BIN_EXE_arbor"))
            .args(["serve", "--durability", "none", "--data-dir"])
            .arg(dir.path().join("db"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start arbor");
        let server = Server {
            _child: KillOnDrop(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "http://127.0.0.1:7700/readyz"])
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "arbor did not answer on 127.0.0.1:7700 (is another server using the port?)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    // After the walkthrough: the user's shell keeps its $USER and gains no `id` function.
    let script = format!(
        "{}\ntest \"$USER\" = keep-me\n! declare -F id >/dev/null\n",
        walkthrough()
    );
    let _server = Server::start();
    let mut bash = Command::new("bash");
    bash.env("USER", "keep-me");
    let (stdout, stderr) = run("the walkthrough", bash, &script);
    assert!(
        stderr.is_empty(),
        "the walkthrough wrote to stderr:\n{stderr}"
    );

    // Every response is one JSON document on a line of its own.
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON line ({e}): {l}")))
        .collect();
    let [created, chosen, edge, messages, branches, decisions, monitors, status, events] =
        &lines[..]
    else {
        panic!("expected 9 JSON lines, got {}:\n{stdout}", lines.len());
    };
    assert_eq!(created["seq"], 1);
    assert_eq!(chosen["type"], "CHOSEN_OPTION", "{chosen}");
    assert_eq!(edge["type"], "MONITORS", "{edge}");
    let roles: Vec<&str> = messages["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
    assert_eq!(branches["branches"].as_array().expect("branches").len(), 2);
    let d = &decisions["decisions"][0];
    assert_eq!(d["options"].as_array().expect("options").len(), 2);
    assert_eq!(
        d["chosen"]["id"], d["options"][0]["id"],
        "the first option was chosen"
    );
    assert_eq!(monitors["monitors"].as_array().expect("monitors").len(), 1);
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(events["events"].as_array().expect("events").len(), 10);
}

#[test]
fn the_first_screen_serves_and_tests_in_two_commands() {
    let first = block("# arbor");
    let commands: Vec<&str> = first
        .lines()
        .filter_map(|l| l.split('#').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        commands,
        ["cargo run --release -- serve", "bash tests/run-all.sh"],
        "two commands: the server, and every test"
    );
    assert!(
        readme().contains("`cargo install --path .` puts it on your\nPATH"),
        "the first screen says how `arbor` gets on PATH"
    );
}

#[test]
fn the_readme_offline_block_runs_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("data")).expect("mkdir data");
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/sample-coding-agent.jsonl"
    );
    std::fs::copy(sample, dir.path().join("data/sample-coding-agent.jsonl"))
        .expect("copy the sample");
    let mut bash = Command::new("bash");
    bash.current_dir(dir.path())
        .env("PATH", path_with_arbor())
        .env_remove("ARBOR_DATA_DIR")
        .env_remove("ARBOR_CONFIG");
    let (stdout, _) = run("the offline block", bash, &block("## The sample, offline"));
    assert!(
        dir.path().join("data/db/db").exists(),
        "the default data directory"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let [imported, listed, exported, verified] = &lines[..] else {
        panic!("expected 4 lines, got {}:\n{stdout}", lines.len());
    };
    let imported: Value = serde_json::from_str(imported).expect("import report");
    let listed: Value = serde_json::from_str(listed).expect("workflow list");
    let verified: Value = serde_json::from_str(verified).expect("verify report");
    let wf = &imported["stored_workflows"][0]["workflow_id"];
    assert!(wf.is_string(), "import names the workflow: {imported}");
    assert_eq!(&listed["workflows"][0]["workflow_id"], wf, "{listed}");
    assert_eq!(
        listed["workflows"][0]["node_count"],
        imported["stored_workflows"][0]["node_count"]
    );
    assert_eq!(*exported, "exported byte for byte");
    assert_eq!(verified["events"], imported["events"], "{verified}");
}
