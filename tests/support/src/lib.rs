//! arbor-testkit: deterministic workflows in portable form ([`PortableEvent`], what
//! `arbor export` writes and `arbor import` reads): demo data, test fixtures and bench
//! loads. Test support, not product code: no crate of the server depends on it except
//! as a dev-dependency (DESIGN §6 Layout), and it is never published.
//!
//! - [`coding_agent_sample`]: one realistic workflow (269 nodes) of a coding agent fixing
//!   a bug, with decisions, forks and cross-branch monitors. Committed as
//!   `data/sample-coding-agent.jsonl` ([`SAMPLE_PATH`]); a unit test keeps the file equal
//!   to the function's output (`ARBOR_UPDATE_SAMPLES=1 cargo test -p arbor-testkit
//!   sample_file` rewrites it).
//! - [`synthetic`]: any number of workflows shaped by a [`SyntheticSpec`], streamed:
//!   memory is bounded by one workflow (32 bytes per node), so 10⁶+ events are fine.
//! - [`deep_chain`]: one single-branch workflow of a given depth (path-to-root benches).
//! - [`check()`] and [`Checker`]: an independent checker of the rules import enforces
//!   (parents before children, branch and depth rules, edge rules, unique ids, strictly
//!   increasing timestamps per workflow).
//! - [`import_past_workflow`]: not portable events but a small workflow submitted to a
//!   [`arbor_storage::Store`] dated in the past, as `arbor import` stores old events
//!   (sync's lag tests).
//! - [`browser::Browser`]: headless Debian chromium driven a command at a time (the web
//!   UI's tests and benchmark).
//! - [`serve::spawn_serve`] and [`serve::KillOnDrop`]: the real `arbor serve`, started
//!   once it listens and killed when the test ends.
//!
//! Every generator is a pure function of its seed: the same seed gives the same events
//! byte for byte on every platform (a portable xoshiro256** stream and no libm
//! functions; ids are v7-shaped, made of the event's millisecond time and 74 seeded
//! bits). The events follow the store's own rules exactly: roots built as the store
//! builds them, `branch_id` and `depth` as the tree implies, no OPTION_OF events for
//! options appended under their decision, edge event ids from
//! [`arbor_storage::edge_event_id`]. Importing them and exporting again gives back the
//! same events.

use std::io::{self, Write};

use arbor_storage::PortableEvent;

pub mod browser;
pub mod check;
mod common;
mod past;
mod sample;
mod sample_text;
pub mod serve;
mod synthetic;
#[cfg(test)]
mod tests;

pub use check::{check, CheckError, CheckStats, Checker};
pub use past::import_past_workflow;
pub use sample::coding_agent_sample;
pub use synthetic::{deep_chain, synthetic, ContentSize, DeepChain, Synthetic, SyntheticSpec};

/// Where the committed coding-agent sample lives, relative to the workspace root.
pub const SAMPLE_PATH: &str = "data/sample-coding-agent.jsonl";

/// Writes events as JSONL (one `serde_json` line per event, each ending in `\n`), the
/// format of `arbor export`. Streams: nothing is buffered beyond `out`'s own buffer.
/// Returns the number of events written.
pub fn write_jsonl<W: Write>(
    mut out: W,
    events: impl IntoIterator<Item = PortableEvent>,
) -> io::Result<u64> {
    let mut n = 0;
    for ev in events {
        serde_json::to_writer(&mut out, &ev)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// The JSONL text of `events` (see [`write_jsonl`]).
pub fn to_jsonl<'a>(
    events: impl IntoIterator<Item = &'a PortableEvent>,
) -> Result<String, serde_json::Error> {
    let mut s = String::new();
    for ev in events {
        s.push_str(&serde_json::to_string(ev)?);
        s.push('\n');
    }
    Ok(s)
}
