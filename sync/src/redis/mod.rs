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
//! Two ways to write a chunk of a batch (≤ 1 000 events, ≤ 8 MiB), both one round trip,
//! the next chunk encoded while Redis runs the previous one (calls reach Redis in order):
//!
//! - **fast path**, a plain pipeline: when every event of the chunk is above the
//!   high-water mark [`HWM_KEY`] (no event above it is in Redis: every write raises it
//!   first), none can be a replay, so XADD and PUBLISH go out as they are, and one HSET
//!   per workflow carries its last event's fields. This is the normal case (catch-up,
//!   live appends) and costs Redis about half of what the script does.
//! - **script path**, one Lua call: the pipeline above per event, but PUBLISH and the
//!   hash update only when the XADD was new, so a replay (after `sync reset`, a crash
//!   between write and cursor commit, a retry) publishes nothing twice. Used for any
//!   chunk at or below the mark, and for every chunk after an error until the mark has
//!   been read again. Not atomic (Lua does not roll back), which is fine: every step is
//!   idempotent.
//!
//! The cursor lives in arbor. An error on one event (e.g. `WRONGTYPE` because something
//! else owns the key) is permanent: the driver bisects (through the script path, as the
//! error reset the mark) and dead-letters it. On the fast path such an event may have
//! been published once before it is dead-lettered.
//!
//! Rebuilding after Redis lost data (no persistence, flushed): a replay cannot insert
//! below a stream's top id, so delete the damaged `workflow:events:*` keys (or flush the
//! database), then `arbor sync reset redis --from 0`. Keep [`HWM_KEY`] unless every
//! `workflow:*` key went with it: without it, events still in Redis would be re-published. `arbor verify --sinks` reports a
//! stream that is not an unbroken suffix of its workflow's events.
//!
//! Redis answers the stream and status questions; the graph queries (path, decisions,
//! branches, monitors) are for PostgreSQL and Neo4j.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use arbor_storage::{EventBody, Seq};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, Value};
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

/// KEYS: 2 per workflow of the chunk (stream, status hash), then [`HWM_KEY`].
/// ARGV[1] = MAXLEN, ARGV[2] = the chunk's last seq; then 6 per event: workflow number
/// (1-based, into KEYS), seq, event JSON, kind, status ('' = unchanged), timestamp.
///
/// Per event: XADD, and PUBLISH when the XADD was new. The status hash of each workflow
/// is written once per call, with the fields of its last new event (and its last status
/// change), also when an error ends the call early, so that what was added is always
/// reflected: a replay never rewrites it.
const SCRIPT: &str = r#"
local maxlen = ARGV[1]
local hwm = KEYS[#KEYS]
if tonumber(redis.call('GET', hwm) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', hwm, ARGV[2])
end
local added = 0
local last = {}
local function flush()
  for w, l in pairs(last) do
    if l.status then
      redis.call('HSET', KEYS[w * 2], 'status', l.status, 'updated_at', l.ts, 'last_seq', l.seq, 'last_kind', l.kind)
    else
      redis.call('HSET', KEYS[w * 2], 'updated_at', l.ts, 'last_seq', l.seq, 'last_kind', l.kind)
    end
  end
end
for a = 3, #ARGV, 6 do
  local w = tonumber(ARGV[a])
  local seq, json, kind, status, ts = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local stream = KEYS[w * 2 - 1]
  local r = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'kind', kind, 'event', json)
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'equal or smaller', 1, true) then
      flush()
      return redis.error_reply(r.err .. ' (seq ' .. seq .. ')')
    end
  else
    added = added + 1
    redis.call('PUBLISH', 'workflow:' .. string.sub(stream, 17), json)
    local l = last[w]
    if not l then
      l = {}
      last[w] = l
    end
    l.seq, l.kind, l.ts = seq, kind, ts
    if status ~= '' then
      l.status = status
    end
  end
end
flush()
return added
"#;

/// Raises [`HWM_KEY`] to ARGV[1]; returns its previous value.
const HWM_SCRIPT: &str = r#"
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return v
"#;

/// Prefix of the high-water mark key, `arbor:sync:hwm:{id of the log's first event}`: no
/// event of that log with a higher seq is in Redis (every call that writes events raises
/// it first, in the same script or pipeline). One per log, so that several arbor stores
/// can share a Redis database.
pub const HWM_KEY: &str = "arbor:sync:hwm:";

/// Events per script call: small enough that encoding the next call overlaps Redis
/// running this one, large enough that round trips do not matter.
const CHUNK_EVENTS: usize = 1000;

/// The Redis sink.
pub struct RedisSink {
    /// Parsed URL; connecting is lazy.
    client: redis::Client,
    /// The live connection, dropped after a connection-level error.
    conn: Option<MultiplexedConnection>,
    /// `MAXLEN ~` of each workflow stream.
    maxlen: usize,
    /// Masks the URL's password in errors.
    redactor: Redactor,
    /// [`HWM_KEY`] as last read or raised; None = to be read again (after any error).
    hwm: Option<Seq>,
    /// The mark's key: [`HWM_KEY`] + the id of the log's first event (known at start, or
    /// from the first batch of a log that was empty). None: every chunk takes the script.
    hwm_key: Option<String>,
}

type Reply = Pin<Box<dyn Future<Output = Result<(), RedisError>> + Send>>;

/// Polls `fut` once: a multiplexed connection queues a command on its first poll, so
/// commands polled in turn reach Redis in that order. `Some` if it already finished.
async fn poll_once(fut: &mut Reply) -> Option<Result<(), RedisError>> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        })
    })
    .await
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
            redactor: Redactor::new(password),
            hwm: None,
            hwm_key: None,
        })
    }

    /// Names the log this sink replicates by the id of its first event (None: the log
    /// is empty; the first batch then names it).
    pub fn for_log(mut self, first_event: Option<Uuid>) -> RedisSink {
        self.hwm_key = first_event.map(|id| format!("{HWM_KEY}{id}"));
        self
    }

    /// A connection (opened if needed).
    pub async fn connection(&mut self) -> Result<MultiplexedConnection, SinkError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
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
        if !err.is_permanent() {
            self.conn = None;
        }
        self.hwm = None;
        err
    }

    /// The plain pipeline for `chunk`, whose events are all above the high-water mark:
    /// raise the mark, then XADD and PUBLISH per event, then one HSET per workflow.
    fn encode_fresh(&self, chunk: &[Item], hwm_key: &str) -> Result<redis::Pipeline, SinkError> {
        let mut pipe = redis::Pipeline::with_capacity(chunk.len() * 2 + 8);
        pipe.cmd("EVAL")
            .arg(HWM_SCRIPT)
            .arg(1)
            .arg(hwm_key)
            .arg(last_seq(chunk));
        // Per workflow, in first-seen order: (workflow, index of its last event, status).
        let mut wfs: Vec<(Uuid, usize, Option<&str>)> = Vec::new();
        let mut json = Vec::with_capacity(1024);
        for (i, item) in chunk.iter().enumerate() {
            let e = &item.event;
            json.clear();
            serde_json::to_writer(&mut json, e)
                .map_err(|err| SinkError::permanent(format!("encode seq {}: {err}", e.seq)))?;
            pipe.cmd("XADD")
                .arg(stream_key(&e.workflow_id))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg(format!("{}-0", e.seq))
                .arg("kind")
                .arg(e.kind())
                .arg("event")
                .arg(json.as_slice());
            pipe.cmd("PUBLISH")
                .arg(channel(&e.workflow_id))
                .arg(json.as_slice());
            let status = match &e.body {
                EventBody::WorkflowCreated(_) => Some("running"),
                EventBody::StatusChanged(s) => Some(s.to.as_str()),
                _ => None,
            };
            match wfs.iter_mut().rev().find(|w| w.0 == e.workflow_id) {
                Some(w) => {
                    w.1 = i;
                    w.2 = status.or(w.2);
                }
                None => wfs.push((e.workflow_id, i, status)),
            }
        }
        for (wf, i, status) in wfs {
            let e = &chunk[i].event;
            let cmd = pipe.cmd("HSET").arg(status_key(&wf));
            if let Some(s) = status {
                cmd.arg("status").arg(s);
            }
            cmd.arg("updated_at")
                .arg(e.timestamp.to_string())
                .arg("last_seq")
                .arg(e.seq)
                .arg("last_kind")
                .arg(e.kind());
        }
        Ok(pipe)
    }

    /// The script call for `chunk`.
    fn encode(&self, chunk: &[Item], hwm_key: &str) -> Result<redis::Cmd, SinkError> {
        // Few workflows per chunk in practice: a linear search beats hashing.
        let mut wfs: Vec<Uuid> = Vec::new();
        let mut slots = Vec::with_capacity(chunk.len());
        for item in chunk {
            let wf = item.event.workflow_id;
            let w = match wfs.iter().rposition(|w| *w == wf) {
                Some(i) => i + 1,
                None => {
                    wfs.push(wf);
                    wfs.len()
                }
            };
            slots.push(w);
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCRIPT).arg(wfs.len() * 2 + 1);
        for wf in &wfs {
            cmd.arg(stream_key(wf)).arg(status_key(wf));
        }
        cmd.arg(hwm_key).arg(self.maxlen).arg(last_seq(chunk));
        let mut json = Vec::with_capacity(1024);
        for (item, w) in chunk.iter().zip(slots) {
            let e = &item.event;
            json.clear();
            serde_json::to_writer(&mut json, e)
                .map_err(|err| SinkError::permanent(format!("encode seq {}: {err}", e.seq)))?;
            let status = match &e.body {
                EventBody::WorkflowCreated(_) => "running",
                EventBody::StatusChanged(s) => s.to.as_str(),
                _ => "",
            };
            cmd.arg(w)
                .arg(e.seq)
                .arg(json.as_slice())
                .arg(e.kind())
                .arg(status)
                .arg(e.timestamp.to_string());
        }
        Ok(cmd)
    }
}

/// Lost when the connection is, permanent when Redis refused the data itself,
/// retriable otherwise.
fn classify(e: &RedisError) -> SinkError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return SinkError::lost(format!("redis unavailable: {e}"));
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

    /// Connects (again) and pings.
    async fn setup(&mut self) -> Result<(), SinkError> {
        self.conn = None;
        self.hwm = None;
        self.probe().await
    }

    async fn probe(&mut self) -> Result<(), SinkError> {
        let mut conn = self.connection().await?;
        match redis::cmd("PING").query_async::<String>(&mut conn).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(&e)),
        }
    }

    /// Chunks of at most [`CHUNK_EVENTS`] events and [`CHUNK_BYTES`] bytes, each one
    /// script call. The next chunk is encoded while Redis runs the previous one; the
    /// calls reach Redis in order (a later chunk may hold later events of the same
    /// stream, which must not go in first).
    async fn apply(&mut self, batch: &[Item]) -> Result<(), SinkError> {
        let mut conn = self.connection().await?;
        if self.hwm_key.is_none() {
            // A log that was empty at start: its first batch begins with its first event.
            if let Some(first) = batch.first().filter(|i| i.seq() == 1) {
                self.hwm_key = Some(format!("{HWM_KEY}{}", first.event.id));
            }
        }
        // No key (cannot happen for a log replicated from its start): all by script,
        // under a key no fast path reads.
        let key = self
            .hwm_key
            .clone()
            .unwrap_or_else(|| format!("{HWM_KEY}unknown"));
        let hwm = match (self.hwm, &self.hwm_key) {
            (_, None) => Seq::MAX,
            (Some(h), _) => h,
            (None, Some(k)) => match redis::cmd("GET")
                .arg(k)
                .query_async::<Option<Seq>>(&mut conn)
                .await
            {
                Ok(h) => h.unwrap_or(0),
                Err(e) => return Err(self.fail(&e)),
            },
        };
        let mut inflight: Option<Reply> = None;
        let mut failed: Option<RedisError> = None;
        let mut from = 0;
        while from < batch.len() && failed.is_none() {
            let mut to = from;
            let mut bytes = 0;
            while to < batch.len()
                && (to == from || (bytes < CHUNK_BYTES && to - from < CHUNK_EVENTS))
            {
                bytes += approx_size(&batch[to]);
                to += 1;
            }
            let chunk = &batch[from..to];
            from = to;
            let fresh = chunk[0].seq() > hwm;
            let encoded = if fresh {
                self.encode_fresh(chunk, &key).map(Request::Fresh)
            } else {
                self.encode(chunk, &key).map(Request::Script)
            };
            let request = match encoded {
                Ok(r) => r,
                Err(e) => {
                    if let Some(prev) = inflight {
                        let _ = prev.await;
                    }
                    self.hwm = None;
                    return Err(e);
                }
            };
            let mut fut = request.send(conn.clone(), chunk[0].seq());
            let early = poll_once(&mut fut).await;
            if let Some(Err(e)) = match inflight.take() {
                Some(prev) => Some(prev.await),
                None => None,
            } {
                failed = Some(e);
            }
            match early {
                Some(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Some(Ok(())) => {}
                None => inflight = Some(fut),
            }
        }
        if let Some(prev) = inflight {
            if let Err(e) = prev.await {
                failed.get_or_insert(e);
            }
        }
        match failed {
            Some(e) => Err(self.fail(&e)),
            None => {
                if self.hwm_key.is_some() {
                    self.hwm = Some(hwm.max(last_seq(batch)));
                }
                Ok(())
            }
        }
    }
}

/// One chunk's request.
enum Request {
    /// Events above the high-water mark: a plain pipeline.
    Fresh(redis::Pipeline),
    /// Events that may be in Redis already: the script.
    Script(redis::Cmd),
}

impl Request {
    /// The request as a future (not sent until polled). A fresh chunk whose mark turns
    /// out to have been at or above its first seq (another writer) fails retriably, so
    /// that the retry goes through the script.
    fn send(self, mut conn: MultiplexedConnection, first: Seq) -> Reply {
        match self {
            // A refusal comes back as a value, not as an error: extract it.
            Request::Script(cmd) => Box::pin(async move {
                conn.send_packed_command(&cmd)
                    .await?
                    .extract_error()
                    .map(drop)
            }),
            Request::Fresh(pipe) => Box::pin(async move {
                let replies = conn.send_packed_commands(&pipe, 0, pipe.len()).await?;
                let mut replies = replies.into_iter();
                match replies.next().map(Value::extract_error).transpose()? {
                    Some(Value::Int(prev)) if u64::try_from(prev).unwrap_or(0) < first => {}
                    other => {
                        return Err(RedisError::from((
                            redis::ErrorKind::Client,
                            "the redis high-water mark is at or above this chunk (another \
                             writer?); retrying through the script",
                            format!("{other:?}"),
                        )))
                    }
                }
                // The first refusal (e.g. WRONGTYPE: something else owns the key).
                for r in replies {
                    r.extract_error()?;
                }
                Ok(())
            }),
        }
    }
}

fn last_seq(items: &[Item]) -> Seq {
    items.last().map_or(0, Item::seq)
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
