//! The seeds' queries against the Neo4j replica, corrected, answered in the shapes of
//! [`super::Replica`] so that tests compare them with the store's own answers:
//!
//! - path to root: [`PATH_TO_ROOT`] (incoming `PARENT_OF`), root first (whole nodes);
//! - decision points: decisions by seq, OPTION_OF targets by seq, CHOSEN_OPTION;
//! - branch summary: `MATCH (n:WorkflowNode {workflow_id, branch_id}) … ORDER BY n.seq`
//!   (the seeds order by timestamp, which can tie; seq cannot), fork = first's parent;
//! - cross-branch monitors: `(m)-[r:MONITORS]->(t) WHERE m.branch_id <> t.branch_id`,
//!   by `r.seq`.

use std::collections::HashMap;

use arbor_storage::{Node, Timestamp};
use neo4rs::{query, Graph, Query, Row};
use uuid::Uuid;

use super::{Branch, Decision, Replica};

/// The correct path-to-root query (see the `arbor_sync::neo4j` module docs): edges point
/// parent → child, so the path from a node up to the root follows *incoming*
/// `PARENT_OF` edges. `$nodeId` is the node id; `nodes(path)` runs root … n.
pub const PATH_TO_ROOT: &str = "MATCH path = (root:Node)-[:PARENT_OF*0..]->(n:Node {id: $nodeId}) \
     WHERE NOT ()-[:PARENT_OF]->(root) RETURN path";

/// Projection of node `n` in the column names [`node_of`] reads.
pub const NODE_RETURN: &str =
    "n.id AS id, n.workflow_id AS workflow_id, n.parent_id AS parent_id, \
     n.type AS type, n.role AS role, n.content AS content, n.payload AS payload, \
     n.metadata AS metadata, n.agent_id AS agent_id, n.user_id AS user_id, \
     n.branch_id AS branch_id, n.depth AS depth, n.seq AS seq, \
     n.timestamp.epochSeconds * 1000000 + n.timestamp.microsecond AS ts";

/// Errors of replica reads.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The query failed.
    #[error("neo4j: {0}")]
    Neo4j(#[from] neo4rs::Error),
    /// A row did not decode.
    #[error("neo4j row: {0}")]
    Decode(String),
}

fn de<T>(r: Result<T, impl std::fmt::Display>, what: &str) -> Result<T, ReadError> {
    r.map_err(|e| ReadError::Decode(format!("{what}: {e}")))
}

fn uuid(s: &str) -> Result<Uuid, ReadError> {
    de(Uuid::parse_str(s), "uuid")
}

/// Decodes a node projected with [`NODE_RETURN`].
pub fn node_of(row: &Row) -> Result<Node, ReadError> {
    let id: String = de(row.get("id"), "id")?;
    let wf: String = de(row.get("workflow_id"), "workflow_id")?;
    let parent: Option<String> = de(row.get("parent_id"), "parent_id")?;
    let role: Option<String> = de(row.get("role"), "role")?;
    let payload: String = de(row.get("payload"), "payload")?;
    let metadata: String = de(row.get("metadata"), "metadata")?;
    let branch: String = de(row.get("branch_id"), "branch_id")?;
    let depth: i64 = de(row.get("depth"), "depth")?;
    let seq: i64 = de(row.get("seq"), "seq")?;
    Ok(Node {
        id: uuid(&id)?,
        workflow_id: uuid(&wf)?,
        parent_id: parent.as_deref().map(uuid).transpose()?,
        node_type: de(row.get("type"), "type")?,
        role: role
            .map(|r| de(serde_json::from_value(serde_json::Value::String(r)), "role"))
            .transpose()?,
        content: de(row.get("content"), "content")?,
        payload: de(serde_json::from_str(&payload), "payload")?,
        metadata: de(serde_json::from_str(&metadata), "metadata")?,
        agent_id: de(row.get("agent_id"), "agent_id")?,
        user_id: de(row.get("user_id"), "user_id")?,
        branch_id: uuid(&branch)?,
        depth: de(u32::try_from(depth), "depth")?,
        seq: de(u64::try_from(seq), "seq")?,
        timestamp: Timestamp(de(row.get("ts"), "ts")?),
    })
}

/// Runs `q` and decodes each row with `f`.
pub async fn rows<T>(
    graph: &Graph,
    q: Query,
    mut f: impl FnMut(&Row) -> Result<T, ReadError>,
) -> Result<Vec<T>, ReadError> {
    let mut stream = graph.execute(q).await?;
    let mut out = Vec::new();
    while let Some(row) = stream.next().await? {
        out.push(f(&row)?);
    }
    Ok(out)
}

/// Path root … `id` (empty if unknown).
pub async fn path(graph: &Graph, id: Uuid) -> Result<Vec<Node>, ReadError> {
    let q =
        format!("{PATH_TO_ROOT} AS p UNWIND nodes(p) AS n RETURN {NODE_RETURN} ORDER BY n.depth");
    // PATH_TO_ROOT ends with `RETURN path`; rebind it to unwind its nodes.
    let q = q.replacen("RETURN path AS p", "WITH path AS p", 1);
    rows(graph, query(&q).param("nodeId", id.to_string()), node_of).await
}

/// The nodes with these ids, by id.
pub async fn nodes_by_id(graph: &Graph, ids: &[Uuid]) -> Result<HashMap<Uuid, Node>, ReadError> {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let q = format!("MATCH (n:WorkflowNode) WHERE n.id IN $ids RETURN {NODE_RETURN}");
    let ns = rows(graph, query(&q).param("ids", ids), node_of).await?;
    Ok(ns.into_iter().map(|n| (n.id, n)).collect())
}

/// Decision points of `wf`.
pub async fn decisions(graph: &Graph, wf: Uuid) -> Result<Vec<Decision>, ReadError> {
    let q = query(
        "MATCH (d:WorkflowNode {workflow_id: $wf, type: 'decision'}) \
         OPTIONAL MATCH (d)-[:OPTION_OF]->(o:WorkflowNode) \
         WITH d, o ORDER BY o.seq \
         WITH d, collect(o.id) AS options \
         OPTIONAL MATCH (d)-[:CHOSEN_OPTION]->(c:WorkflowNode) \
         RETURN d.id AS decision, options, c.id AS chosen ORDER BY d.seq",
    )
    .param("wf", wf.to_string());
    rows(graph, q, |r| {
        let d: String = de(r.get("decision"), "decision")?;
        let o: Vec<String> = de(r.get("options"), "options")?;
        let c: Option<String> = de(r.get("chosen"), "chosen")?;
        Ok(Decision {
            decision: uuid(&d)?,
            options: o.iter().map(|s| uuid(s)).collect::<Result<Vec<_>, _>>()?,
            chosen: c.as_deref().map(uuid).transpose()?,
        })
    })
    .await
}

/// Branch `branch_id` of `wf`.
pub async fn branch(graph: &Graph, wf: Uuid, branch_id: Uuid) -> Result<Option<Branch>, ReadError> {
    let q = query(
        "MATCH (n:WorkflowNode {workflow_id: $wf, branch_id: $b}) \
         RETURN n.id AS id, n.parent_id AS parent ORDER BY n.seq",
    )
    .param("wf", wf.to_string())
    .param("b", branch_id.to_string());
    let ns = rows(graph, q, |r| {
        let id: String = de(r.get("id"), "id")?;
        let parent: Option<String> = de(r.get("parent"), "parent")?;
        Ok((uuid(&id)?, parent.as_deref().map(uuid).transpose()?))
    })
    .await?;
    Ok(ns.first().map(|(_, fork)| Branch {
        fork: *fork,
        nodes: ns.iter().map(|(id, _)| *id).collect(),
    }))
}

/// MONITORS edges of `wf` by seq as (monitor, target); with `cross_branch` only those
/// across branches.
pub async fn monitors(
    graph: &Graph,
    wf: Uuid,
    cross_branch: bool,
) -> Result<Vec<(Uuid, Uuid)>, ReadError> {
    let q = query(
        "MATCH (m:WorkflowNode {workflow_id: $wf})-[r:MONITORS]->(t:WorkflowNode) \
         WHERE NOT $cross OR m.branch_id <> t.branch_id \
         RETURN m.id AS monitor, t.id AS target ORDER BY r.seq",
    )
    .param("wf", wf.to_string())
    .param("cross", cross_branch);
    rows(graph, q, |r| {
        let m: String = de(r.get("monitor"), "monitor")?;
        let t: String = de(r.get("target"), "target")?;
        Ok((uuid(&m)?, uuid(&t)?))
    })
    .await
}

/// The single integer column `c` of `q` with `$wf` bound (0 without a row).
pub async fn count(graph: &Graph, q: &str, wf: Uuid) -> i64 {
    let q = query(q).param("wf", wf.to_string());
    let found = rows(graph, q, |r| de(r.get::<i64>("c"), "c"))
        .await
        .expect("count");
    found.first().copied().unwrap_or(0)
}

/// The Neo4j replica, for [`super::assert_same_answers`].
pub struct NeoReplica(pub Graph);

impl Replica for NeoReplica {
    async fn path(&self, id: Uuid) -> Vec<Node> {
        path(&self.0, id).await.expect("neo4j path")
    }
    async fn decisions(&self, wf: Uuid) -> Vec<Decision> {
        decisions(&self.0, wf).await.expect("neo4j decisions")
    }
    async fn branch(&self, wf: Uuid, b: Uuid) -> Option<Branch> {
        branch(&self.0, wf, b).await.expect("neo4j branch")
    }
    async fn monitors(&self, wf: Uuid, cross: bool) -> Vec<(Uuid, Uuid)> {
        monitors(&self.0, wf, cross).await.expect("neo4j monitors")
    }
}
