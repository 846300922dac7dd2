//! The README's curl walkthrough, run verbatim against the real binary.
//!
//! The README is the first thing a newcomer runs; this test copies its `sh` block under
//! "A branching workflow with curl" out of README.md, starts `arbor serve` where the
//! README says it listens (127.0.0.1:7700), runs the block with `bash -e`, and checks
//! every line it prints. Regression (issue 10): the walkthrough clobbered `$USER` and
//! defined `id()`, its outputs ran together without newlines, and its last step exited
//! 28; none of that was noticed because nothing ran it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The README's walkthrough block.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let section = readme
        .split("## A branching workflow with curl")
        .nth(1)
        .expect("README has the walkthrough section");
    let start = section.find("```sh\n").expect("an sh block") + "```sh\n".len();
    let len = section[start..].find("```").expect("the block ends");
    section[start..start + len].to_owned()
}

/// The server of the README's first command, on its default address; killed on drop.
struct Server {
    child: std::process::Child,
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
        let server = Server { child, _dir: dir };
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &script])
        .env("USER", "keep-me")
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walkthrough failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
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
