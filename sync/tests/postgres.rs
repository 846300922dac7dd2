//! The PostgreSQL sink against a real server: replication of a realistic and a
//! 100 000-event workflow answering the seeds' queries like the store, outage and
//! restart, a killed server noticed within seconds, a schema dropped while the sink runs,
//! replay from 0, and a poison event. The tests that kill their server or drop their
//! schema use a server of their own ([`Instance`]) or a schema of their own, so every
//! test runs beside the others.

mod common;

use arbor_storage::{Node, Store};
use arbor_sync::postgres;
use arbor_sync::{SinkState, SyncConfig};
use common::pg_queries::{self as queries, PgReplica};
use common::*;
use serde_json::json;
use sqlx::PgPool;

/// A sink of the shared server (or of `url`) in a schema of the test's own.
fn pg_config_at(url: &str) -> SyncConfig {
    SyncConfig {
        postgres_url: Some(url.to_owned()),
        postgres_schema: schema(),
        ..config()
    }
}

fn pg_config() -> SyncConfig {
    pg_config_at(&postgres_url())
}

fn pool(cfg: &SyncConfig) -> PgPool {
    let url = cfg.postgres_url.as_deref().expect("postgres url");
    postgres::pool(url, &cfg.postgres_schema, 2).expect("pool")
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
    let cfg = pg_config();
    let (_dir, store, set, wf) = replicated(&cfg).await;
    let pool = pool(&cfg);
    assert_same_answers(&store, &PgReplica(pool.clone()), wf, 1000).await;
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
    assert_in_sync(&store, &cfg).await;
    let st = set.status();
    assert_eq!(st[0].state, SinkState::Ok);
    assert_eq!(st[0].lag_events, 0);
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_a_100k_event_workflow() {
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
    assert_same_answers(&store, &PgReplica(pool.clone()), wf, 40).await;
    assert_exact(&pool, &store).await;
    assert_in_sync(&store, &cfg).await;
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_zero_leaves_no_duplicates() {
    let (_dir, store) = store();
    let cfg = pg_config();
    let wf = realistic(&store).await;
    let (set, _) = replay_from_zero(&store, &cfg).await;
    let pool = pool(&cfg);
    assert_exact(&pool, &store).await;
    assert_same_answers(&store, &PgReplica(pool.clone()), wf, 1000).await;
    assert_in_sync(&store, &cfg).await;
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
    assert!(set.status()[0].errors >= 1);
    assert_exact(&pool, &store).await;
    // An acknowledged event is missing: degraded, and verify says which.
    assert_only_dead_letter(&set, &store, &cfg, "postgres", bad_seq).await;
    set.shutdown().await;
    // Retried as is, PostgreSQL refuses it again: still a dead letter.
    let out = arbor_sync::dead::retry(&store, &cfg, "postgres", Some(vec![bad_seq]))
        .await
        .expect("retry");
    assert!(!out[0].resolved, "{out:?}");
    assert_eq!(store.dead_letters("postgres").expect("dead").len(), 1);
    // The operator widens the constraint; the retry goes through and resolves it.
    exec(
        &pool,
        "ALTER TABLE draft_content DROP CONSTRAINT draft_content_content_type_check".into(),
    )
    .await;
    let out = arbor_sync::dead::retry(&store, &cfg, "postgres", None)
        .await
        .expect("retry");
    assert!(out[0].resolved, "{out:?}");
    assert!(store.dead_letters("postgres").expect("dead").is_empty());
    assert!(queries::node(&pool, bad_id).await.expect("node").is_some());
    assert_exact(&pool, &store).await;
    assert_in_sync(&store, &cfg).await;
    // The retry put the cursor back at the head: a new run sends nothing twice.
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    wait_until(30, "ok", || {
        let ok = set.status()[0].state == SinkState::Ok;
        async move { ok }
    })
    .await;
    assert_eq!(set.status()[0].cursor, store.head());
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_kill_and_restart_catch_up_with_no_gap_and_no_duplicate() {
    let server = Instance::start("postgres").await;
    let cfg = pg_config_at(&server.url);
    let after = outage(&server, &cfg, |st| {
        assert!(st.lag_events > 0);
        let err = st.last_error.clone().unwrap_or_default();
        assert!(!err.contains("postgres://"), "{st:?}");
    })
    .await;
    let pool = pool(&cfg);
    assert_exact(&pool, &after.store).await;
    assert_same_answers(&after.store, &PgReplica(pool.clone()), after.before, 1000).await;
    assert_in_sync(&after.store, &cfg).await;
    assert!(only(&after.set).retries > 0);
    after.set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_shows_as_degraded_within_seconds() {
    let server = Instance::start("postgres").await;
    a_killed_server_shows_as_degraded(&server, pg_config_at(&server.url)).await;
}

/// Someone drops the replica's schema while the sink runs: the next write (or probe)
/// finds its tables gone, the sink runs its setup again, which recreates them, reloads
/// its cursor from them (none: 0) and replicates the whole log again, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_dropped_while_running_is_recreated_and_caught_up_with_no_gap() {
    let cfg = pg_config();
    let (_dir, store, set, wf) = replicated(&cfg).await;
    let pool = pool(&cfg);
    exec(
        &pool,
        format!("DROP SCHEMA \"{}\" CASCADE", cfg.postgres_schema),
    )
    .await;
    let more = realistic(&store).await;
    wait_until(60, "the schema recreated and every event back", || {
        let pool = pool.clone();
        let head = store.head() as i64;
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM arbor_events")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == head)
        }
    })
    .await;
    caught_up(&set, &store, 60).await;
    assert_exact(&pool, &store).await;
    for w in [wf, more] {
        assert_same_answers(&store, &PgReplica(pool.clone()), w, 1000).await;
    }
    assert_in_sync(&store, &cfg).await;
    let st = only(&set);
    assert!(st.retries > 0, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("42P01")),
        "{st:?}"
    );
    assert_eq!(st.state, SinkState::Ok);
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
/// starts (0002 to 0004 run; the unowned replica is claimed by the store), answers the seeds' queries like the store, and goes on
/// replicating without a gap or a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_migration_0001_upgrades_in_place() {
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
        format!(
            "INSERT INTO \"{a}\".arbor_nodes SELECT id, workflow_id, parent_id, type, role, \
             content, payload::jsonb, metadata, agent_id, user_id, branch_id, depth, seq, \
             \"timestamp\" FROM \"{b}\".arbor_nodes"
        ),
        format!(
            "INSERT INTO \"{a}\".arbor_edges SELECT type, from_id, to_id, workflow_id, seq \
             FROM \"{b}\".arbor_all_edges"
        ),
        format!("INSERT INTO \"{a}\".arbor_workflows SELECT * FROM \"{b}\".arbor_workflows"),
        format!("INSERT INTO \"{a}\".draft_content SELECT * FROM \"{b}\".draft_content"),
        format!(
            "INSERT INTO \"{a}\".arbor_sync_cursor SELECT sink, seq, updated_at \
             FROM \"{b}\".arbor_sync_cursor"
        ),
    ] {
        exec(&pool_old, copy).await;
    }
    assert!(parent_of_rows(&pool_old).await > 0, "the 0001 shape");

    let set = arbor_sync::start(store.clone(), old.clone()).expect("start on 0001");
    let more = realistic(&store).await;
    caught_up(&set, &store, 60).await;
    assert_eq!(parent_of_rows(&pool_old).await, 0, "0002 ran");
    for w in [wf, more] {
        assert_same_answers(&store, &PgReplica(pool_old.clone()), w, 1000).await;
    }
    assert_exact(&pool_old, &store).await;
    assert_in_sync(&store, &old).await;
    set.shutdown().await;
}

/// Waits until the only sink of `set` is degraded with an error naming both stores.
async fn refused(set: &arbor_sync::SyncSet, owner: &Store, intruder: &Store) {
    degraded_within(set).await;
    let err = only(set).last_error.unwrap_or_default();
    assert!(
        err.contains(&owner.id().to_string()) && err.contains(&intruder.id().to_string()),
        "{err}"
    );
    assert!(err.contains("--adopt"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_one_schema_is_refused_clearly_until_it_adopts_it() {
    let cfg = pg_config();
    let (_da, a) = store();
    let (_db, b) = store();
    assert_ne!(a.id(), b.id());
    let a_set = arbor_sync::start(a.clone(), cfg.clone()).expect("start a");
    realistic(&a).await;
    caught_up(&a_set, &a, 60).await;
    // A second store (a restore, a second server) on the same schema: it writes
    // nothing, says why, and does not move A's cursor.
    realistic(&b).await;
    let b_set = arbor_sync::start(b.clone(), cfg.clone()).expect("start b");
    refused(&b_set, &a, &b).await;
    assert_eq!(only(&b_set).cursor, 0);
    let (wf, root) = create(&a, "more", json!({})).await;
    append(&a, wf, vec![spec(root, "message", "after b came")]).await;
    caught_up(&a_set, &a, 60).await;
    assert_eq!(
        postgres::read_cursor(&pool(&cfg), "postgres")
            .await
            .expect("cursor"),
        Some(a.head())
    );
    assert_in_sync(&a, &cfg).await;
    a_set.shutdown().await;
    b_set.shutdown().await;
    // B takes the schema over deliberately: A's rows go, B's log is replayed.
    arbor_sync::adopt(&b, &cfg, "postgres")
        .await
        .expect("adopt");
    let b_set = arbor_sync::start(b.clone(), cfg.clone()).expect("start b");
    caught_up(&b_set, &b, 60).await;
    assert_exact(&pool(&cfg), &b).await;
    assert_in_sync(&b, &cfg).await;
    // Now A is the one refused.
    let a_set = arbor_sync::start(a.clone(), cfg.clone()).expect("start a");
    refused(&a_set, &b, &a).await;
    a_set.shutdown().await;
    b_set.shutdown().await;
}

/// Issue 11, item 4: `arbor_nodes.payload` is arbor's text as is, like
/// `arbor_events.body` (it was jsonb: `-0.0` came back as `0`, keys reordered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_payloads_and_metadata_are_kept_exactly() {
    let cfg = pg_config();
    let (_dir, store) = store();
    // jsonb would put "b" before "aa" (shorter keys first) and write -0.0 as -0.
    let unordered = r#"{"b": -0.0, "aa": {"y": 1, "b": [2.50, -0.0]}}"#;
    let meta: serde_json::Value = serde_json::from_str(unordered).expect("metadata");
    let (wf, root) = create(&store, "exact", meta.clone()).await;
    let mut n = spec(root, "message", "m");
    n.payload =
        serde_json::from_str(r#"{"aaa": -0.0, "b": [1.5e300, -0.0], "c": {"zz": 1, "y": 2.50}}"#)
            .expect("payload");
    n.metadata = serde_json::from_str(unordered).expect("metadata");
    let mut draft = spec(root, "draft", "d");
    draft.metadata = serde_json::from_str(unordered).expect("metadata");
    let draft_id = node(&store, wf, draft).await;
    let id = node(&store, wf, n).await;
    let set = arbor_sync::start(store.clone(), cfg.clone()).expect("start");
    caught_up(&set, &store, 60).await;
    let got: String = sqlx::query_scalar("SELECT payload::text FROM arbor_nodes WHERE id = $1")
        .bind(id)
        .fetch_one(&pool(&cfg))
        .await
        .expect("payload");
    let stored = store
        .node(&id)
        .expect("node")
        .expect("node")
        .node
        .payload
        .clone();
    assert_eq!(got, stored.to_string(), "arbor's text, as the API shows it");
    assert!(got.starts_with(r#"{"aaa":-0.0,"b""#), "{got}");
    // Every metadata column keeps arbor's text too (migration 0005).
    let exact = meta.to_string();
    assert_eq!(exact, r#"{"aa":{"b":[2.5,-0.0],"y":1},"b":-0.0}"#);
    for (sql, key) in [
        ("SELECT metadata::text FROM arbor_nodes WHERE id = $1", id),
        (
            "SELECT metadata::text FROM draft_content WHERE id = $1",
            draft_id,
        ),
        (
            "SELECT metadata::text FROM arbor_workflows WHERE workflow_id = $1",
            wf,
        ),
    ] {
        let got: String = sqlx::query_scalar(sql)
            .bind(key)
            .fetch_one(&pool(&cfg))
            .await
            .expect("metadata");
        assert_eq!(got, exact, "{sql}");
    }
    assert_in_sync(&store, &cfg).await;
    set.shutdown().await;
}

/// Issue 11, item 5: rows deleted or changed in PostgreSQL behind arbor's back (an
/// event, a node, a typed edge; the workflow row's status) are found and put back by
/// anti-entropy, with no one running `verify --sinks`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_repairs_rows_deleted_behind_arbors_back() {
    let cfg = pg_config();
    let pool = pool(&cfg);
    let damaged = pool.clone();
    let (_dir, store, set, wf) = repaired_after(&cfg, |wf| async move {
        let pick = |table: &str, offset: u32| {
            format!("SELECT seq FROM {table} WHERE workflow_id = '{wf}' ORDER BY seq OFFSET {offset} LIMIT 1")
        };
        let edge = format!(
            "SELECT type, from_id, to_id FROM arbor_edges WHERE workflow_id = '{wf}' ORDER BY seq LIMIT 1"
        );
        // One simple query: one transaction, so that an audit (one statement) sees all
        // of the damage or none of it.
        let sql = [
            format!("DELETE FROM arbor_events WHERE seq = ({})", pick("arbor_events", 5)),
            format!("DELETE FROM arbor_nodes WHERE seq = ({})", pick("arbor_nodes", 7)),
            format!("DELETE FROM arbor_edges WHERE (type, from_id, to_id) IN ({edge})"),
            format!("UPDATE arbor_workflows SET status = 'failed' WHERE workflow_id = '{wf}'"),
        ]
        .join("; ");
        exec(&damaged, sql).await;
    })
    .await;
    let last = only(&set).anti_entropy.last_divergence.expect("divergence");
    for part in ["events", "nodes", "edges", "status"] {
        assert!(last.what.contains(part), "{part} not found in {last:?}");
    }
    assert_exact(&pool, &store).await;
    assert_same_answers(&store, &PgReplica(pool.clone()), wf, 1000).await;
    set.shutdown().await;
}

/// A fresh batch of several workflows is written as concurrent statements, one per part
/// of whole workflows (`partition`), and the cursor moves only once every part has
/// committed. When one part is refused after the other committed, the cursor stays
/// where it was; the batch written again (without the refused event, as the driver does
/// once it has dead-lettered it) is no longer fresh, so it goes the conflict-tolerant
/// way: nothing is lost and nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_written_in_parts_and_a_part_that_fails_loses_and_doubles_nothing() {
    use arbor_sync::sink::{partition, MIN_PART_EVENTS, PARALLEL_TXNS};
    use arbor_sync::Sink;
    let (_dir, store) = store();
    let a = synthetic(&store, 1500, 21).await;
    let b = realistic(&store).await;
    let (c, root) = create(&store, "poison", json!({})).await;
    let mut nodes: Vec<_> = (0..300)
        .map(|i| spec(root, "message", &format!("m {i}")))
        .collect();
    // PostgreSQL's CHECK refuses this draft (see the dead-letter test above).
    let mut bad = spec(root, "draft", "a tweet");
    bad.payload = json!({"content_type": "tweet"});
    nodes.insert(150, bad);
    let ids = append(&store, c, nodes).await;
    let bad_seq = store.seq_of(&ids[150]).expect("seq");
    let items = arbor_sync::driver::read_items(&store, 0, 100_000).expect("items");
    assert_eq!(items.len() as u64, store.head());
    let parts = partition(&items, PARALLEL_TXNS, MIN_PART_EVENTS);
    assert_eq!(parts.len(), 2, "the batch is split");
    let holding_c = |p: &Vec<&arbor_sync::Item>| p.iter().any(|i| i.event.workflow_id == c);
    let clean: Vec<u64> = parts
        .iter()
        .filter(|p| !holding_c(p))
        .flatten()
        .map(|i| i.seq())
        .collect();
    assert!(
        !clean.is_empty(),
        "one part holds no event of the poisoned workflow"
    );

    let cfg = pg_config();
    let url = cfg.postgres_url.clone().expect("url");
    let mut sink = postgres::PostgresSink::new(&url, &cfg.postgres_schema).expect("sink");
    sink.setup().await.expect("setup");
    let before = sink.load_cursor().await.expect("cursor");
    assert!(before.unwrap_or(0) == 0, "{before:?}");
    let err = sink.apply(&items).await.expect_err("the draft is refused");
    assert!(err.is_permanent(), "{err}");
    let pool = pool(&cfg);
    let mut present: Vec<i64> = sqlx::query_scalar("SELECT seq FROM arbor_events ORDER BY seq")
        .fetch_all(&pool)
        .await
        .expect("seqs");
    let mut expected: Vec<i64> = clean.iter().map(|s| *s as i64).collect();
    expected.sort_unstable();
    present.sort_unstable();
    assert_eq!(
        present, expected,
        "exactly the part without the refused draft committed"
    );
    assert_eq!(
        sink.load_cursor().await.expect("cursor"),
        before,
        "the cursor did not move"
    );

    let rest: Vec<arbor_sync::Item> = items
        .iter()
        .filter(|i| i.seq() != bad_seq)
        .cloned()
        .collect();
    sink.apply(&rest).await.expect("the rest");
    let (n, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT seq) FROM arbor_events")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(
        (n, distinct),
        (store.head() as i64 - 1, store.head() as i64 - 1)
    );
    assert_eq!(
        sink.load_cursor().await.expect("cursor"),
        Some(store.head())
    );
    let replica = PgReplica(pool.clone());
    assert_same_answers(&store, &replica, a, 200).await;
    assert_same_answers(&store, &replica, b, 200).await;
}

/// The sink's sessions commit without waiting for the WAL (safe for a replica: see
/// `postgres::connect_options`), unless the URL's `options` say otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sinks_sessions_commit_asynchronously_unless_the_url_says_otherwise() {
    let show = |url: String| async move {
        let pool = postgres::pool(&url, &schema(), 1).expect("pool");
        let v: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&pool)
            .await
            .expect("show synchronous_commit");
        pool.close().await;
        v
    };
    let url = postgres_url();
    assert_eq!(show(url.clone()).await, "off");
    let sep = if url.contains('?') { '&' } else { '?' };
    let forced = format!("{url}{sep}options=-c%20synchronous_commit%3Don");
    assert_eq!(show(forced).await, "on");
}
