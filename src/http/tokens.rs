//! `/v1/tokens` (DESIGN §8, admin only — the auth middleware checks the role):
//! create (201, the secret in `token`, shown only here), list (never a secret),
//! revoke (at once).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use uuid::Uuid;

use arbor_storage::{Store, Timestamp, TokenError};

use super::auth::Principal;
use super::problem::Problem;
use super::wire::{JsonBody, NoQuery, PathParam, QueryParams};
use super::AppState;
use crate::auth::role::Role;
use crate::auth::token::{issue, IssueError, NewToken, TokenView};

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Workflows in scope.
    #[serde(default)]
    pub workflows: Vec<Uuid>,
    /// Branches in scope.
    #[serde(default)]
    pub branches: Vec<Uuid>,
    /// Expiry (RFC 3339).
    pub expires_at: Option<Timestamp>,
    /// Requests per second.
    pub rate: Option<f64>,
}

impl super::wire::Body for CreateToken {}

fn problem(e: TokenError) -> Problem {
    match e {
        TokenError::NotFound(_) => Problem::not_found(e.to_string()),
        TokenError::Exists(_) => Problem::new(StatusCode::CONFLICT, "conflict", e.to_string()),
        TokenError::Storage(s) => Problem::from(s),
        other => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            other.to_string(),
        ),
    }
}

/// Runs a token write on the blocking pool (it makes the admin log durable).
async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("token task failed: {e}"),
            )
        })?
}

/// `POST /v1/tokens`.
pub async fn create_token(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    _: QueryParams<NoQuery>,
    JsonBody(req): JsonBody<CreateToken>,
) -> Result<Response, Problem> {
    let new = NewToken {
        name: req.name,
        role: req.role,
        workflows: req.workflows,
        branches: req.branches,
        expires_at: req.expires_at,
        rate: req.rate,
    };
    let actor = who.actor();
    let (view, secret) = blocking(&app.store, move |s| {
        issue(s, new, &actor).map_err(|e| match e {
            IssueError::Invalid(d) => Problem::bad_request(d),
            IssueError::Store(e) => problem(e),
            other => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        })
    })
    .await?;
    let mut body = serde_json::to_value(&view)
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    body["token"] = secret.expose().into();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/tokens`.
pub async fn list_tokens(State(app): State<AppState>, _: QueryParams<NoQuery>) -> Response {
    let tokens: Vec<TokenView> = app.store.tokens().iter().map(TokenView::from).collect();
    Json(serde_json::json!({ "tokens": tokens })).into_response()
}

/// `DELETE /v1/tokens/{id}`.
pub async fn revoke_token(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    PathParam(id): PathParam<Uuid>,
    _: QueryParams<NoQuery>,
) -> Result<Response, Problem> {
    let actor = who.actor();
    let token = blocking(&app.store, move |s| {
        s.revoke_token(&id, &actor).map_err(problem)
    })
    .await?;
    Ok(Json(TokenView::from(&token)).into_response())
}
