//! The PostgreSQL sink against a real server: replication of a realistic and a
//! 100 000-event workflow answering the seeds' queries like the store, outage and
//! restart, replay from 0, and a poison event.

mod common;

use arbor_storage::{BranchNodes, Decision, Monitor, Node, Store};
use arbor_sync::postgres::{self, queries};
use arbor_sync::{SinkState, SyncConfig};
use common::*;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::RwLock;
use uuid::Uuid;

/// Outage tests stop the shared server: they run alone.
static SERVER: RwLock<()> = RwLock::const_new(());

struct Pg(PgPool);

impl Replica for Pg {
    async fn path(&self, id: Uuid) -> Vec<Node> {
        queries::path(&self.0, id).await.expect("pg path")
    }
    async fn decisions(&self, wf: Uuid) -> Vec<Decision> {
        queries::decisions(&self.0, wf).await.expect("pg decisions")
    }
    async fn branch(&self, wf: Uuid, b: Uuid) -> Option<BranchNodes> {
        queries::branch(&self.0, wf, b).await.expect("pg branch")
    }
    async fn monitors(&self, wf: Uuid, cross: bool) -> Vec<Monitor> {
        queries::monitors(&self.0, wf, cross)
            .await
            .expect("pg monitors")
    }
}

fn pg_config() -> SyncConfig {
    SyncConfig {
        postgres_url: Some(postgres_url()),
        postgres_schema: schema(),
        ..config()
    }
}

fn pool(cfg: &SyncConfig) -> PgPool {
    postgres::pool(&postgres_url(), &cfg.postgres_schema, 2).expect("pool")
}

/// No row twice, nothing missing: counts equal distinct keys and the log.
async fn assert_exact(pool: &PgPool, store: &Store) {
    let (n, distinct, max): (i64, i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), count(DISTINCT seq), max(seq) FROM arbor_events")
            .fetch_one(pool)
            .await
            .expect("count");
    let dead = store.dead_letters("postgres").expect("dead").len() as i64;
    assert_eq!(n, distinct, "duplicate events");
    assert_eq!(n + dead, store.head() as i64, "events missing");
    assert_eq!(max, Some(store.head() as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_a_realistic_workflow_and_answers_the_seed_queries() {
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let cfg = pg_config();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    let wf = realistic(&store).await;
    caught_up(&set, &store, 60).await;
    let pool = pool(&cfg);
    assert_same_answers(&store, &Pg(pool.clone()), wf, 1000).await;
    assert_exact(&pool, &store).await;
    // draft_content follows the seed's DraftContent shape.
    let drafts: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT content_type, status, metadata FROM draft_content WHERE workflow_run_id = $1 ORDER BY seq",
    )
    .bind(wf)
    .fetch_all(&pool)
    .await
    .expect("drafts");
    assert_eq!(drafts.len(), 2);
    assert_eq!(
        (drafts[0].0.as_str(), drafts[0].1.as_str()),
        ("pull_request", "draft")
    );
    assert_eq!(drafts[0].2["githubIssueId"], json!(482));
    assert_eq!(drafts[1].0, "comment");
    let status: String =
        sqlx::query_scalar("SELECT status FROM arbor_workflows WHERE workflow_id = $1")
            .bind(wf)
            .fetch_one(&pool)
            .await
            .expect("status");
    assert_eq!(status, "completed");
    assert_eq!(
        arbor_sync::verify_sinks(&store, &cfg)
            .await
            .expect("verify"),
        vec![]
    );
    let st = set.status();
    assert_eq!(st[0].state, SinkState::Ok);
    assert_eq!(st[0].lag_events, 0);
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_a_100k_event_workflow() {
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let t = std::time::Instant::now();
    let wf = synthetic(&store, 100_000, 7).await;
    assert!(store.head() >= 100_000, "head {}", store.head());
    eprintln!("built {} events in {:?}", store.head(), t.elapsed());
    let cfg = pg_config();
    let t = std::time::Instant::now();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 300).await;
    eprintln!("postgres caught up in {:?}", t.elapsed());
    let pool = pool(&cfg);
    assert_same_answers(&store, &Pg(pool.clone()), wf, 40).await;
    assert_exact(&pool, &store).await;
    assert_eq!(
        arbor_sync::verify_sinks(&store, &cfg)
            .await
            .expect("verify"),
        vec![]
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_zero_leaves_no_duplicates() {
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let cfg = pg_config();
    let wf = realistic(&store).await;
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 60).await;
    set.shutdown().await;
    arbor_sync::reset(&store, &cfg, "postgres", 0)
        .await
        .expect("reset");
    let st = arbor_sync::status(&store, &cfg).await;
    assert_eq!((st[0].cursor, st[0].lag_events), (0, store.head()));
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start again");
    caught_up(&set, &store, 60).await;
    let pool = pool(&cfg);
    assert_exact(&pool, &store).await;
    assert_same_answers(&store, &Pg(pool.clone()), wf, 1000).await;
    assert_eq!(
        arbor_sync::verify_sinks(&store, &cfg)
            .await
            .expect("verify"),
        vec![]
    );
    assert!(matches!(
        arbor_sync::reset(&store, &cfg, "postgres", store.head() + 1).await,
        Err(arbor_sync::SyncError::BeyondHead { .. })
    ));
    assert!(matches!(
        arbor_sync::reset(&store, &cfg, "redis", 0).await,
        Err(arbor_sync::SyncError::UnknownSink { .. })
    ));
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_later_events_arrive() {
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let cfg = pg_config();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    let (wf, root) = create(&store, "poison", json!({})).await;
    let mut before = Vec::new();
    for i in 0..20 {
        before.push(spec(root, "message", &format!("before {i}")));
    }
    append(&store, wf, before).await;
    // The seed's DraftContent allows only comment | pull_request: PostgreSQL's CHECK
    // refuses this draft, and only this one.
    let mut bad = spec(root, "draft", "a tweet");
    bad.payload = json!({"content_type": "tweet"});
    let bad_id = node(&store, wf, bad).await;
    let bad_seq = store.seq_of(&bad_id).expect("seq");
    let mut after = Vec::new();
    for i in 0..20 {
        after.push(spec(root, "message", &format!("after {i}")));
    }
    let after_ids = append(&store, wf, after).await;
    caught_up(&set, &store, 60).await;
    let dead = store.dead_letters("postgres").expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, bad_seq);
    assert!(
        dead[0].1.contains("23514") || dead[0].1.contains("check"),
        "{}",
        dead[0].1
    );
    let pool = pool(&cfg);
    let last: Option<Node> = queries::node(&pool, *after_ids.last().expect("ids"))
        .await
        .expect("node");
    assert!(last.is_some(), "events after the poison one arrived");
    assert!(queries::node(&pool, bad_id).await.expect("node").is_none());
    let st = set.status();
    assert_eq!(st[0].dead_letters, 1);
    assert!(st[0].errors >= 1);
    assert_eq!(st[0].state, SinkState::Ok);
    assert_exact(&pool, &store).await;
    assert_eq!(
        arbor_sync::verify_sinks(&store, &cfg)
            .await
            .expect("verify"),
        vec![]
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_kill_and_restart_catch_up_with_no_gap_and_no_duplicate() {
    let _g = SERVER.write().await;
    let (dir, store) = store();
    let cfg = pg_config();
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    let wf = realistic(&store).await;
    caught_up(&set, &store, 60).await;
    // Appends keep going while the server is killed.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let (wf2, root) = create(&store, "during outage", json!({})).await;
            let mut parent = root;
            for i in 0..300 {
                parent = node(&store, wf2, spec(parent, "message", &format!("m{i}"))).await;
            }
            wf2
        })
    };
    services_ctl("kill", "postgres");
    let wf2 = writer
        .await
        .expect("appends never fail while a sink is down");
    wait_until(30, "postgres sink to show degraded", || {
        let st = set.status();
        async move { st[0].state == SinkState::Degraded && st[0].last_error.is_some() }
    })
    .await;
    let st = set.status();
    assert!(st[0].lag_events > 0);
    assert!(
        !st[0]
            .last_error
            .clone()
            .unwrap_or_default()
            .contains("postgres://"),
        "{st:?}"
    );
    // arbor itself restarts during the outage.
    set.shutdown().await;
    store.close().await;
    drop(store);
    let store = open(&dir);
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start during outage");
    for i in 0..50 {
        node(
            &store,
            wf2,
            spec(
                store.workflow(&wf2).unwrap().unwrap().heads[0],
                "message",
                &format!("late {i}"),
            ),
        )
        .await;
    }
    // The new worker sees the outage too (its first connection attempt may take the
    // pool's acquire timeout to give up) before the server comes back.
    wait_until(30, "the restarted postgres sink to show degraded", || {
        let st = set.status();
        async move { st[0].state == SinkState::Degraded && st[0].retries > 0 }
    })
    .await;
    services_ctl("start", "postgres");
    caught_up(&set, &store, 120).await;
    let pool = pool(&cfg);
    assert_exact(&pool, &store).await;
    assert_same_answers(&store, &Pg(pool.clone()), wf, 1000).await;
    assert_eq!(
        arbor_sync::verify_sinks(&store, &cfg)
            .await
            .expect("verify"),
        vec![]
    );
    assert!(set.status()[0].retries > 0);
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_is_unreachable_at_start_does_not_fail_start_or_appends() {
    let (_dir, store) = store();
    let cfg = SyncConfig {
        postgres_url: Some("postgres://arbor:secret-pw@127.0.0.1:1/none".into()),
        ..config()
    };
    let set = arbor_sync::start(store.clone(), cfg).expect("start never waits for a sink");
    let (wf, root) = create(&store, "x", json!({})).await;
    node(&store, wf, spec(root, "message", "still appends")).await;
    wait_until(30, "degraded", || {
        let st = set.status();
        async move { st[0].state == SinkState::Degraded }
    })
    .await;
    let st = set.status();
    assert_eq!(st[0].lag_events, 2);
    let err = st[0].last_error.clone().unwrap_or_default();
    assert!(!err.contains("secret-pw"), "{err}");
    set.shutdown().await;
}

/// Runs one statement of ours (schema names are `t_` and hex digits).
async fn exec(pool: &PgPool, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn parent_of_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM arbor_edges WHERE type = 'PARENT_OF'")
        .fetch_one(pool)
        .await
        .expect("count PARENT_OF")
}

/// A replica written under migration 0001 alone — PARENT_OF a second time as edge rows,
/// event bodies as jsonb, its cursor at the head — upgrades in place when the sink
/// starts (0002 runs), answers the seeds' queries like the store, and goes on
/// replicating without a gap or a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_migration_0001_upgrades_in_place() {
    let _g = SERVER.read().await;
    let (_dir, store) = store();
    let wf = realistic(&store).await;
    // Today's replica, in a schema of its own: the rows the 0001 sink wrote, but lean.
    let new = pg_config();
    let set = arbor_sync::start(store.clone(), new.clone()).expect("start");
    caught_up(&set, &store, 60).await;
    set.shutdown().await;
    // The 0001 replica: schema at migration 1, the same rows, PARENT_OF in arbor_edges.
    let old = pg_config();
    let pool_old = pool(&old);
    let (a, b) = (&old.postgres_schema, &new.postgres_schema);
    exec(&pool_old, format!("CREATE SCHEMA \"{a}\"")).await;
    postgres::MIGRATOR
        .run_to(1, &pool_old)
        .await
        .expect("migration 0001");
    for copy in [
        format!(
            "INSERT INTO \"{a}\".arbor_events SELECT seq, id, workflow_id, kind, \"timestamp\", \
             actor, body::jsonb, prev_hash, hash FROM \"{b}\".arbor_events"
        ),
        format!("INSERT INTO \"{a}\".arbor_nodes SELECT * FROM \"{b}\".arbor_nodes"),
        format!(
            "INSERT INTO \"{a}\".arbor_edges SELECT type, from_id, to_id, workflow_id, seq \
             FROM \"{b}\".arbor_all_edges"
        ),
        format!("INSERT INTO \"{a}\".arbor_workflows SELECT * FROM \"{b}\".arbor_workflows"),
        format!("INSERT INTO \"{a}\".draft_content SELECT * FROM \"{b}\".draft_content"),
        format!("INSERT INTO \"{a}\".arbor_sync_cursor SELECT * FROM \"{b}\".arbor_sync_cursor"),
    ] {
        exec(&pool_old, copy).await;
    }
    assert!(parent_of_rows(&pool_old).await > 0, "the 0001 shape");

    let set = arbor_sync::start(store.clone(), old.clone()).expect("start on 0001");
    let more = realistic(&store).await;
    caught_up(&set, &store, 60).await;
    assert_eq!(parent_of_rows(&pool_old).await, 0, "0002 ran");
    for w in [wf, more] {
        assert_same_answers(&store, &Pg(pool_old.clone()), w, 1000).await;
    }
    assert_exact(&pool_old, &store).await;
    assert_eq!(
        arbor_sync::verify_sinks(&store, &old)
            .await
            .expect("verify"),
        vec![]
    );
    set.shutdown().await;
}
