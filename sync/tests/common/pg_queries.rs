//! The seeds' queries against the PostgreSQL replica, answered in the shapes of
//! [`super::Replica`] so that tests compare them with the store's own answers:
//!
//! - path to root: a recursive CTE following `parent_id` upwards, root first (whole nodes);
//! - decision points: decisions by seq, their OPTION_OF targets by seq, the CHOSEN_OPTION;
//! - branch summary: the nodes with that `branch_id` by seq, fork = parent of the first;
//! - monitors: MONITORS edges by seq, optionally only across branches.

use arbor_storage::{Node, Timestamp};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;
use uuid::Uuid;

use super::{Branch, Decision, Replica};

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

/// Ids of `kind` edges' targets from `from`, by the target's seq.
async fn targets(pool: &PgPool, from: Uuid, kind: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT n.id FROM arbor_edges e JOIN arbor_nodes n ON n.id = e.to_id \
         WHERE e.from_id = $1 AND e.type = $2 ORDER BY n.seq",
    )
    .bind(from)
    .bind(kind)
    .fetch_all(pool)
    .await
}

/// Decision points of `wf` with their options and chosen option.
pub async fn decisions(pool: &PgPool, wf: Uuid) -> Result<Vec<Decision>, sqlx::Error> {
    let ds: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM arbor_nodes WHERE workflow_id = $1 AND type = 'decision' ORDER BY seq",
    )
    .bind(wf)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(ds.len());
    for decision in ds {
        out.push(Decision {
            decision,
            options: targets(pool, decision, "OPTION_OF").await?,
            chosen: targets(pool, decision, "CHOSEN_OPTION")
                .await?
                .first()
                .copied(),
        });
    }
    Ok(out)
}

/// Branch `branch_id` of `wf`: its nodes by seq and its fork node.
pub async fn branch(
    pool: &PgPool,
    wf: Uuid,
    branch_id: Uuid,
) -> Result<Option<Branch>, sqlx::Error> {
    let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "SELECT id, parent_id FROM arbor_nodes WHERE workflow_id = $1 AND branch_id = $2 ORDER BY seq",
    )
    .bind(wf)
    .bind(branch_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.first().map(|(_, fork)| Branch {
        fork: *fork,
        nodes: rows.iter().map(|(id, _)| *id).collect(),
    }))
}

/// MONITORS edges of `wf` by seq as (monitor, target); with `cross_branch` only those
/// across branches.
pub async fn monitors(
    pool: &PgPool,
    wf: Uuid,
    cross_branch: bool,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.id, t.id FROM arbor_edges e \
         JOIN arbor_nodes m ON m.id = e.from_id JOIN arbor_nodes t ON t.id = e.to_id \
         WHERE e.workflow_id = $1 AND e.type = 'MONITORS' AND (NOT $2 OR m.branch_id <> t.branch_id) \
         ORDER BY e.seq",
    )
    .bind(wf)
    .bind(cross_branch)
    .fetch_all(pool)
    .await
}

/// The PostgreSQL replica, for [`super::assert_same_answers`].
pub struct PgReplica(pub PgPool);

impl Replica for PgReplica {
    async fn path(&self, id: Uuid) -> Vec<Node> {
        path(&self.0, id).await.expect("pg path")
    }
    async fn decisions(&self, wf: Uuid) -> Vec<Decision> {
        decisions(&self.0, wf).await.expect("pg decisions")
    }
    async fn branch(&self, wf: Uuid, b: Uuid) -> Option<Branch> {
        branch(&self.0, wf, b).await.expect("pg branch")
    }
    async fn monitors(&self, wf: Uuid, cross: bool) -> Vec<(Uuid, Uuid)> {
        monitors(&self.0, wf, cross).await.expect("pg monitors")
    }
}
