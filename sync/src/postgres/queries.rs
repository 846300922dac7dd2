//! The seeds' queries against the PostgreSQL replica. Each returns what the arbor store's
//! own query returns (same types, same order), so tests can compare them with `==`:
//!
//! - path to root: a recursive CTE following `parent_id` upwards, root first;
//! - decision points: decisions by seq, their OPTION_OF targets by seq, the CHOSEN_OPTION;
//! - branch summary: the nodes with that `branch_id` by seq, fork = parent of the first;
//! - monitors: MONITORS edges by seq, optionally only across branches.

use std::sync::Arc;

use arbor_storage::{BranchNodes, Decision, Monitor, Node, Timestamp};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;
use uuid::Uuid;

/// The columns of a node, with table alias `$p`, in the order [`node_at`] decodes.
macro_rules! node_cols {
    ($p:literal) => {
        concat!(
            $p,
            ".id, ",
            $p,
            ".workflow_id, ",
            $p,
            ".parent_id, ",
            $p,
            ".type, ",
            $p,
            ".role, ",
            $p,
            ".content, ",
            $p,
            ".payload::text, ",
            $p,
            ".metadata::text, ",
            $p,
            ".agent_id, ",
            $p,
            ".user_id, ",
            $p,
            ".branch_id, ",
            $p,
            ".depth, ",
            $p,
            ".seq, (EXTRACT(EPOCH FROM ",
            $p,
            ".\"timestamp\") * 1000000)::int8"
        )
    };
}

/// Number of columns of [`node_cols`].
const NODE_COLS: usize = 14;

fn bad(what: &str, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("{what}: {e}").into())
}

/// Decodes the node whose columns start at index `at`.
pub fn node_at(row: &PgRow, at: usize) -> Result<Node, sqlx::Error> {
    let role: Option<String> = row.try_get(at + 4)?;
    let payload: String = row.try_get(at + 6)?;
    let metadata: String = row.try_get(at + 7)?;
    let depth: i32 = row.try_get(at + 11)?;
    let seq: i64 = row.try_get(at + 12)?;
    Ok(Node {
        id: row.try_get(at)?,
        workflow_id: row.try_get(at + 1)?,
        parent_id: row.try_get(at + 2)?,
        node_type: row.try_get(at + 3)?,
        role: role
            .map(|r| serde_json::from_value(serde_json::Value::String(r)))
            .transpose()
            .map_err(|e| bad("role", e))?,
        content: row.try_get(at + 5)?,
        payload: serde_json::from_str(&payload).map_err(|e| bad("payload", e))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| bad("metadata", e))?,
        agent_id: row.try_get(at + 8)?,
        user_id: row.try_get(at + 9)?,
        branch_id: row.try_get(at + 10)?,
        depth: u32::try_from(depth).map_err(|e| bad("depth", e))?,
        seq: u64::try_from(seq).map_err(|e| bad("seq", e))?,
        timestamp: Timestamp(row.try_get(at + 13)?),
    })
}

fn nodes(rows: &[PgRow]) -> Result<Vec<Node>, sqlx::Error> {
    rows.iter().map(|r| node_at(r, 0)).collect()
}

/// Path root … `id` (empty if `id` is unknown).
pub async fn path(pool: &PgPool, id: Uuid) -> Result<Vec<Node>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "WITH RECURSIVE up(id, parent_id, k) AS ( \
           SELECT id, parent_id, 0 FROM arbor_nodes WHERE id = $1 \
           UNION ALL \
           SELECT p.id, p.parent_id, up.k + 1 FROM arbor_nodes p JOIN up ON p.id = up.parent_id) \
         SELECT ",
        node_cols!("n"),
        " FROM up JOIN arbor_nodes n ON n.id = up.id ORDER BY up.k DESC"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?;
    nodes(&rows)
}

/// One node by id.
pub async fn node(pool: &PgPool, id: Uuid) -> Result<Option<Node>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        node_cols!("n"),
        " FROM arbor_nodes n WHERE n.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| node_at(&r, 0)).transpose()
}

/// Decision points of `wf` with their options and chosen option.
pub async fn decisions(pool: &PgPool, wf: Uuid) -> Result<Vec<Decision>, sqlx::Error> {
    let ds = sqlx::query(concat!(
        "SELECT ",
        node_cols!("n"),
        " FROM arbor_nodes n WHERE n.workflow_id = $1 AND n.type = 'decision' ORDER BY n.seq"
    ))
    .bind(wf)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(ds.len());
    for d in nodes(&ds)? {
        let targets = |kind: &'static str| {
            sqlx::query(concat!(
                "SELECT ",
                node_cols!("n"),
                " FROM arbor_edges e JOIN arbor_nodes n ON n.id = e.to_id \
                 WHERE e.from_id = $1 AND e.type = $2 ORDER BY n.seq"
            ))
            .bind(d.id)
            .bind(kind)
            .fetch_all(pool)
        };
        let options = nodes(&targets("OPTION_OF").await?)?;
        let chosen = nodes(&targets("CHOSEN_OPTION").await?)?.into_iter().next();
        out.push(Decision {
            decision: Arc::new(d),
            options: options.into_iter().map(Arc::new).collect(),
            chosen: chosen.map(Arc::new),
        });
    }
    Ok(out)
}

/// Branch `branch_id` of `wf`: its nodes by seq and its fork node.
pub async fn branch(
    pool: &PgPool,
    wf: Uuid,
    branch_id: Uuid,
) -> Result<Option<BranchNodes>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        node_cols!("n"),
        " FROM arbor_nodes n WHERE n.workflow_id = $1 AND n.branch_id = $2 ORDER BY n.seq"
    ))
    .bind(wf)
    .bind(branch_id)
    .fetch_all(pool)
    .await?;
    let ns = nodes(&rows)?;
    let Some(first) = ns.first() else {
        return Ok(None);
    };
    Ok(Some(BranchNodes {
        branch_id,
        fork_node_id: first.parent_id,
        nodes: ns.into_iter().map(Arc::new).collect(),
    }))
}

/// MONITORS edges of `wf` by seq; with `cross_branch` only those across branches.
pub async fn monitors(
    pool: &PgPool,
    wf: Uuid,
    cross_branch: bool,
) -> Result<Vec<Monitor>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        node_cols!("m"),
        ", ",
        node_cols!("t"),
        " FROM arbor_edges e JOIN arbor_nodes m ON m.id = e.from_id JOIN arbor_nodes t ON t.id = e.to_id \
         WHERE e.workflow_id = $1 AND e.type = 'MONITORS' AND (NOT $2 OR m.branch_id <> t.branch_id) \
         ORDER BY e.seq"
    ))
    .bind(wf)
    .bind(cross_branch)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Monitor {
                monitor: Arc::new(node_at(r, 0)?),
                target: Arc::new(node_at(r, NODE_COLS)?),
            })
        })
        .collect()
}
