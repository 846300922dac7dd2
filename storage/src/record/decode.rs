//! A hand-written decoder for node records, the mirror of [`Record::seal_into`].
//!
//! Reading the log is decoding records: every sink's catch-up, every replay, every read
//! of a node that is not cached. Through serde, a node record costs some 130 visitor
//! calls, 96 of them for the three hashes (rmp_serde writes a `[u8; 32]` as an array of
//! 32 integers): decoding was about a quarter of arbor's CPU in a Redis catch-up
//! (issue 13, stop 29). [`node_record`] reads the layout the writer produces field by
//! field, and payload and metadata through rmp_serde, as before.
//!
//! It is a fast path, not a second definition of the format: it answers `None` at the
//! first byte that does not fit the writer's layout of a node record (another body or
//! array length, a UUID or hash in another form, a byte after the record; integers and
//! strings are read in any of their forms), and the caller then decodes through serde,
//! which decides what is valid and words the error. A proptest
//! holds that whatever it accepts, serde decodes to the same record.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Hash, NodeRecord, Record, RecordBody};
use crate::index::{IndexBody, IndexEvent, IndexNode};
use crate::model::{Role, Seq};
use crate::time::Timestamp;

/// MessagePack markers of the layout.
const FIXARRAY_8: u8 = 0x90 | 8;
const FIXARRAY_11: u8 = 0x90 | 11;
const FIXMAP_1: u8 = 0x80 | 1;
const NIL: u8 = 0xc0;
const BIN8: u8 = 0xc4;
const UINT8: u8 = 0xcc;
const ARRAY16: u8 = 0xdc;

/// The node record `bytes` encodes, if it is laid out as the writer lays one out; `None`
/// for anything else (decode it through serde).
pub(super) fn node_record(bytes: &[u8]) -> Option<Record> {
    let f = node_fields::<Value, Map<String, Value>>(bytes)?;
    Some(Record {
        seq: f.seq,
        id: f.id,
        workflow_id: f.workflow_id,
        timestamp: f.timestamp,
        actor: f.actor.to_owned(),
        body: RecordBody::NodeCreated(NodeRecord {
            id: f.node_id,
            parent_id: f.parent_id,
            node_type: f.node_type.to_owned(),
            role: f.role,
            content_hash: f.content_hash,
            payload: f.payload,
            metadata: f.metadata,
            agent_id: f.agent_id.map(str::to_owned),
            user_id: f.user_id.map(str::to_owned),
            branch_id: f.branch_id,
            depth: f.depth,
        }),
        prev_hash: f.prev_hash,
        hash: f.hash,
    })
}

/// What the index needs of the node record `bytes` encodes (see
/// [`super::decode_index_event`]), if it is laid out as the writer lays one out; `None`
/// for anything else. Payload and metadata are walked over, not parsed into values.
pub(super) fn node_index_event(bytes: &[u8]) -> Option<IndexEvent> {
    let f = node_fields::<IgnoredAny, IgnoredAny>(bytes)?;
    Some(IndexEvent {
        seq: f.seq,
        id: f.id,
        workflow_id: f.workflow_id,
        timestamp: f.timestamp,
        body: IndexBody::NodeCreated(IndexNode::new(
            f.node_id,
            f.parent_id,
            f.node_type,
            f.role,
            f.branch_id,
            f.depth,
        )),
    })
}

/// The fields of a node record, its strings borrowed from the bytes, its payload and
/// metadata read as `P` and `M` (values, or [`IgnoredAny`] to walk over them).
struct NodeFields<'a, P, M> {
    seq: Seq,
    id: Uuid,
    workflow_id: Uuid,
    timestamp: Timestamp,
    actor: &'a str,
    node_id: Uuid,
    parent_id: Option<Uuid>,
    node_type: &'a str,
    role: Option<Role>,
    content_hash: Hash,
    payload: P,
    metadata: M,
    agent_id: Option<&'a str>,
    user_id: Option<&'a str>,
    branch_id: Uuid,
    depth: u32,
    prev_hash: Hash,
    hash: Hash,
}

/// Reads a node record laid out as [`Record::seal_into`] writes one, field by field.
fn node_fields<P: DeserializeOwned, M: DeserializeOwned>(
    bytes: &[u8],
) -> Option<NodeFields<'_, P, M>> {
    let mut c = Cursor(bytes);
    c.marker(FIXARRAY_8)?;
    let seq = c.int::<u64>()?;
    let id = c.uuid()?;
    let workflow_id = c.uuid()?;
    let timestamp = Timestamp(c.int::<i64>()?);
    let actor = c.str()?;
    c.marker(FIXMAP_1)?;
    if c.str()? != "NodeCreated" {
        return None;
    }
    c.marker(FIXARRAY_11)?;
    let f = NodeFields {
        seq,
        id,
        workflow_id,
        timestamp,
        actor,
        node_id: c.uuid()?,
        parent_id: c.nil_or(Cursor::uuid)?,
        node_type: c.str()?,
        role: c.nil_or(Cursor::role)?,
        content_hash: c.hash()?,
        payload: c.serde::<P>()?,
        metadata: c.serde::<M>()?,
        agent_id: c.nil_or(Cursor::str)?,
        user_id: c.nil_or(Cursor::str)?,
        branch_id: c.uuid()?,
        depth: c.int::<u32>()?,
        prev_hash: c.hash()?,
        hash: c.hash()?,
    };
    c.0.is_empty().then_some(f)
}

/// The bytes not read yet.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn marker(&mut self, m: u8) -> Option<()> {
        (self.byte()? == m).then_some(())
    }

    /// An integer in any of MessagePack's forms, if it fits `T`.
    fn int<T: TryFrom<i128>>(&mut self) -> Option<T> {
        let m = self.byte()?;
        let v = match m {
            0x00..=0x7f => i128::from(m),
            0xe0..=0xff => i128::from(m as i8),
            0xcc => i128::from(self.byte()?),
            0xcd => i128::from(u16::from_be_bytes(self.array()?)),
            0xce => i128::from(u32::from_be_bytes(self.array()?)),
            0xcf => i128::from(u64::from_be_bytes(self.array()?)),
            0xd0 => i128::from(i8::from_be_bytes(self.array()?)),
            0xd1 => i128::from(i16::from_be_bytes(self.array()?)),
            0xd2 => i128::from(i32::from_be_bytes(self.array()?)),
            0xd3 => i128::from(i64::from_be_bytes(self.array()?)),
            _ => return None,
        };
        T::try_from(v).ok()
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A UTF-8 string in any of MessagePack's str forms.
    fn str(&mut self) -> Option<&'a str> {
        let m = self.byte()?;
        let len = match m {
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => usize::from(self.byte()?),
            0xda => usize::from(u16::from_be_bytes(self.array()?)),
            0xdb => usize::try_from(u32::from_be_bytes(self.array()?)).ok()?,
            _ => return None,
        };
        std::str::from_utf8(self.take(len)?).ok()
    }

    /// A UUID as serde writes one to MessagePack: `bin 8` of 16 bytes.
    fn uuid(&mut self) -> Option<Uuid> {
        self.marker(BIN8)?;
        self.marker(16)?;
        Uuid::from_slice(self.take(16)?).ok()
    }

    /// A hash as [`super::push_hash`] writes it: 32 elements of one byte (below 0x80)
    /// or two (`0xcc` and a byte from 0x80). Which one is as random as the hash, so the
    /// loop does not branch on it (a mispredicted branch an element): it reads a
    /// zero-padded copy of the next 64 bytes (the longest a hash can be), takes each
    /// element's last byte by index arithmetic and notes any misfit, checked once at
    /// the end. `cargo bench --bench storage -- record`: the whole decode 2.4× as fast
    /// as serde's with this loop, 1.9× with a branch an element.
    fn hash(&mut self) -> Option<Hash> {
        let rest = self.0.strip_prefix(&[ARRAY16, 0, 32])?;
        let len = rest.len().min(64);
        let mut window = [0u8; 66];
        window[..len].copy_from_slice(&rest[..len]);
        let mut h = [0u8; 32];
        let mut at = 0usize;
        let mut misfit = false;
        for b in &mut h {
            let first = window[at];
            let two = first == UINT8;
            let value = window[at + usize::from(two)];
            *b = value;
            misfit |= (two & (value < 0x80)) | (!two & (first >= 0x80));
            at += 1 + usize::from(two);
        }
        if misfit || at > len {
            return None;
        }
        self.0 = rest.get(at..)?;
        Some(h)
    }

    /// A role by its wire name.
    fn role(&mut self) -> Option<Role> {
        Role::parse(self.str()?)
    }

    /// `nil` as `None`, anything else read by `read`: `Some(None)` or `Some(Some(v))`,
    /// `None` when `read` fails.
    fn nil_or<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if let Some((&NIL, rest)) = self.0.split_first() {
            self.0 = rest;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// A value through rmp_serde, as the whole-record decode reads it. Its nesting
    /// limit is set below the one the whole-record decode leaves a payload (1 024 less
    /// the record's and the node's arrays and the body's map), so that nothing serde
    /// would refuse is accepted here.
    fn serde<T: DeserializeOwned>(&mut self) -> Option<T> {
        let mut de = rmp_serde::Deserializer::new(&mut self.0);
        de.set_max_depth(1024 - 3);
        T::deserialize(&mut de).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::node_records;
    use super::*;
    use crate::model::{Edge, EdgeKind};

    /// The log value of `r` (the writer's bytes: `a_node_record_is_written_as_rmp_serde_writes_it`).
    fn sealed(r: &Record) -> Vec<u8> {
        r.encode().unwrap()
    }

    proptest::proptest! {
        /// Every node record the writer makes is read back by hand, whole and as the
        /// index needs it, as serde reads it.
        #[test]
        fn a_node_record_is_read_by_hand_as_serde_reads_it(r in node_records()) {
            let bytes = sealed(&r);
            proptest::prop_assert_eq!(Record::decode_with_serde(&bytes).unwrap(), r.clone());
            let indexed = IndexEvent::of(&r);
            proptest::prop_assert_eq!(super::super::decode_index_event_with_serde(&bytes).unwrap(), indexed.clone());
            proptest::prop_assert_eq!(node_index_event(&bytes), Some(indexed));
            proptest::prop_assert_eq!(node_record(&bytes), Some(r));
        }

        /// Whatever the hand decoders accept of a damaged record (a byte changed, the
        /// value cut short or lengthened), serde decodes alike: the fast paths never
        /// read a value serde would refuse or read otherwise.
        #[test]
        fn what_the_hand_decoder_accepts_serde_reads_alike(
            r in node_records(),
            at in proptest::num::usize::ANY,
            byte in proptest::num::u8::ANY,
            how in 0u8..3,
        ) {
            let mut bytes = sealed(&r);
            let at = at % bytes.len();
            match how {
                0 => bytes[at] = byte,
                1 => bytes.truncate(at),
                _ => bytes.insert(at, byte),
            }
            if let Some(fast) = node_record(&bytes) {
                proptest::prop_assert_eq!(Record::decode_with_serde(&bytes).ok(), Some(fast));
            }
            if let Some(fast) = node_index_event(&bytes) {
                let serde = super::super::decode_index_event_with_serde(&bytes).ok();
                proptest::prop_assert_eq!(serde, Some(fast));
            }
        }
    }

    #[test]
    fn integers_in_longer_forms_are_read_as_serde_reads_them() {
        let mut de = super::super::tests::sample();
        de.seq = 5;
        let bytes = sealed(&de);
        assert_eq!(bytes[1], 5, "seq as a positive fixint");
        // The same seq as a uint64 and as an int8: both still the record.
        for long in [&[0xcf, 0, 0, 0, 0, 0, 0, 0, 5][..], &[0xd0, 5]] {
            let mut b = vec![bytes[0]];
            b.extend_from_slice(long);
            b.extend_from_slice(&bytes[2..]);
            assert_eq!(node_record(&b), Some(de.clone()));
            assert_eq!(Record::decode_with_serde(&b).unwrap(), de);
        }
        // A negative seq is no u64, for either.
        let mut b = bytes.clone();
        b[1] = 0xff;
        assert_eq!(node_record(&b), None);
        assert!(Record::decode(&b).is_err());
    }

    #[test]
    fn other_bodies_and_other_layouts_are_left_to_serde() {
        let mut edge = super::super::tests::sample();
        edge.body = RecordBody::EdgeCreated(Edge {
            kind: EdgeKind::Monitors,
            from: Uuid::from_u128(5),
            to: Uuid::from_u128(6),
        });
        let bytes = edge.encode().unwrap();
        assert_eq!(node_record(&bytes), None);
        assert_eq!(Record::decode(&bytes).unwrap(), edge);
        // A node record with a byte after it: not the writer's layout.
        let node = super::super::tests::sample();
        let mut bytes = sealed(&node);
        assert_eq!(node_record(&bytes), Some(node));
        bytes.push(0xc0);
        assert_eq!(node_record(&bytes), None);
    }
}
