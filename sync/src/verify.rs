//! `arbor verify --sinks`: compares the log with what each sink holds.
//!
//! The log side is computed in one scan of the records (no content needed), per sink,
//! leaving out that sink's dead-lettered events. Per workflow:
//!
//! - PostgreSQL: event count and digest (BLAKE3 over `seq ‖ hash` in seq order), node
//!   count and digest (`seq ‖ node id`), edge count, workflow row (status, last seq);
//!   plus the table-wide event count, so rows of unknown workflows show up.
//! - Neo4j: node count and digest over `:WorkflowNode`s, relationship count between
//!   `:WorkflowNode`s (an edge whose end is still a placeholder does not count), and the
//!   `(:Workflow)`'s status.
//! - Redis: the stream must be an unbroken suffix of the workflow's events (same seqs,
//!   same hashes) ending at its last event, at least `min(MAXLEN, events)` long; the
//!   status hash's `status` and `last_seq` must match.
//!
//! Every sink's cursor must also be at the log head, and every unresolved dead letter is
//! a difference (acknowledged ones are not: an operator accepted that loss). An empty
//! result means equal.

use std::collections::{HashMap, HashSet};

use arbor_storage::{RecordBody, Seq, Store, WorkflowStatus};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{SinkError, SyncError};
use crate::{neo4j, postgres, redis, SyncConfig};

/// One difference between the log and a sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SinkDiff {
    /// Sink name.
    pub sink: String,
    /// The workflow concerned, if the difference is per workflow.
    pub workflow_id: Option<Uuid>,
    /// What differs (`cursor`, `events`, `event_digest`, `nodes`, …).
    pub what: String,
    /// The log's value.
    pub expected: String,
    /// The sink's value.
    pub actual: String,
}

/// What one workflow should look like in one sink.
#[derive(Clone)]
struct Expect {
    events: u64,
    event_digest: blake3::Hasher,
    nodes: u64,
    node_digest: blake3::Hasher,
    edges: u64,
    last_seq: Seq,
    status: Option<WorkflowStatus>,
}

impl Default for Expect {
    fn default() -> Expect {
        Expect {
            events: 0,
            event_digest: blake3::Hasher::new(),
            nodes: 0,
            node_digest: blake3::Hasher::new(),
            edges: 0,
            last_seq: 0,
            status: None,
        }
    }
}

/// Per-workflow digests being computed on the sink side.
#[derive(Default)]
struct Got {
    events: u64,
    event_digest: Option<blake3::Hasher>,
    nodes: u64,
    node_digest: Option<blake3::Hasher>,
}

fn feed(h: &mut Option<blake3::Hasher>, seq: Seq, bytes: &[u8]) {
    let h = h.get_or_insert_with(blake3::Hasher::new);
    h.update(&seq.to_le_bytes());
    h.update(bytes);
}

fn digest(h: &Option<blake3::Hasher>) -> String {
    h.as_ref()
        .unwrap_or(&blake3::Hasher::new())
        .finalize()
        .to_hex()
        .to_string()
}

/// Expected state per workflow of one sink.
type Expected = HashMap<Uuid, Expect>;

/// Scans the log once; returns, for each sink, the expected state per workflow.
fn expected(store: &Store, sinks: &[&'static str]) -> Result<(Seq, Vec<Expected>), SyncError> {
    let head = store.head();
    let dead: Vec<HashSet<Seq>> = sinks
        .iter()
        .map(|s| excluded(store, s))
        .collect::<Result<_, _>>()?;
    let mut maps: Vec<HashMap<Uuid, Expect>> = vec![HashMap::new(); sinks.len()];
    let mut after = 0;
    while after < head {
        let records = store.read_records(after, 10_000)?;
        let Some(last) = records.last() else { break };
        after = last.seq;
        for r in &records {
            let mut edges = 0u64;
            let mut node = None;
            let mut status = None;
            match &r.body {
                RecordBody::WorkflowCreated { root, .. } => {
                    node = Some(root.id);
                    status = Some(WorkflowStatus::Running);
                }
                RecordBody::NodeCreated(n) => {
                    node = Some(n.id);
                    edges += 1; // PARENT_OF
                    if store.implied_option_of_record(r).is_some() {
                        edges += 1;
                    }
                }
                RecordBody::EdgeCreated(_) => edges += 1,
                RecordBody::StatusChanged { to, .. } => status = Some(*to),
            }
            let hash = r.hash_hex();
            for (i, map) in maps.iter_mut().enumerate() {
                let e = map.entry(r.workflow_id).or_default();
                if dead[i].contains(&r.seq) {
                    continue;
                }
                e.events += 1;
                e.event_digest.update(&r.seq.to_le_bytes());
                e.event_digest.update(hash.as_bytes());
                e.edges += edges;
                e.last_seq = r.seq;
                if let Some(id) = node {
                    e.nodes += 1;
                    e.node_digest.update(&r.seq.to_le_bytes());
                    e.node_digest.update(id.as_bytes());
                }
                if status.is_some() {
                    e.status = status;
                }
            }
        }
    }
    Ok((head, maps))
}

struct Diffs<'a> {
    sink: &'a str,
    out: Vec<SinkDiff>,
}

impl Diffs<'_> {
    fn check(
        &mut self,
        wf: Option<Uuid>,
        what: &str,
        expected: impl ToString,
        actual: impl ToString,
    ) {
        let (expected, actual) = (expected.to_string(), actual.to_string());
        if expected != actual {
            self.out.push(SinkDiff {
                sink: self.sink.to_owned(),
                workflow_id: wf,
                what: what.to_owned(),
                expected,
                actual,
            });
        }
    }
}

/// Seqs of `sink`'s dead letters, unresolved or acknowledged: left out of the
/// comparison (the unresolved ones are reported as such by [`verify_sinks`]).
pub(crate) fn excluded(
    store: &Store,
    sink: &str,
) -> Result<HashSet<Seq>, arbor_storage::StorageError> {
    let mut seqs: HashSet<Seq> = store
        .dead_letters(sink)?
        .into_iter()
        .map(|(q, _)| q)
        .collect();
    seqs.extend(store.acked_dead_letters(sink)?.into_iter().map(|(q, _)| q));
    Ok(seqs)
}

/// Every unresolved dead letter of `sink`, as a difference: an acknowledged event the
/// sink lacks (`what` = `dead_letter:SEQ`, `actual` = the sink's error).
fn dead_letter_diffs(store: &Store, sink: &str) -> Result<Vec<SinkDiff>, SyncError> {
    store
        .dead_letters(sink)?
        .into_iter()
        .map(|(seq, error)| {
            let workflow_id = store
                .read_records(seq.saturating_sub(1), 1)?
                .first()
                .map(|r| r.workflow_id);
            Ok(SinkDiff {
                sink: sink.to_owned(),
                workflow_id,
                what: format!("dead_letter:{seq}"),
                expected: "replicated".to_owned(),
                actual: error,
            })
        })
        .collect()
}

/// Compares the log with every configured sink, and reports every unresolved dead
/// letter. An empty vector means all equal.
pub async fn verify_sinks(store: &Store, config: &SyncConfig) -> Result<Vec<SinkDiff>, SyncError> {
    let sinks = config.sink_names();
    let s2 = store.clone();
    let names = sinks.clone();
    let (head, maps) = tokio::task::spawn_blocking(move || expected(&s2, &names))
        .await
        .map_err(|e| SyncError::Task(e.to_string()))??;
    let mut out = Vec::new();
    for (name, exp) in sinks.iter().zip(maps) {
        let mut d = Diffs {
            sink: name,
            out: Vec::new(),
        };
        let r = match *name {
            redis::NAME => verify_redis(store, config, head, &exp, &mut d).await,
            postgres::NAME => verify_postgres(config, head, &exp, &mut d).await,
            _ => verify_neo4j(store, config, head, &exp, &mut d).await,
        };
        r.map_err(|e| SyncError::sink(name, e))?;
        out.extend(dead_letter_diffs(store, name)?);
        out.extend(d.out);
    }
    Ok(out)
}

fn wf_ids(exp: &HashMap<Uuid, Expect>) -> Vec<Uuid> {
    let mut v: Vec<Uuid> = exp.keys().copied().collect();
    v.sort();
    v
}

async fn verify_postgres(
    config: &SyncConfig,
    head: Seq,
    exp: &HashMap<Uuid, Expect>,
    d: &mut Diffs<'_>,
) -> Result<(), SinkError> {
    let url = config.postgres_url.as_deref().unwrap_or_default();
    let pool = postgres::pool(url, &config.postgres_schema, 1)?;
    let r = verify_postgres_on(&pool, head, exp, d).await;
    pool.close().await;
    r
}

async fn verify_postgres_on(
    pool: &sqlx::PgPool,
    head: Seq,
    exp: &HashMap<Uuid, Expect>,
    d: &mut Diffs<'_>,
) -> Result<(), SinkError> {
    let pg = |e: sqlx::Error| postgres::classify(&e);
    let cursor = postgres::read_cursor(pool, postgres::NAME)
        .await?
        .unwrap_or(0);
    d.check(None, "cursor", head, cursor);
    let ids = wf_ids(exp);
    let mut got: HashMap<Uuid, Got> = HashMap::new();
    {
        let mut rows = sqlx::query(
            "SELECT workflow_id, seq, hash FROM arbor_events WHERE workflow_id = ANY($1) ORDER BY seq",
        )
        .bind(&ids)
        .fetch(pool);
        while let Some(row) = rows.try_next().await.map_err(pg)? {
            let wf: Uuid = row.try_get(0).map_err(pg)?;
            let seq: i64 = row.try_get(1).map_err(pg)?;
            let hash: String = row.try_get(2).map_err(pg)?;
            let g = got.entry(wf).or_default();
            g.events += 1;
            feed(&mut g.event_digest, seq as u64, hash.as_bytes());
        }
    }
    {
        let mut rows = sqlx::query(
            "SELECT workflow_id, seq, id FROM arbor_nodes WHERE workflow_id = ANY($1) ORDER BY seq",
        )
        .bind(&ids)
        .fetch(pool);
        while let Some(row) = rows.try_next().await.map_err(pg)? {
            let wf: Uuid = row.try_get(0).map_err(pg)?;
            let seq: i64 = row.try_get(1).map_err(pg)?;
            let id: Uuid = row.try_get(2).map_err(pg)?;
            let g = got.entry(wf).or_default();
            g.nodes += 1;
            feed(&mut g.node_digest, seq as u64, id.as_bytes());
        }
    }
    let edges: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
        "SELECT workflow_id, count(*) FROM arbor_all_edges WHERE workflow_id = ANY($1) GROUP BY 1",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .map_err(pg)?
    .into_iter()
    .collect();
    let wfs: HashMap<Uuid, (Option<String>, i64)> =
        sqlx::query_as::<_, (Uuid, Option<String>, i64)>(
            "SELECT workflow_id, status, last_seq FROM arbor_workflows WHERE workflow_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(pool)
        .await
        .map_err(pg)?
        .into_iter()
        .map(|(w, s, l)| (w, (s, l)))
        .collect();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM arbor_events")
        .fetch_one(pool)
        .await
        .map_err(pg)?;
    d.check(
        None,
        "events_total",
        exp.values().map(|e| e.events).sum::<u64>(),
        total,
    );
    for wf in ids {
        let (Some(e), g) = (exp.get(&wf), got.remove(&wf).unwrap_or_default()) else {
            continue;
        };
        let w = Some(wf);
        d.check(w, "events", e.events, g.events);
        d.check(
            w,
            "event_digest",
            e.event_digest.finalize().to_hex(),
            digest(&g.event_digest),
        );
        d.check(w, "nodes", e.nodes, g.nodes);
        d.check(
            w,
            "node_digest",
            e.node_digest.finalize().to_hex(),
            digest(&g.node_digest),
        );
        d.check(w, "edges", e.edges, edges.get(&wf).copied().unwrap_or(0));
        if e.events > 0 {
            let (status, last) = wfs.get(&wf).cloned().unwrap_or((None, 0));
            d.check(
                w,
                "status",
                e.status.map_or("", |s| s.as_str()),
                status.unwrap_or_default(),
            );
            d.check(w, "last_seq", e.last_seq, last);
        }
    }
    Ok(())
}

async fn verify_neo4j(
    store: &Store,
    config: &SyncConfig,
    head: Seq,
    exp: &HashMap<Uuid, Expect>,
    d: &mut Diffs<'_>,
) -> Result<(), SinkError> {
    let Some(cfg) = &config.neo4j else {
        return Ok(());
    };
    let cursor = store
        .cursor(neo4j::NAME)
        .map_err(|e| SinkError::retriable(format!("arbor store: {e}")))?
        .unwrap_or(0);
    d.check(None, "cursor", head, cursor);
    let graph = neo4j::connect(cfg).await?;
    let ids = wf_ids(exp);
    let mut got: HashMap<Uuid, Got> = HashMap::new();
    let mut rels: HashMap<Uuid, i64> = HashMap::new();
    let mut statuses: HashMap<Uuid, String> = HashMap::new();
    for chunk in ids.chunks(1000) {
        let wfs: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
        let wfs_status = wfs.clone();
        let q = neo4rs::query(
            "UNWIND $wfs AS wf MATCH (n:WorkflowNode {workflow_id: wf}) \
             RETURN wf, n.seq AS seq, n.id AS id ORDER BY seq",
        )
        .param("wfs", wfs.clone());
        let rows = neo4j::read_rows(&graph, q, |r| {
            Ok((
                r.get::<String>("wf")?,
                r.get::<i64>("seq")?,
                r.get::<String>("id")?,
            ))
        })
        .await?;
        for (wf, seq, id) in rows {
            let (Ok(wf), Ok(id)) = (Uuid::parse_str(&wf), Uuid::parse_str(&id)) else {
                continue;
            };
            let g = got.entry(wf).or_default();
            g.nodes += 1;
            feed(&mut g.node_digest, seq as u64, id.as_bytes());
        }
        let q = neo4rs::query(
            "UNWIND $wfs AS wf MATCH (n:WorkflowNode {workflow_id: wf})-[r]->(:WorkflowNode) \
             RETURN wf, count(r) AS c",
        )
        .param("wfs", wfs);
        let counts = neo4j::read_rows(&graph, q, |r| {
            Ok((r.get::<String>("wf")?, r.get::<i64>("c")?))
        })
        .await?;
        for (wf, c) in counts {
            if let Ok(wf) = Uuid::parse_str(&wf) {
                rels.insert(wf, c);
            }
        }
        let q = neo4rs::query(
            "UNWIND $wfs AS wf MATCH (w:Workflow {id: wf}) RETURN wf, coalesce(w.status, '') AS s",
        )
        .param("wfs", wfs_status);
        let found = neo4j::read_rows(&graph, q, |r| {
            Ok((r.get::<String>("wf")?, r.get::<String>("s")?))
        })
        .await?;
        for (wf, st) in found {
            if let Ok(wf) = Uuid::parse_str(&wf) {
                statuses.insert(wf, st);
            }
        }
    }
    for wf in ids {
        let (Some(e), g) = (exp.get(&wf), got.remove(&wf).unwrap_or_default()) else {
            continue;
        };
        let w = Some(wf);
        d.check(w, "nodes", e.nodes, g.nodes);
        d.check(
            w,
            "node_digest",
            e.node_digest.finalize().to_hex(),
            digest(&g.node_digest),
        );
        d.check(w, "edges", e.edges, rels.get(&wf).copied().unwrap_or(0));
        if e.events > 0 {
            d.check(
                w,
                "status",
                e.status.map_or("", |s| s.as_str()),
                statuses.get(&wf).map_or("", String::as_str),
            );
        }
    }
    Ok(())
}

async fn verify_redis(
    store: &Store,
    config: &SyncConfig,
    head: Seq,
    exp: &HashMap<Uuid, Expect>,
    d: &mut Diffs<'_>,
) -> Result<(), SinkError> {
    let url = config.redis_url.as_deref().unwrap_or_default();
    let cursor = store
        .cursor(redis::NAME)
        .map_err(|e| SinkError::retriable(format!("arbor store: {e}")))?
        .unwrap_or(0);
    d.check(None, "cursor", head, cursor);
    let dead = excluded(store, redis::NAME)
        .map_err(|e| SinkError::retriable(format!("arbor store: {e}")))?;
    let mut sink = redis::RedisSink::new(url, config.redis_maxlen, store.id())?;
    let mut conn = sink.connection().await?;
    for wf in wf_ids(exp) {
        let Some(e) = exp.get(&wf) else { continue };
        if e.events == 0 {
            // Every event of it is a dead letter (reported apart): nothing to hold, and
            // its keys may belong to something else (the cause of the dead letters).
            continue;
        }
        let w = Some(wf);
        let got = redis::read_workflow(&mut conn, &wf).await?;
        let want_min = match config.redis_maxlen {
            0 => e.events,
            n => e.events.min(n as u64),
        };
        if (got.entries.len() as u64) < want_min {
            d.check(w, "stream_len", format!(">= {want_min}"), got.entries.len());
        }
        if let Some((first, _, _)) = got.entries.first() {
            // The log's events of this workflow from the first retained entry on.
            let events = store
                .read_workflow_events(&wf, first.saturating_sub(1), got.entries.len() + 1)
                .map_err(|e| SinkError::retriable(format!("arbor store: {e}")))?
                .unwrap_or_default();
            let want: Vec<(Seq, String)> = events
                .iter()
                .filter(|ev| !dead.contains(&ev.seq))
                .map(|ev| (ev.seq, ev.hash.clone()))
                .collect();
            let have: Vec<(Seq, String)> = got
                .entries
                .iter()
                .map(|(seq, _, json)| {
                    let hash = serde_json::from_str::<serde_json::Value>(json)
                        .ok()
                        .and_then(|v| v.get("hash").and_then(|h| h.as_str()).map(str::to_owned))
                        .unwrap_or_default();
                    (*seq, hash)
                })
                .collect();
            if want != have {
                let first_diff = want
                    .iter()
                    .zip(&have)
                    .position(|(a, b)| a != b)
                    .unwrap_or(want.len().min(have.len()));
                d.check(
                    w,
                    "stream",
                    format!(
                        "{} entries, #{first_diff} = {:?}",
                        want.len(),
                        want.get(first_diff)
                    ),
                    format!(
                        "{} entries, #{first_diff} = {:?}",
                        have.len(),
                        have.get(first_diff)
                    ),
                );
            }
        }
        if e.events > 0 {
            let last = got.status.get("last_seq").cloned().unwrap_or_default();
            d.check(w, "last_seq", e.last_seq, last);
            let status = got.status.get("status").cloned().unwrap_or_default();
            d.check(w, "status", e.status.map_or("", |s| s.as_str()), status);
        }
    }
    Ok(())
}
