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
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use arbor_storage::{AdminBody, AdminEvent, Seq, Timestamp, TokenSpec};

use super::problem::Problem;
use super::routes::read;
use super::schemas;
use super::wire::QueryParams;
use super::AppState;

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Start after this admin-log seq (default 0).
    pub after: Option<u64>,
    /// Most entries to return (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Only entries by this actor (a token id, `anonymous` or `cli`).
    pub actor: Option<String>,
    /// Only entries of this kind (e.g. `token.created`).
    pub kind: Option<String>,
}

/// One audit entry on the wire.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEntry)]
struct Entry {
    /// Admin-log seq (gap-free from 1, apart from the workflows' log).
    #[schema(value_type = u64)]
    seq: Seq,
    /// Event id.
    id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    timestamp: Timestamp,
    /// Who did it: a token id, `anonymous` or `cli`.
    actor: String,
    /// `token.created` or `token.revoked`.
    kind: &'static str,
    /// What the action was about (never a secret or its hash).
    details: Details,
    /// BLAKE3 chain hash (hex).
    hash: String,
}

/// What an admin action was about.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = AuditDetails)]
enum Details {
    /// `token.created`: the token.
    TokenCreated {
        /// The new token.
        #[schema(value_type = schemas::TokenSpec)]
        token: TokenSpec,
    },
    /// `token.revoked`: which one.
    TokenRevoked {
        /// The revoked token.
        token_id: Uuid,
    },
}

/// `{events:[…], next_after}`.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditPage)]
struct Page {
    /// The page of entries, oldest first.
    events: Vec<Entry>,
    /// Where the next page starts: past every entry this page looked at.
    #[schema(value_type = u64)]
    next_after: Seq,
}

impl From<&AdminEvent> for Entry {
    fn from(e: &AdminEvent) -> Entry {
        let details = match &e.body {
            AdminBody::TokenCreated { token, .. } => Details::TokenCreated {
                token: token.clone(),
            },
            AdminBody::TokenRevoked { token_id } => Details::TokenRevoked {
                token_id: *token_id,
            },
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

/// Pages the admin log, oldest first.
///
/// The actions taken on the store itself (tokens created and revoked), each with its
/// actor, time and chain hash; filtered by actor and kind.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "A page of the admin log", body = Page)))]
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
    Ok(Json(Page {
        events: entries,
        next_after,
    })
    .into_response())
}
