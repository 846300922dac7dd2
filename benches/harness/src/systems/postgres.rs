//! Baseline (b): a PostgreSQL events table. One `INSERT` per event (autocommit), path
//! to root by a recursive CTE over `parent_id`, subtree by the reverse CTE.
//!
//! The table is the harness's own (`arbor_bench_events`), dropped and re-created at the
//! start of a run and dropped at its end, with the indexes a reasonable schema has: the primary key, a unique
//! index on the event/node id (the CTE walks it) and one on `parent_id` (the subtree
//! CTE walks it).

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, QueryBuilder, Row};
use uuid::Uuid;

use crate::workload::{NodeOp, Op};

/// The events table and its queries.
#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
}

/// The durability settings a server had: (value, set by `ALTER SYSTEM`).
#[derive(Clone, Debug)]
pub struct Durable {
    fsync: (String, bool),
    full_page_writes: (String, bool),
}

const SCHEMA: &[&str] = &[
    "DROP TABLE IF EXISTS arbor_bench_events",
    "CREATE TABLE arbor_bench_events (
        seq         BIGSERIAL PRIMARY KEY,
        id          UUID NOT NULL UNIQUE,
        workflow_id UUID NOT NULL,
        kind        TEXT NOT NULL,
        parent_id   UUID,
        target_id   UUID,
        node_type   TEXT,
        role        TEXT,
        content     TEXT,
        payload     JSONB,
        metadata    JSONB,
        agent_id    TEXT,
        created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    )",
    "CREATE INDEX arbor_bench_events_parent ON arbor_bench_events (parent_id)",
];

const INSERT_NODE: &str = "INSERT INTO arbor_bench_events \
     (id, workflow_id, kind, parent_id, node_type, role, content, payload, metadata, agent_id) \
     VALUES ($1, $2, 'node', $3, $4, $5, $6, $7, $8, $9)";

const INSERT_EDGE: &str = "INSERT INTO arbor_bench_events \
     (id, workflow_id, kind, parent_id, target_id, node_type) VALUES ($1, $2, 'edge', $3, $4, $5)";

/// Path to root: the node, then its parent, … up to the root; root first.
pub const PATH_TO_ROOT: &str = "WITH RECURSIVE p AS (
        SELECT id, parent_id, node_type, content, metadata, 0 AS up
        FROM arbor_bench_events WHERE id = $1
      UNION ALL
        SELECT e.id, e.parent_id, e.node_type, e.content, e.metadata, p.up + 1
        FROM arbor_bench_events e JOIN p ON e.id = p.parent_id
    ) SELECT id, node_type, content, metadata FROM p ORDER BY up DESC";

/// Subtree: the node and everything below it, breadth-first.
pub const SUBTREE: &str = "WITH RECURSIVE s AS (
        SELECT id, node_type, content, metadata, 0 AS down
        FROM arbor_bench_events WHERE id = $1
      UNION ALL
        SELECT e.id, e.node_type, e.content, e.metadata, s.down + 1
        FROM arbor_bench_events e JOIN s ON e.parent_id = s.id
        WHERE e.kind = 'node'
    ) SELECT id, node_type, content, metadata FROM s ORDER BY down";

impl Postgres {
    /// Connects with `pool` connections and (re)creates the table.
    pub async fn connect(url: &str, pool: u32) -> anyhow::Result<Postgres> {
        let pool = PgPoolOptions::new()
            .max_connections(pool.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .context("connecting to postgres")?;
        for stmt in SCHEMA {
            sqlx::query(*stmt)
                .execute(&pool)
                .await
                .context("creating arbor_bench_events")?;
        }
        Ok(Postgres { pool })
    }

    /// `SHOW name` (`name` is one of ours, never input).
    pub async fn setting(&self, name: &str) -> anyhow::Result<String> {
        let row = sqlx::query(AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<String, _>(0)?)
    }

    /// Turns `fsync` and `full_page_writes` on or off (`ALTER SYSTEM`, then a reload,
    /// then waits until a fresh session sees the value, then a `CHECKPOINT`), so the
    /// pgbench baselines can run as durable as arbor and without durability on one
    /// server. Needs a superuser (the service script's is one). Returns what the
    /// server had before, for [`Postgres::restore_durability`].
    pub async fn set_durability(&self, on: bool) -> anyhow::Result<Durable> {
        let before = Durable {
            fsync: self.setting_source("fsync").await?,
            full_page_writes: self.setting_source("full_page_writes").await?,
        };
        let v = if on { "on" } else { "off" };
        for name in ["fsync", "full_page_writes"] {
            self.exec(&format!("ALTER SYSTEM SET {name} = {v}")).await?;
        }
        self.reload_until("fsync", v).await?;
        self.exec("CHECKPOINT").await?;
        Ok(before)
    }

    /// Puts back what [`Postgres::set_durability`] found.
    pub async fn restore_durability(&self, before: &Durable) -> anyhow::Result<()> {
        for (name, (value, by_alter)) in [
            ("fsync", &before.fsync),
            ("full_page_writes", &before.full_page_writes),
        ] {
            if *by_alter {
                self.exec(&format!("ALTER SYSTEM SET {name} = {value}"))
                    .await?;
            } else {
                self.exec(&format!("ALTER SYSTEM RESET {name}")).await?;
            }
        }
        self.reload_until("fsync", &before.fsync.0).await
    }

    /// A setting's value, and whether it came from `ALTER SYSTEM`.
    async fn setting_source(&self, name: &'static str) -> anyhow::Result<(String, bool)> {
        let row = sqlx::query(
            "SELECT setting, coalesce(sourcefile LIKE '%postgresql.auto.conf', false)              FROM pg_settings WHERE name = $1",
        )
        .bind(name)
        .fetch_one(&self.pool)
        .await?;
        let (setting, auto): (String, bool) = (row.try_get(0)?, row.try_get(1)?);
        Ok((setting, auto))
    }

    async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        sqlx::query(AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .with_context(|| format!("postgres: {sql}"))?;
        Ok(())
    }

    /// `pg_reload_conf()`, then polls (up to 10 s) until `SHOW name` says `want`.
    async fn reload_until(&self, name: &'static str, want: &str) -> anyhow::Result<()> {
        self.exec("SELECT pg_reload_conf()").await?;
        let t0 = std::time::Instant::now();
        loop {
            let mut c = self.pool.acquire().await?;
            let row = sqlx::query(AssertSqlSafe(format!("SHOW {name}")))
                .fetch_one(&mut *c)
                .await?;
            if row.try_get::<String, _>(0)? == want {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("postgres: {name} is not {want} 10 s after pg_reload_conf()");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Inserts the root row of a workflow.
    pub async fn create_root(&self, wf: Uuid, root: Uuid, content: &str) -> anyhow::Result<()> {
        sqlx::query(INSERT_NODE)
            .bind(root)
            .bind(wf)
            .bind(None::<Uuid>)
            .bind("system")
            .bind(Some("system"))
            .bind(content)
            .bind(Json(serde_json::Value::Null))
            .bind(Json(serde_json::Map::new()))
            .bind(None::<String>)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One INSERT for one event.
    pub async fn apply(&self, wf: Uuid, op: &Op) -> anyhow::Result<()> {
        match op {
            Op::Node(n) => {
                sqlx::query(INSERT_NODE)
                    .bind(n.id)
                    .bind(wf)
                    .bind(Some(n.parent_id))
                    .bind(n.node_type.as_str())
                    .bind(n.role.map(|r| r.as_str()))
                    .bind(n.content.as_str())
                    .bind(Json(&n.payload))
                    .bind(Json(&n.metadata))
                    .bind(n.agent_id.as_deref())
                    .execute(&self.pool)
                    .await?;
            }
            Op::Edge { kind, from, to } => {
                self.edge(wf, kind.as_str(), *from, *to).await?;
            }
            Op::Choose { decision, option } => {
                self.edge(wf, "CHOSEN_OPTION", *decision, *option).await?;
            }
        }
        Ok(())
    }

    async fn edge(&self, wf: Uuid, kind: &str, from: Uuid, to: Uuid) -> anyhow::Result<()> {
        sqlx::query(INSERT_EDGE)
            .bind(Uuid::now_v7())
            .bind(wf)
            .bind(from)
            .bind(to)
            .bind(kind)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One multi-row INSERT for a batch of node events (one statement, one commit).
    pub async fn insert_batch(&self, wf: Uuid, nodes: &[NodeOp]) -> anyhow::Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let mut qb = QueryBuilder::new(
            "INSERT INTO arbor_bench_events \
             (id, workflow_id, kind, parent_id, node_type, role, content, payload, metadata, agent_id) ",
        );
        qb.push_values(nodes, |mut b, n| {
            b.push_bind(n.id)
                .push_bind(wf)
                .push_bind("node")
                .push_bind(Some(n.parent_id))
                .push_bind(n.node_type.as_str())
                .push_bind(n.role.map(|r| r.as_str()))
                .push_bind(n.content.as_str())
                .push_bind(Json(&n.payload))
                .push_bind(Json(&n.metadata))
                .push_bind(n.agent_id.as_deref());
        });
        qb.build().execute(&self.pool).await?;
        Ok(())
    }

    /// Loads fixtures in multi-row INSERTs of 1 000 rows.
    pub async fn load(&self, wf: Uuid, nodes: &[NodeOp]) -> anyhow::Result<()> {
        for chunk in nodes.chunks(1_000) {
            self.insert_batch(wf, chunk).await?;
        }
        sqlx::query("ANALYZE arbor_bench_events")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn rows(&self, q: &'static str, id: Uuid) -> anyhow::Result<usize> {
        let rows = sqlx::query(q).bind(id).fetch_all(&self.pool).await?;
        // Decode every row, as a client would.
        for r in &rows {
            let _: Uuid = r.try_get(0)?;
            let _: Option<String> = r.try_get(2)?;
            let _: Option<Json<serde_json::Value>> = r.try_get(3)?;
        }
        Ok(rows.len())
    }

    /// Path to root by recursive CTE; returns the number of nodes.
    pub async fn path(&self, id: Uuid) -> anyhow::Result<usize> {
        self.rows(PATH_TO_ROOT, id).await
    }

    /// Subtree by recursive CTE; returns the number of nodes.
    pub async fn subtree(&self, id: Uuid) -> anyhow::Result<usize> {
        self.rows(SUBTREE, id).await
    }

    /// Node rows of workflow `wf`.
    pub async fn node_count(&self, wf: Uuid) -> anyhow::Result<usize> {
        let row = sqlx::query(
            "SELECT count(*) FROM arbor_bench_events WHERE workflow_id = $1 AND kind = 'node'",
        )
        .bind(wf)
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(row.try_get::<i64, _>(0)?)?)
    }

    /// Drops the table and closes the pool.
    pub async fn close(&self) {
        if let Err(e) = sqlx::query("DROP TABLE IF EXISTS arbor_bench_events")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "dropping arbor_bench_events");
        }
        self.pool.close().await;
    }
}
