//! A batch in PostgreSQL's binary `COPY` format.
//!
//! `COPY … FROM STDIN (FORMAT binary)` loads rows without an executor per statement,
//! without the parameter arrays `INSERT … FROM UNNEST` builds and takes apart, and
//! without parsing text: a uuid is its 16 bytes, a number its big-endian bytes. The
//! server's CPU per event is what bounds catch-up (BENCHMARKS.md), so a fresh batch
//! (nothing of it present yet, see [`super::PostgresSink::apply`]) is copied straight
//! into the tables. Any other batch (a replay, a repair) may meet rows already present:
//! it is copied into staging tables and inserted from them `ON CONFLICT DO NOTHING`
//! ([`Table::stage`]), so both ways share one mapping of events to rows ([`Copies`]).
//!
//! Each value is written as the column type's binary `recv` function reads it:
//! `int8`/`int4` big-endian, `uuid` its 16 bytes, `text` and `json` UTF-8 text
//! (`json_recv` validates it as the text form would), `timestamptz` microseconds since
//! 2000-01-01 (PostgreSQL's epoch). The server checks every constraint as for an
//! `INSERT`: CHECKs, NOT NULL, unique indexes, so a refused row fails the whole `COPY`
//! (and its transaction) as the `INSERT` would.

use std::io::Write;

use arbor_storage::{EdgeKind, Event, EventBody, Node};
use serde_json::Value;
use uuid::Uuid;

use super::{to_i64, WfRows};
use crate::sink::Item;

/// A replicated table and the columns [`Copies`] writes to it, in order.
#[derive(Clone, Copy, Debug)]
pub(super) struct Table {
    /// The table.
    pub(super) name: &'static str,
    /// Its staging table in the conflict-tolerant write (see [`Table::stage`]).
    stage: &'static str,
    /// The columns, comma-separated.
    columns: &'static str,
}

pub(super) const EVENTS: Table = Table {
    name: "arbor_events",
    stage: "arbor_stage_events",
    columns: "seq, id, workflow_id, kind, \"timestamp\", actor, body, prev_hash, hash",
};
pub(super) const NODES: Table = Table {
    name: "arbor_nodes",
    stage: "arbor_stage_nodes",
    columns: "id, workflow_id, parent_id, type, role, content, payload, metadata, agent_id, \
              user_id, branch_id, depth, seq, \"timestamp\"",
};
pub(super) const EDGES: Table = Table {
    name: "arbor_edges",
    stage: "arbor_stage_edges",
    columns: "type, from_id, to_id, workflow_id, seq",
};
pub(super) const DRAFTS: Table = Table {
    name: "draft_content",
    stage: "arbor_stage_drafts",
    columns: "id, workflow_run_id, content_type, content, status, metadata, seq, created_at",
};

impl Table {
    /// `COPY` of its columns into the table itself (a fresh batch).
    pub(super) fn copy(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.name, self.columns
        )
    }

    /// The conflict-tolerant write of a batch goes through a staging table: its rows are
    /// copied there (the same `COPY` data as a fresh batch), then `INSERT … SELECT … ON
    /// CONFLICT DO NOTHING` into the table, in the same transaction. The staging table
    /// is a temporary table of the session (created by the first such write on a
    /// connection, of the table's column types and no constraint: the table checks
    /// them), emptied at every commit.
    ///
    /// The statements, in order: create the staging table if the session has none,
    /// `COPY` into it, insert from it.
    pub(super) fn stage(&self) -> [String; 3] {
        let (name, stage, columns) = (self.name, self.stage, self.columns);
        [
            // Without the notice "relation already exists, skipping" on every call.
            format!(
                "SET LOCAL client_min_messages = warning; \
                 CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS \
                 SELECT {columns} FROM {name} WITH NO DATA"
            ),
            format!("COPY {stage} ({columns}) FROM STDIN (FORMAT binary)"),
            format!(
                "INSERT INTO {name} ({columns}) SELECT {columns} FROM {stage} \
                 ON CONFLICT DO NOTHING"
            ),
        ]
    }
}

/// Unix microseconds of 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A microsecond count PostgreSQL refuses as a `timestamptz` ("timestamp out of range"):
/// what a value that cannot be converted becomes, so that it is refused as the `INSERT`
/// form refuses it instead of turning into `±infinity` (`i64::MIN` and `i64::MAX`).
const OUT_OF_RANGE: i64 = i64::MAX - 1;

/// One table's rows in the binary `COPY` format: the header, then one tuple per
/// [`CopyRows::row`], each field length-prefixed (−1 for NULL).
pub(super) struct CopyRows {
    buf: Vec<u8>,
    rows: usize,
}

impl CopyRows {
    fn new() -> CopyRows {
        let mut buf = Vec::with_capacity(1 << 16);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyRows { buf, rows: 0 }
    }

    /// Starts a tuple of `fields` fields.
    fn row(&mut self, fields: i16) -> &mut CopyRows {
        self.rows += 1;
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut CopyRows {
        // Within a batch a field is far below 2 GiB: arbor refuses requests over its
        // body limit. Should one not fit, -1 would make it NULL; a NOT NULL column
        // refuses it and a nullable one is only ever given short strings.
        let len = i32::try_from(bytes.len()).unwrap_or(-1);
        self.buf.extend_from_slice(&len.to_be_bytes());
        if len >= 0 {
            self.buf.extend_from_slice(bytes);
        }
        self
    }

    fn null(&mut self) -> &mut CopyRows {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    fn int8(&mut self, v: i64) -> &mut CopyRows {
        self.field(&v.to_be_bytes())
    }

    fn int4(&mut self, v: i32) -> &mut CopyRows {
        self.field(&v.to_be_bytes())
    }

    fn uuid(&mut self, v: Uuid) -> &mut CopyRows {
        self.field(v.as_bytes())
    }

    fn opt_uuid(&mut self, v: Option<Uuid>) -> &mut CopyRows {
        match v {
            Some(v) => self.uuid(v),
            None => self.null(),
        }
    }

    fn text(&mut self, v: &str) -> &mut CopyRows {
        self.field(v.as_bytes())
    }

    fn opt_text(&mut self, v: Option<&str>) -> &mut CopyRows {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// A `timestamptz` from Unix microseconds.
    fn timestamptz(&mut self, unix_micros: i64) -> &mut CopyRows {
        let pg = match unix_micros.checked_sub(PG_EPOCH_UNIX_MICROS) {
            Some(v) if v != i64::MIN && v != i64::MAX => v,
            _ => OUT_OF_RANGE,
        };
        self.int8(pg)
    }

    /// A `json` field serialised in place (the length is written once it is known).
    fn json(&mut self, write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>) -> &mut Self {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        if write(&mut self.buf).is_err() {
            // Serialising arbor's own values does not fail; were it to, the field is
            // `null`.
            self.buf.truncate(at + 4);
            self.buf.extend_from_slice(b"null");
        }
        match i32::try_from(self.buf.len() - at - 4) {
            Ok(len) => self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes()),
            // Too long for a field (see `field`): NULL, and the text is dropped so that
            // the stream stays well-formed.
            Err(_) => {
                self.buf.truncate(at);
                self.null();
            }
        }
        self
    }

    /// How many tuples were written.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// The complete `COPY` data: the tuples and the trailer.
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

/// A batch's rows for each table, and its workflow rows (upserted, not copied: a
/// workflow's row may exist from an earlier batch). The one mapping of events to rows,
/// for the fresh write and the conflict-tolerant one alike.
pub(super) struct Copies {
    events: CopyRows,
    nodes: CopyRows,
    edges: CopyRows,
    drafts: CopyRows,
    pub(super) workflows: WfRows,
}

impl Copies {
    /// The rows of `batch`.
    pub(super) fn of<'a>(batch: impl IntoIterator<Item = &'a Item>) -> Copies {
        let mut c = Copies {
            events: CopyRows::new(),
            nodes: CopyRows::new(),
            edges: CopyRows::new(),
            drafts: CopyRows::new(),
            workflows: WfRows::default(),
        };
        for item in batch {
            let e = &item.event;
            let seq = to_i64(e.seq);
            c.workflows.fold(e, seq);
            for edge in item
                .edges()
                .into_iter()
                .filter(|e| e.kind != EdgeKind::ParentOf)
            {
                c.edges
                    .row(5)
                    .text(edge.kind.as_str())
                    .uuid(edge.from)
                    .uuid(edge.to)
                    .uuid(e.workflow_id)
                    .int8(to_i64(edge.seq));
            }
            c.event(e, seq);
            if let Some(n) = item.node() {
                c.node(e, n, seq);
            }
        }
        c
    }

    /// Each table with its rows, those without rows left out, and the workflow rows.
    pub(super) fn tables(self) -> (Vec<(Table, CopyRows)>, WfRows) {
        let tables = [
            (EVENTS, self.events),
            (NODES, self.nodes),
            (EDGES, self.edges),
            (DRAFTS, self.drafts),
        ]
        .into_iter()
        .filter(|(_, rows)| rows.rows() > 0)
        .collect();
        (tables, self.workflows)
    }

    fn event(&mut self, e: &Event, seq: i64) {
        self.events
            .row(9)
            .int8(seq)
            .uuid(e.id)
            .uuid(e.workflow_id)
            .text(e.kind())
            .timestamptz(e.timestamp.micros())
            .text(&e.actor)
            .json(|w| match &e.body {
                EventBody::WorkflowCreated(b) => serde_json::to_writer(w, b),
                EventBody::NodeCreated(b) => serde_json::to_writer(w, b),
                EventBody::EdgeCreated(b) => serde_json::to_writer(w, b),
                EventBody::StatusChanged(b) => serde_json::to_writer(w, b),
            })
            .text(&e.prev_hash)
            .text(&e.hash);
    }

    fn node(&mut self, e: &Event, n: &Node, seq: i64) {
        let ts = e.timestamp.micros();
        self.nodes
            .row(14)
            .uuid(n.id)
            .uuid(n.workflow_id)
            .opt_uuid(n.parent_id)
            .text(&n.node_type)
            .opt_text(n.role.map(|r| r.as_str()))
            .text(&n.content)
            .json(|w| serde_json::to_writer(w, &n.payload))
            .json(|w| write_object(w, &n.metadata))
            .opt_text(n.agent_id.as_deref())
            .opt_text(n.user_id.as_deref())
            .uuid(n.branch_id)
            .int4(i32::try_from(n.depth).unwrap_or(i32::MAX))
            .int8(seq)
            .timestamptz(ts);
        if n.node_type == "draft" {
            self.drafts
                .row(8)
                .uuid(n.id)
                .uuid(n.workflow_id)
                .text(&draft_field(&n.payload, "content_type", "comment"))
                .text(&n.content)
                .text(&draft_field(&n.payload, "status", "draft"))
                .json(|w| write_object(w, &n.metadata))
                .int8(seq)
                .timestamptz(ts);
        }
    }
}

/// A JSON payload value's string form for a draft column (strings unquoted).
fn draft_field(payload: &Value, key: &str, default: &str) -> String {
    match payload.get(key) {
        None | Some(Value::Null) => default.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A JSON object as `Value::Object(map).to_string()` writes it, without cloning the map.
fn write_object(w: &mut Vec<u8>, map: &serde_json::Map<String, Value>) -> serde_json::Result<()> {
    serde_json::to_writer(w.by_ref(), map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tuple_is_its_field_count_then_length_prefixed_fields() {
        let mut r = CopyRows::new();
        r.row(4)
            .int8(7)
            .null()
            .text("ab")
            .timestamptz(PG_EPOCH_UNIX_MICROS + 1);
        assert_eq!(r.rows(), 1);
        let data = r.finish();
        let header = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
        assert_eq!(&data[..header.len()], header);
        let body = &data[header.len()..];
        let want: Vec<u8> = [
            &4i16.to_be_bytes()[..],
            &8i32.to_be_bytes(),
            &7i64.to_be_bytes(),
            &(-1i32).to_be_bytes(),
            &2i32.to_be_bytes(),
            b"ab",
            &8i32.to_be_bytes(),
            &1i64.to_be_bytes(),
            &(-1i16).to_be_bytes(),
        ]
        .concat();
        assert_eq!(body, &want[..]);
    }

    #[test]
    fn a_timestamp_that_cannot_be_converted_is_out_of_range_not_infinite() {
        for unix in [i64::MIN, i64::MIN + PG_EPOCH_UNIX_MICROS - 1] {
            let mut r = CopyRows::new();
            r.timestamptz(unix);
            let data = r.finish();
            let v = &data[19 + 4..19 + 12];
            assert_eq!(v, &OUT_OF_RANGE.to_be_bytes(), "{unix}");
        }
    }

    #[test]
    fn json_fields_are_written_in_place_with_their_length() {
        let mut r = CopyRows::new();
        let mut map = serde_json::Map::new();
        map.insert("b".into(), Value::from(-0.0));
        map.insert("a".into(), Value::from("x"));
        r.json(|w| write_object(w, &map));
        let data = r.finish();
        let text = Value::Object(map).to_string();
        let len = i32::try_from(text.len()).unwrap_or(0);
        assert_eq!(&data[19..23], &len.to_be_bytes());
        assert_eq!(&data[23..23 + text.len()], text.as_bytes());
    }
}
