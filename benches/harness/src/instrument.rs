//! The instrument check (issue 13): before any HTTP figure means anything, the
//! harness's own client must not be the bound. In one case of the append scenario —
//! closed loop, `--connections` keep-alive connections (64), whole seconds — it
//! measures, one after the other on the same server:
//!
//! - the HTTP floor, `GET /healthz`, from the harness's client and from wrk, in three
//!   rounds that alternate which goes first: the ratio of their median rounds is the
//!   floor check (goal: the harness within 1.5× of wrk);
//! - single appends of one fixed node (`--content-median` bytes, a child of the root,
//!   a fresh id per request) from both clients, on arbor with fsync and with
//!   durability none: the same requests, so the two clients' figures should agree;
//! - the same row into PostgreSQL from pgbench (one INSERT per transaction, its own
//!   client, the same connections and seconds), with fsync and `full_page_writes` on
//!   (as durable as arbor) and off.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use uuid::Uuid;

use arbor_storage::Role;

use super::external::{Pgbench, Wrk};
use super::load::{self, Pace};
use super::plan::{Plan, System};
use super::report::{Report, Row, SystemInfo};
use super::scenarios::{bar, bounds, row, verify_stored, Systems, ARBOR_NONE, HTTP_FLOOR, PROMPT};
use super::stats::{fmt_rate, Summary};
use super::systems::arbor::ArborHttp;
use super::systems::postgres::Postgres;
use super::systems::Target;
use super::workload::NodeOp;

/// wrk's `GET /healthz`.
pub const WRK_FLOOR: &str = "HTTP floor (GET /healthz), wrk";
/// arbor's appends sent by wrk.
pub const ARBOR_WRK: &str = "arbor, wrk";
/// arbor (durability none) appends sent by wrk.
pub const ARBOR_NONE_WRK: &str = "arbor (durability none), wrk";
/// pgbench, fsync on.
pub const PGBENCH_ON: &str = "postgres, pgbench, fsync on";
/// pgbench, fsync off.
pub const PGBENCH_OFF: &str = "postgres, pgbench, fsync off";
/// Rounds of the floor check (harness and wrk alternated).
pub const FLOOR_ROUNDS: usize = 3;
/// How far below wrk's floor the harness's may be.
pub const FLOOR_TOLERANCE: f64 = 1.5;

/// The case name of the instrument check.
pub fn case(plan: &Plan) -> String {
    format!(
        "closed loop, {} connections, {} s: the instrument check and one {}-byte node per request",
        plan.connections,
        seconds(plan),
        plan.workload.content_median
    )
}

/// Whole seconds of each series (wrk takes no fraction).
pub fn seconds(plan: &Plan) -> u64 {
    plan.append_duration.as_secs_f64().ceil().max(1.0) as u64
}

/// The fixed node's JSON around its id: `(before, after)`.
fn template(content_bytes: usize, parent: Uuid) -> anyhow::Result<(String, String)> {
    let phrase = "the agent thought about it and answered; ";
    let content: String = phrase.chars().cycle().take(content_bytes.max(1)).collect();
    let node = NodeOp {
        id: Uuid::nil(),
        parent_id: parent,
        node_type: "message".into(),
        role: Some(Role::Assistant),
        content,
        payload: Value::Null,
        metadata: Map::new(),
        agent_id: Some("bench".into()),
    };
    let json = serde_json::to_string(&node)?;
    let (a, b) = json
        .split_once(&Uuid::nil().to_string())
        .ok_or_else(|| anyhow::anyhow!("the node's JSON lacks its id"))?;
    Ok((a.to_owned(), b.to_owned()))
}

/// Lua for wrk: POST the fixed node with a fresh id (`tag`-thread-counter) each time.
fn wrk_appends(path: &str, (before, after): &(String, String)) -> String {
    let tag = format!("{:08x}", rand::random::<u32>());
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local before = [==[{before}]==]
local after = [==[{after}]==]
local n = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function request()
  n = n + 1
  local id = string.format("{tag}-%04x-4000-8000-%012x", tid or 0, n)
  return wrk.format(nil, "{path}", nil, before .. id .. after)
end
"#
    )
}

/// A row from a child tool's summary.
fn tool_row(case: &str, system: &str, unit: &str, s: anyhow::Result<Summary>) -> Row {
    let mut r = row("append", case, system, unit, &load::LoadOutcome::default());
    match s {
        Ok(s) => r.summary = s,
        Err(e) => r.error = Some(format!("{e:#}")),
    }
    r
}

/// The harness's floor: `GET /healthz` from `plan.connections` agents, closed loop.
async fn harness_floor(plan: &Plan, http: &ArborHttp, case: &str) -> Row {
    let progress = bar("instrument: HTTP floor, harness".into());
    let agents: Vec<_> = (0..plan.connections)
        .map(|_| std::iter::repeat_n((), usize::MAX))
        .collect();
    let h = http.clone();
    let secs = Duration::from_secs(seconds(plan));
    let out = load::drive(
        agents,
        Pace::Closed,
        bounds(plan, secs),
        &progress,
        move |()| {
            let h = h.clone();
            async move { h.healthz().await }
        },
    )
    .await;
    progress.finish_and_clear();
    let mut r = row("append", case, HTTP_FLOOR, "request", &out);
    r.extra.insert(
        "what".into(),
        Value::from("GET /healthz from the harness's keep-alive client: no storage"),
    );
    r
}

/// Fixed appends from the harness's client; the row checks that every acknowledged
/// node is stored.
async fn harness_appends(plan: &Plan, name: &str, http: &ArborHttp, case: &str) -> Row {
    let res = async {
        let (wf, root) = http.create_workflow(PROMPT).await?;
        let (before, after) = template(plan.workload.content_median, root)?;
        let (before, after) = (Arc::<str>::from(before), Arc::<str>::from(after));
        let path = Arc::<str>::from(format!("/v1/workflows/{wf}/nodes"));
        let progress = bar(format!("instrument: {name}, harness"));
        let agents: Vec<_> = (0..plan.connections)
            .map(|_| std::iter::repeat_n((), usize::MAX))
            .collect();
        let client = http.client().clone();
        let out = load::drive(
            agents,
            Pace::Closed,
            bounds(plan, Duration::from_secs(seconds(plan))),
            &progress,
            move |()| {
                let (client, path) = (client.clone(), path.clone());
                let body = Bytes::from(format!("{before}{}{after}", Uuid::now_v7()));
                async move { client.post(&path, body).await?.ok("append").map(drop) }
            },
        )
        .await;
        progress.finish_and_clear();
        let mut r = row("append", case, name, "event", &out);
        verify_stored(
            &Target::Arbor(http.clone()),
            wf,
            (out.latency.count(), 0),
            &mut r,
        )
        .await;
        Ok::<_, anyhow::Error>(r)
    }
    .await;
    res.unwrap_or_else(|e| tool_row(case, name, "event", Err(e)))
}

/// The row of a child tool's run `s` on workflow `wf` of `target`, checked against
/// what the workflow holds (the tool stops counting with up to `in_flight` requests
/// still in flight).
async fn checked(
    case: &str,
    name: &str,
    (target, wf, in_flight): (Target, Uuid, usize),
    s: anyhow::Result<Summary>,
) -> Row {
    let mut r = tool_row(case, name, "event", s);
    if r.error.is_none() {
        let acked = (r.summary.count, in_flight as u64);
        verify_stored(&target, wf, acked, &mut r).await;
    }
    r
}

/// The same appends from wrk.
async fn wrk_append_row(plan: &Plan, wrk: &Wrk, name: &str, http: &ArborHttp, case: &str) -> Row {
    let (wf, root) = match http.create_workflow(PROMPT).await {
        Ok(x) => x,
        Err(e) => return tool_row(case, name, "event", Err(e)),
    };
    let path = format!("/v1/workflows/{wf}/nodes");
    let s = async {
        let lua = wrk_appends(&path, &template(plan.workload.content_median, root)?);
        wrk.run(&format!("{}{path}", http.base()), &lua).await
    }
    .await;
    let target = (Target::Arbor(http.clone()), wf, wrk.connections);
    checked(case, name, target, s).await
}

/// pgbench's INSERT of the fixed node under a fresh root.
async fn pgbench_row(
    plan: &Plan,
    pgbench: &Pgbench,
    p: &Postgres,
    url: &str,
    case: &str,
    name: &str,
) -> Row {
    let (wf, root) = (Uuid::now_v7(), Uuid::now_v7());
    let s = async {
        p.create_root(wf, root, PROMPT).await?;
        let (before, after) = template(plan.workload.content_median, root)?;
        let node: Value = serde_json::from_str(&format!("{before}{}{after}", Uuid::nil()))?;
        let content = node["content"].as_str().unwrap_or_default();
        let script = format!(
            "INSERT INTO arbor_bench_events (id, workflow_id, kind, parent_id, node_type, \
             role, content, agent_id) VALUES (gen_random_uuid(), '{wf}', 'node', '{root}', \
             'message', 'assistant', '{content}', 'pgbench');\n"
        );
        pgbench.run(url, &script).await
    }
    .await;
    let target = (Target::Postgres(p.clone()), wf, pgbench.clients);
    checked(case, name, target, s).await
}

/// The row of the median round (by rate), with every round's rate in its notes.
fn median_round(mut rounds: Vec<Row>) -> Row {
    let rates: Vec<String> = rounds
        .iter()
        .map(|r| fmt_rate(r.summary.per_second))
        .collect();
    rounds.sort_by(|a, b| a.summary.per_second.total_cmp(&b.summary.per_second));
    let mid = rounds.len() / 2;
    if mid >= rounds.len() {
        return Row {
            error: Some("no round was run".into()),
            ..row("append", "", "", "request", &load::LoadOutcome::default())
        };
    }
    let mut r = rounds.swap_remove(mid);
    r.extra.insert(
        "rounds".into(),
        Value::from(format!("{}/s (the median is this row)", rates.join(", "))),
    );
    r
}

/// The instrument check: floor, fixed appends, pgbench (see the module doc).
pub(crate) async fn run(plan: &Plan, sys: &Systems, report: &mut Report) {
    let case = case(plan);
    let secs = seconds(plan);
    let wrk = Wrk::find(plan.connections, secs);
    let missing = |tool: &str| {
        format!("{tool} is not installed: run `bash benches/tools.sh` (installs wrk and pgbench)")
    };
    let Some(a) = sys.arbor.as_ref().filter(|_| plan.has(System::Arbor)) else {
        return;
    };
    // The floor check, in rounds that alternate which client goes first, so that the
    // drift of a shared machine's load falls on both; the median round of each is the
    // row, every round's rate is in its notes.
    let (mut harness, mut by_wrk) = (Vec::new(), Vec::new());
    for round in 0..FLOOR_ROUNDS {
        for wrk_now in [round % 2 == 1, round % 2 == 0] {
            if !wrk_now {
                harness.push(harness_floor(plan, &a.http, &case).await);
                continue;
            }
            by_wrk.push(match &wrk {
                Some(w) => tool_row(
                    &case,
                    WRK_FLOOR,
                    "request",
                    w.run(&format!("{}/healthz", a.http.base()), "").await,
                ),
                None => tool_row(
                    &case,
                    WRK_FLOOR,
                    "request",
                    Err(anyhow::anyhow!(missing("wrk"))),
                ),
            });
        }
    }
    report.results.push(median_round(harness));
    report.results.push(median_round(by_wrk));
    for (arbor, by_wrk) in [(&sys.arbor, ARBOR_WRK), (&sys.arbor_none, ARBOR_NONE_WRK)] {
        let Some(a) = arbor else { continue };
        if a.name == ARBOR_NONE && !plan.has(System::ArborNone) {
            continue;
        }
        report
            .results
            .push(harness_appends(plan, a.name, &a.http, &case).await);
        report.results.push(match &wrk {
            Some(w) => wrk_append_row(plan, w, by_wrk, &a.http, &case).await,
            None => tool_row(&case, by_wrk, "event", Err(anyhow::anyhow!(missing("wrk")))),
        });
    }
    let (Some(p), Some(url)) = (&sys.postgres, &plan.services.postgres_url) else {
        return;
    };
    let pgbench = Pgbench::find(plan.connections, secs);
    if let Some(pg) = &pgbench {
        report.systems.push(SystemInfo {
            name: "postgres, pgbench".into(),
            detail: format!(
                "pgbench ({} clients, {} threads, prepared statements) on the same server and \
                 table: one INSERT of the same {}-byte node per transaction (autocommit), run \
                 with fsync and full_page_writes on (durable against power loss, like arbor's \
                 fsync) and off (ALTER SYSTEM + reload, restored afterwards)",
                pg.clients, pg.threads, plan.workload.content_median
            ),
        });
    }
    // What the server had before the first switch, to put back.
    let mut saved = None;
    for (on, name) in [(true, PGBENCH_ON), (false, PGBENCH_OFF)] {
        let ready = match &pgbench {
            None => Err(anyhow::anyhow!(missing("pgbench"))),
            Some(pg) => match p.set_durability(on).await {
                Ok(before) => {
                    saved.get_or_insert(before);
                    Ok(pg)
                }
                Err(e) => Err(e.context("switching fsync")),
            },
        };
        report.results.push(match ready {
            Ok(pg) => pgbench_row(plan, pg, p, url, &case, name).await,
            Err(e) => tool_row(&case, name, "event", Err(e)),
        });
    }
    if let Some(b) = saved {
        if let Err(e) = p.restore_durability(&b).await {
            tracing::warn!(error = %e, "restoring PostgreSQL's fsync setting");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_the_node_json_around_its_id() {
        let root = Uuid::from_u64_pair(1, 2);
        let (a, b) = template(400, root).unwrap_or_default();
        let id = Uuid::from_u64_pair(3, 4);
        let v: Value = serde_json::from_str(&format!("{a}{id}{b}")).unwrap_or(Value::Null);
        assert_eq!(v["id"], Value::from(id.to_string()));
        assert_eq!(v["parent_id"], Value::from(root.to_string()));
        assert_eq!(v["content"].as_str().map(str::len), Some(400));
        let lua = wrk_appends("/v1/workflows/x/nodes", &(a, b));
        assert!(lua.contains("function request()") && lua.contains("thread:set(\"tid\""));
    }
}
