//! `/v1/tokens` (DESIGN §8, admin only — the auth middleware checks the role):
//! create (201, the secret in `token`, shown only here), list (never a secret),
//! revoke (at once).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use arbor_storage::{Store, Timestamp, TokenError};

use super::auth::Principal;
use super::problem::Problem;
use super::wire::{JsonBody, NoQuery, PathParam, QueryParams, TokenPath};
use super::AppState;
use crate::auth::role::Role;
use crate::auth::token::{issue, IssueError, NewToken, TokenView};

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Name: 1–128 characters, none of them a control character.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// Role.
    pub role: Role,
    /// Workflows in scope.
    #[serde(default)]
    pub workflows: Vec<Uuid>,
    /// Branches in scope.
    #[serde(default)]
    pub branches: Vec<Uuid>,
    /// Expiry (RFC 3339); one in the past is 400.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// Requests per second (else the server's `--rate-limit`).
    #[schema(exclusive_minimum = 0)]
    pub rate: Option<f64>,
}

impl super::wire::Body for CreateToken {}

/// `201` of `POST /v1/tokens`: the token, and its secret.
#[derive(Serialize, ToSchema)]
#[schema(as = CreatedToken)]
pub struct Created<'a> {
    /// The token.
    #[serde(flatten)]
    view: TokenView,
    /// The secret to present as `Authorization: Bearer <token>`: shown only here.
    token: &'a str,
}

/// `{tokens:[…]}`.
#[derive(Serialize, ToSchema)]
#[schema(as = TokenList)]
pub struct Tokens {
    /// Every token, oldest first (revoked ones too; never a secret).
    tokens: Vec<TokenView>,
}

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

/// Creates a token.
///
/// The answer holds the token's secret, shown only here. The first token ends open
/// mode: from then on every route but the public ones needs a token.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The token and its secret", body = Created),
        (status = 400, description = "A malformed body, an unknown field, a name of the wrong \
            length, an expiry in the past, a rate that is not positive"),
        (status = 409, description = "A token with this id exists already"),
    ))]
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
    let body = Created {
        view,
        token: secret.expose(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Lists the tokens.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, description = "Every token, oldest first", body = Tokens)))]
pub async fn list_tokens(State(app): State<AppState>, _: QueryParams<NoQuery>) -> Response {
    let tokens = app.store.tokens().iter().map(TokenView::from).collect();
    Json(Tokens { tokens }).into_response()
}

/// Revokes a token, at once.
///
/// Its open streams end within a second. Revoking a revoked token changes nothing.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(TokenPath),
    responses(
        (status = 200, description = "The token, revoked", body = TokenView),
        (status = 404, description = "No such token"),
    ))]
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
