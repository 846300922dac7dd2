//! Crash test: the real binary serves with `--durability fsync`, 16 concurrent
//! appenders write over HTTP, and the server is killed with SIGKILL at a random
//! moment. After a restart every acknowledged node must be there with the seq it was
//! acknowledged with, and `arbor verify` (hash chain, gap-free seqs, content hashes,
//! graph) must pass. `ARBOR_CRASH_CYCLES` sets the number of cycles (20 by default,
//! 1000 for the long mode); `ARBOR_CRASH_SEED` the seed.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

mod common;

const APPENDERS: usize = 16;
const BIN: &str = env!("CARGO_BIN_EXE_arbor");

struct Server {
    child: Child,
    base: String,
}

fn start(dir: &Path) -> Server {
    let (child, base) = common::spawn_serve(dir, std::iter::empty::<&str>());
    Server { child, base }
}

fn verify(dir: &Path) {
    let out = Command::new(BIN)
        .arg("verify")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run verify");
    assert!(
        out.status.success(),
        "verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let cycles: u64 = std::env::var("ARBOR_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("ARBOR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x00a7_b0c7);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();

    // Set up: one workflow, and one branch tip per appender.
    let mut server = start(dir.path());
    let tips: Vec<String> = rt.block_on(async {
        let r: Value = client
            .post(format!("{}/v1/workflows", server.base))
            .json(&json!({ "system_prompt": "crash test" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let wf = r["workflow_id"].as_str().unwrap().to_owned();
        vec![format!("{wf}/{}", r["root_id"].as_str().unwrap()); APPENDERS]
    });
    let tips = Arc::new(Mutex::new(tips));
    let mut acked_total = 0usize;

    for cycle in 0..cycles {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(cycle));
        let kill_after = Duration::from_millis(rng.random_range(20..400));
        let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for a in 0..APPENDERS {
                let client = client.clone();
                let base = server.base.clone();
                let acked = acked.clone();
                let tips = tips.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0.. {
                        let tip = tips.lock().unwrap()[a].clone();
                        let (wf, parent) = tip.split_once('/').unwrap();
                        let res = client
                            .post(format!("{base}/v1/workflows/{wf}/nodes"))
                            .json(&json!({ "parent_id": parent, "type": "message", "content": format!("appender {a} step {i}") }))
                            .send()
                            .await;
                        let Ok(resp) = res else { return };
                        if resp.status().as_u16() != 201 {
                            return;
                        }
                        let Ok(node) = resp.json::<Value>().await else { return };
                        let id = node["id"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().push((id.clone(), node["seq"].as_u64().unwrap()));
                        tips.lock().unwrap()[a] = format!("{wf}/{id}");
                    }
                }));
            }
            tokio::time::sleep(kill_after).await;
            server.child.kill().expect("kill -9");
            server.child.wait().expect("reap");
            for t in tasks {
                t.await.unwrap();
            }
        });
        let acked = acked.lock().unwrap().clone();
        acked_total += acked.len();

        server = start(dir.path());
        rt.block_on(async {
            for (id, seq) in &acked {
                let r = client
                    .get(format!("{}/v1/nodes/{id}", server.base))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    r.status().as_u16(),
                    200,
                    "cycle {cycle}: acknowledged node {id} lost"
                );
                let n: Value = r.json().await.unwrap();
                assert_eq!(
                    n["seq"].as_u64(),
                    Some(*seq),
                    "cycle {cycle}: node {id} changed seq"
                );
            }
        });
        // Graceful stop, then the offline verifier.
        let status = Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = server.child.wait().expect("wait");
        assert!(exit.success(), "graceful shutdown exited with {exit}");
        verify(dir.path());
        server = start(dir.path());
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    assert!(
        acked_total >= cycles as usize,
        "only {acked_total} appends were acknowledged in {cycles} cycles: the test exercised nothing"
    );
}
