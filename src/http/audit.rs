//! `GET /v1/audit?after&limit&actor&kind` (DESIGN §8, admin only — the auth middleware
//! checks the role): pages the admin log, oldest first, with optional filters.
//!
//! The admin log holds the actions taken on the store itself (today `token.created` and
//! `token.revoked`; the lifecycle, review and publish actions of DESIGN §9–§11 join it as
//! they are built). Each entry carries its own seq, time, actor (a token id, `anonymous`
//! or `cli`), kind, what it says, and its BLAKE3 chain hash. A secret's hash never
//! appears. `next_after` is where the next page starts: past the events this page
//! looked at, so filtered-out events are not read again.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use arbor_storage::{AdminBody, AdminEvent, Seq, Timestamp};

use super::problem::Problem;
use super::routes::read;
use super::wire::QueryParams;
use super::AppState;

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Start after this admin-log seq (default 0).
    pub after: Option<u64>,
    /// Most entries to return (1..=1000, default 100).
    pub limit: Option<usize>,
    /// Only entries by this actor (a token id, `anonymous` or `cli`).
    pub actor: Option<String>,
    /// Only entries of this kind (e.g. `token.created`).
    pub kind: Option<String>,
}

/// One audit entry on the wire.
#[derive(Debug, Serialize)]
struct Entry {
    seq: Seq,
    id: uuid::Uuid,
    timestamp: Timestamp,
    actor: String,
    kind: &'static str,
    /// What the action was about (never a secret or its hash).
    details: Value,
    hash: String,
}

impl From<&AdminEvent> for Entry {
    fn from(e: &AdminEvent) -> Entry {
        let details = match &e.body {
            AdminBody::TokenCreated { token, .. } => json!({ "token": token }),
            AdminBody::TokenRevoked { token_id } => json!({ "token_id": token_id }),
        };
        Entry {
            seq: e.seq,
            id: e.id,
            timestamp: e.timestamp,
            actor: e.actor.clone(),
            kind: e.kind(),
            details,
            hash: e.hash_hex(),
        }
    }
}

/// Admin events read per scan step while filtering.
const SCAN: usize = 1000;

/// `GET /v1/audit`.
pub async fn audit(
    State(app): State<AppState>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Response, Problem> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request("limit must be between 1 and 1000"));
    }
    let after = q.after.unwrap_or(0);
    let (actor, kind) = (q.actor, q.kind);
    let (entries, next_after) = read(&app.store, move |s| {
        let mut entries = Vec::new();
        let mut at = after;
        loop {
            let page = s.read_admin_events(at, SCAN)?;
            let short = page.len() < SCAN;
            for e in &page {
                at = e.seq;
                let wanted = actor.as_deref().is_none_or(|a| a == e.actor)
                    && kind.as_deref().is_none_or(|k| k == e.kind());
                if wanted {
                    entries.push(Entry::from(e));
                    if entries.len() == limit {
                        return Ok((entries, at));
                    }
                }
            }
            if short {
                return Ok((entries, at));
            }
        }
    })
    .await?;
    Ok(Json(json!({ "events": entries, "next_after": next_after })).into_response())
}
