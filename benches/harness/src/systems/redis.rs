//! Baseline (c): Redis alone. Each event is `XADD workflow:events:{wf} * event JSON`
//! plus `PUBLISH workflow:{wf} JSON`, pipelined in one round trip; a batch is one
//! pipeline of those pairs. No tree, no queries: the floor of "write an event
//! somewhere and tell subscribers".

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use uuid::Uuid;

use crate::workload::{NodeOp, Op};

/// One multiplexed connection (commands of all agents share it, pipelined).
#[derive(Clone)]
pub struct Redis {
    conn: MultiplexedConnection,
    client: redis::Client,
}

/// The event JSON of an op, as the seeds publish it.
pub fn event_json(wf: Uuid, op: &Op) -> anyhow::Result<String> {
    Ok(match op {
        Op::Node(n) => serde_json::to_string(&serde_json::json!({
            "id": n.id, "workflowId": wf, "type": n.node_type, "content": n.content,
            "metadata": n.metadata, "parentId": n.parent_id,
        }))?,
        Op::Edge { kind, from, to } => serde_json::to_string(&serde_json::json!({
            "workflowId": wf, "type": kind.as_str(), "from": from, "to": to,
        }))?,
        Op::Choose { decision, option } => serde_json::to_string(&serde_json::json!({
            "workflowId": wf, "type": "CHOSEN_OPTION", "from": decision, "to": option,
        }))?,
    })
}

impl Redis {
    /// Connects.
    pub async fn connect(url: &str) -> anyhow::Result<Redis> {
        let client = redis::Client::open(url).context("redis URL")?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .context("connecting to redis")?;
        Ok(Redis { conn, client })
    }

    /// The shared connection.
    pub fn connection(&self) -> MultiplexedConnection {
        self.conn.clone()
    }

    /// The client (pub/sub subscribers open their own connections).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `CONFIG GET name` (empty when refused).
    pub async fn setting(&self, name: &str) -> String {
        let mut c = self.conn.clone();
        redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async::<Vec<String>>(&mut c)
            .await
            .ok()
            .and_then(|v| v.get(1).cloned())
            .unwrap_or_default()
    }

    /// XADD + PUBLISH of one event, one round trip.
    pub async fn apply(&self, wf: Uuid, op: &Op) -> anyhow::Result<()> {
        let json = event_json(wf, op)?;
        let mut c = self.conn.clone();
        redis::pipe()
            .cmd("XADD")
            .arg(format!("workflow:events:{wf}"))
            .arg("*")
            .arg("event")
            .arg(&json)
            .ignore()
            .cmd("PUBLISH")
            .arg(format!("workflow:{wf}"))
            .arg(&json)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// XADD + PUBLISH of every node of a batch, one pipeline.
    pub async fn apply_batch(&self, wf: Uuid, nodes: &[NodeOp]) -> anyhow::Result<()> {
        let stream = format!("workflow:events:{wf}");
        let channel = format!("workflow:{wf}");
        let mut p = redis::pipe();
        for n in nodes {
            let json = event_json(wf, &Op::Node(n.clone()))?;
            p.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("event")
                .arg(&json)
                .ignore()
                .cmd("PUBLISH")
                .arg(&channel)
                .arg(&json)
                .ignore();
        }
        let mut c = self.conn.clone();
        p.query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// Entries in the stream of `wf`.
    pub async fn stream_len(&self, wf: Uuid) -> anyhow::Result<usize> {
        let mut c = self.conn.clone();
        Ok(redis::cmd("XLEN")
            .arg(format!("workflow:events:{wf}"))
            .query_async::<usize>(&mut c)
            .await?)
    }

    /// Deletes `keys`.
    pub async fn delete_keys(&self, keys: &[String]) -> anyhow::Result<()> {
        let mut c = self.conn.clone();
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<i64>(&mut c)
            .await?;
        Ok(())
    }

    /// Deletes the stream of `wf`.
    pub async fn delete_workflow(&self, wf: Uuid) -> anyhow::Result<()> {
        let mut c = self.conn.clone();
        redis::cmd("DEL")
            .arg(format!("workflow:events:{wf}"))
            .query_async::<i64>(&mut c)
            .await?;
        Ok(())
    }
}
