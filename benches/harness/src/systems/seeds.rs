//! Baseline (a), the seeds' own design: every event is one Cypher statement in Neo4j
//! (`MATCH (parent:Node {id}) CREATE (n:Node {…}) CREATE (parent)-[:PARENT_OF]->(n)`,
//! verbatim from `WorkflowEventEmitter.emit`), then `PUBLISH workflow:{id}` on Redis.
//! Path to root is the seeds' Cypher with the direction corrected (DESIGN §7).
//!
//! Two departures from the seeds, both in the baseline's favour or needed to run:
//! - an index on `:Node(id)` (the uniqueness constraint the sync sink also creates),
//!   which the seeds list as an open question; without it every `MATCH` scans;
//! - `metadata` is stored as a JSON string: Neo4j refuses a map as a property value,
//!   so the seeds' query fails for any event with metadata.

use std::time::Duration;

use anyhow::{bail, Context};
use neo4rs::{query, BoltList, BoltMap, BoltString, BoltType, ConfigBuilder, Graph};
use redis::aio::MultiplexedConnection;
use uuid::Uuid;

use super::redis::event_json;
use crate::workload::{NodeOp, Op};

/// The seeds' event emitter: Neo4j plus Redis pub/sub.
#[derive(Clone)]
pub struct Seeds {
    /// Neo4j.
    pub graph: Neo4j,
    redis: MultiplexedConnection,
}

/// A Neo4j connection pool.
#[derive(Clone)]
pub struct Neo4j {
    graph: Graph,
}

/// The seeds' `emit` statement.
const EMIT: &str = "MATCH (parent:Node {id: $parentId}) \
     CREATE (n:Node {id: $id, workflow_id: $workflowId, type: $type, content: $content, \
     metadata: $metadata, timestamp: datetime()}) \
     CREATE (parent)-[:PARENT_OF]->(n)";

/// The seeds' path-to-root query, direction corrected (root first, incoming PARENT_OF).
pub const PATH_TO_ROOT: &str = "MATCH p = (root:Node)-[:PARENT_OF*]->(n:Node {id: $id}) \
     WHERE NOT ()-[:PARENT_OF]->(root) RETURN nodes(p) AS nodes";

/// Subtree: the node and everything below it.
pub const SUBTREE: &str =
    "MATCH (r:Node {id: $id})-[:PARENT_OF*0..]->(n:Node) RETURN n.id AS id, n.content AS content";

fn s(v: impl Into<String>) -> BoltType {
    BoltType::String(BoltString::from(v.into()))
}

impl Neo4j {
    /// Connects with a pool of `pool` connections and makes sure `:Node(id)` is indexed.
    pub async fn connect(
        url: &str,
        user: &str,
        password: &str,
        pool: usize,
    ) -> anyhow::Result<Neo4j> {
        let config = ConfigBuilder::default()
            .uri(url)
            .user(user)
            .password(password)
            .max_connections(pool.max(1))
            .fetch_size(2_000)
            .build()
            .context("neo4j configuration")?;
        let graph = Graph::connect(config)
            .await
            .with_context(|| format!("connecting to neo4j at {url}"))?;
        let n = Neo4j { graph };
        tokio::time::timeout(Duration::from_secs(60), n.schema())
            .await
            .context("neo4j schema: no answer within 60 s")??;
        Ok(n)
    }

    async fn schema(&self) -> anyhow::Result<()> {
        // The same statement as the arbor sync sink, so both can share a database.
        self.graph
            .run(query(
                "CREATE CONSTRAINT arbor_node_id IF NOT EXISTS FOR (n:Node) REQUIRE n.id IS UNIQUE",
            ))
            .await
            .context("creating the :Node(id) constraint")?;
        self.graph
            .run(query("CALL db.awaitIndexes(60)"))
            .await
            .context("waiting for indexes")?;
        Ok(())
    }

    /// Creates a root node (the system prompt).
    pub async fn create_root(&self, wf: Uuid, root: Uuid, content: &str) -> anyhow::Result<()> {
        self.graph
            .run(
                query(
                    "CREATE (:Node {id: $id, workflow_id: $wf, type: 'system', content: $content, \
                     metadata: '{}', timestamp: datetime()})",
                )
                .param("id", root.to_string())
                .param("wf", wf.to_string())
                .param("content", content),
            )
            .await?;
        Ok(())
    }

    /// Loads nodes in bulk (fixtures for the read scenarios): nodes first, then their
    /// PARENT_OF edges, `UNWIND`ed in chunks of 1 000.
    pub async fn load(&self, wf: Uuid, nodes: &[NodeOp]) -> anyhow::Result<()> {
        for chunk in nodes.chunks(1_000) {
            let rows: Vec<BoltType> = chunk
                .iter()
                .map(|n| {
                    let mut m = BoltMap::with_capacity(5);
                    m.put(BoltString::from("id"), s(n.id.to_string()));
                    m.put(BoltString::from("parent"), s(n.parent_id.to_string()));
                    m.put(BoltString::from("type"), s(n.node_type.clone()));
                    m.put(BoltString::from("content"), s(n.content.clone()));
                    m.put(
                        BoltString::from("metadata"),
                        s(serde_json::to_string(&n.metadata)?),
                    );
                    Ok(BoltType::Map(m))
                })
                .collect::<anyhow::Result<_>>()?;
            let rows = BoltType::List(BoltList::from(rows));
            self.graph
                .run(
                    query(
                        "UNWIND $rows AS r CREATE (:Node {id: r.id, workflow_id: $wf, \
                         type: r.type, content: r.content, metadata: r.metadata, \
                         timestamp: datetime()})",
                    )
                    .param("rows", rows.clone())
                    .param("wf", wf.to_string()),
                )
                .await?;
            self.graph
                .run(
                    query(
                        "UNWIND $rows AS r MATCH (p:Node {id: r.parent}) \
                         MATCH (c:Node {id: r.id}) CREATE (p)-[:PARENT_OF]->(c)",
                    )
                    .param("rows", rows),
                )
                .await?;
        }
        Ok(())
    }

    async fn count(&self, q: &str, id: Uuid) -> anyhow::Result<usize> {
        let mut rows = self
            .graph
            .execute(query(q).param("id", id.to_string()))
            .await?;
        let mut n = 0usize;
        while let Some(row) = rows.next().await? {
            let _: String = row.get("id")?;
            let _: String = row.get("content")?;
            n += 1;
        }
        Ok(n)
    }

    async fn path_rows(&self, id: Uuid) -> anyhow::Result<usize> {
        let mut rows = self
            .graph
            .execute(query(PATH_TO_ROOT).param("id", id.to_string()))
            .await?;
        let mut len = 0;
        while let Some(row) = rows.next().await? {
            let nodes: Vec<neo4rs::Node> = row.get("nodes")?;
            len = len.max(nodes.len());
        }
        Ok(len)
    }

    /// Runs `fut` (a query whose text is `q`) for at most `limit`; past it, terminates
    /// the query's transaction on the server (so it stops using the server's CPU) and
    /// fails.
    async fn bounded(
        &self,
        q: &str,
        limit: Duration,
        fut: impl std::future::Future<Output = anyhow::Result<usize>>,
    ) -> anyhow::Result<usize> {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => {
                let terminated = self.terminate(q).await;
                bail!(
                    "no answer within {limit:?} ({})",
                    match terminated {
                        Ok(n) => format!("{n} transaction(s) terminated on the server"),
                        Err(e) => format!("could not terminate it: {e:#}"),
                    }
                )
            }
        }
    }

    /// Terminates running transactions whose current query is `q`.
    async fn terminate(&self, q: &str) -> anyhow::Result<usize> {
        let mut rows = self
            .graph
            .execute(
                query(
                    "SHOW TRANSACTIONS YIELD transactionId, currentQuery \
                     WHERE currentQuery = $q RETURN transactionId",
                )
                .param("q", q),
            )
            .await?;
        let mut ids: Vec<String> = Vec::new();
        while let Some(row) = rows.next().await? {
            ids.push(row.get("transactionId")?);
        }
        if !ids.is_empty() {
            self.graph
                .run(query("TERMINATE TRANSACTIONS $ids").param("ids", ids.clone()))
                .await?;
        }
        Ok(ids.len())
    }

    /// The seeds' path to root (corrected), decoded, within `limit`; returns the number
    /// of nodes.
    pub async fn path(&self, id: Uuid, limit: Duration) -> anyhow::Result<usize> {
        self.bounded(PATH_TO_ROOT, limit, self.path_rows(id)).await
    }

    /// The subtree below `id` (itself included), within `limit`; returns the number of
    /// nodes.
    pub async fn subtree(&self, id: Uuid, limit: Duration) -> anyhow::Result<usize> {
        self.bounded(SUBTREE, limit, self.count(SUBTREE, id)).await
    }

    /// Nodes of workflow `wf`.
    pub async fn node_count(&self, wf: Uuid) -> anyhow::Result<usize> {
        let mut rows = self
            .graph
            .execute(
                query("MATCH (n:Node {workflow_id: $wf}) RETURN count(n) AS c")
                    .param("wf", wf.to_string()),
            )
            .await?;
        match rows.next().await? {
            Some(row) => Ok(usize::try_from(row.get::<i64>("c")?)?),
            None => bail!("count returned no row"),
        }
    }

    /// Deletes workflow `wf` (so repeated runs do not grow the database).
    pub async fn delete_workflow(&self, wf: Uuid) -> anyhow::Result<()> {
        self.graph
            .run(
                query("MATCH (n:Node {workflow_id: $wf}) DETACH DELETE n")
                    .param("wf", wf.to_string()),
            )
            .await?;
        Ok(())
    }
}

impl Seeds {
    /// Connects to both.
    pub async fn connect(graph: Neo4j, redis: MultiplexedConnection) -> Seeds {
        Seeds { graph, redis }
    }

    /// Applies one op as the seeds do: Cypher, then PUBLISH of the event JSON.
    pub async fn apply(&self, wf: Uuid, op: &Op) -> anyhow::Result<()> {
        match op {
            Op::Node(n) => {
                let metadata = serde_json::to_string(&n.metadata)?;
                self.graph
                    .graph
                    .run(
                        query(EMIT)
                            .param("parentId", n.parent_id.to_string())
                            .param("id", n.id.to_string())
                            .param("workflowId", wf.to_string())
                            .param("type", n.node_type.as_str())
                            .param("content", n.content.as_str())
                            .param("metadata", metadata),
                    )
                    .await?;
            }
            Op::Edge { kind, from, to } => {
                // Relationship types cannot be parameters; `kind` is one of ours.
                let q = format!(
                    "MATCH (a:Node {{id: $from}}) MATCH (b:Node {{id: $to}}) CREATE (a)-[:{}]->(b)",
                    kind.as_str()
                );
                self.graph
                    .graph
                    .run(
                        query(&q)
                            .param("from", from.to_string())
                            .param("to", to.to_string()),
                    )
                    .await?;
            }
            Op::Choose { decision, option } => {
                self.graph
                    .graph
                    .run(
                        query(
                            "MATCH (d:Node {id: $from}) MATCH (o:Node {id: $to}) \
                             CREATE (d)-[:CHOSEN_OPTION]->(o)",
                        )
                        .param("from", decision.to_string())
                        .param("to", option.to_string()),
                    )
                    .await?;
            }
        }
        let event = event_json(wf, op)?;
        let mut r = self.redis.clone();
        redis::cmd("PUBLISH")
            .arg(format!("workflow:{wf}"))
            .arg(event)
            .query_async::<i64>(&mut r)
            .await?;
        Ok(())
    }
}
