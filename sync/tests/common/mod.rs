//! Shared helpers of the sync integration tests: real services from the environment
//! (`tests/services/with-services.sh` sets them; a missing one fails loudly), servers of
//! a test's own for the tests that kill theirs ([`Instance`]), stores in temp dirs,
//! workflow builders, waiting on conditions with deadlines, the scenarios every sink
//! runs (outage, replay from 0), and comparisons of a replica's answers with the store's
//! own ([`Replica`], answered by [`pg_queries`] and [`neo4j_queries`]).
#![allow(dead_code)]

pub mod neo4j_queries;
pub mod pg_queries;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arbor_storage::{
    Durability, Edge, EdgeKind, Intent, Meta, NewNode, NewWorkflow, Node, Outcome, Role, Store,
    StoreOptions, WorkflowStatus,
};
use arbor_sync::{Backoff, Neo4jConfig, SinkState, SinkStatus, SyncConfig, SyncSet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tempfile::TempDir;
use uuid::Uuid;

/// An env var that the service script must have set.
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the sync tests under tests/services/with-services.sh \
             (e.g. `bash tests/services/with-services.sh cargo test -p arbor-sync`)"
        ),
    }
}

pub fn redis_url() -> String {
    env("ARBOR_TEST_REDIS_URL")
}

pub fn postgres_url() -> String {
    env("ARBOR_TEST_POSTGRES_URL")
}

pub fn neo4j() -> Neo4jConfig {
    Neo4jConfig {
        url: env("ARBOR_TEST_NEO4J_URL"),
        user: env("ARBOR_TEST_NEO4J_USER"),
        password: env("ARBOR_TEST_NEO4J_PASSWORD"),
    }
}

/// Runs the services control script: `ctl.sh ACTION SERVICE`; its stdout.
fn ctl(action: &str, service: &str) -> Result<String, String> {
    let script = PathBuf::from(env("ARBOR_TEST_SERVICES_CTL"));
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(action)
        .arg(service)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {action} {service} failed: {}",
            script.display(),
            out.status
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

/// A server of one test's own (`ctl.sh new KIND@NAME`), for a test that kills it: the
/// shared servers stay up for the tests running beside it. Removed when dropped,
/// whatever happened.
pub struct Instance {
    /// `KIND@NAME`.
    name: String,
    /// Its URL (Neo4j: the user and password are the shared server's).
    pub url: String,
}

impl Instance {
    /// Starts a server of `kind` (`redis`, `postgres`, `neo4j`) and waits until it answers.
    pub async fn start(kind: &str) -> Instance {
        let name = format!("{kind}@{}", &Uuid::new_v4().simple().to_string()[..8]);
        let started = {
            let name = name.clone();
            tokio::task::spawn_blocking(move || ctl("new", &name))
                .await
                .expect("ctl task")
        };
        let url = started.unwrap_or_else(|e| panic!("{e}")).trim().to_owned();
        assert!(!url.is_empty(), "ctl.sh new {name} printed no URL");
        Instance { name, url }
    }

    /// The Neo4j settings of this instance.
    pub fn neo4j(&self) -> Neo4jConfig {
        Neo4jConfig {
            url: self.url.clone(),
            ..neo4j()
        }
    }

    /// `kill -9` of the server. It comes back when [`Down::restart`] is called or the
    /// returned guard is dropped (a failed assertion included).
    pub fn kill(&self) -> Down<'_> {
        ctl("kill", &self.name).unwrap_or_else(|e| panic!("{e}"));
        Down {
            instance: self,
            up: false,
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Err(e) = ctl("remove", &self.name) {
            eprintln!("could not remove {}: {e}", self.name);
        }
    }
}

/// A killed [`Instance`]; restarts it when dropped.
pub struct Down<'a> {
    instance: &'a Instance,
    up: bool,
}

impl Down<'_> {
    /// Starts the server again (same port, same data) and waits until it answers.
    pub fn restart(mut self) {
        self.up = true;
        ctl("start", &self.instance.name).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if !self.up {
            if let Err(e) = ctl("start", &self.instance.name) {
                eprintln!("could not restart {}: {e}", self.instance.name);
            }
        }
    }
}

/// A fresh PostgreSQL schema name for one test.
pub fn schema() -> String {
    format!("t_{}", Uuid::new_v4().simple())
}

/// Sync settings for tests: quick backoff, small grace (the default probe interval).
pub fn config() -> SyncConfig {
    SyncConfig {
        batch_size: 1000,
        backoff: Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(500),
        },
        shutdown_grace: Duration::from_secs(2),
        ..SyncConfig::default()
    }
}

/// How long a sink may take to show a killed server as degraded.
pub const DEGRADED_WITHIN: Duration = Duration::from_secs(5);

/// A store in a temp dir (no fsync: tests are throwaway).
pub fn store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    (dir, store)
}

pub fn open(dir: &TempDir) -> Store {
    Store::open(
        dir.path(),
        StoreOptions {
            durability: Durability::None,
            cache_mb: 64,
            ..StoreOptions::default()
        },
    )
    .expect("open store")
}

/// Waits until `cond` holds, checking every 20 ms, failing after `secs`.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every worker of `set` has the log head.
pub async fn caught_up(set: &SyncSet, store: &Store, secs: u64) {
    wait_until(secs, "sinks to reach the log head", || {
        let head = store.head();
        let ok = set.status().iter().all(|s| s.cursor >= head);
        async move { ok }
    })
    .await;
}

pub async fn create(store: &Store, prompt: &str, metadata: Value) -> (Uuid, Uuid) {
    let Value::Object(metadata) = metadata else {
        panic!("metadata must be an object")
    };
    match store
        .submit(
            Intent::CreateWorkflow(NewWorkflow {
                id: Some(Uuid::new_v4()),
                system_prompt: prompt.to_owned(),
                metadata,
                user_id: Some("user-7".into()),
                ..NewWorkflow::default()
            }),
            Meta::default(),
        )
        .await
        .expect("create workflow")
    {
        Outcome::WorkflowCreated {
            workflow_id,
            root_id,
            ..
        } => (workflow_id, root_id),
        other => panic!("unexpected {other:?}"),
    }
}

/// Node spec: (parent, type, role, content, payload, metadata, agent).
pub struct Spec<'a> {
    pub parent: Uuid,
    pub kind: &'a str,
    pub role: Option<Role>,
    pub content: &'a str,
    pub payload: Value,
    pub metadata: Value,
    pub agent: Option<&'a str>,
}

pub fn spec(parent: Uuid, kind: &str, content: &str) -> NewNode {
    NewNode {
        id: Some(Uuid::new_v4()),
        ..NewNode::new(parent, kind, content)
    }
}

pub async fn append(store: &Store, wf: Uuid, nodes: Vec<NewNode>) -> Vec<Uuid> {
    match store
        .submit(
            Intent::AppendNodes {
                workflow_id: wf,
                nodes,
            },
            Meta::default(),
        )
        .await
        .expect("append nodes")
    {
        Outcome::Nodes { nodes, .. } => nodes.iter().map(|n| n.id).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

/// Appends `n` messages in a chain below `parent` (contents `{label}0`, `{label}1`, …),
/// recording each one's seq and when it was acknowledged; returns the last.
pub async fn append_chain(
    store: &Store,
    wf: Uuid,
    mut parent: Uuid,
    label: &str,
    n: usize,
    acked: &mut Vec<(arbor_storage::Seq, Instant)>,
) -> Uuid {
    for i in 0..n {
        parent = node(store, wf, spec(parent, "message", &format!("{label}{i}"))).await;
        acked.push((store.seq_of(&parent).expect("seq"), Instant::now()));
    }
    parent
}

pub async fn node(store: &Store, wf: Uuid, n: NewNode) -> Uuid {
    append(store, wf, vec![n]).await[0]
}

pub async fn edge(store: &Store, wf: Uuid, kind: EdgeKind, from: Uuid, to: Uuid) {
    store
        .submit(
            Intent::AddEdge {
                workflow_id: wf,
                edge: Edge { kind, from, to },
            },
            Meta::default(),
        )
        .await
        .expect("add edge");
}

pub async fn choose(store: &Store, decision: Uuid, option: Uuid) {
    store
        .submit(
            Intent::Choose {
                decision_id: decision,
                option_id: option,
            },
            Meta::default(),
        )
        .await
        .expect("choose");
}

pub async fn set_status(store: &Store, wf: Uuid, status: WorkflowStatus) {
    store
        .submit(
            Intent::SetStatus {
                workflow_id: wf,
                status,
            },
            Meta::default(),
        )
        .await
        .expect("set status");
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A realistic agent workflow: messages with roles, tool actions, a decision with three
/// options and a chosen one, forks, monitors within and across branches, drafts,
/// status changes, unicode, nested payloads.
pub async fn realistic(store: &Store) -> Uuid {
    let (wf, root) = create(
        store,
        "You are a careful software agent. Fix the issue, run the tests, open a PR.",
        json!({"githubRepo": "acme-fin/ledgerline", "issue": 482}),
    )
    .await;
    let mut user = spec(
        root,
        "message",
        "Issue #482: add_months(Jan 31, 1) returns Mar 3 — should clamp to Feb 28/29. ✔ ünïcødé",
    );
    user.role = Some(Role::User);
    user.user_id = Some("user-7".into());
    let m1 = node(store, wf, user).await;
    let mut plan = spec(
        m1,
        "message",
        "I'll reproduce it first, then decide on a fix.",
    );
    plan.role = Some(Role::Assistant);
    plan.agent_id = Some("coder".into());
    plan.metadata =
        obj(json!({"model": "m-large", "tokens": {"in": 1234, "out": 56}, "temperature": 0.2}));
    let m2 = node(store, wf, plan).await;
    let mut run = spec(
        m2,
        "action",
        "$ cargo test add_months\n---- FAILED: expected 2024-02-29, got 2024-03-02",
    );
    run.role = Some(Role::Tool);
    run.agent_id = Some("coder".into());
    run.payload = json!({"tool": "shell", "args": ["cargo", "test", "add_months"], "exit": 101, "ms": 8123, "ratio": 1.5e-3, "big": u64::MAX});
    let a1 = node(store, wf, run).await;
    let mut dec = spec(a1, "decision", "How should add_months handle day overflow?");
    dec.agent_id = Some("coder".into());
    let d1 = node(store, wf, dec).await;
    let opts = append(
        store,
        wf,
        vec![
            spec(d1, "option", "Clamp to the last day of the target month"),
            spec(
                d1,
                "option",
                "Switch to the chrono crate's checked_add_months",
            ),
            spec(d1, "option", "Reject: document the current behaviour"),
        ],
    )
    .await;
    choose(store, d1, opts[0]).await;
    set_status(store, wf, WorkflowStatus::Waiting).await;
    set_status(store, wf, WorkflowStatus::Running).await;
    let mut impl1 = spec(
        opts[0],
        "message",
        "Implementing the clamp with days_in_month().",
    );
    impl1.role = Some(Role::Assistant);
    let m3 = node(store, wf, impl1).await;
    let mut edit = spec(m3, "action", "edit src/date.rs: +12 -3");
    edit.payload =
        json!({"tool": "edit", "path": "src/date.rs", "diff": {"added": 12, "removed": 3}});
    let a2 = node(store, wf, edit).await;
    let mut pr = spec(
        a2,
        "draft",
        "Fix #482: clamp add_months to the end of month\n\nAdds days_in_month …",
    );
    pr.payload = json!({"content_type": "pull_request", "status": "draft"});
    pr.metadata =
        obj(json!({"githubIssueId": 482, "githubRepo": "acme-fin/ledgerline", "userId": "user-7"}));
    let _draft = node(store, wf, pr).await;
    // The second option is explored on its own branch too.
    let mut lib = spec(
        opts[1],
        "message",
        "chrono's checked_add_months returns None on overflow; not what we want.",
    );
    lib.role = Some(Role::Assistant);
    lib.agent_id = Some("explorer".into());
    let m4 = node(store, wf, lib).await;
    // A fork off the plan: a reviewer agent on its own branch.
    let mut review = spec(
        m2,
        "action",
        "Review agent: reading the diff of the main branch",
    );
    review.agent_id = Some("reviewer".into());
    let r1 = node(store, wf, review).await;
    let mut mon = spec(r1, "monitor", "Watching the implementation branch");
    mon.agent_id = Some("reviewer".into());
    let mon1 = node(store, wf, mon).await;
    edge(store, wf, EdgeKind::Monitors, mon1, m3).await; // across branches
    edge(store, wf, EdgeKind::Monitors, mon1, a2).await; // across branches
    edge(store, wf, EdgeKind::Monitors, mon1, r1).await; // same branch
    let mut comment = spec(mon1, "draft", "LGTM once the leap-year test is added.");
    comment.payload = json!({"content_type": "comment"});
    comment.metadata = obj(json!({"githubIssueId": 482}));
    let _c = node(store, wf, comment).await;
    // A second decision, still open.
    let d2 = node(store, wf, spec(m4, "decision", "Keep exploring?")).await;
    append(
        store,
        wf,
        vec![spec(d2, "option", "yes"), spec(d2, "option", "no")],
    )
    .await;
    // Another fork of the root: a parallel conversation.
    let mut side = spec(root, "message", "Side question: which Rust version?");
    side.role = Some(Role::User);
    node(store, wf, side).await;
    set_status(store, wf, WorkflowStatus::Completed).await;
    wf
}

/// A synthetic workflow of about `events` events: long chains, forks, decisions with
/// options (some chosen), monitors. Deterministic for a given seed.
pub async fn synthetic(store: &Store, events: usize, seed: u64) -> Uuid {
    let mut rng = StdRng::seed_from_u64(seed);
    let (wf, root) = create(store, "synthetic load", json!({"seed": seed})).await;
    let mut ids: Vec<Uuid> = vec![root];
    let mut written = 1usize;
    let mut last = root;
    while written < events {
        let mut batch = Vec::with_capacity(1000);
        let mut decisions = Vec::new();
        let mut monitors = Vec::new();
        while batch.len() < 1000 && written + batch.len() < events {
            let parent = if rng.random_bool(0.02) {
                ids[rng.random_range(0..ids.len())]
            } else {
                last
            };
            let i = written + batch.len();
            let mut n = if i % 500 == 0 {
                spec(parent, "decision", "which way?")
            } else if i % 997 == 0 {
                spec(parent, "monitor", "watching")
            } else {
                spec(
                    parent,
                    "message",
                    &format!(
                        "step {i}: {}",
                        "lorem ipsum ".repeat(rng.random_range(1..8))
                    ),
                )
            };
            n.role = Some(if i % 2 == 0 {
                Role::Assistant
            } else {
                Role::Tool
            });
            n.payload = json!({"i": i, "score": rng.random::<f64>()});
            let id = n.id.unwrap_or_default();
            if n.node_type == "decision" {
                decisions.push(id);
            }
            if n.node_type == "monitor" {
                monitors.push((id, ids[rng.random_range(0..ids.len())]));
            }
            batch.push(n);
            ids.push(id);
            last = id;
        }
        // Options of each decision (the chain continues from the last option).
        let mut chosen = Vec::new();
        for d in &decisions {
            if written + batch.len() + 3 > events {
                break;
            }
            for k in 0..3 {
                let o = spec(*d, "option", &format!("option {k}"));
                let oid = o.id.unwrap_or_default();
                if k == 1 {
                    chosen.push((*d, oid));
                }
                ids.push(oid);
                batch.push(o);
            }
        }
        written += batch.len();
        let appended = append(store, wf, batch).await;
        last = *appended.last().unwrap_or(&last);
        for (m, t) in monitors {
            if written < events {
                edge(store, wf, EdgeKind::Monitors, m, t).await;
                written += 1;
            }
        }
        for (i, (d, o)) in chosen.into_iter().enumerate() {
            // Two decisions out of three get a choice; the others stay open.
            if written < events && i % 3 != 2 {
                choose(store, d, o).await;
                written += 1;
            }
        }
    }
    wf
}

/// A decision point as ids: the decision, its options in seq order, the chosen one.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub decision: Uuid,
    pub options: Vec<Uuid>,
    pub chosen: Option<Uuid>,
}

/// A branch as ids: its fork node and its nodes in seq order.
#[derive(Clone, Debug, PartialEq)]
pub struct Branch {
    pub fork: Option<Uuid>,
    pub nodes: Vec<Uuid>,
}

/// A replica that can answer the seeds' queries. Paths are whole nodes (every field of
/// every node is compared); the rest are ids in order, so that these tests do not depend
/// on the store's result types beyond the few field names read below.
pub trait Replica {
    fn path(&self, id: Uuid) -> impl Future<Output = Vec<Node>>;
    fn decisions(&self, wf: Uuid) -> impl Future<Output = Vec<Decision>>;
    fn branch(&self, wf: Uuid, b: Uuid) -> impl Future<Output = Option<Branch>>;
    fn monitors(&self, wf: Uuid, cross: bool) -> impl Future<Output = Vec<(Uuid, Uuid)>>;
}

/// The store's answers, in the shapes of [`Replica`].
mod want {
    use super::*;

    pub fn path(store: &Store, id: Uuid) -> Vec<Node> {
        let path = store.path(&id).expect("store path").expect("node");
        path.iter().map(|n| Node::clone(n)).collect()
    }

    pub fn decisions(store: &Store, wf: Uuid) -> Vec<Decision> {
        let all = store.decisions(&wf).expect("decisions").expect("wf");
        all.iter()
            .map(|d| Decision {
                decision: d.decision.id,
                options: d.options.iter().map(|o| o.id).collect(),
                chosen: d.chosen.as_ref().map(|c| c.id),
            })
            .collect()
    }

    pub fn branch(store: &Store, wf: Uuid, b: Uuid) -> Option<Branch> {
        let branch = store.branch(&wf, &b).expect("branch")?;
        Some(Branch {
            fork: branch.fork_node_id,
            nodes: branch.nodes.iter().map(|n| n.id).collect(),
        })
    }

    pub fn monitors(store: &Store, wf: Uuid, cross: bool) -> Vec<(Uuid, Uuid)> {
        let all = store.monitors(&wf, cross).expect("monitors").expect("wf");
        all.iter().map(|m| (m.monitor.id, m.target.id)).collect()
    }
}

/// Asserts that `replica` answers the seeds' queries about `wf` exactly like the store:
/// path to root (for a sample of nodes), decision points, branch summaries (a sample),
/// monitors (all and cross-branch).
pub async fn assert_same_answers<R: Replica>(store: &Store, replica: &R, wf: Uuid, sample: usize) {
    for id in sample_nodes(store, wf, sample) {
        same(
            &format!("path of {id}"),
            &replica.path(id).await,
            &want::path(store, id),
        );
    }
    let decisions = want::decisions(store, wf);
    assert!(!decisions.is_empty(), "the workflow has decisions");
    same("decisions", &replica.decisions(wf).await, &decisions);
    let branches = store.branches(&wf).expect("wf");
    assert!(branches.len() > 1, "the workflow has forks");
    let step = (branches.len() / sample.max(1)).max(1);
    for b in branches.iter().step_by(step) {
        let (got, want) = (
            replica.branch(wf, b.branch_id).await,
            want::branch(store, wf, b.branch_id),
        );
        let (Some(got), Some(want)) = (got, want) else {
            panic!("branch {} missing", b.branch_id)
        };
        assert_eq!(got.fork, want.fork, "fork of branch {}", b.branch_id);
        same(&format!("branch {}", b.branch_id), &got.nodes, &want.nodes);
    }
    for cross in [false, true] {
        let want = want::monitors(store, wf, cross);
        assert!(
            !want.is_empty(),
            "the workflow has monitors (cross_branch={cross})"
        );
        same(
            &format!("monitors cross_branch={cross}"),
            &replica.monitors(wf, cross).await,
            &want,
        );
    }
}

/// Compares two lists, reporting only the first difference (the lists can be huge).
pub fn same<T: PartialEq + std::fmt::Debug>(what: &str, got: &[T], want: &[T]) {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: item {i} differs:\n  replica: {:?}\n  store:   {:?}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
}

/// Asserts that `arbor verify --sinks` finds no difference between the log and the sinks
/// of `cfg`.
pub async fn assert_in_sync(store: &Store, cfg: &SyncConfig) {
    let diffs = arbor_sync::verify_sinks(store, cfg).await.expect("verify");
    assert_eq!(diffs, vec![], "verify --sinks");
}

/// The status of the only sink of `set`.
pub fn only(set: &SyncSet) -> SinkStatus {
    let mut all = set.status();
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

/// Waits until the only sink of `set` shows as degraded, failing past [`DEGRADED_WITHIN`];
/// returns how long it took.
pub async fn degraded_within(set: &SyncSet) -> Duration {
    let t0 = Instant::now();
    loop {
        let st = only(set);
        if st.state == SinkState::Degraded && st.last_error.is_some() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < DEGRADED_WITHIN,
            "not degraded within {DEGRADED_WITHIN:?}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills `instance` while the only sink of `cfg` is idle and caught up, and asserts that
/// it shows as degraded within [`DEGRADED_WITHIN`] (printing how long it took), then ok
/// again once the server is back.
pub async fn a_killed_server_shows_as_degraded(instance: &Instance, cfg: SyncConfig) {
    let (_dir, store) = store();
    let set = arbor_sync::start(store.clone(), cfg).expect("start");
    let (wf, root) = create(&store, "idle", json!({})).await;
    node(&store, wf, spec(root, "message", "m")).await;
    caught_up(&set, &store, 120).await;
    assert_eq!(only(&set).state, SinkState::Ok);
    let down = instance.kill();
    let took = degraded_within(&set).await;
    eprintln!("{}: degraded {took:?} after the kill", only(&set).name);
    down.restart();
    node(&store, wf, spec(root, "message", "after")).await;
    caught_up(&set, &store, 120).await;
    wait_until(60, "ok again", || {
        let ok = only(&set).state == SinkState::Ok;
        async move { ok }
    })
    .await;
    set.shutdown().await;
}

/// A store holding a realistic workflow, replicated (caught up) by a running set of
/// `cfg`'s sinks.
pub async fn replicated(cfg: &SyncConfig) -> (TempDir, Store, SyncSet, Uuid) {
    let (dir, store) = store();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    let wf = realistic(&store).await;
    caught_up(&set, &store, 120).await;
    (dir, store, set, wf)
}

/// What [`outage`] leaves: the store (reopened), its running sink, the workflow written
/// before the outage and the one written during it.
pub struct AfterOutage {
    pub dir: TempDir,
    pub store: Store,
    pub set: SyncSet,
    pub before: Uuid,
    pub during: Uuid,
}

/// The outage every sink goes through: a realistic workflow replicated; then the server
/// is killed while appends go on (they never fail); the sink shows as degraded
/// (`check_down` looks at its status then); arbor itself restarts during the outage and
/// appends more; the restarted worker sees the outage too; the server comes back and the
/// sink catches up.
pub async fn outage(
    instance: &Instance,
    cfg: &SyncConfig,
    check_down: impl FnOnce(&SinkStatus),
) -> AfterOutage {
    // First an import from 264 days ago (events keep their own time), then a realistic
    // workflow, all replicated.
    let (dir, store) = store();
    arbor_testkit::import_past_workflow(&store, 264 * 86_400)
        .await
        .expect("import");
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    let before = realistic(&store).await;
    caught_up(&set, &store, 120).await;
    // Appends keep going while the server is killed; when each was acknowledged.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let (wf, root) = create(&store, "during outage", json!({})).await;
            acked.push((store.seq_of(&root).expect("seq"), Instant::now()));
            let parent = append_chain(&store, wf, root, "m", 300, &mut acked).await;
            (wf, parent, acked)
        })
    };
    let down = instance.kill();
    let (during, parent, mut acked) = writer
        .await
        .expect("appends never fail while a sink is down");
    // The 300 appends may all have been replicated before the kill took effect (they
    // take a fraction of a second): these come after it, so the sink has something to
    // lag behind on.
    let parent = append_chain(&store, during, parent, "after the kill ", 20, &mut acked).await;
    degraded_within(&set).await;
    check_down(&only(&set));
    // arbor itself restarts during the outage.
    set.shutdown().await;
    store.close().await;
    drop(store);
    let store = open(&dir);
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start during outage");
    append_chain(&store, during, parent, "late ", 50, &mut acked).await;
    // The new worker sees the outage too before the server comes back.
    degraded_within(&set).await;
    assert!(only(&set).retries > 0);
    lag_tells_the_truth(&set, &acked).await;
    down.restart();
    caught_up(&set, &store, 180).await;
    let st = only(&set);
    assert_eq!((st.lag_events, st.lag_seconds), (0, 0.0), "{st:?}");
    AfterOutage {
        dir,
        store,
        set,
        before,
        during,
    }
}

/// Replicates, stops, resets the only sink of `cfg` to 0 and starts again: the sink gets
/// every event a second time. Returns the running set, caught up, and the status
/// `arbor sync status` showed right after the reset.
pub async fn replay_from_zero(store: &Store, cfg: &SyncConfig) -> (SyncSet, SinkStatus) {
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, store, 60).await;
    let name = only(&set).name;
    set.shutdown().await;
    arbor_sync::reset(store, cfg, &name, 0)
        .await
        .expect("reset");
    let after_reset = arbor_sync::status(store, cfg).await.remove(0);
    assert_eq!(
        (after_reset.cursor, after_reset.lag_events),
        (0, store.head())
    );
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start again");
    caught_up(&set, store, 60).await;
    (set, after_reset)
}

/// Node ids to check paths for: every node of a small workflow, a spread of a big one.
pub fn sample_nodes(store: &Store, wf: Uuid, max: usize) -> Vec<Uuid> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let evs = store
            .read_workflow_events(&wf, after, 10_000)
            .expect("read")
            .expect("workflow");
        let Some(last) = evs.last() else { break };
        after = last.seq;
        for e in &evs {
            match &e.body {
                arbor_storage::EventBody::WorkflowCreated(c) => all.push(c.root.id),
                arbor_storage::EventBody::NodeCreated(n) => all.push(n.id),
                _ => {}
            }
        }
    }
    if all.len() <= max {
        return all;
    }
    let step = all.len() / max;
    let mut out: Vec<Uuid> = all.iter().step_by(step.max(1)).copied().collect();
    out.extend(all.last());
    out
}

/// `verify --sinks` reports exactly one difference: `seq`, an unresolved dead letter of
/// `sink`; and the sink reads degraded for it in `set`'s status.
pub async fn assert_only_dead_letter(
    set: &SyncSet,
    store: &Store,
    cfg: &SyncConfig,
    sink: &str,
    seq: arbor_storage::Seq,
) {
    let diffs = arbor_sync::verify_sinks(store, cfg).await.expect("verify");
    let whats: Vec<(&str, &str)> = diffs
        .iter()
        .map(|d| (d.sink.as_str(), d.what.as_str()))
        .collect();
    assert_eq!(
        whats,
        [(sink, format!("dead_letter:{seq}").as_str())],
        "{diffs:?}"
    );
    let st = set.status();
    let st = st.iter().find(|s| s.name == sink).expect("status");
    assert_eq!(
        (st.state, st.dead_letters),
        (SinkState::Degraded, 1),
        "{st:?}"
    );
}

/// While the only sink of `set` is down: once its oldest unreplicated event was
/// acknowledged at least 3 s ago (by `acked`, the test's own clock), its `lag_seconds`
/// is within 10 % of that age.
pub async fn lag_tells_the_truth(set: &SyncSet, acked: &[(arbor_storage::Seq, Instant)]) {
    let cursor = only(set).cursor;
    let since = acked
        .iter()
        .find(|(seq, _)| *seq > cursor)
        .map(|(_, at)| *at)
        .expect("an unreplicated append");
    wait_until(30, "the backlog to age 3 s", || {
        let old = since.elapsed() >= Duration::from_secs(3);
        async move { old }
    })
    .await;
    let st = only(set);
    let truth = since.elapsed().as_secs_f64();
    assert_eq!(st.cursor, cursor, "nothing replicated while down");
    assert!(
        (st.lag_seconds - truth).abs() <= 0.1 * truth,
        "lag_seconds {} vs true backlog age {truth:.3} s ({st:?})",
        st.lag_seconds
    );
    assert_eq!(st.state, SinkState::Degraded);
    eprintln!(
        "{}: lag_seconds {:.3} vs true backlog age {truth:.3} s after a restart mid-outage",
        st.name, st.lag_seconds
    );
}

/// `cfg` with an anti-entropy round every 200 ms.
pub fn auditing(cfg: &SyncConfig) -> SyncConfig {
    SyncConfig {
        anti_entropy_interval: Duration::from_millis(200),
        ..cfg.clone()
    }
}

/// Issue 11, item 5. Replicates a realistic workflow with anti-entropy on and waits for
/// a round that finds it whole (no false divergence); then `damage` deletes or changes
/// what the sink holds of it behind arbor's back, and anti-entropy must find that and
/// repair it by itself: without moving the cursor, until `verify --sinks` finds
/// nothing. Returns the running set and the workflow.
pub async fn repaired_after<F, Fut>(cfg: &SyncConfig, damage: F) -> (TempDir, Store, SyncSet, Uuid)
where
    F: FnOnce(Uuid) -> Fut,
    Fut: Future<Output = ()>,
{
    let cfg = auditing(cfg);
    let (dir, store, set, wf) = replicated(&cfg).await;
    wait_until(60, "a first anti-entropy audit", || {
        let audited = only(&set).anti_entropy.workflows_audited;
        async move { audited >= 1 }
    })
    .await;
    let st = only(&set);
    assert_eq!(st.anti_entropy.divergences, 0, "a false divergence: {st:?}");
    let head = store.head();
    damage(wf).await;
    let damaged = Instant::now();
    wait_until(60, "anti-entropy to find and repair the damage", || {
        let a = only(&set).anti_entropy;
        async move { a.repaired >= 1 && a.unrepaired == 0 }
    })
    .await;
    let st = only(&set);
    eprintln!(
        "{}: damage repaired {:.0?} after it was done (rounds every 200 ms); {:?}",
        st.name,
        damaged.elapsed(),
        st.anti_entropy
    );
    assert_eq!(st.cursor, head, "the repair moved the cursor: {st:?}");
    assert_eq!(st.state, SinkState::Ok, "{st:?}");
    let last = st
        .anti_entropy
        .last_divergence
        .clone()
        .expect("a divergence recorded");
    assert!(last.repaired && last.workflow_id == wf, "{last:?}");
    assert!(last.missing >= 1, "{last:?}");
    assert_in_sync(&store, &cfg).await;
    (dir, store, set, wf)
}
