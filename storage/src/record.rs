//! The on-disk form of an event and the hash chain over it.
//!
//! A [`Record`] is what the `log` tree holds, encoded with rmp-serde (structs as
//! arrays). It differs from the public [`Event`] in two ways: node content is kept
//! out of line in the content store and referenced by its BLAKE3 hash, and hashes
//! are raw bytes. The chain hash of an event is
//! `BLAKE3(prev_hash ‖ rmp(seq, id, workflow_id, timestamp, actor, body))`; because
//! the body holds the content hash, the chain also covers every node's content.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::StorageError;
use crate::index::{IndexBody, IndexEvent, IndexNode};
use crate::model::{
    Edge, Event, EventBody, Node, Role, Seq, StatusChanged, WorkflowCreated, WorkflowStatus,
};
use crate::time::Timestamp;

mod decode;

/// A BLAKE3 digest.
pub type Hash = [u8; 32];

/// The hash before the first event.
pub const ZERO_HASH: Hash = [0; 32];

/// One stored event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Log position.
    pub seq: Seq,
    /// Event id.
    pub id: Uuid,
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Server time.
    pub timestamp: Timestamp,
    /// Actor.
    pub actor: String,
    /// What happened.
    pub body: RecordBody,
    /// Hash of the previous record.
    pub prev_hash: Hash,
    /// Chain hash of this record.
    pub hash: Hash,
}

/// The stored body of an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RecordBody {
    /// `workflow.created`.
    WorkflowCreated {
        /// The root node.
        root: NodeRecord,
        /// Workflow metadata.
        metadata: Map<String, Value>,
        /// Owner.
        user_id: Option<String>,
    },
    /// `node.created`.
    NodeCreated(NodeRecord),
    /// `edge.created`.
    EdgeCreated(Edge),
    /// `workflow.status_changed`.
    StatusChanged {
        /// Before.
        from: WorkflowStatus,
        /// After.
        to: WorkflowStatus,
    },
}

/// A node as stored: content by hash; workflow, seq and timestamp come from the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub id: Uuid,
    /// Parent id (None for the root).
    pub parent_id: Option<Uuid>,
    /// Type name.
    pub node_type: String,
    /// Role.
    pub role: Option<Role>,
    /// BLAKE3 of the content; the bytes live in the content tree.
    pub content_hash: Hash,
    /// Payload.
    pub payload: Value,
    /// Metadata.
    pub metadata: Map<String, Value>,
    /// Agent.
    pub agent_id: Option<String>,
    /// User.
    pub user_id: Option<String>,
    /// Branch id (derived, stored so reads need no index).
    pub branch_id: Uuid,
    /// Depth (derived, stored so reads need no index).
    pub depth: u32,
}

impl Record {
    /// Computes the chain hash of this record from its fields and `prev_hash`.
    pub(crate) fn compute_hash(&self) -> Result<Hash, StorageError> {
        let mut bytes = Vec::with_capacity(256);
        self.write_hashed(&mut bytes)?;
        let mut h = blake3::Hasher::new();
        h.update(&self.prev_hash);
        h.update(&bytes);
        Ok(*h.finalize().as_bytes())
    }

    /// Sets [`Record::hash`] from the fields and `prev_hash`, and appends the encoding
    /// for the log tree to `out`: the same bytes as [`Record::compute_hash`] then
    /// [`Record::encode`], with the fields serialized once instead of twice. The hashed
    /// tuple is a MessagePack array of the record's first six fields and the record an
    /// array of all eight, so the record is the hashed bytes with the array header
    /// changed, followed by the two hashes.
    pub(crate) fn seal_into(&mut self, out: &mut Vec<u8>) -> Result<(), StorageError> {
        const HASHED_HEADER: u8 = 0x90 | 6;
        const RECORD_HEADER: u8 = 0x90 | 8;
        let start = out.len();
        self.write_hashed(out)?;
        let mut h = blake3::Hasher::new();
        h.update(&self.prev_hash);
        h.update(&out[start..]);
        self.hash = *h.finalize().as_bytes();
        match out.get_mut(start) {
            Some(first) if *first == HASHED_HEADER => *first = RECORD_HEADER,
            // Not the layout this relies on: take the long way.
            _ => {
                out.truncate(start);
                out.extend_from_slice(&self.encode()?);
                return Ok(());
            }
        }
        push_hash(out, &self.prev_hash);
        push_hash(out, &self.hash);
        Ok(())
    }

    /// Appends the hashed tuple `(seq, id, workflow_id, timestamp, actor, body)` as
    /// rmp_serde encodes it. A node record, nearly every record, is written by hand, byte
    /// for byte the same (a proptest holds the two together), without serde's call per
    /// element of the content hash (issue 13: the writer's CPU per event); its payload
    /// and metadata still go through serde. Other bodies go through serde whole.
    fn write_hashed(&self, out: &mut Vec<u8>) -> Result<(), StorageError> {
        let encode = |e: rmp_serde::encode::Error| StorageError::Encode(e.to_string());
        let RecordBody::NodeCreated(n) = &self.body else {
            let hashed = (
                self.seq,
                self.id,
                self.workflow_id,
                self.timestamp,
                &self.actor,
                &self.body,
            );
            return rmp_serde::encode::write(out, &hashed).map_err(encode);
        };
        // Writes to a Vec cannot fail; rmp's error types only say what the writer did.
        fn infallible<E: std::fmt::Display>(e: E) -> StorageError {
            StorageError::Encode(e.to_string())
        }
        const TUPLE_OF_SIX: u8 = 0x90 | 6;
        const MAP_OF_ONE: u8 = 0x80 | 1;
        const NODE_RECORD_FIELDS: u8 = 0x90 | 11;
        const NIL: u8 = 0xc0;
        out.push(TUPLE_OF_SIX);
        rmp::encode::write_uint(out, self.seq).map_err(infallible)?;
        push_uuid(out, &self.id);
        push_uuid(out, &self.workflow_id);
        rmp::encode::write_sint(out, self.timestamp.0).map_err(infallible)?;
        rmp::encode::write_str(out, &self.actor).map_err(infallible)?;
        // An externally tagged newtype variant: a map of its name to the value.
        out.push(MAP_OF_ONE);
        rmp::encode::write_str(out, "NodeCreated").map_err(infallible)?;
        out.push(NODE_RECORD_FIELDS);
        push_uuid(out, &n.id);
        match &n.parent_id {
            Some(p) => push_uuid(out, p),
            None => out.push(NIL),
        }
        rmp::encode::write_str(out, &n.node_type).map_err(infallible)?;
        match n.role {
            Some(r) => rmp::encode::write_str(out, r.as_str()).map_err(infallible)?,
            None => out.push(NIL),
        }
        push_hash(out, &n.content_hash);
        rmp_serde::encode::write(out, &n.payload).map_err(encode)?;
        rmp_serde::encode::write(out, &n.metadata).map_err(encode)?;
        for s in [&n.agent_id, &n.user_id] {
            match s {
                Some(s) => rmp::encode::write_str(out, s).map_err(infallible)?,
                None => out.push(NIL),
            }
        }
        push_uuid(out, &n.branch_id);
        rmp::encode::write_uint(out, u64::from(n.depth)).map_err(infallible)?;
        Ok(())
    }

    /// Encodes for the log tree.
    pub fn encode(&self) -> Result<Vec<u8>, StorageError> {
        rmp_serde::to_vec(self).map_err(|e| StorageError::Encode(e.to_string()))
    }

    /// Decodes a log value: a node record laid out as [`Record::seal_into`] writes it
    /// by hand (see [`decode`]), anything else through serde.
    pub fn decode(bytes: &[u8]) -> Result<Record, StorageError> {
        match decode::node_record(bytes) {
            Some(r) => Ok(r),
            None => Record::decode_with_serde(bytes),
        }
    }

    /// Decodes a log value through serde only: what [`Record::decode`] falls back to,
    /// and its baseline in `cargo bench --bench storage -- record`.
    #[doc(hidden)]
    pub fn decode_with_serde(bytes: &[u8]) -> Result<Record, StorageError> {
        rmp_serde::from_slice(bytes)
            .map_err(|e| StorageError::Corrupt(format!("undecodable log record: {e}")))
    }

    /// Lowercase hex of [`Record::hash`], as events show it.
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }

    /// The node this record creates, if any.
    pub fn created_node(&self) -> Option<&NodeRecord> {
        match &self.body {
            RecordBody::WorkflowCreated { root, .. } => Some(root),
            RecordBody::NodeCreated(n) => Some(n),
            _ => None,
        }
    }

    /// Turns the record into the public event, fetching content with `content`.
    pub(crate) fn into_event(
        self,
        content: impl Fn(&Hash) -> Result<String, StorageError>,
    ) -> Result<Event, StorageError> {
        let Record {
            seq,
            id,
            workflow_id,
            timestamp,
            actor,
            body,
            prev_hash,
            hash,
        } = self;
        let node = |n: NodeRecord| public_node(n, workflow_id, seq, timestamp, &content);
        let body = match body {
            RecordBody::WorkflowCreated {
                root,
                metadata,
                user_id,
            } => EventBody::WorkflowCreated(WorkflowCreated {
                root: node(root)?,
                metadata,
                user_id,
            }),
            RecordBody::NodeCreated(n) => EventBody::NodeCreated(node(n)?),
            RecordBody::EdgeCreated(e) => EventBody::EdgeCreated(e),
            RecordBody::StatusChanged { from, to } => {
                EventBody::StatusChanged(StatusChanged { from, to })
            }
        };
        Ok(Event {
            seq,
            id,
            workflow_id,
            timestamp,
            actor,
            body,
            prev_hash: hex(&prev_hash),
            hash: hex(&hash),
        })
    }

    /// The public node this record creates (None: it creates none), fetching its
    /// content with `content`.
    pub(crate) fn into_created_node(
        self,
        content: impl Fn(&Hash) -> Result<String, StorageError>,
    ) -> Result<Option<Node>, StorageError> {
        let n = match self.body {
            RecordBody::WorkflowCreated { root, .. } => root,
            RecordBody::NodeCreated(n) => n,
            RecordBody::EdgeCreated(_) | RecordBody::StatusChanged { .. } => return Ok(None),
        };
        public_node(n, self.workflow_id, self.seq, self.timestamp, &content).map(Some)
    }

    /// The public node for `n`, a node of this record.
    pub(crate) fn node(
        &self,
        n: &NodeRecord,
        content: impl Fn(&Hash) -> Result<String, StorageError>,
    ) -> Result<Node, StorageError> {
        public_node(
            n.clone(),
            self.workflow_id,
            self.seq,
            self.timestamp,
            &content,
        )
    }
}

/// The public node of `n`, created at `seq` and `timestamp` in `workflow_id`.
fn public_node(
    n: NodeRecord,
    workflow_id: Uuid,
    seq: Seq,
    timestamp: Timestamp,
    content: &impl Fn(&Hash) -> Result<String, StorageError>,
) -> Result<Node, StorageError> {
    Ok(Node {
        content: content(&n.content_hash)?,
        id: n.id,
        workflow_id,
        parent_id: n.parent_id,
        node_type: n.node_type,
        role: n.role,
        payload: n.payload,
        metadata: n.metadata,
        agent_id: n.agent_id,
        user_id: n.user_id,
        branch_id: n.branch_id,
        depth: n.depth,
        seq,
        timestamp,
    })
}

/// Decodes only what the index needs of a log value (see [`IndexEvent`]): payloads,
/// metadata, content hashes and actors are skipped, not parsed into values. A node
/// record laid out as the writer lays one out is read by hand (see [`decode`]), anything
/// else through serde.
pub fn decode_index_event(bytes: &[u8]) -> Result<IndexEvent, StorageError> {
    match decode::node_index_event(bytes) {
        Some(e) => Ok(e),
        None => decode_index_event_with_serde(bytes),
    }
}

/// [`decode_index_event`] through serde only: what it falls back to.
pub(crate) fn decode_index_event_with_serde(bytes: &[u8]) -> Result<IndexEvent, StorageError> {
    use serde::de::IgnoredAny;
    #[derive(Deserialize)]
    struct Head<'a> {
        seq: Seq,
        id: Uuid,
        workflow_id: Uuid,
        timestamp: Timestamp,
        _actor: IgnoredAny,
        #[serde(borrow)]
        body: HeadBody<'a>,
        _prev_hash: IgnoredAny,
        _hash: IgnoredAny,
    }
    // Mirrors `RecordBody` variant for variant, field for field.
    #[derive(Deserialize)]
    enum HeadBody<'a> {
        WorkflowCreated {
            #[serde(borrow)]
            root: HeadNode<'a>,
            metadata: NonEmpty,
            user_id: Option<&'a str>,
        },
        NodeCreated(#[serde(borrow)] HeadNode<'a>),
        EdgeCreated(Edge),
        StatusChanged {
            from: WorkflowStatus,
            to: WorkflowStatus,
        },
    }
    #[derive(Deserialize)]
    struct HeadNode<'a> {
        id: Uuid,
        parent_id: Option<Uuid>,
        node_type: &'a str,
        role: Option<Role>,
        _content_hash: IgnoredAny,
        _payload: IgnoredAny,
        _metadata: IgnoredAny,
        _agent_id: IgnoredAny,
        _user_id: IgnoredAny,
        branch_id: Uuid,
        depth: u32,
    }
    fn node(n: &HeadNode<'_>) -> IndexNode {
        IndexNode::new(n.id, n.parent_id, n.node_type, n.role, n.branch_id, n.depth)
    }
    let h: Head<'_> = rmp_serde::from_slice(bytes)
        .map_err(|e| StorageError::Corrupt(format!("undecodable log record: {e}")))?;
    Ok(IndexEvent {
        seq: h.seq,
        id: h.id,
        workflow_id: h.workflow_id,
        timestamp: h.timestamp,
        body: match h.body {
            HeadBody::WorkflowCreated {
                root,
                metadata,
                user_id,
            } => IndexBody::WorkflowCreated {
                root: node(&root),
                user_id: user_id.map(Box::from),
                has_metadata: metadata.0,
            },
            HeadBody::NodeCreated(n) => IndexBody::NodeCreated(node(&n)),
            HeadBody::EdgeCreated(e) => IndexBody::EdgeCreated(e),
            HeadBody::StatusChanged { from, to } => IndexBody::StatusChanged { from, to },
        },
    })
}

/// Whether a map has entries, read without parsing them (the index's rebuild needs to
/// know whether a workflow has metadata, not what it is).
struct NonEmpty(bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NonEmpty, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NonEmpty;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<NonEmpty, A::Error> {
                use serde::de::IgnoredAny;
                let mut entries = 0usize;
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    entries += 1;
                }
                Ok(NonEmpty(entries > 0))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The content hash of a text.
pub fn content_hash(content: &str) -> Hash {
    *blake3::hash(content.as_bytes()).as_bytes()
}

/// Lowercase hex of a hash.
pub fn hex(h: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in h {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Appends a UUID as its serde form writes it to MessagePack (not human-readable):
/// `bin 8` of its 16 bytes.
fn push_uuid(out: &mut Vec<u8>, id: &Uuid) {
    out.extend_from_slice(&[0xc4, 16]);
    out.extend_from_slice(id.as_bytes());
}

/// Appends a hash as `rmp_serde` encodes a `[u8; 32]` (an array16 of 32 unsigned
/// integers, each in its shortest form: a positive fixint below 128, `0xcc` and the byte
/// above), byte for byte, without serde's per-element calls (issue 13: `seal_into` of a
/// node record 0.82–1.06 µs against 1.12–1.21 µs through serde).
fn push_hash(out: &mut Vec<u8>, h: &Hash) {
    out.reserve(3 + 2 * h.len());
    out.extend_from_slice(&[0xdc, 0x00, 0x20]);
    for &b in h {
        if b < 0x80 {
            out.push(b);
        } else {
            out.extend_from_slice(&[0xcc, b]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EdgeKind;

    pub(super) fn sample() -> Record {
        Record {
            seq: 7,
            id: Uuid::from_u128(1),
            workflow_id: Uuid::from_u128(2),
            timestamp: Timestamp(1_000_000),
            actor: "anonymous".into(),
            body: RecordBody::NodeCreated(NodeRecord {
                id: Uuid::from_u128(1),
                parent_id: Some(Uuid::from_u128(3)),
                node_type: "message".into(),
                role: Some(Role::User),
                content_hash: content_hash("hello"),
                payload: serde_json::json!({"a": [1, 2.5, "x", null], "big": u64::MAX}),
                metadata: Map::new(),
                agent_id: None,
                user_id: Some("u".into()),
                branch_id: Uuid::from_u128(4),
                depth: 3,
            }),
            prev_hash: [9; 32],
            hash: ZERO_HASH,
        }
    }

    #[test]
    fn seal_matches_compute_hash_then_encode() {
        let node = sample();
        let RecordBody::NodeCreated(root) = node.body.clone() else {
            unreachable!()
        };
        let mut bodies = vec![
            node.body.clone(),
            RecordBody::WorkflowCreated {
                root,
                metadata: serde_json::json!({"k": "v", "n": 1})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                user_id: None,
            },
            RecordBody::EdgeCreated(Edge {
                kind: EdgeKind::Monitors,
                from: Uuid::from_u128(5),
                to: Uuid::from_u128(6),
            }),
            RecordBody::StatusChanged {
                from: WorkflowStatus::Running,
                to: WorkflowStatus::Completed,
            },
        ];
        for (i, body) in bodies.drain(..).enumerate() {
            let mut r = sample();
            r.body = body;
            r.seq = u64::MAX >> (i * 13);
            r.actor = "a".repeat(i * 40);
            r.prev_hash = [i as u8 * 50; 32];
            // After whatever the buffer held already (a log value's header).
            let mut bytes = vec![7u8; i];
            r.seal_into(&mut bytes).unwrap();
            let bytes = bytes.split_off(i);
            assert_eq!(r.hash, r.compute_hash().unwrap());
            assert_eq!(bytes, r.encode().unwrap());
            assert_eq!(Record::decode(&bytes).unwrap(), r);
        }
    }

    proptest::prop_compose! {
        /// Node records at every size class of every field (MessagePack's integer and
        /// string forms change at 2^7, 2^8, 2^16 and 2^32, and at 32 bytes of text),
        /// with payloads and metadata of several shapes.
        pub(super) fn node_records()(
            seq in proptest::prop_oneof![0u64..300, proptest::num::u64::ANY],
            ts in proptest::prop_oneof![-300i64..300, proptest::num::i64::ANY],
            actor in "[a-zé]{0,40}",
            ids in proptest::array::uniform4(proptest::num::u128::ANY),
            parent in proptest::option::of(proptest::num::u128::ANY),
            node_type in "[a-z]{1,33}",
            role in proptest::option::of(proptest::sample::select(vec![Role::System, Role::User, Role::Assistant, Role::Tool])),
            content_hash in proptest::array::uniform32(proptest::num::u8::ANY),
            payload in proptest::option::of("[a-z]{0,5}"),
            meta_key in proptest::option::of("[a-z]{1,5}"),
            agent_id in proptest::option::of("[a-z0-9]{0,300}"),
            user_id in proptest::option::of("\\PC{0,3}"),
            depth in proptest::prop_oneof![0u32..300, proptest::num::u32::ANY],
            hashes in proptest::array::uniform2(proptest::array::uniform32(proptest::num::u8::ANY)),
        ) -> Record {
            let mut metadata = Map::new();
            if let Some(k) = meta_key {
                metadata.insert(k, serde_json::json!([1, -2, 2.5, "x", {"deep": [null, true]}]));
            }
            Record {
                seq,
                id: Uuid::from_u128(ids[0]),
                workflow_id: Uuid::from_u128(ids[1]),
                timestamp: Timestamp(ts),
                actor,
                body: RecordBody::NodeCreated(NodeRecord {
                    id: Uuid::from_u128(ids[2]),
                    parent_id: parent.map(Uuid::from_u128),
                    node_type,
                    role,
                    content_hash,
                    payload: payload.map_or(Value::Null, |p| serde_json::json!({ "p": p, "n": seq })),
                    metadata,
                    agent_id,
                    user_id,
                    branch_id: Uuid::from_u128(ids[3]),
                    depth,
                }),
                prev_hash: hashes[0],
                hash: hashes[1],
            }
        }
    }

    proptest::proptest! {
        /// The hand-written hash encoding is rmp_serde's, byte for byte.
        #[test]
        fn a_hash_is_pushed_as_rmp_serde_writes_it(h in proptest::array::uniform32(proptest::num::u8::ANY)) {
            let mut pushed = vec![1u8, 2];
            push_hash(&mut pushed, &h);
            let mut serde = vec![1u8, 2];
            rmp_serde::encode::write(&mut serde, &h).unwrap();
            proptest::prop_assert_eq!(pushed, serde);
        }

        /// The hand-written encoding of a node record is rmp_serde's, byte for byte, at
        /// every size class of every field.
        #[test]
        fn a_node_record_is_written_as_rmp_serde_writes_it(r in node_records()) {
            let mut written = vec![3u8];
            r.write_hashed(&mut written).unwrap();
            let hashed = (r.seq, r.id, r.workflow_id, r.timestamp, &r.actor, &r.body);
            let mut serde = vec![3u8];
            rmp_serde::encode::write(&mut serde, &hashed).unwrap();
            proptest::prop_assert_eq!(written, serde);
        }
    }

    #[test]
    fn record_round_trips_through_rmp() {
        let mut r = sample();
        r.hash = r.compute_hash().unwrap();
        let back = Record::decode(&r.encode().unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.compute_hash().unwrap(), r.hash);
    }

    #[test]
    fn light_decode_sees_what_the_full_decode_sees() {
        let mut r = sample();
        r.hash = r.compute_hash().unwrap();
        let bytes = r.encode().unwrap();
        assert_eq!(decode_index_event(&bytes).unwrap(), IndexEvent::of(&r));
        let wf = Record {
            body: RecordBody::WorkflowCreated {
                root: match r.body.clone() {
                    RecordBody::NodeCreated(n) => n,
                    _ => unreachable!(),
                },
                metadata: serde_json::json!({"k": {"deep": [1, 2]}})
                    .as_object()
                    .unwrap()
                    .clone(),
                user_id: Some("ana".into()),
            },
            ..r.clone()
        };
        assert_eq!(
            decode_index_event(&wf.encode().unwrap()).unwrap(),
            IndexEvent::of(&wf)
        );
        for body in [
            RecordBody::EdgeCreated(Edge {
                kind: EdgeKind::Monitors,
                from: Uuid::from_u128(5),
                to: Uuid::from_u128(6),
            }),
            RecordBody::StatusChanged {
                from: WorkflowStatus::Running,
                to: WorkflowStatus::Failed,
            },
        ] {
            let e = Record { body, ..r.clone() };
            assert_eq!(
                decode_index_event(&e.encode().unwrap()).unwrap(),
                IndexEvent::of(&e)
            );
        }
    }

    #[test]
    fn hash_covers_body_and_previous_hash() {
        let r = sample();
        let h = r.compute_hash().unwrap();
        let mut other = r.clone();
        other.prev_hash = [8; 32];
        assert_ne!(other.compute_hash().unwrap(), h);
        let mut other = r.clone();
        if let RecordBody::NodeCreated(n) = &mut other.body {
            n.content_hash = content_hash("hellO");
        }
        assert_ne!(other.compute_hash().unwrap(), h);
    }

    #[test]
    fn garbage_is_a_corruption_error_not_a_panic() {
        assert!(matches!(
            Record::decode(&[0xc1, 0x00, 0xff]),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn hex_is_lowercase_and_64_chars() {
        let h = hex(&[0xab; 32]);
        assert_eq!(h.len(), 64);
        assert!(h.starts_with("abab"));
    }
}
