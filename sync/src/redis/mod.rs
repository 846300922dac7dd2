//! The Redis sink: the seeds' real-time keys, fed from the log.
//!
//! Per event (seq `S`, workflow `W`):
//! - `XADD workflow:events:W MAXLEN ~ N S-0 kind KIND event JSON` — the stream id is the
//!   log seq, so a replayed event is refused by Redis as "equal or smaller than the
//!   target stream top item": re-delivery is harmless and that refusal counts as success;
//! - `PUBLISH workflow:W JSON` (the seeds' channel) — only when the XADD was new, so a
//!   replay does not re-publish;
//! - `HSET workflow:status:W status … updated_at … last_seq … last_kind …`.
//!
//! The three commands of every event of a batch run in one Lua script call (one round
//! trip per batch, chunked at ~8 MiB): the script does exactly the pipeline above and can
//! skip the PUBLISH of a replayed event, which a plain pipeline cannot. A batch is not
//! atomic (Lua does not roll back), which is fine: every step is idempotent. The cursor
//! lives in arbor. An error on one event (e.g. `WRONGTYPE` because something else owns
//! the key) stops the script and is permanent: the driver bisects and dead-letters it.
//!
//! Rebuilding after Redis lost data (no persistence, flushed): a replay cannot insert
//! below a stream's top id, so delete the damaged `workflow:events:*` keys (or flush the
//! database), then `arbor sync reset redis --from 0`. `arbor verify --sinks` reports a
//! stream that is not an unbroken suffix of its workflow's events.
//!
//! Redis answers the stream and status questions; the graph queries (path, decisions,
//! branches, monitors) are for PostgreSQL and Neo4j.

use std::time::Duration;

use arbor_storage::{EventBody, Seq};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use uuid::Uuid;

use crate::error::{Redactor, SinkError};
use crate::sink::{CursorHome, Item, Sink};

/// Sink name (cursor and dead-letter key).
pub const NAME: &str = "redis";

/// Largest script call, in bytes of arguments.
const CHUNK_BYTES: usize = 8 << 20;

/// Stream key of workflow `wf`.
pub fn stream_key(wf: &Uuid) -> String {
    format!("workflow:events:{wf}")
}

/// Status hash key of workflow `wf`.
pub fn status_key(wf: &Uuid) -> String {
    format!("workflow:status:{wf}")
}

/// Pub/sub channel of workflow `wf` (the seeds' `workflow:${workflowId}`).
pub fn channel(wf: &Uuid) -> String {
    format!("workflow:{wf}")
}

/// KEYS: 2 per event (stream, status hash). ARGV[1] = MAXLEN; then 5 per event:
/// seq, event JSON, kind, status ('' = unchanged), timestamp.
const SCRIPT: &str = r#"
local maxlen = ARGV[1]
local added = 0
for i = 0, (#KEYS / 2) - 1 do
  local a = 2 + i * 5
  local seq, json, kind, status, ts = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local stream, hash = KEYS[i * 2 + 1], KEYS[i * 2 + 2]
  local r = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'kind', kind, 'event', json)
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'equal or smaller', 1, true) then
      return redis.error_reply(r.err .. ' (seq ' .. seq .. ')')
    end
  else
    added = added + 1
    redis.call('PUBLISH', 'workflow:' .. string.sub(stream, 17), json)
    if status ~= '' then
      redis.call('HSET', hash, 'status', status)
    end
    redis.call('HSET', hash, 'updated_at', ts, 'last_seq', seq, 'last_kind', kind)
  end
end
return added
"#;

/// The Redis sink.
pub struct RedisSink {
    /// Parsed URL; connecting is lazy.
    client: redis::Client,
    /// The live connection, dropped after a connection-level error.
    conn: Option<MultiplexedConnection>,
    /// `MAXLEN ~` of each workflow stream.
    maxlen: usize,
    /// The batch script.
    script: redis::Script,
    /// Masks the URL's password in errors.
    redactor: Redactor,
}

impl RedisSink {
    /// A sink for `url` (not connected yet).
    pub fn new(url: &str, maxlen: usize) -> Result<RedisSink, SinkError> {
        let client = redis::Client::open(url)
            .map_err(|e| SinkError::permanent(format!("invalid redis url: {e}")))?;
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(|p| p.to_owned());
        Ok(RedisSink {
            client,
            conn: None,
            maxlen: maxlen.max(1),
            script: redis::Script::new(SCRIPT),
            redactor: Redactor::new(password),
        })
    }

    /// A connection (opened if needed).
    pub async fn connection(&mut self) -> Result<MultiplexedConnection, SinkError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| classify(&e).redacted(&self.redactor))?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    fn fail(&mut self, e: &RedisError) -> SinkError {
        let err = classify(e).redacted(&self.redactor);
        if err.is_retriable() {
            self.conn = None;
        }
        err
    }

    async fn run_chunk(&mut self, chunk: &[Item]) -> Result<(), SinkError> {
        let mut conn = self.connection().await?;
        let mut inv = self.script.prepare_invoke();
        inv.arg(self.maxlen);
        for item in chunk {
            let e = &item.event;
            let json = serde_json::to_string(e)
                .map_err(|err| SinkError::permanent(format!("encode seq {}: {err}", e.seq)))?;
            let status = match &e.body {
                EventBody::WorkflowCreated(_) => "running",
                EventBody::StatusChanged(s) => s.to.as_str(),
                _ => "",
            };
            inv.key(stream_key(&e.workflow_id))
                .key(status_key(&e.workflow_id))
                .arg(e.seq)
                .arg(json)
                .arg(e.kind())
                .arg(status)
                .arg(e.timestamp.to_string());
        }
        let res = inv.invoke_async::<i64>(&mut conn).await;
        drop(inv);
        res.map(|_| ()).map_err(|e| self.fail(&e))
    }
}

/// Retriable unless Redis refused the data itself.
fn classify(e: &RedisError) -> SinkError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return SinkError::retriable(format!("redis unavailable: {e}"));
    }
    match e.code() {
        // Something else owns the key, or the value is refused: this event cannot go in.
        Some("WRONGTYPE") => SinkError::permanent(format!("redis refused the event: {e}")),
        Some("ERR") if e.to_string().contains("(seq ") => {
            SinkError::permanent(format!("redis refused the event: {e}"))
        }
        _ => SinkError::retriable(format!("redis: {e}")),
    }
}

impl Sink for RedisSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cursor_home(&self) -> CursorHome {
        CursorHome::Arbor
    }

    async fn setup(&mut self) -> Result<(), SinkError> {
        let mut conn = self.connection().await?;
        match self.script.load_async(&mut conn).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(&e)),
        }
    }

    async fn apply(&mut self, batch: &[Item]) -> Result<(), SinkError> {
        let mut start = 0;
        while start < batch.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < batch.len() && (end == start || bytes < CHUNK_BYTES) {
                bytes += approx_size(&batch[end]);
                end += 1;
            }
            self.run_chunk(&batch[start..end]).await?;
            start = end;
        }
        Ok(())
    }
}

fn approx_size(item: &Item) -> usize {
    256 + item.node().map_or(0, |n| {
        n.content.len() + n.metadata.len() * 32 + if n.payload.is_null() { 0 } else { 256 }
    })
}

/// What Redis holds for one workflow (for verify and tests).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamState {
    /// Stream entries, oldest first: (seq, kind, event JSON).
    pub entries: Vec<(Seq, String, String)>,
    /// The status hash.
    pub status: std::collections::BTreeMap<String, String>,
}

/// Reads the stream and the status hash of `wf`.
pub async fn read_workflow(
    conn: &mut MultiplexedConnection,
    wf: &Uuid,
) -> Result<StreamState, SinkError> {
    type Entry = (String, Vec<(String, String)>);
    let raw: Vec<Entry> = redis::cmd("XRANGE")
        .arg(stream_key(wf))
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .map_err(|e| classify(&e))?;
    let mut entries = Vec::with_capacity(raw.len());
    for (id, fields) in raw {
        let seq = id
            .split('-')
            .next()
            .and_then(|s| s.parse::<Seq>().ok())
            .ok_or_else(|| SinkError::permanent(format!("unexpected stream id {id}")))?;
        let mut kind = String::new();
        let mut event = String::new();
        for (k, v) in fields {
            match k.as_str() {
                "kind" => kind = v,
                "event" => event = v,
                _ => {}
            }
        }
        entries.push((seq, kind, event));
    }
    let status: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(status_key(wf))
        .query_async(conn)
        .await
        .map_err(|e| classify(&e))?;
    Ok(StreamState { entries, status })
}
