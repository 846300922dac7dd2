//! The web UI with big trees, in headless Debian chromium (issue 14, DESIGN §12): how
//! long a synthetic workflow of N nodes takes to paint, and how long the page's frames
//! get while 1 000 events/s are appended to it live.
//!
//! ```text
//! eval "$(bash tests/browser/ensure.sh)"
//! cargo bench --bench ui                         # 100 000 nodes
//! ARBOR_UI_NODES=100000,300000,1000000 cargo bench --bench ui
//! ```
//!
//! For each size: the workflow is generated (arbor-testkit's realistic shape: mostly
//! chains, a fork every 20 nodes, decisions, monitors, content log-normal around 400
//! bytes) and imported offline; `arbor serve` starts on it; the page opens
//! `/#/w/{wf}` and reports, from the Performance API: the time spent fetching and
//! parsing the workflow's outline (`fetch`; `api` is the same fetch by this program,
//! the server's share), the draw (`draw`), and, from navigation start, when the rows on
//! screen were drawn (`first`) and when they had their labels, the tree being complete
//! (`paint`, the figure the goal bounds at 2 s). Then the page records every
//! animation frame and every long task (the Long Tasks API) while this program appends
//! 1 000 nodes/s for `ARBOR_UI_SECONDS` (5) seconds under random existing nodes, so
//! each one lands inside the outline, not at its end. Frames over 100 ms are counted.
//! The baseline of the same run is a 269-node tree (the sample's size), so a slow
//! machine shows as a slow baseline, not as a regression.

use std::io::BufWriter;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arbor_testkit::browser::{artifact, Browser};
use arbor_testkit::{synthetic, write_jsonl, SyntheticSpec};
use serde_json::{json, Value};

use arbor_testkit::serve::{spawn_serve, KillOnDrop as Serve};

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; a filter argument is not used here.
    let sizes: Vec<usize> = std::env::var("ARBOR_UI_NODES")
        .unwrap_or_else(|_| "100000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .context("ARBOR_UI_NODES: numbers, comma-separated")
        })
        .collect::<Result<_>>()?;
    let seconds: u64 = std::env::var("ARBOR_UI_SECONDS")
        .ok()
        .map(|s| s.parse().context("ARBOR_UI_SECONDS"))
        .transpose()?
        .unwrap_or(5);
    let rt = tokio::runtime::Runtime::new()?;
    println!(
        "{:>9} {:>8} {:>9} {:>9} {:>9} {:>9} | live {:>5}/s {:>7} {:>9} {:>9} {:>8} {:>11}",
        "nodes",
        "api ms",
        "fetch ms",
        "draw ms",
        "first ms",
        "paint ms",
        "rate",
        "frames",
        "max frame",
        "long max",
        ">100ms",
        "flatten max"
    );
    for (i, &n) in std::iter::once(&269).chain(sizes.iter()).enumerate() {
        let r = rt.block_on(measure(n, seconds, i == 0))?;
        println!(
            "{:>9} {:>8.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} | live {:>5.0}/s {:>7} {:>7.0}ms {:>7.0}ms {:>8} {:>9.0}ms",
            r.nodes,
            r.api_ms,
            r.fetch_ms,
            r.draw_ms,
            r.first_ms,
            r.paint_ms,
            r.rate,
            r.frames,
            r.max_frame_ms,
            r.max_long_task_ms,
            r.over_100,
            r.max_flatten_ms
        );
    }
    Ok(())
}

struct Figures {
    nodes: u64,
    api_ms: f64,
    fetch_ms: f64,
    draw_ms: f64,
    first_ms: f64,
    paint_ms: f64,
    rate: f64,
    frames: u64,
    max_frame_ms: f64,
    max_long_task_ms: f64,
    over_100: u64,
    max_flatten_ms: f64,
}

async fn measure(nodes: usize, seconds: u64, baseline: bool) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("wf.jsonl");
    let spec = SyntheticSpec {
        workflows: 1,
        nodes_per_workflow: nodes,
        max_depth: 4096,
        finish_ratio: 0.0,
        seed: 7,
        ..SyntheticSpec::default()
    };
    write_jsonl(
        BufWriter::new(std::fs::File::create(&file)?),
        synthetic(&spec),
    )?;
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .arg("import")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .output()?;
    if !out.status.success() {
        bail!("import: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let wf = report["stored_workflows"][0]["workflow_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no workflow imported: {report}"))?
        .to_owned();
    let (serve, base) = serve(&data)?;
    let api_ms = outline_ms(&base, &wf).await?;

    let mut page = Browser::start(1280, 800)?;
    page.goto(&format!("{base}/#/w/{wf}"))?;
    page.wait(&format!("window.arbor.loaded === '{wf}'"), 300)?;
    let perf = page.eval("window.arbor.perf")?;
    eprintln!("{nodes} nodes: page timings {perf}");
    page.wait(
        "document.getElementById('conn').dataset.state === 'live'",
        60,
    )?;
    page.screenshot(&artifact(&format!("ui-bench-{nodes}.png")))?;

    // Live appends: 10 every 10 ms under random nodes of the workflow.
    let ids: Vec<String> = serde_json::from_value(page.eval("window.arbor.snapshot().ids")?)?;
    let before = page
        .eval("window.arbor.longTasks.length")?
        .as_u64()
        .unwrap_or(0);
    page.eval("window.arbor.startFrames()")?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let mut batch = Vec::with_capacity(10);
        for _ in 0..10 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let parent = &ids[(rng % ids.len() as u64) as usize];
            let req = client.post(format!("{base}/v1/workflows/{wf}/nodes")).json(
                &json!({"parent_id": parent, "type": "message", "role": "assistant",
                              "content": format!("live {sent}")}),
            );
            batch.push(req.send());
            sent += 1;
        }
        for r in futures_util::future::join_all(batch).await {
            let r = r?;
            if !r.status().is_success() {
                bail!("append: {}", r.status());
            }
        }
    }
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    let want = ids.len() as u64 + sent;
    page.wait(&format!("window.arbor.nodeCount() >= {want}"), 60)?;
    let frames = page.eval("window.arbor.stopFrames()")?;
    let flattens = page.eval("window.arbor.flattens()")?;
    eprintln!("{nodes} nodes: live flattens and direct inserts {flattens}");
    let slowest = page.eval("window.arbor.slowest()")?;
    eprintln!("{nodes} nodes: the page's slowest tasks (ms) {slowest}");
    let long = page.eval(&format!(
        "Math.max(0, ...window.arbor.longTasks.slice({before}).map(t => t.duration))"
    ))?;
    if !baseline {
        page.screenshot(&artifact(&format!("ui-bench-{nodes}-live.png")))?;
    }
    drop(page);
    drop(serve);
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    Ok(Figures {
        nodes: perf["nodes"].as_u64().unwrap_or(0),
        api_ms,
        fetch_ms: f(&perf["fetchMs"]),
        draw_ms: f(&perf["drawMs"]),
        first_ms: f(&perf["firstRowsMs"]),
        paint_ms: f(&perf["paintMs"]),
        rate,
        frames: frames["count"].as_u64().unwrap_or(0),
        max_frame_ms: f(&frames["max"]),
        max_long_task_ms: f(&long),
        over_100: frames["over100"].as_u64().unwrap_or(0),
        max_flatten_ms: f(&flattens["max"]),
    })
}

/// Milliseconds to fetch and parse `wf`'s outline the way the page does (one
/// `GET …/outline`, parsed by serde_json): the server's and the network's share of the
/// page's `fetch`.
async fn outline_ms(base: &str, wf: &str) -> Result<f64> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let body = client
        .get(format!("{base}/v1/workflows/{wf}/outline"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let outline: Value = serde_json::from_slice(&body)?;
    if outline["nodes"]["id"].as_array().map_or(0, Vec::len) == 0 {
        bail!(
            "empty outline: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Starts `arbor serve` on a free loopback port; its base URL once it listens.
fn serve(data: &std::path::Path) -> Result<(Serve, String)> {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_arbor"));
    let (child, base) = spawn_serve(bin, data, "127.0.0.1:0", std::iter::empty::<&str>())?;
    Ok((Serve(child), base))
}
