//! The PostgreSQL sink (sqlx).
//!
//! Tables (see `sync/migrations/`, applied at start with `sqlx::migrate!`, in the
//! configured schema): `arbor_events`, `arbor_nodes`, `arbor_edges`, `arbor_workflows`,
//! `draft_content`, `arbor_sync_cursor`. A batch's rows are written in bulk per table
//! (binary `COPY`, never row by row; the workflow rows by `INSERT … SELECT … FROM
//! UNNEST($1::…[], …)`) and commit with the cursor row, exactly once. The cursor lives
//! here, not in arbor.
//!
//! Lean on purpose (migration 0002): a PARENT_OF edge is the node row's `parent_id`
//! and is not stored again in `arbor_edges` (which holds MONITORS, OPTION_OF and
//! CHOSEN_OPTION; the view `arbor_all_edges` shows all four), and `arbor_events.body`
//! is `json` (arbor's text, kept as is) rather than `jsonb`; so are `arbor_nodes.payload`
//! (migration 0004) and every `metadata` column (0005), so that `-0.0` and key order come
//! back as arbor wrote them. Each row costs
//! PostgreSQL an index entry per index, so fewer rows and indexes is what makes
//! catch-up faster.
//!
//! - A batch whose seqs are all above the highest one in `arbor_events` (the normal
//!   case) is *fresh*: one transaction of binary `COPY`s (module `copy`), the workflow
//!   upserts and the cursor; a large one in two parallel transactions, then the cursor.
//!   `COPY` cannot skip a row that exists: should one, the transaction fails and the
//!   batch is written the other way.
//! - Any other batch (a replay after `sync reset`, or after a fresh write was refused)
//!   is written in one transaction: per table, the same `COPY` data into a temporary
//!   staging table, then `INSERT … SELECT … ON CONFLICT DO NOTHING` from it
//!   (`copy::Table::stage`); the workflow upserts; the cursor.
//!
//! Draft content: a node of type `draft` becomes a `draft_content` row (id = node id,
//! `workflow_run_id` = workflow id, `content` = node content, `metadata` = node metadata,
//! `content_type` / `status` from the payload keys of the same names, defaulting to
//! `comment` / `draft`). The table's CHECK constraints hold the seed's enumerations, so
//! a draft with another content type is refused by PostgreSQL: that event is a poison
//! event for this sink and is dead-lettered.
//!
//! Errors: SQLSTATE classes 22 (data exception), 23 (integrity) and 54 (limit exceeded)
//! are permanent (the data is refused). A lost connection, a server shutting down, and
//! tables or a schema that are gone (`42P01`, `3F000`: someone dropped them while the
//! sink ran) are *lost*: the driver runs `setup` again, which recreates them, and reloads
//! the cursor (kept in those tables, so a dropped schema is replayed from 0). Everything
//! else (resources, locks, serialization) is retriable.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use arbor_storage::{EventBody, Seq};
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use crate::error::{Redactor, SinkError};
use crate::sink::{
    edge_keys, partition, Audit, CursorHome, Item, Sink, Tally, MIN_PART_EVENTS, PARALLEL_TXNS,
};
use copy::Copies;

mod copy;

/// Sink name (cursor row and dead-letter key).
pub const NAME: &str = "postgres";

/// The migrations of `sync/migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// `$n` micros since the epoch as a timestamptz, exactly.
macro_rules! ts {
    ($e:literal) => {
        concat!(
            "(TIMESTAMPTZ 'epoch' + (",
            $e,
            " / 1000000) * INTERVAL '1 second' + (",
            $e,
            " % 1000000) * INTERVAL '1 microsecond')"
        )
    };
}

const UPSERT_WORKFLOWS: &str = concat!(
    "INSERT INTO arbor_workflows AS w (workflow_id, root_id, status, user_id, metadata, created_at, updated_at, last_seq) \
     SELECT t.wf, t.root, t.status, t.usr, t.meta::json, \
            CASE WHEN t.created IS NULL THEN NULL ELSE ",
    ts!("t.created"),
    " END, ",
    ts!("t.updated"),
    ", t.last \
     FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[]) \
     AS t(wf, root, status, usr, meta, created, updated, last) \
     ON CONFLICT (workflow_id) DO UPDATE SET \
        root_id = COALESCE(w.root_id, EXCLUDED.root_id), \
        status = COALESCE(EXCLUDED.status, w.status), \
        user_id = COALESCE(w.user_id, EXCLUDED.user_id), \
        metadata = COALESCE(w.metadata, EXCLUDED.metadata), \
        created_at = COALESCE(w.created_at, EXCLUDED.created_at), \
        updated_at = EXCLUDED.updated_at, \
        last_seq = EXCLUDED.last_seq \
     WHERE w.last_seq < EXCLUDED.last_seq"
);

/// Claims the cursor row for a store (`$2`) unless another owns it; returns the owner.
const CLAIM: &str = "WITH claimed AS ( \
       INSERT INTO arbor_sync_cursor (sink, seq, store_id) VALUES ($1, 0, $2) \
       ON CONFLICT (sink) DO UPDATE SET store_id = EXCLUDED.store_id \
       WHERE arbor_sync_cursor.store_id IS NULL RETURNING store_id) \
     SELECT store_id FROM claimed \
     UNION ALL SELECT store_id FROM arbor_sync_cursor WHERE sink = $1 \
       AND NOT EXISTS (SELECT 1 FROM claimed)";

/// Empties the replica and gives it to a store (`$1`): `sync reset --adopt`.
const ADOPT: &str = "TRUNCATE arbor_events, arbor_nodes, arbor_edges, arbor_workflows, \
     draft_content; UPDATE arbor_sync_cursor SET store_id = $1, seq = 0";

const SET_CURSOR: &str =
    "INSERT INTO arbor_sync_cursor (sink, seq, updated_at) VALUES ($1, $2, now()) \
     ON CONFLICT (sink) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()";

/// Checks a schema name: `[a-z_][a-z0-9_]{0,62}`.
pub fn valid_schema(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() < 64
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Connection options for `url` with `search_path` set to `schema`, and
/// `synchronous_commit = off` unless the URL's `options` set it.
///
/// Asynchronous commit is safe for a replica whose truth is arbor's log: a commit
/// returns before its WAL is flushed, and a PostgreSQL crash can lose only a *suffix* of
/// the committed transactions (never reorder or tear them). Every batch commits its rows
/// and the cursor row together (or the parts, then the cursor), so a lost suffix takes
/// the cursor back with the rows, and the sink, reconnecting, reloads the cursor and
/// sends those events again. Nothing is lost or doubled; the commit no longer waits for
/// the WAL (1.15–1.18× faster catch-up, BENCHMARKS.md).
pub fn connect_options(url: &str, schema: &str) -> Result<PgConnectOptions, SinkError> {
    if !valid_schema(schema) {
        return Err(SinkError::permanent(format!(
            "invalid schema name {schema:?}"
        )));
    }
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| SinkError::permanent(format!("invalid postgres url: {e}")))?;
    // The URL's own `options` (`?options=-c%20synchronous_commit%3Don`) win.
    let commit_set = opts
        .get_options()
        .is_some_and(|o| o.contains("synchronous_commit"));
    let opts = opts.options([("search_path", schema)]);
    let opts = if commit_set {
        opts
    } else {
        opts.options([("synchronous_commit", "off")])
    };
    Ok(opts.application_name("arbor-sync"))
}

/// A lazily connecting pool for `url` in `schema`. sqlx keeps trying to connect until
/// the acquire timeout, so a short one is what makes a dead server show within seconds.
pub fn pool(url: &str, schema: &str, max_connections: u32) -> Result<PgPool, SinkError> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(connect_options(url, schema)?))
}

/// Creates the schema if needed and applies the migrations.
pub async fn migrate(pool: &PgPool, schema: &str) -> Result<(), SinkError> {
    if !valid_schema(schema) {
        return Err(SinkError::permanent(format!(
            "invalid schema name {schema:?}"
        )));
    }
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(pool)
        .await
        .map_err(|e| SinkError::retriable(format!("create schema: {e}")))?;
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| SinkError::retriable(format!("migrations: {e}")))
}

/// Reads the cursor of `sink` kept in PostgreSQL.
pub async fn read_cursor(pool: &PgPool, sink: &str) -> Result<Option<Seq>, SinkError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT seq FROM arbor_sync_cursor WHERE sink = $1")
        .bind(sink)
        .fetch_optional(pool)
        .await
        .map_err(|e| classify(&e))?;
    Ok(row.map(|(s,)| u64::try_from(s).unwrap_or(0)))
}

/// Sets the cursor of `sink` (used by `sync reset`).
pub async fn write_cursor(pool: &PgPool, sink: &str, seq: Seq) -> Result<(), SinkError> {
    sqlx::query(SET_CURSOR)
        .bind(sink)
        .bind(to_i64(seq))
        .execute(pool)
        .await
        .map_err(|e| classify(&e))?;
    Ok(())
}

/// SQLSTATEs saying that what `setup` created is gone: undefined table, invalid schema.
const GONE: [&str; 2] = ["42P01", "3F000"];

/// SQLSTATE of `e`, if the server answered with one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Permanent for data errors (SQLSTATE 22, 23, 54); lost for a lost connection, a server
/// shutting down (08, 57P) and dropped tables or schema; retriable otherwise.
pub fn classify(e: &sqlx::Error) -> SinkError {
    match e {
        sqlx::Error::Database(_) => {
            let code = sqlstate(e).unwrap_or_default();
            if code.starts_with("22") || code.starts_with("23") || code.starts_with("54") {
                SinkError::permanent(format!("postgres refused the data ({code}): {e}"))
            } else if GONE.contains(&code.as_str()) {
                SinkError::lost(format!(
                    "postgres: the replica's tables are gone ({code}): {e}"
                ))
            } else if code.starts_with("08") || code.starts_with("57P") {
                SinkError::lost(format!("postgres ({code}): {e}"))
            } else {
                SinkError::retriable(format!("postgres ({code}): {e}"))
            }
        }
        sqlx::Error::Encode(_) => SinkError::permanent(format!("postgres encode: {e}")),
        _ => SinkError::lost(format!("postgres unavailable: {e}")),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The PostgreSQL sink.
pub struct PostgresSink {
    /// Lazily connecting pool with `search_path` set to the schema.
    pool: PgPool,
    /// Target schema.
    schema: String,
    /// Masks the URL's password.
    redactor: Redactor,
    /// Highest seq in `arbor_events` as last read or written; None = read it again
    /// (after any error).
    present: Option<Seq>,
    /// The arbor store replicated here: `setup` claims an unowned schema for it and
    /// refuses one owned by another store. None: no check (tools, tests of the tables).
    store_id: Option<uuid::Uuid>,
}

impl PostgresSink {
    /// A sink writing to `schema` at `url` (not connected yet).
    pub fn new(url: &str, schema: &str) -> Result<PostgresSink, SinkError> {
        let password = crate::error::url_password(url);
        Ok(PostgresSink {
            pool: pool(url, schema, 2)?,
            schema: schema.to_owned(),
            redactor: Redactor::new(password),
            present: None,
            store_id: None,
        })
    }

    /// The sink replicating the store `id` (see [`PostgresSink::setup`]).
    pub fn for_store(mut self, id: uuid::Uuid) -> PostgresSink {
        self.store_id = Some(id);
        self
    }

    /// Claims the schema for this store if no store owns it yet, then fails (a
    /// permanent error naming both stores) if another one does.
    async fn claim(&self, id: uuid::Uuid) -> Result<(), SinkError> {
        let owner: (Option<uuid::Uuid>,) = sqlx::query_as(CLAIM)
            .bind(NAME)
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(&e).redacted(&self.redactor))?;
        match owner.0 {
            Some(other) if other != id => Err(SinkError::permanent(format!(
                "schema {:?} holds the replica of arbor store {other}, not of this store \
                 ({id}): nothing is written to it. Point this store at another schema, or \
                 take the schema over deliberately with `arbor sync reset postgres --from 0 \
                 --adopt` (which empties its tables)",
                self.schema
            ))),
            _ => Ok(()),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes a fresh batch, or one part of it, with binary `COPY` ([`copy`]) in one
    /// transaction: the events, nodes, typed edges and drafts, the workflow upserts,
    /// and with `cursor` the cursor.
    async fn copy_fresh<'a>(
        &self,
        items: impl IntoIterator<Item = &'a Item>,
        cursor: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        let (tables, workflows) = Copies::of(items).tables();
        let w = workflows.cols();
        let mut tx = self.pool.begin().await?;
        for (table, rows) in tables {
            copy_in(&mut tx, &table.copy(), rows).await?;
        }
        bind_workflows(sqlx::query(UPSERT_WORKFLOWS), &w)
            .execute(&mut *tx)
            .await?;
        if let Some(last) = cursor {
            sqlx::query(SET_CURSOR)
                .bind(NAME)
                .bind(last)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Writes a batch none of whose events is in the tables yet (every seq above the
    /// highest one present) with `COPY`. A large one is written as [`PARALLEL_TXNS`]
    /// concurrent transactions, one per group of whole workflows ([`partition`]: no two
    /// touch the same row), then the cursor moves. PostgreSQL runs each transaction in
    /// one backend on one core, so one at a time leaves the other core idle while the
    /// sink catches up. If a part fails after another committed, the cursor has not
    /// moved and the committed rows are present: the batch is no longer fresh, and is
    /// written again the conflict-tolerant way, which skips them. Exactly once holds.
    async fn write_fresh(&self, batch: &[Item]) -> Result<(), sqlx::Error> {
        let parts = partition(batch, PARALLEL_TXNS, MIN_PART_EVENTS);
        if parts.len() < 2 {
            return self
                .copy_fresh(batch, batch.last().map(|i| to_i64(i.seq())))
                .await;
        }
        let writes = parts
            .iter()
            .map(|p| self.copy_fresh(p.iter().copied(), None));
        for result in futures_util::future::join_all(writes).await {
            result?;
        }
        let last = batch.iter().map(Item::seq).max().map_or(0, to_i64);
        sqlx::query(SET_CURSOR)
            .bind(NAME)
            .bind(last)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// Whether every event of `batch` is above the highest seq present.
    async fn is_fresh(&mut self, batch: &[Item]) -> Result<bool, sqlx::Error> {
        let present = match self.present {
            Some(p) => p,
            None => {
                let max: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM arbor_events")
                    .fetch_one(&self.pool)
                    .await?;
                let p = max.map_or(0, |m| u64::try_from(m).unwrap_or(0));
                self.present = Some(p);
                p
            }
        };
        Ok(batch.first().is_some_and(|f| f.seq() > present))
    }

    async fn write(&self, batch: &[Item]) -> Result<(), sqlx::Error> {
        self.write_as(batch, Commit::Cursor).await
    }

    /// The conflict-tolerant write of `batch`, in one transaction, ending as `commit` says:
    /// every table's rows through its staging table ([`copy::Table::stage`]), then the
    /// workflow upserts.
    async fn write_as(&self, batch: &[Item], commit: Commit) -> Result<(), sqlx::Error> {
        let (tables, workflows) = Copies::of(batch).tables();
        let w = workflows.cols();
        let mut tx = self.pool.begin().await?;
        if let Commit::Repair(wf) = commit {
            // Its row is rebuilt from the whole workflow (the upsert keeps a row whose
            // last_seq is not below the batch's, however wrong the row is).
            sqlx::query("DELETE FROM arbor_workflows WHERE workflow_id = $1")
                .bind(wf)
                .execute(&mut *tx)
                .await?;
        }
        for (table, rows) in tables {
            let [create, copy, insert] = table.stage();
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&mut *tx)
                .await?;
            copy_in(&mut tx, &copy, rows).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(insert))
                .execute(&mut *tx)
                .await?;
        }
        bind_workflows(sqlx::query(UPSERT_WORKFLOWS), &w)
            .execute(&mut *tx)
            .await?;
        if let (Commit::Cursor, Some(last)) = (commit, batch.last()) {
            sqlx::query(SET_CURSOR)
                .bind(NAME)
                .bind(to_i64(last.seq()))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

/// Sends `rows` by the `COPY … FROM STDIN` statement `stmt`.
async fn copy_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    stmt: &str,
    rows: copy::CopyRows,
) -> Result<(), sqlx::Error> {
    let mut copy = tx.copy_in_raw(stmt).await?;
    copy.send(rows.finish()).await?;
    copy.finish().await?;
    Ok(())
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cursor_home(&self) -> CursorHome {
        CursorHome::Sink
    }

    /// Creates the schema and applies the migrations; after a loss, this is what
    /// recreates dropped tables.
    /// Also claims the schema for this store, or refuses one another store owns.
    async fn setup(&mut self) -> Result<(), SinkError> {
        self.present = None;
        migrate(&self.pool, &self.schema)
            .await
            .map_err(|e| e.redacted(&self.redactor))?;
        match self.store_id {
            Some(id) => self.claim(id).await,
            None => Ok(()),
        }
    }

    async fn adopt(&mut self) -> Result<(), SinkError> {
        let Some(id) = self.store_id else {
            return Ok(());
        };
        self.present = None;
        migrate(&self.pool, &self.schema)
            .await
            .map_err(|e| e.redacted(&self.redactor))?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| classify(&e).redacted(&self.redactor))?;
        for stmt in ADOPT.split("; ") {
            let q = sqlx::query(sqlx::AssertSqlSafe(stmt));
            let q = if stmt.contains("$1") { q.bind(id) } else { q };
            q.execute(&mut *tx)
                .await
                .map_err(|e| classify(&e).redacted(&self.redactor))?;
        }
        tx.commit()
            .await
            .map_err(|e| classify(&e).redacted(&self.redactor))?;
        self.claim(id).await
    }

    async fn probe(&mut self) -> Result<(), SinkError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| classify(&e).redacted(&self.redactor))
    }

    /// None also when the cursor table does not exist (nothing was ever written).
    async fn load_cursor(&mut self) -> Result<Option<Seq>, SinkError> {
        let row: Result<Option<(i64,)>, sqlx::Error> =
            sqlx::query_as("SELECT seq FROM arbor_sync_cursor WHERE sink = $1")
                .bind(NAME)
                .fetch_optional(&self.pool)
                .await;
        match row {
            Ok(row) => Ok(row.map(|(s,)| u64::try_from(s).unwrap_or(0))),
            Err(e) if sqlstate(&e).is_some_and(|c| GONE.contains(&c.as_str())) => Ok(None),
            Err(e) => Err(classify(&e).redacted(&self.redactor)),
        }
    }

    /// A batch above everything present is written with `COPY`
    /// ([`PostgresSink::write_fresh`]); any other (a replay after `sync reset`, a retry)
    /// through the staging tables with `ON CONFLICT DO NOTHING` (`write_as`). Should the
    /// fresh write be refused, the batch is written again the conflict-tolerant way,
    /// whose answer is the one that counts.
    async fn apply(&mut self, batch: &[Item]) -> Result<(), SinkError> {
        let fresh = match self.is_fresh(batch).await {
            Ok(f) => f,
            Err(e) => {
                self.present = None;
                return Err(classify(&e).redacted(&self.redactor));
            }
        };
        let mut res = if fresh {
            self.write_fresh(batch).await
        } else {
            self.write(batch).await
        };
        if fresh {
            if let Err(e) = &res {
                if classify(e).is_permanent() {
                    tracing::warn!(sink = NAME, error = %classify(e).redacted(&self.redactor),
                        "the fresh-batch statement was refused; writing the batch again with ON CONFLICT");
                    res = self.write(batch).await;
                }
            }
        }
        match res {
            Ok(()) => {
                if let (Some(p), Some(last)) = (self.present, batch.last()) {
                    self.present = Some(p.max(last.seq()));
                }
                Ok(())
            }
            Err(e) => {
                self.present = None;
                Err(classify(&e).redacted(&self.redactor))
            }
        }
    }

    async fn store_cursor(&mut self, seq: Seq) -> Result<(), SinkError> {
        self.present = None;
        write_cursor(&self.pool, NAME, seq)
            .await
            .map_err(|e| e.redacted(&self.redactor))
    }

    /// One statement: the seqs of the workflow's events, nodes and drafts, its typed
    /// edges and its row, compared with what `items` imply.
    async fn audit(&mut self, workflow: Uuid, items: &[Item]) -> Result<Audit, SinkError> {
        let Some(last) = items.last() else {
            return Ok(Audit::InSync);
        };
        let (events, nodes, drafts, edges, status, last_seq): AuditRow = sqlx::query_as(AUDIT)
            .bind(workflow)
            .bind(to_i64(last.seq()))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(&e).redacted(&self.redactor))?;
        let seqs = |v: Vec<i64>| {
            v.into_iter()
                .map(|s| u64::try_from(s).unwrap_or(0))
                .collect()
        };
        let want_events: Vec<Seq> = items.iter().map(Item::seq).collect();
        let want_nodes: Vec<Seq> = items
            .iter()
            .filter(|i| i.node().is_some())
            .map(Item::seq)
            .collect();
        let want_drafts: Vec<Seq> = items
            .iter()
            .filter(|i| i.node().is_some_and(|n| n.node_type == "draft"))
            .map(Item::seq)
            .collect();
        let mut t = Tally::default();
        t.seqs("events", &want_events, seqs(events));
        t.seqs("nodes", &want_nodes, seqs(nodes));
        t.seqs("drafts", &want_drafts, seqs(drafts));
        t.keys(
            "edges",
            &edge_keys(items, false),
            &edges.into_iter().collect(),
        );
        t.workflow_row(items, status.as_deref(), last_seq.map(|s| s.to_string()));
        Ok(t.audit())
    }

    /// The conflict-tolerant write of the whole workflow, its row rebuilt, the cursor
    /// untouched; one transaction.
    async fn repair(&mut self, workflow: Uuid, items: &[Item]) -> Result<(), SinkError> {
        if items.is_empty() {
            return Ok(());
        }
        self.present = None;
        self.write_as(items, Commit::Repair(workflow))
            .await
            .map_err(|e| classify(&e).redacted(&self.redactor))
    }
}

/// How a conflict-tolerant write ends.
#[derive(Clone, Copy)]
enum Commit {
    /// Moves the cursor to the batch's last seq (a delivery).
    Cursor,
    /// Leaves the cursor alone (anti-entropy repairing workflow `.0`).
    Repair(Uuid),
}

/// What the replica holds of one workflow up to a seq (`$1` workflow, `$2` seq): event,
/// node and draft seqs, typed edges as `TYPE from to`, and the workflow row.
const AUDIT: &str = "SELECT      ARRAY(SELECT seq FROM arbor_events WHERE workflow_id = $1 AND seq <= $2),      ARRAY(SELECT seq FROM arbor_nodes WHERE workflow_id = $1 AND seq <= $2),      ARRAY(SELECT seq FROM draft_content WHERE workflow_run_id = $1 AND seq <= $2),      ARRAY(SELECT type || ' ' || from_id || ' ' || to_id FROM arbor_edges            WHERE workflow_id = $1 AND seq <= $2),      (SELECT status FROM arbor_workflows WHERE workflow_id = $1),      (SELECT last_seq FROM arbor_workflows WHERE workflow_id = $1)";

/// What [`AUDIT`] returns.
type AuditRow = (
    Vec<i64>,
    Vec<i64>,
    Vec<i64>,
    Vec<String>,
    Option<String>,
    Option<i64>,
);

#[derive(Clone)]
struct WfRow {
    wf: Uuid,
    root: Option<Uuid>,
    status: Option<&'static str>,
    user: Option<String>,
    meta: Option<String>,
    created: Option<i64>,
    updated: i64,
    last: i64,
}

#[derive(Default)]
struct WfCols {
    wf: Vec<Uuid>,
    root: Vec<Option<Uuid>>,
    status: Vec<Option<&'static str>>,
    user: Vec<Option<String>>,
    meta: Vec<Option<String>>,
    created: Vec<Option<i64>>,
    updated: Vec<i64>,
    last: Vec<i64>,
}

/// A statement being bound.
type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the columns of [`UPSERT_WORKFLOWS`] (8).
fn bind_workflows<'q>(q: Query<'q>, w: &'q WfCols) -> Query<'q> {
    q.bind(&w.wf)
        .bind(&w.root)
        .bind(&w.status)
        .bind(&w.user)
        .bind(&w.meta)
        .bind(&w.created)
        .bind(&w.updated)
        .bind(&w.last)
}

/// The workflow rows of a batch, one per workflow in first-seen order.
#[derive(Default)]
struct WfRows {
    rows: Vec<WfRow>,
    /// Workflow id → index in `rows`.
    slots: HashMap<Uuid, usize>,
}

impl WfRows {
    /// Folds event `e` into its workflow's row.
    fn fold(&mut self, e: &arbor_storage::Event, seq: i64) {
        let rows = &mut self.rows;
        let slot = *self.slots.entry(e.workflow_id).or_insert_with(|| {
            rows.push(WfRow {
                wf: e.workflow_id,
                root: None,
                status: None,
                user: None,
                meta: None,
                created: None,
                updated: 0,
                last: 0,
            });
            rows.len() - 1
        });
        let w = &mut rows[slot];
        w.updated = e.timestamp.micros();
        w.last = seq;
        match &e.body {
            EventBody::WorkflowCreated(c) => {
                w.root = Some(c.root.id);
                w.status = Some("running");
                w.user = c.user_id.clone();
                w.meta = Some(Value::Object(c.metadata.clone()).to_string());
                w.created = Some(e.timestamp.micros());
            }
            EventBody::StatusChanged(s) => w.status = Some(s.to.as_str()),
            _ => {}
        }
    }

    /// The rows as the column arrays of [`UPSERT_WORKFLOWS`].
    fn cols(&self) -> WfCols {
        let mut c = WfCols::default();
        for w in self.rows.iter().cloned() {
            c.wf.push(w.wf);
            c.root.push(w.root);
            c.status.push(w.status);
            c.user.push(w.user);
            c.meta.push(w.meta);
            c.created.push(w.created);
            c.updated.push(w.updated);
            c.last.push(w.last);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_commit_asynchronously_unless_the_url_sets_it() {
        let opts = connect_options("postgres://u@127.0.0.1/db", "arbor").expect("opts");
        let o = opts.get_options().unwrap_or_default();
        assert!(o.contains("synchronous_commit=off"), "{o}");
        assert!(o.contains("search_path=arbor"), "{o}");
        let url = "postgres://u@127.0.0.1/db?options=-c%20synchronous_commit%3Don";
        let opts = connect_options(url, "arbor").expect("opts");
        let o = opts.get_options().unwrap_or_default();
        assert!(!o.contains("synchronous_commit=off"), "{o}");
        assert!(o.contains("synchronous_commit=on"), "{o}");
    }

    #[test]
    fn a_bad_schema_or_url_is_refused() {
        assert!(connect_options("postgres://u@127.0.0.1/db", "Bad-Name").is_err());
        assert!(connect_options("not a url", "arbor").is_err());
    }
}
