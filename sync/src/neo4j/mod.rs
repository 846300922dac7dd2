//! The Neo4j sink (neo4rs): the seeds' graph, built so that no event order loses data.
//!
//! - At start: a uniqueness constraint on `Node.id` and indexes on `Node.workflow_id`,
//!   `Node.branch_id` and `Node.agent_id` (`IF NOT EXISTS`); then it waits until they
//!   are online and plans the batch statements once with no rows.
//! - Per batch, `UNWIND $rows AS row MERGE …` statements in one transaction — or, for a
//!   batch of at least 2 × [`MIN_PART_EVENTS`] events, in [`PARALLEL_TXNS`] concurrent
//!   transactions of whole workflows each ([`partition`]), since Neo4j runs one
//!   transaction on one thread. Nodes are
//!   `MERGE (n:Node {id})` then `SET n:WorkflowNode, n.… = row.…`; the parent is
//!   `MERGE`d as a placeholder `(:Node {id})` (no `WorkflowNode` label, no properties)
//!   when it has not arrived yet, and `MERGE (parent)-[:PARENT_OF]->(n)`. The seeds'
//!   `MATCH (parent) … CREATE` silently drops the edge in that case. Typed edges
//!   (MONITORS, OPTION_OF — explicit or implied by an option under a decision —,
//!   CHOSEN_OPTION) merge both ends the same way. Every statement is a MERGE, so a
//!   replayed batch changes nothing. `metadata` and `payload` are stored as JSON
//!   strings; `timestamp` as a Neo4j `datetime`; `seq` and `depth` as integers.
//! - Metadata keys whose value is a string, a number or a boolean are also properties,
//!   named [`META_PREFIX`] + the key (`n.meta_model` for `{"model": …}`: Neo4j has no
//!   map-valued properties, so `n.metadata.model` cannot work; no property of arbor's
//!   own starts with `meta_`). Arrays, objects and nulls stay in the JSON string only.
//! - Workflows: `(:Workflow {id})` with `status` (kept by its seq, `status_seq`, so a
//!   replayed older event never rolls it back), `root_id`, `user_id`, `metadata` (JSON)
//!   and its scalar metadata keys as `meta_` properties, and `(w)-[:HAS_ROOT]->(root)`.
//! - The cursor lives in arbor.
//!
//! # Path to root
//!
//! Edges point parent → child, so the path from a node up to the root follows
//! *incoming* `PARENT_OF` edges. The seeds' `(n)-[:PARENT_OF*]->(root)` walks outgoing
//! edges, i.e. *down* into the subtree, and finds nothing useful. The correct query
//! (`sync/tests/neo4j.rs` runs both, and compares this one's answers with the store's
//! own `path`):
//!
//! ```cypher
//! MATCH path = (root:Node)-[:PARENT_OF*0..]->(n:Node {id: $nodeId})
//! WHERE NOT ()-[:PARENT_OF]->(root)
//! RETURN path          // nodes(path) runs root … n
//! ```
//!
//! Errors: `Neo.ClientError.Statement.*` / `Neo.ClientError.Schema.*` (the data is
//! refused: a type, an argument, a value too large to index) and values too large for
//! Bolt are permanent; security, transient and database errors are retriable; anything
//! else (the connection) is lost: the driver runs `setup` again, on a new pool.

use arbor_storage::{EdgeKind, EventBody, Seq};
use neo4rs::{query, BoltList, BoltMap, BoltNull, BoltString, BoltType, ConfigBuilder, Graph};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Redactor, SinkError};
use crate::sink::{edge_keys, status_after, Audit, CursorHome, Item, Sink, Tally};
pub use crate::sink::{partition, MIN_PART_EVENTS, PARALLEL_TXNS};

/// Sink name (cursor and dead-letter key).
pub const NAME: &str = "neo4j";

/// Schema statements run at start.
pub const SCHEMA: [&str; 5] = [
    "CREATE CONSTRAINT arbor_node_id IF NOT EXISTS FOR (n:Node) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT arbor_workflow_id IF NOT EXISTS FOR (w:Workflow) REQUIRE w.id IS UNIQUE",
    "CREATE INDEX arbor_node_workflow IF NOT EXISTS FOR (n:Node) ON (n.workflow_id)",
    "CREATE INDEX arbor_node_branch IF NOT EXISTS FOR (n:Node) ON (n.branch_id)",
    "CREATE INDEX arbor_node_agent IF NOT EXISTS FOR (n:Node) ON (n.agent_id)",
];

/// Run after [`SCHEMA`]: returns once every index is online (at most 100 s, within the
/// driver's write timeout; a setup that gives up is run again).
const AWAIT_INDEXES: &str = "CALL db.awaitIndexes(100)";

const MERGE_NODES: &str = "UNWIND $rows AS row \
     MERGE (n:Node {id: row.id}) \
     SET n:WorkflowNode, n.workflow_id = row.workflow_id, n.parent_id = row.parent_id, \
         n.type = row.type, n.role = row.role, n.content = row.content, n.payload = row.payload, \
         n.metadata = row.metadata, n.agent_id = row.agent_id, n.user_id = row.user_id, \
         n.branch_id = row.branch_id, n.depth = row.depth, n.seq = row.seq, \
         n.timestamp = datetime(row.timestamp) \
     SET n += row.meta \
     WITH n, row WHERE row.parent_id IS NOT NULL \
     MERGE (p:Node {id: row.parent_id}) \
     MERGE (p)-[r:PARENT_OF]->(n) ON CREATE SET r.seq = row.seq";

/// Workflow rows, in seq order: a `workflow.created` (with `root_id`) or a status
/// change. A status is set only by an event at least as late as the one that set it.
const MERGE_WORKFLOWS: &str = "UNWIND $rows AS row \
     MERGE (w:Workflow {id: row.id}) \
     FOREACH (_ IN CASE WHEN row.root_id IS NULL THEN [] ELSE [1] END | \
         SET w.root_id = row.root_id, w.user_id = row.user_id, w.metadata = row.metadata, \
             w.created_seq = row.seq, w += row.meta \
         MERGE (r:Node {id: row.root_id}) \
         MERGE (w)-[:HAS_ROOT]->(r)) \
     FOREACH (_ IN CASE WHEN coalesce(w.status_seq, 0) <= row.seq THEN [1] ELSE [] END | \
         SET w.status = row.status, w.status_seq = row.seq)";

/// Prefix of the properties that project a node's (or workflow's) scalar metadata keys.
pub const META_PREFIX: &str = "meta_";

/// The scalar keys of `metadata` as `meta_` properties.
fn meta_props(metadata: &serde_json::Map<String, Value>) -> BoltType {
    let mut m = BoltMap::with_capacity(metadata.len());
    for (k, v) in metadata {
        let v = match v {
            Value::String(t) => s(t.clone()),
            Value::Bool(b) => BoltType::from(*b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => BoltType::from(i),
                (None, Some(f)) => BoltType::from(f),
                (None, None) => continue,
            },
            Value::Null | Value::Array(_) | Value::Object(_) => continue,
        };
        m.put(BoltString::from(format!("{META_PREFIX}{k}")), v);
    }
    BoltType::Map(m)
}

fn merge_edges(kind: EdgeKind) -> String {
    format!(
        "UNWIND $rows AS row \
         MERGE (a:Node {{id: row.from}}) \
         MERGE (b:Node {{id: row.to}}) \
         MERGE (a)-[r:{}]->(b) ON CREATE SET r.seq = row.seq",
        kind.as_str()
    )
}

/// Connection settings.
#[derive(Clone)]
pub struct Neo4jConfig {
    /// `bolt://host:port` (or `neo4j://…`).
    pub url: String,
    /// User.
    pub user: String,
    /// Password (never printed: see the `Debug` impl).
    pub password: String,
}

impl std::fmt::Debug for Neo4jConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neo4jConfig")
            .field("url", &crate::error::redact_urls(&self.url))
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// Connects (lazily: the pool opens connections on first use).
pub async fn connect(cfg: &Neo4jConfig) -> Result<Graph, SinkError> {
    let redactor = Redactor::new([cfg.password.clone()]);
    let config = ConfigBuilder::default()
        .uri(cfg.url.as_str())
        .user(cfg.user.as_str())
        .password(cfg.password.as_str())
        .max_connections(4)
        .fetch_size(1000)
        .build()
        .map_err(|e| {
            SinkError::permanent(format!("invalid neo4j config: {e}")).redacted(&redactor)
        })?;
    Graph::connect(config)
        .await
        .map_err(|e| classify(&e).redacted(&redactor))
}

/// Permanent when Neo4j refuses the data, retriable when it answers with another
/// error, lost when it does not answer.
pub fn classify(e: &neo4rs::Error) -> SinkError {
    use neo4rs::Error as E;
    match e {
        E::Neo4j(n) => {
            let code = n.code();
            let data = code.starts_with("Neo.ClientError.Statement.")
                || code.starts_with("Neo.ClientError.Schema.")
                || n.message().contains("too large to index");
            if data {
                SinkError::permanent(format!("neo4j refused the data: {e}"))
            } else {
                SinkError::retriable(format!("neo4j: {e}"))
            }
        }
        E::StringTooLong | E::MapTooBig | E::BytesTooBig | E::ListTooLong => {
            SinkError::permanent(format!("neo4j: value too large for bolt: {e}"))
        }
        _ => SinkError::lost(format!("neo4j unavailable: {e}")),
    }
}

/// A JSON-ish value as a Bolt value.
fn s(v: impl Into<String>) -> BoltType {
    BoltType::String(BoltString::from(v.into()))
}

fn opt(v: Option<String>) -> BoltType {
    v.map_or(BoltType::Null(BoltNull), s)
}

fn int(v: u64) -> BoltType {
    BoltType::from(i64::try_from(v).unwrap_or(i64::MAX))
}

fn map(fields: Vec<(&str, BoltType)>) -> BoltType {
    let mut m = BoltMap::with_capacity(fields.len());
    for (k, v) in fields {
        m.put(BoltString::from(k), v);
    }
    BoltType::Map(m)
}

fn list(items: Vec<BoltType>) -> BoltType {
    BoltType::List(BoltList::from(items))
}

/// The Neo4j sink.
pub struct Neo4jSink {
    /// Connection settings.
    config: Neo4jConfig,
    /// The pool, created by `setup`.
    graph: Option<Graph>,
    /// Masks the password.
    redactor: Redactor,
}

impl Neo4jSink {
    /// A sink for `config` (not connected yet).
    pub fn new(config: Neo4jConfig) -> Neo4jSink {
        let redactor = Redactor::new([config.password.clone()]);
        Neo4jSink {
            config,
            graph: None,
            redactor,
        }
    }

    async fn graph(&mut self) -> Result<Graph, SinkError> {
        if let Some(g) = &self.graph {
            return Ok(g.clone());
        }
        let g = connect(&self.config).await?;
        self.graph = Some(g.clone());
        Ok(g)
    }

    /// Writes `batch` as [`PARALLEL_TXNS`] concurrent transactions, one per group of
    /// whole workflows (see [`partition`]); waits for all of them, then returns the first
    /// error. One that committed while another failed is harmless: the driver applies the
    /// batch again, and every statement is a MERGE.
    async fn write(&mut self, batch: &[Item]) -> Result<(), SinkError> {
        let graph = self.graph().await?;
        let txns = partition(batch, PARALLEL_TXNS, MIN_PART_EVENTS)
            .into_iter()
            .map(|part| statements(&part))
            .filter(|statements| !statements.is_empty())
            .map(|statements| {
                let graph = graph.clone();
                async move { in_txn(&graph, statements).await }
            });
        for result in futures_util::future::join_all(txns).await {
            result.map_err(|e| classify(&e))?;
        }
        Ok(())
    }
}

/// The statements that write `items` (in their order), none if they write nothing.
fn statements(items: &[&Item]) -> Vec<neo4rs::Query> {
    let mut nodes = Vec::new();
    let mut edges: [Vec<BoltType>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut workflows = Vec::new();
    for item in items {
        let e = &item.event;
        match &e.body {
            EventBody::WorkflowCreated(c) => workflows.push(map(vec![
                ("id", s(e.workflow_id.to_string())),
                ("seq", int(e.seq)),
                ("status", s("running")),
                ("root_id", s(c.root.id.to_string())),
                ("user_id", opt(c.user_id.clone())),
                ("metadata", s(Value::Object(c.metadata.clone()).to_string())),
                ("meta", meta_props(&c.metadata)),
            ])),
            EventBody::StatusChanged(st) => workflows.push(map(vec![
                ("id", s(e.workflow_id.to_string())),
                ("seq", int(e.seq)),
                ("status", s(st.to.as_str())),
                ("root_id", BoltType::Null(BoltNull)),
            ])),
            _ => {}
        }
        if let Some(n) = item.node() {
            nodes.push(map(vec![
                ("id", s(n.id.to_string())),
                ("workflow_id", s(n.workflow_id.to_string())),
                ("parent_id", opt(n.parent_id.map(|p| p.to_string()))),
                ("type", s(n.node_type.clone())),
                ("role", opt(n.role.map(|r| r.as_str().to_owned()))),
                ("content", s(n.content.clone())),
                ("payload", s(n.payload.to_string())),
                ("metadata", s(Value::Object(n.metadata.clone()).to_string())),
                ("agent_id", opt(n.agent_id.clone())),
                ("user_id", opt(n.user_id.clone())),
                ("branch_id", s(n.branch_id.to_string())),
                ("depth", int(u64::from(n.depth))),
                ("seq", int(n.seq)),
                ("timestamp", s(n.timestamp.to_string())),
                ("meta", meta_props(&n.metadata)),
            ]));
        }
        for e in item.edges() {
            let slot = match e.kind {
                EdgeKind::ParentOf => continue, // merged with the node
                EdgeKind::Monitors => 0,
                EdgeKind::OptionOf => 1,
                EdgeKind::ChosenOption => 2,
            };
            edges[slot].push(map(vec![
                ("from", s(e.from.to_string())),
                ("to", s(e.to.to_string())),
                ("seq", int(e.seq)),
            ]));
        }
    }
    let mut statements = Vec::new();
    if !nodes.is_empty() {
        statements.push(query(MERGE_NODES).param("rows", list(nodes)));
    }
    if !workflows.is_empty() {
        statements.push(query(MERGE_WORKFLOWS).param("rows", list(workflows)));
    }
    for (rows, kind) in edges.into_iter().zip([
        EdgeKind::Monitors,
        EdgeKind::OptionOf,
        EdgeKind::ChosenOption,
    ]) {
        if !rows.is_empty() {
            statements.push(query(&merge_edges(kind)).param("rows", list(rows)));
        }
    }
    statements
}

/// Runs `statements` in one explicit transaction. Never through `Graph::run`/`execute`:
/// neo4rs 0.8 retries those for up to a minute when it cannot get a connection (it
/// turns every pool error into a transient one), so a dead server would look like a
/// slow one; here it fails at once, and the driver's own backoff and timeouts apply.
async fn in_txn(
    graph: &Graph,
    statements: impl IntoIterator<Item = neo4rs::Query>,
) -> Result<(), neo4rs::Error> {
    let mut txn = graph.start_txn().await?;
    for q in statements {
        txn.run(q).await?;
    }
    txn.commit().await
}

/// Runs the read-only `q` in a transaction of its own (see [`in_txn`] for why) and
/// decodes each row with `f`.
pub async fn read_rows<T>(
    graph: &Graph,
    q: neo4rs::Query,
    mut f: impl FnMut(&neo4rs::Row) -> Result<T, neo4rs::DeError>,
) -> Result<Vec<T>, SinkError> {
    let mut txn = graph.start_txn().await.map_err(|e| classify(&e))?;
    let mut stream = txn.execute(q).await.map_err(|e| classify(&e))?;
    let mut out = Vec::new();
    while let Some(row) = stream.next(txn.handle()).await.map_err(|e| classify(&e))? {
        out.push(f(&row).map_err(|e| SinkError::retriable(format!("neo4j row: {e}")))?);
    }
    txn.commit().await.map_err(|e| classify(&e))?;
    Ok(out)
}

/// What the graph holds of one workflow up to a seq: its `:WorkflowNode` seqs.
const AUDIT_NODES: &str = "MATCH (n:Node {workflow_id: $wf}) \
     WHERE n:WorkflowNode AND n.seq <= $upto RETURN collect(n.seq) AS seqs";

/// … the relationships into its nodes, as `TYPE from to`.
const AUDIT_RELS: &str = "MATCH (a:Node)-[r]->(b:Node {workflow_id: $wf}) \
     WHERE r.seq <= $upto RETURN collect(type(r) + ' ' + a.id + ' ' + b.id) AS rels";

/// … and its `(:Workflow)`: status, and whether it points at its root.
const AUDIT_WORKFLOW: &str = "OPTIONAL MATCH (w:Workflow {id: $wf}) \
     OPTIONAL MATCH (w)-[h:HAS_ROOT]->(:WorkflowNode) \
     RETURN coalesce(w.status, '') AS status, count(h) AS roots";

impl Sink for Neo4jSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cursor_home(&self) -> CursorHome {
        CursorHome::Arbor
    }

    /// Connects on a new pool, then the schema.
    async fn setup(&mut self) -> Result<(), SinkError> {
        self.graph = None;
        let graph = self.graph().await?;
        // The schema; then wait until its indexes are online (a MERGE on an index still
        // populating scans the label), and plan the batch statements once with no rows, so
        // the first real batch does not pay for planning them (Neo4j caches plans by text).
        let warm = [MERGE_NODES.to_owned(), MERGE_WORKFLOWS.to_owned()]
            .into_iter()
            .chain(
                [
                    EdgeKind::Monitors,
                    EdgeKind::OptionOf,
                    EdgeKind::ChosenOption,
                ]
                .map(merge_edges),
            );
        let statements = SCHEMA
            .iter()
            .map(|s| query(s))
            .chain(std::iter::once(query(AWAIT_INDEXES)))
            .chain(warm.map(|q| query(&q).param("rows", list(Vec::new()))));
        // One transaction each: a schema change cannot share one with anything else.
        for stmt in statements {
            if let Err(e) = in_txn(&graph, [stmt]).await {
                // Schema problems are never an event's fault: retry.
                return Err(
                    SinkError::retriable(format!("neo4j schema: {e}")).redacted(&self.redactor)
                );
            }
        }
        Ok(())
    }

    async fn probe(&mut self) -> Result<(), SinkError> {
        let graph = self.graph().await?;
        in_txn(&graph, [query("RETURN 1")])
            .await
            .map_err(|e| classify(&e).redacted(&self.redactor))
    }

    async fn apply(&mut self, batch: &[Item]) -> Result<(), SinkError> {
        self.write(batch)
            .await
            .map_err(|e| e.redacted(&self.redactor))
    }

    /// Three reads: the workflow's node seqs, the relationships into its nodes, and its
    /// `(:Workflow)` (status, `HAS_ROOT`). The repair is [`Sink::apply`] of the whole
    /// workflow: every statement is a MERGE, and the status is kept by its seq.
    async fn audit(&mut self, workflow: Uuid, items: &[Item]) -> Result<Audit, SinkError> {
        let Some(last) = items.last() else {
            return Ok(Audit::InSync);
        };
        let graph = self.graph().await?;
        let q = |text: &str| {
            query(text)
                .param("wf", workflow.to_string())
                .param("upto", int(last.seq()))
        };
        let redact = |e: SinkError| e.redacted(&self.redactor);
        let nodes = read_rows(&graph, q(AUDIT_NODES), |r| r.get::<Vec<i64>>("seqs"))
            .await
            .map_err(redact)?;
        let rels = read_rows(&graph, q(AUDIT_RELS), |r| r.get::<Vec<String>>("rels"))
            .await
            .map_err(redact)?;
        let wf = read_rows(&graph, q(AUDIT_WORKFLOW), |r| {
            Ok((r.get::<String>("status")?, r.get::<i64>("roots")?))
        })
        .await
        .map_err(redact)?;
        let want_nodes: Vec<Seq> = items
            .iter()
            .filter(|i| i.node().is_some())
            .map(Item::seq)
            .collect();
        let have_nodes = nodes
            .into_iter()
            .flatten()
            .map(|s| u64::try_from(s).unwrap_or(0))
            .collect();
        let mut t = Tally::default();
        t.seqs("nodes", &want_nodes, have_nodes);
        t.keys(
            "relationships",
            &edge_keys(items, true),
            &rels.into_iter().flatten().collect(),
        );
        let (status, roots) = wf.into_iter().next().unwrap_or_default();
        t.value(
            "status",
            status_after(items).map_or("", |s| s.as_str()),
            &status,
        );
        let created = items
            .iter()
            .any(|i| matches!(i.event.body, EventBody::WorkflowCreated(_)));
        t.value(
            "HAS_ROOT",
            if created { "1" } else { "0" },
            &roots.to_string(),
        );
        Ok(t.audit())
    }
}
