//! The Redis sink: the seeds' real-time keys, fed from the log.
//!
//! Per event (seq `S`, workflow `W`):
//! - `XADD workflow:events:W MAXLEN ~ N S-0 kind KIND event JSON` (`--redis-maxlen`; no
//!   MAXLEN when it is 0) — the stream id is the log seq, so a replayed event is refused
//!   by Redis as "equal or smaller than the target stream top item": re-delivery is
//!   harmless and that refusal counts as success;
//! - `PUBLISH workflow:W JSON` (the seeds' channel) — only when the XADD was new, so a
//!   replay does not re-publish; with `--redis-message-shape seeds`, the seeds' message
//!   `{id, workflowId, type, content, parentId, metadata}` instead, for node events only;
//! - `HSET workflow:status:W status … updated_at … last_seq … last_kind …`.
//!
//! Two ways to write a chunk of a batch (≤ 1 000 events, ≤ 8 MiB), both one round trip,
//! the next chunk encoded while Redis runs the previous one (calls reach Redis in order):
//!
//! - **fast path**, a plain pipeline: when every event of the chunk is above the
//!   high-water mark `hwm` (no event above it is in Redis: every write raises it
//!   first), none can be a replay, so XADD and PUBLISH go out as they are, and one HSET
//!   per workflow carries its last event's fields. This is the normal case (catch-up,
//!   live appends) and costs Redis about half of what the script does.
//! - **script path**, one Lua call: the pipeline above per event, but PUBLISH and the
//!   hash update only when the XADD was new, so a replay (after `sync reset`, a crash
//!   between write and cursor commit, a retry) publishes nothing twice. Used for any
//!   chunk at or below the mark or a refill's `refill`, and for every chunk after an
//!   error until the mark has been read again. Not atomic (Lua does not roll back),
//!   which is fine: every step is idempotent.
//!
//! The cursor lives in arbor, and Redis keeps its own marks beside the data, in the hash
//! [`MARK_KEY`]`{store id}` (one per arbor store, so several stores can share a
//! database): `hwm` (no event above it is in Redis), `done` (every event up to it was
//! written: raised by the same script or pipeline, after the chunk's writes) and
//! `refill` (see below). An error on one event (e.g. `WRONGTYPE` because something
//! else owns the key) is permanent: the driver bisects (through the script path, as the
//! error reset the mark) and dead-letters it, and the sink raises `done` past it. On
//! the fast path such an event may have been published once before it is
//! dead-lettered.
//!
//! **A Redis that lost data** (restarted without persistence, flushed, restored from an
//! older snapshot) is noticed by its marks: `done` is below what the sink wrote. Every
//! write checks it (a chunk whose `done` went backwards fails as a lost connection
//! before it raises it), so does the idle probe, and every (re)connect compares it with
//! arbor's cursor ([`Sink::held`]). The driver then rewinds the cursor to `done` (0 when
//! the hash is gone) and the sink refills from the log by itself: replayed XADDs of
//! entries Redis kept are refused, the others go in, and the status hashes come back
//! with their `status`. History is not re-published: the hash's `refill` field keeps the
//! cursor from before the loss (in Redis, so that a restart of arbor mid-refill still
//! knows it), and no event at or below it is PUBLISHed. Every chunk at or below it
//! takes the script path. The refill re-sends the log from `done` on (from 0 after a
//! restart empty), whatever MAXLEN keeps: XADD trims as it goes. Sound, but a full pass
//! over a long log. `arbor verify --sinks` reports a stream that is not an
//! unbroken suffix of its workflow's events.
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
use crate::sink::{Audit, CursorHome, Item, Sink, Tally};

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

/// KEYS: 2 per workflow of the chunk (stream, status hash), then the mark hash.
/// ARGV[1] = MAXLEN (0: unbounded), ARGV[2] = the chunk's last seq, ARGV[3] = the
/// highest seq not to publish (`refill`), ARGV[4] = the `done` the sink expects (at
/// least), ARGV[5] = `seeds` to publish the message given per event instead of the
/// event; then 7 per event: workflow number (1-based, into KEYS), seq, event JSON,
/// kind, status ('' = unchanged), timestamp, seeds message ('' = none, or not seeds).
///
/// A `done` below ARGV[4] fails the call before anything is written ([`LOST`]). Per
/// event: XADD, and PUBLISH when the XADD was new and the seq above ARGV[3]. The status
/// hash of each workflow is written once per call, with the fields of its last new
/// event (and its last status change), also when an error ends the call early, so that
/// what was added is always reflected: a replay never rewrites it. `done` is raised to
/// ARGV[2] when every event went in.
const SCRIPT: &str = r#"
local maxlen, quiet, seeds = ARGV[1], tonumber(ARGV[3]), ARGV[5] == 'seeds'
local mark = KEYS[#KEYS]
if tonumber(redis.call('HGET', mark, 'done') or '0') < tonumber(ARGV[4]) then
  return redis.error_reply('ARBORLOST the done mark went backwards')
end
if tonumber(redis.call('HGET', mark, 'hwm') or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', mark, 'hwm', ARGV[2])
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
for a = 6, #ARGV, 7 do
  local w = tonumber(ARGV[a])
  local seq, json, kind, status, ts, msg = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local stream = KEYS[w * 2 - 1]
  local r
  if maxlen == '0' then
    r = redis.pcall('XADD', stream, seq .. '-0', 'kind', kind, 'event', json)
  else
    r = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'kind', kind, 'event', json)
  end
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'equal or smaller', 1, true) then
      flush()
      return redis.error_reply(r.err .. ' (seq ' .. seq .. ')')
    end
  else
    added = added + 1
    if tonumber(seq) > quiet then
      if not seeds then
        redis.call('PUBLISH', 'workflow:' .. string.sub(stream, 17), json)
      elseif msg ~= '' then
        redis.call('PUBLISH', 'workflow:' .. string.sub(stream, 17), msg)
      end
    end
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
if tonumber(redis.call('HGET', mark, 'done') or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', mark, 'done', ARGV[2])
end
return added
"#;

/// Raises field ARGV[1] of the mark hash KEYS[1] to ARGV[2]; returns its previous
/// value. With ARGV[3] (the `done` the sink expects, at least), fails with [`LOST`]
/// instead when `done` is below it.
const RAISE_SCRIPT: &str = r#"
if ARGV[3] and tonumber(redis.call('HGET', KEYS[1], 'done') or '0') < tonumber(ARGV[3]) then
  return redis.error_reply('ARBORLOST the done mark went backwards')
end
local v = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if v < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return v
"#;

/// Error code of a write that found the `done` mark below what the sink wrote: Redis
/// lost data since.
const LOST: &str = "ARBORLOST";

/// Prefix of the mark hash, `arbor:sink:{store id}` (fields `hwm`, `done`, `refill`).
pub const MARK_KEY: &str = "arbor:sink:";

/// Prefix of the high-water mark of earlier versions, `arbor:sync:hwm:{id of the log's
/// first event}`: found without a mark hash, it is taken over (an upgrade, not a loss).
pub const LEGACY_HWM_KEY: &str = "arbor:sync:hwm:";

/// What `PUBLISH workflow:W` carries (`--redis-message-shape`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageShape {
    /// The event, exactly as the API and the stream show it (every event).
    #[default]
    Arbor,
    /// The seeds' message, `{id, workflowId, type, content, parentId, metadata}`, for
    /// clients written against the seeds: only events that create a node (the root
    /// of `workflow.created`, `node.created`) are published.
    Seeds,
}

/// The seeds' pub/sub message for the node `item` creates (None: it creates none).
pub fn seeds_message(item: &Item) -> Option<Vec<u8>> {
    let n = item.node()?;
    let msg = serde_json::json!({
        "id": n.id,
        "workflowId": n.workflow_id,
        "type": n.node_type,
        "content": n.content,
        "parentId": n.parent_id,
        "metadata": n.metadata,
    });
    serde_json::to_vec(&msg).ok()
}

/// The marks of one store, as Redis holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// No event above it is in Redis.
    pub hwm: Seq,
    /// Every event up to it was written (None: no mark hash).
    pub done: Option<Seq>,
    /// Events up to it were published before a loss: a refill does not publish them.
    pub refill: Seq,
}

/// Events per script call: small enough that encoding the next call overlaps Redis
/// running this one, large enough that round trips do not matter.
const CHUNK_EVENTS: usize = 1000;

/// The Redis sink.
pub struct RedisSink {
    /// Parsed URL; connecting is lazy.
    client: redis::Client,
    /// The live connection, dropped after a connection-level error.
    conn: Option<MultiplexedConnection>,
    /// `MAXLEN ~` of each workflow stream; 0: unbounded.
    maxlen: usize,
    /// What PUBLISH carries.
    shape: MessageShape,
    /// Masks the URL's password in errors.
    redactor: Redactor,
    /// `hwm` as last read or raised; None = to be read again (after any error).
    hwm: Option<Seq>,
    /// The mark hash: [`MARK_KEY`] + the store's id.
    mark_key: String,
    /// The legacy high-water mark of this log ([`LEGACY_HWM_KEY`] + the id of its first
    /// event), taken over when there is no mark hash yet.
    legacy_key: Option<String>,
    /// The `done` this sink knows Redis holds (at least): a lower one means Redis lost
    /// data. 0 until [`Sink::held`] read it.
    done: Seq,
    /// The highest seq not to publish: events up to it were published before Redis lost
    /// them (the mark hash's `refill`).
    quiet: Seq,
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

/// Reads the marks in `key`.
pub async fn read_marks(conn: &mut MultiplexedConnection, key: &str) -> Result<Marks, SinkError> {
    let (hwm, done, refill): (Option<Seq>, Option<Seq>, Option<Seq>) = redis::cmd("HMGET")
        .arg(key)
        .arg("hwm")
        .arg("done")
        .arg("refill")
        .query_async(conn)
        .await
        .map_err(|e| classify(&e))?;
    Ok(Marks {
        hwm: hwm.unwrap_or(0),
        done,
        refill: refill.unwrap_or(0),
    })
}

impl RedisSink {
    /// A sink for `url` (not connected yet), replicating the store `store_id`.
    pub fn new(url: &str, maxlen: usize, store_id: Uuid) -> Result<RedisSink, SinkError> {
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
            maxlen,
            shape: MessageShape::Arbor,
            redactor: Redactor::new(password),
            hwm: None,
            mark_key: format!("{MARK_KEY}{store_id}"),
            legacy_key: None,
            done: 0,
            quiet: 0,
        })
    }

    /// Names the legacy high-water mark of the log by the id of its first event (None:
    /// the log is empty), taken over on upgrade.
    pub fn for_log(mut self, first_event: Option<Uuid>) -> RedisSink {
        self.legacy_key = first_event.map(|id| format!("{LEGACY_HWM_KEY}{id}"));
        self
    }

    /// Publishes messages of `shape`.
    pub fn with_shape(mut self, shape: MessageShape) -> RedisSink {
        self.shape = shape;
        self
    }

    /// The mark hash's key.
    pub fn mark_key(&self) -> &str {
        &self.mark_key
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

    /// Raises `field` of the mark hash to `seq` (checking `done` first when `check`);
    /// its previous value.
    fn raise(&self, field: &str, seq: Seq, check: bool) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RAISE_SCRIPT)
            .arg(1)
            .arg(&self.mark_key)
            .arg(field)
            .arg(seq);
        if check {
            cmd.arg(self.done);
        }
        cmd
    }

    /// The XADD of `e` (its JSON `json`).
    fn xadd(&self, e: &arbor_storage::Event, json: &[u8]) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream_key(&e.workflow_id));
        if self.maxlen > 0 {
            cmd.arg("MAXLEN").arg("~").arg(self.maxlen);
        }
        cmd.arg(format!("{}-0", e.seq))
            .arg("kind")
            .arg(e.kind())
            .arg("event")
            .arg(json);
        cmd
    }

    /// The plain pipeline for `chunk`, whose events are all above the high-water mark
    /// and above `refill`: raise `hwm`, then XADD and PUBLISH per event, then one HSET
    /// per workflow, then raise `done` (checked).
    fn encode_fresh(&self, chunk: &[Item]) -> Result<redis::Pipeline, SinkError> {
        let mut pipe = redis::Pipeline::with_capacity(chunk.len() * 2 + 8);
        pipe.add_command(self.raise("hwm", last_seq(chunk), false));
        // Per workflow, in first-seen order: (workflow, index of its last event, status).
        let mut wfs: Vec<(Uuid, usize, Option<&str>)> = Vec::new();
        let mut json = Vec::with_capacity(1024);
        for (i, item) in chunk.iter().enumerate() {
            let e = &item.event;
            json.clear();
            serde_json::to_writer(&mut json, e)
                .map_err(|err| SinkError::permanent(format!("encode seq {}: {err}", e.seq)))?;
            pipe.add_command(self.xadd(e, &json));
            match self.shape {
                MessageShape::Arbor => {
                    pipe.cmd("PUBLISH")
                        .arg(channel(&e.workflow_id))
                        .arg(json.as_slice());
                }
                MessageShape::Seeds => {
                    if let Some(msg) = seeds_message(item) {
                        pipe.cmd("PUBLISH").arg(channel(&e.workflow_id)).arg(msg);
                    }
                }
            }
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
        pipe.add_command(self.raise("done", last_seq(chunk), true));
        Ok(pipe)
    }

    /// The script call for `chunk`.
    fn encode(&self, chunk: &[Item]) -> Result<redis::Cmd, SinkError> {
        self.encode_quiet(chunk, self.quiet)
    }

    /// The script call for `chunk`, publishing nothing at or below `quiet`.
    fn encode_quiet(&self, chunk: &[Item], quiet: Seq) -> Result<redis::Cmd, SinkError> {
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
        cmd.arg(&self.mark_key)
            .arg(self.maxlen)
            .arg(last_seq(chunk))
            .arg(quiet)
            .arg(self.done)
            .arg(match self.shape {
                MessageShape::Arbor => "arbor",
                MessageShape::Seeds => "seeds",
            });
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
            match self.shape {
                MessageShape::Seeds => cmd.arg(seeds_message(item).unwrap_or_default()),
                MessageShape::Arbor => cmd.arg(""),
            };
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
    if e.code() == Some(LOST) || e.to_string().contains(LOST) {
        return SinkError::lost(format!(
            "redis lost data (restarted empty or flushed?): {e}"
        ));
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

    /// Connects (again) and pings. Whether Redis lost data is [`Sink::held`]'s question,
    /// asked right after.
    async fn setup(&mut self) -> Result<(), SinkError> {
        self.conn = None;
        self.hwm = None;
        let mut conn = self.connection().await?;
        match redis::cmd("PING").query_async::<String>(&mut conn).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(&e)),
        }
    }

    /// Reads `done`: below what this sink wrote, Redis lost data (a lost error, so that
    /// the driver sets up again and [`Sink::held`] rewinds).
    async fn probe(&mut self) -> Result<(), SinkError> {
        let mut conn = self.connection().await?;
        let key = self.mark_key.clone();
        let marks = read_marks(&mut conn, &key)
            .await
            .map_err(|e| self.lost_if(e))?;
        let done = marks.done.unwrap_or(0);
        if done < self.done {
            self.hwm = None;
            return Err(SinkError::lost(format!(
                "redis lost data (restarted empty or flushed?): its mark is at {done}, \
                 {} was written",
                self.done
            )));
        }
        Ok(())
    }

    /// Where Redis is, by its `done` mark: `cursor` if it holds everything up to it,
    /// else its `done` (0 without a mark hash), after recording the cursor as `refill`
    /// (not to be published again). A legacy high-water mark without a mark hash is an
    /// upgrade, not a loss: taken over as it is.
    async fn held(&mut self, cursor: Seq) -> Result<Seq, SinkError> {
        let mut conn = self.connection().await?;
        let key = self.mark_key.clone();
        let marks = read_marks(&mut conn, &key)
            .await
            .map_err(|e| self.lost_if(e))?;
        let done = match (marks.done, &self.legacy_key) {
            (Some(d), _) => d,
            (None, Some(legacy)) if cursor > 0 => {
                let old: Option<Seq> = redis::cmd("GET")
                    .arg(legacy)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.fail(&e))?;
                match old {
                    Some(hwm) => {
                        redis::cmd("HSET")
                            .arg(&key)
                            .arg("hwm")
                            .arg(hwm)
                            .arg("done")
                            .arg(cursor)
                            .query_async::<()>(&mut conn)
                            .await
                            .map_err(|e| self.fail(&e))?;
                        tracing::info!(sink = NAME, key, cursor, "legacy redis mark taken over");
                        cursor
                    }
                    None => 0,
                }
            }
            (None, _) => 0,
        };
        self.quiet = marks.refill;
        if done >= cursor {
            self.done = cursor;
            return Ok(cursor);
        }
        // Redis lost data: refill from its mark, publishing nothing up to the cursor.
        self.quiet = self.quiet.max(cursor);
        redis::cmd("HSET")
            .arg(&key)
            .arg("refill")
            .arg(self.quiet)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.fail(&e))?;
        self.done = done;
        self.hwm = None;
        tracing::warn!(
            sink = NAME,
            cursor,
            held = done,
            "redis lost data (restarted empty or flushed?): refilling it from the log"
        );
        Ok(done)
    }

    /// Raises `done` past a dead-lettered event (checked, like a write).
    async fn store_cursor(&mut self, seq: Seq) -> Result<(), SinkError> {
        let mut conn = self.connection().await?;
        match self
            .raise("done", seq, true)
            .query_async::<Seq>(&mut conn)
            .await
        {
            Ok(_) => {
                self.done = self.done.max(seq);
                Ok(())
            }
            Err(e) => Err(self.fail(&e)),
        }
    }

    async fn audit(&mut self, workflow: Uuid, items: &[Item]) -> Result<Audit, SinkError> {
        self.audit_workflow(workflow, items).await
    }

    async fn repair(&mut self, workflow: Uuid, items: &[Item]) -> Result<(), SinkError> {
        self.rebuild_workflow(workflow, items).await
    }

    /// Chunks of at most [`CHUNK_EVENTS`] events and [`CHUNK_BYTES`] bytes, each one
    /// script call or pipeline. The next chunk is encoded while Redis runs the previous
    /// one; the calls reach Redis in order (a later chunk may hold later events of the
    /// same stream, which must not go in first).
    async fn apply(&mut self, batch: &[Item]) -> Result<(), SinkError> {
        let mut conn = self.connection().await?;
        let hwm = match self.hwm {
            Some(h) => h,
            None => match redis::cmd("HGET")
                .arg(&self.mark_key)
                .arg("hwm")
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
            let to = chunk_end(batch, from);
            let chunk = &batch[from..to];
            from = to;
            let fresh = chunk[0].seq() > hwm.max(self.quiet);
            let encoded = if fresh {
                self.encode_fresh(chunk).map(Request::Fresh)
            } else {
                self.encode(chunk).map(Request::Script)
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
                self.hwm = Some(hwm.max(last_seq(batch)));
                self.done = self.done.max(last_seq(batch));
                Ok(())
            }
        }
    }
}

impl RedisSink {
    /// Anti-entropy's view of one workflow: the stream's length, first and last entry,
    /// and the status hash, in one round trip (no entry bodies). The stream must be an
    /// unbroken suffix of `items` ending at the last, at least `min(MAXLEN, events)`
    /// long (stream ids are strictly increasing and every one is an event's seq, so the
    /// length settles whether one in the middle is gone).
    async fn audit_workflow(&mut self, wf: Uuid, items: &[Item]) -> Result<Audit, SinkError> {
        let Some(last) = items.last() else {
            return Ok(Audit::InSync);
        };
        let mut conn = self.connection().await?;
        let key = stream_key(&wf);
        type Answer = (
            u64,
            Vec<Entry>,
            Vec<Entry>,
            (Option<String>, Option<String>),
        );
        let (len, first, newest, (status, last_seen)): Answer = redis::pipe()
            .cmd("XLEN")
            .arg(&key)
            .cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .cmd("HMGET")
            .arg(status_key(&wf))
            .arg("status")
            .arg("last_seq")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(&e))?;
        let seqs: Vec<Seq> = items.iter().map(Item::seq).collect();
        let n = seqs.len() as u64;
        let need = match self.maxlen {
            0 => n,
            m => n.min(m as u64),
        };
        let mut t = Tally::default();
        let from = match first.first() {
            None => n,
            Some((id, _)) => match seqs.binary_search(&entry_seq(id)?) {
                Ok(i) => i as u64,
                Err(_) => {
                    t.value("first stream entry", "an event of the workflow", id);
                    0
                }
            },
        };
        // Entries the stream should hold: all from its first on, and at least the last
        // `need` (fewer means some were trimmed or deleted at its start).
        t.count("stream entries", (n - from).max(need), len.min(n - from));
        let newest = match newest.first() {
            Some((id, _)) => entry_seq(id)?.to_string(),
            None => String::new(),
        };
        t.value("last stream entry", &last.seq().to_string(), &newest);
        t.workflow_row(items, status.as_deref(), last_seen);
        Ok(t.audit())
    }

    /// Rebuilds one workflow's stream and status hash from `items`: XADD cannot put an
    /// entry below the stream's top, so a lost entry in the middle means writing the
    /// stream again. Deletes both keys, then replays the workflow through the script,
    /// publishing nothing (all of it was published before). A reader of the stream may
    /// see it shorter for the moment this takes.
    async fn rebuild_workflow(&mut self, wf: Uuid, items: &[Item]) -> Result<(), SinkError> {
        let mut conn = self.connection().await?;
        redis::cmd("DEL")
            .arg(stream_key(&wf))
            .arg(status_key(&wf))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.fail(&e))?;
        let quiet = self.quiet.max(last_seq(items));
        let mut from = 0;
        while from < items.len() {
            let to = chunk_end(items, from);
            let chunk = &items[from..to];
            let cmd = self
                .encode_quiet(chunk, quiet)
                .map_err(|e| e.redacted(&self.redactor))?;
            if let Err(e) = Request::Script(cmd)
                .send(conn.clone(), chunk[0].seq())
                .await
            {
                return Err(self.fail(&e));
            }
            from = to;
        }
        Ok(())
    }

    /// `e`, with the connection dropped unless it is permanent.
    fn lost_if(&mut self, e: SinkError) -> SinkError {
        if !e.is_permanent() {
            self.conn = None;
        }
        self.hwm = None;
        e.redacted(&self.redactor)
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

/// The end of the chunk of `items` that starts at `from`: at most [`CHUNK_EVENTS`]
/// events and about [`CHUNK_BYTES`] bytes, at least one event.
fn chunk_end(items: &[Item], from: usize) -> usize {
    let mut to = from;
    let mut bytes = 0;
    while to < items.len() && (to == from || (bytes < CHUNK_BYTES && to - from < CHUNK_EVENTS)) {
        bytes += approx_size(&items[to]);
        to += 1;
    }
    to
}

/// A stream entry as XRANGE returns it.
type Entry = (String, Vec<(String, String)>);

/// The seq of a stream entry id (`SEQ-0`).
fn entry_seq(id: &str) -> Result<Seq, SinkError> {
    id.split('-')
        .next()
        .and_then(|s| s.parse::<Seq>().ok())
        .ok_or_else(|| SinkError::permanent(format!("unexpected stream id {id}")))
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
    let raw: Vec<Entry> = redis::cmd("XRANGE")
        .arg(stream_key(wf))
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .map_err(|e| classify(&e))?;
    let mut entries = Vec::with_capacity(raw.len());
    for (id, fields) in raw {
        let seq = entry_seq(&id)?;
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
