//! Packs: the log values of consecutive events of one group in one sled value.
//!
//! sled's cost is per key: every insert walks to the tree's rightmost leaf, links a
//! fragment to it and, every few inserts, rewrites or splits it, and a scan pays per key
//! as well. A group's events are written together and read in order, so the writer
//! stores them together: one key per pack, the seq of its first event, and the pack
//! holds each event's log value (plain or with its content, see the parent module)
//! unchanged, with its seq.
//!
//! Layout: [`PACK`], then per entry its seq (u64 BE), its value's length (u32 BE) and
//! the value. The seqs ascend; a reader finds an event in the value under the greatest
//! key at or below its seq. A value that does not start with [`PACK`] is one event's
//! plain log value under its own seq, as every value of a store written before packs;
//! both kinds mix freely in one log. A pack stays under [`PACK_BYTES`] (so that a leaf
//! of sled's holding many stays small) and never holds events of two groups (so that a
//! group a crash cut short is removed at open by whole keys); a value too large to
//! share a pack, or a group of one event, is written plain.

use crate::error::StorageError;
use crate::model::Seq;

/// First byte of a pack: MessagePack's `false`, which no record starts with (a record
/// is an array), and not the content frame's `0xC1`.
pub const PACK: u8 = 0xc2;

/// Per entry: seq (8 bytes) and length (4 bytes).
const ENTRY_HEADER: usize = 12;

/// A pack is at most this large, unless it holds a single entry. sled writes a leaf
/// page over 128 KiB to a file of its own; its leaves hold up to 17 keys, and 17 packs
/// of 6 KiB stay under that.
pub const PACK_BYTES: usize = 6 * 1024;

/// How many of `values`, from the first, go in the next sled value: as many as fit in
/// [`PACK_BYTES`], at least one.
pub fn take(values: &[(Seq, Vec<u8>)]) -> usize {
    let mut size = 1;
    let mut n = 0;
    for (_, v) in values {
        size += ENTRY_HEADER + v.len();
        if n > 0 && size > PACK_BYTES {
            break;
        }
        n += 1;
    }
    n
}

/// Appends the pack of `values` (seqs ascending) to `out`.
pub fn encode<'a>(
    values: impl IntoIterator<Item = (Seq, &'a [u8])>,
    out: &mut Vec<u8>,
) -> Result<(), StorageError> {
    out.push(PACK);
    for (seq, v) in values {
        let len = u32::try_from(v.len())
            .map_err(|_| StorageError::Encode(format!("a log value of {} bytes", v.len())))?;
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(v);
    }
    Ok(())
}

/// The log values in the sled value stored under `key`: a pack's entries, or the
/// plain value itself under `key`. Each is a slice of the sled value's buffer.
pub struct Values {
    value: sled::IVec,
    /// Where the next entry starts; `None` when done.
    at: Option<usize>,
    /// The plain value's seq, when the value is not a pack.
    plain: Option<Seq>,
}

impl Values {
    /// The log values stored under `key`.
    pub fn new(key: Seq, value: sled::IVec) -> Values {
        let packed = value.first() == Some(&PACK);
        Values {
            at: Some(usize::from(packed)),
            plain: (!packed).then_some(key),
            value,
        }
    }

    /// Whether the sled value is a pack.
    pub fn is_pack(&self) -> bool {
        self.plain.is_none()
    }

    /// The entry at `seq`, if this value holds one.
    pub fn find(self, seq: Seq) -> Result<Option<sled::IVec>, StorageError> {
        for entry in self {
            let (s, v) = entry?;
            if s == seq {
                return Ok(Some(v));
            }
            if s > seq {
                break;
            }
        }
        Ok(None)
    }

    /// The last entry.
    pub fn last(self) -> Result<Option<(Seq, sled::IVec)>, StorageError> {
        let mut last = None;
        for entry in self {
            last = Some(entry?);
        }
        Ok(last)
    }

    fn next_packed(&mut self, at: usize) -> Result<Option<(Seq, sled::IVec)>, StorageError> {
        if at == self.value.len() {
            return Ok(None);
        }
        let cut = || StorageError::Corrupt(format!("a log pack cut short at byte {at}"));
        let header = self.value.get(at..at + ENTRY_HEADER).ok_or_else(cut)?;
        let (seq, len) = header.split_at(8);
        let seq = u64::from_be_bytes(seq.try_into().map_err(|_| cut())?);
        let len = u32::from_be_bytes(len.try_into().map_err(|_| cut())?);
        let start = at + ENTRY_HEADER;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|end| *end <= self.value.len())
            .ok_or_else(cut)?;
        self.at = Some(end);
        Ok(Some((seq, self.value.subslice(start, end - start))))
    }
}

impl Iterator for Values {
    type Item = Result<(Seq, sled::IVec), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at.take()?;
        if let Some(seq) = self.plain {
            return Some(Ok((seq, self.value.clone())));
        }
        self.next_packed(at).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(sizes: &[usize]) -> Vec<(Seq, Vec<u8>)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (10 + i as Seq, vec![0x90 | (i as u8 & 7); *n]))
            .collect()
    }

    fn packed(vs: &[(Seq, Vec<u8>)]) -> sled::IVec {
        let mut out = Vec::new();
        encode(vs.iter().map(|(s, v)| (*s, v.as_slice())), &mut out).unwrap();
        out.into()
    }

    #[test]
    fn a_pack_reads_back_entry_by_entry() {
        let vs = values(&[1, 300, 0, 5000]);
        let got: Vec<(Seq, Vec<u8>)> = Values::new(10, packed(&vs))
            .map(|e| e.map(|(s, v)| (s, v.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, vs);
        assert_eq!(
            Values::new(10, packed(&vs))
                .find(12)
                .unwrap()
                .unwrap()
                .len(),
            0
        );
        assert!(Values::new(10, packed(&vs)).find(14).unwrap().is_none());
        assert_eq!(Values::new(10, packed(&vs)).last().unwrap().unwrap().0, 13);
    }

    #[test]
    fn a_plain_value_is_one_entry_under_its_key() {
        let v: sled::IVec = vec![0x98, 1, 2].into();
        let values = Values::new(7, v.clone());
        assert!(!values.is_pack());
        let got: Vec<_> = values.collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(7, v.clone())]);
        assert!(Values::new(7, v.clone()).find(8).unwrap().is_none());
        assert_eq!(Values::new(7, v).find(7).unwrap().unwrap()[0], 0x98);
    }

    #[test]
    fn a_pack_cut_short_is_an_error_not_a_panic() {
        let whole = packed(&values(&[40, 40]));
        for len in 2..whole.len() {
            let cut: sled::IVec = whole[..len].into();
            let read: Result<Vec<_>, _> = Values::new(10, cut).collect();
            if len == 1 + 2 * ENTRY_HEADER - ENTRY_HEADER + 40 {
                assert_eq!(read.unwrap().len(), 1, "cut between entries");
            } else {
                assert!(read.is_err(), "cut at {len} read as whole");
            }
        }
    }

    #[test]
    fn take_fills_a_pack_up_to_its_size_and_always_takes_one() {
        assert_eq!(
            take(&values(&[100; 100])),
            PACK_BYTES / (100 + ENTRY_HEADER)
        );
        assert_eq!(take(&values(&[PACK_BYTES * 2, 10])), 1);
        assert_eq!(take(&values(&[10, PACK_BYTES])), 1);
        assert_eq!(take(&values(&[])), 0);
        let (a, b) = (
            PACK_BYTES / 2 - ENTRY_HEADER,
            PACK_BYTES / 2 - ENTRY_HEADER - 1,
        );
        assert_eq!(take(&values(&[a, b, 1])), 2, "exactly full");
    }
}
