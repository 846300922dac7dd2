//! Dead letters: events a sink refused permanently (an acknowledged event missing from
//! a replica), and how an operator resolves them (`arbor sync dead-letters …`).
//!
//! A dead letter stays *unresolved* — the sink reads `degraded`, `verify --sinks`
//! reports it and fails — until either:
//! - [`retry`] re-applies its event through the sink (after the sink or the data was
//!   fixed) and the sink accepts it: the dead letter is removed; or
//! - [`ack`] records that an operator accepts the loss: the dead letter moves to the
//!   store's acknowledged dead letters (`dead_acked` tree, with the operator's note and
//!   the time), which `list` still shows and `verify --sinks` leaves out of its
//!   comparison without failing.
//!
//! All three run with the server stopped (they open the store, as `sync reset` does), so
//! no worker writes the sink at the same time.

use arbor_storage::{Seq, Store, Timestamp};
use serde::Serialize;

use crate::driver::read_items;
use crate::error::{SinkError, SyncError};
use crate::sink::{CursorHome, Sink};
use crate::{within, SyncConfig};

/// One dead letter, as `arbor sync dead-letters list` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Sink name.
    pub sink: String,
    /// Seq of the refused event.
    pub seq: Seq,
    /// The sink's error (and, once acknowledged, the operator's note).
    pub error: String,
    /// Whether an operator accepted the loss.
    pub acknowledged: bool,
}

/// What [`retry`] did with one dead letter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetryOutcome {
    /// Sink name.
    pub sink: String,
    /// Seq of the event.
    pub seq: Seq,
    /// Whether the sink took the event (the dead letter is gone).
    pub resolved: bool,
    /// The sink's error when it refused again.
    pub error: Option<String>,
}

/// Dead letters of `sinks` (each configured sink when empty): unresolved ones first,
/// then the acknowledged ones, each in seq order.
pub fn list(store: &Store, sinks: &[&str]) -> Result<Vec<DeadLetter>, SyncError> {
    let mut out = Vec::new();
    for sink in sinks {
        for (acknowledged, found) in [
            (false, store.dead_letters(sink)?),
            (true, store.acked_dead_letters(sink)?),
        ] {
            out.extend(found.into_iter().map(|(seq, error)| DeadLetter {
                sink: (*sink).to_owned(),
                seq,
                error,
                acknowledged,
            }));
        }
    }
    Ok(out)
}

/// Accepts the loss of `sink`'s dead letter `seq`, with the operator's `note`.
pub fn ack(store: &Store, sink: &str, seq: Seq, note: &str) -> Result<(), SyncError> {
    let note = format!("acknowledged at {}: {note}", Timestamp::now());
    if store.ack_dead_letter(sink, seq, &note)? {
        tracing::info!(sink, seq, "dead letter acknowledged");
        Ok(())
    } else {
        Err(SyncError::NoDeadLetter {
            sink: sink.to_owned(),
            seq,
        })
    }
}

/// Re-applies `sink`'s dead letters (`seqs`, or every unresolved one when None) through
/// the configured sink of that name.
pub async fn retry(
    store: &Store,
    config: &SyncConfig,
    sink_name: &str,
    seqs: Option<Vec<Seq>>,
) -> Result<Vec<RetryOutcome>, SyncError> {
    let mut sink = crate::configured_sink(store, config, sink_name)?;
    retry_sink(store, &mut sink, seqs).await
}

/// [`retry`] through `sink`. Each event is applied alone; a sink-kept cursor is put
/// back where it was afterwards (applying an old event moves it; a crash before it is
/// put back only makes the sink re-receive events it has, which it absorbs).
pub(crate) async fn retry_sink<S: Sink>(
    store: &Store,
    sink: &mut S,
    seqs: Option<Vec<Seq>>,
) -> Result<Vec<RetryOutcome>, SyncError> {
    let name = sink.name();
    let open: Vec<Seq> = store
        .dead_letters(name)?
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    let seqs = match seqs {
        None => open,
        Some(asked) => {
            if let Some(&seq) = asked.iter().find(|s| !open.contains(s)) {
                return Err(SyncError::NoDeadLetter {
                    sink: name.to_owned(),
                    seq,
                });
            }
            asked
        }
    };
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    within(name, sink.setup())
        .await
        .map_err(|e| SyncError::sink(name, e))?;
    let saved = match sink.cursor_home() {
        CursorHome::Sink => Some(
            within(name, sink.load_cursor())
                .await
                .map_err(|e| SyncError::sink(name, e))?
                .unwrap_or(0),
        ),
        CursorHome::Arbor => None,
    };
    let mut out = Vec::new();
    for seq in seqs {
        let items = read_items(store, seq.saturating_sub(1), 1)?;
        let result = match items.first() {
            Some(item) if item.seq() == seq => within(name, sink.apply(&items)).await,
            _ => Err(SinkError::permanent(format!(
                "event {seq} is not in the log"
            ))),
        };
        let outcome = match result {
            Ok(()) => {
                store.remove_dead_letter(name, seq)?;
                tracing::info!(sink = name, seq, "dead letter re-applied");
                RetryOutcome {
                    sink: name.to_owned(),
                    seq,
                    resolved: true,
                    error: None,
                }
            }
            Err(e) => {
                store.put_dead_letter(name, seq, &e.message)?;
                RetryOutcome {
                    sink: name.to_owned(),
                    seq,
                    resolved: false,
                    error: Some(e.message),
                }
            }
        };
        out.push(outcome);
    }
    if let Some(cursor) = saved {
        within(name, sink.store_cursor(cursor))
            .await
            .map_err(|e| SyncError::sink(name, e))?;
    }
    Ok(out)
}
