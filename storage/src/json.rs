//! A node's JSON text written straight into a buffer, byte for byte what `serde_json`
//! makes of [`Node`] (the unit and property tests hold it to that).
//!
//! Every append answers with its node and every read of the node cache renders one, so
//! this is on the hot path of both. `serde_json` scans each string byte by byte for
//! characters to escape; [`write_str`] skips eight clean bytes at a time, and the
//! fixed fields (UUIDs, numbers, the role, the timestamp) are written without a scan.
//! Free JSON (`payload`, `metadata`) still goes through `serde_json`.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::Node;
use crate::time::{Timestamp, RFC3339_LEN};

/// Appends `node` as JSON to `out`: the same bytes as `serde_json::to_vec(node)`.
pub fn write_node_json(out: &mut Vec<u8>, node: &Node) -> Result<(), serde_json::Error> {
    out.reserve(node_len_hint(node));
    out.extend_from_slice(b"{\"id\":");
    write_uuid(out, &node.id);
    out.extend_from_slice(b",\"workflow_id\":");
    write_uuid(out, &node.workflow_id);
    out.extend_from_slice(b",\"parent_id\":");
    match &node.parent_id {
        Some(p) => write_uuid(out, p),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"type\":");
    write_str(out, &node.node_type);
    out.extend_from_slice(b",\"role\":");
    match node.role {
        Some(r) => {
            out.push(b'"');
            out.extend_from_slice(r.as_str().as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"content\":");
    write_str(out, &node.content);
    out.extend_from_slice(b",\"payload\":");
    write_value(out, &node.payload)?;
    out.extend_from_slice(b",\"metadata\":");
    write_map(out, &node.metadata)?;
    out.extend_from_slice(b",\"agent_id\":");
    write_opt_str(out, node.agent_id.as_deref());
    out.extend_from_slice(b",\"user_id\":");
    write_opt_str(out, node.user_id.as_deref());
    out.extend_from_slice(b",\"branch_id\":");
    write_uuid(out, &node.branch_id);
    out.extend_from_slice(b",\"depth\":");
    out.extend_from_slice(itoa::Buffer::new().format(node.depth).as_bytes());
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(node.seq).as_bytes());
    out.extend_from_slice(b",\"timestamp\":");
    write_timestamp(out, node.timestamp)?;
    out.push(b'}');
    Ok(())
}

/// `node` as JSON text (see [`write_node_json`]).
pub fn node_json(node: &Node) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    write_node_json(&mut out, node)?;
    Ok(out)
}

/// Room for the node's text when its strings need no escaping (one allocation in the
/// common case).
fn node_len_hint(node: &Node) -> usize {
    const FIXED: usize = 360; // keys, four UUIDs, numbers, timestamp, punctuation
    FIXED
        + node.node_type.len()
        + node.content.len()
        + node.agent_id.as_ref().map_or(0, String::len)
        + node.user_id.as_ref().map_or(0, String::len)
}

/// Appends `s` as a JSON string, escaped as `serde_json` escapes it: `"` and `\`, and
/// the control characters U+0000–U+001F (`\b \t \n \f \r` in short form, the others as
/// `\u00XX` in lowercase hex). Everything else, non-ASCII included, is copied.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !may_need_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        if needs_escape(b) {
            out.extend_from_slice(&bytes[start..i]);
            write_escape(out, b);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` is below 0x20, `"` or `\` (never false when one is; may be
/// true when none is, which only costs a byte-by-byte look).
#[inline]
fn may_need_escape(w: u64) -> bool {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v;
    (below_space | zero_in(quote) | zero_in(backslash)) & HIGHS != 0
}

#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn write_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0a => b'n',
        0x0c => b'f',
        0x0d => b'r',
        _ => {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
            return;
        }
    };
    out.push(b'\\');
    out.push(short);
}

fn write_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A UUID in its hyphenated lowercase form (nothing in it needs escaping).
fn write_uuid(out: &mut Vec<u8>, id: &Uuid) {
    let mut buf = Uuid::encode_buffer();
    out.push(b'"');
    out.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
    out.push(b'"');
}

fn write_timestamp(out: &mut Vec<u8>, t: Timestamp) -> Result<(), serde_json::Error> {
    let mut buf = [0u8; RFC3339_LEN];
    match t.rfc3339(&mut buf) {
        // RFC 3339 text: digits and `-:.TZ`, nothing to escape.
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
            Ok(())
        }
        None => serde_json::to_writer(&mut *out, &t),
    }
}

fn write_value(out: &mut Vec<u8>, v: &Value) -> Result<(), serde_json::Error> {
    match v {
        Value::Null => {
            out.extend_from_slice(b"null");
            Ok(())
        }
        other => serde_json::to_writer(&mut *out, other),
    }
}

fn write_map(out: &mut Vec<u8>, m: &Map<String, Value>) -> Result<(), serde_json::Error> {
    if m.is_empty() {
        out.extend_from_slice(b"{}");
        return Ok(());
    }
    serde_json::to_writer(&mut *out, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use proptest::prelude::*;
    use serde_json::json;

    fn node(content: &str) -> Node {
        Node {
            id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            workflow_id: Uuid::from_u128(7),
            parent_id: Some(Uuid::from_u128(8)),
            node_type: "message".into(),
            role: Some(Role::Assistant),
            content: content.into(),
            payload: Value::Null,
            metadata: Map::new(),
            agent_id: Some("bench".into()),
            user_id: None,
            branch_id: Uuid::from_u128(9),
            depth: 3,
            seq: 42,
            timestamp: Timestamp(1_764_000_000_123_456),
        }
    }

    fn same_as_serde(n: &Node) {
        let ours = node_json(n).unwrap_or_else(|e| panic!("render: {e}"));
        let theirs = serde_json::to_vec(n).unwrap_or_else(|e| panic!("serde: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    #[test]
    fn a_plain_node_is_serde_jsons_text() {
        same_as_serde(&node(&"c".repeat(256)));
    }

    #[test]
    fn every_escape_and_every_optional_field_is_serde_jsons_text() {
        let mut n = node("q\"b\\s/\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f} é 漢 😀");
        same_as_serde(&n);
        n.parent_id = None;
        n.role = None;
        n.agent_id = None;
        n.user_id = Some("u\"\n".into());
        n.payload = json!({"a": [1, 2.5, "x\"y"], "b": null});
        n.metadata = json!({"k": "v", "n": {"deep": true}})
            .as_object()
            .cloned()
            .unwrap_or_default();
        same_as_serde(&n);
        for role in [Role::System, Role::User, Role::Tool] {
            n.role = Some(role);
            same_as_serde(&n);
        }
    }

    #[test]
    fn a_timestamp_outside_rfc_3339_is_written_as_serde_json_writes_it() {
        let mut n = node("x");
        for micros in [i64::MIN, i64::MAX, -1, 0] {
            n.timestamp = Timestamp(micros);
            same_as_serde(&n);
        }
    }

    proptest! {
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(s in any::<String>()) {
            let mut ours = Vec::new();
            write_str(&mut ours, &s);
            let theirs = serde_json::to_vec(&s).unwrap_or_default();
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn any_ascii_mix_of_escapes_is_serde_jsons(
            s in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..0x7f], 0..80)
        ) {
            let s = String::from_utf8(s).unwrap_or_default();
            let mut ours = Vec::new();
            write_str(&mut ours, &s);
            prop_assert_eq!(ours, serde_json::to_vec(&s).unwrap_or_default());
        }

        #[test]
        fn any_node_is_serde_jsons_text(
            content in any::<String>(),
            ty in "[a-z][a-z0-9_]{0,31}",
            agent in proptest::option::of(any::<String>()),
            user in proptest::option::of(any::<String>()),
            depth in any::<u32>(),
            seq in any::<u64>(),
            micros in any::<i64>(),
            key in any::<String>(),
        ) {
            let mut n = node(&content);
            n.node_type = ty;
            n.agent_id = agent;
            n.user_id = user;
            n.depth = depth;
            n.seq = seq;
            n.timestamp = Timestamp(micros);
            n.metadata.insert(key, Value::String(content.clone()));
            let ours = node_json(&n).unwrap_or_default();
            prop_assert_eq!(ours, serde_json::to_vec(&n).unwrap_or_default());
        }
    }
}
