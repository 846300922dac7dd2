//! Authentication and the role check (DESIGN §8), one middleware on every route.
//!
//! - A store that never had a token runs open: every request acts as `anonymous` with
//!   every right (the server refuses a non-loopback bind in that state, so open means
//!   loopback only). Once any token exists — revoked ones count — it never opens again.
//! - Otherwise every route but `/healthz` and `/readyz` needs a live token: from
//!   `Authorization: Bearer <token>`, or `?access_token=` on the GET stream endpoints
//!   only (EventSource cannot set headers). Missing, malformed, unknown, expired or
//!   revoked → 401 with `WWW-Authenticate: Bearer`. The `access_token` parameter is
//!   taken out of the URI before the handler sees it.
//! - A role below the route's action ([`action_of`]) → 403.
//! - The request then runs with its [`Principal`] in the extensions and its actor (the
//!   token id) in a task-local, which every append records ([`actor`]).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use arbor_storage::Timestamp;

use super::problem::Problem;
use super::AppState;
use crate::auth::role::{Action, Role};
use crate::auth::secret::{self, SecretHash};

/// The actor of requests in open mode.
pub const ANONYMOUS: &str = "anonymous";

tokio::task_local! {
    static ACTOR: Arc<str>;
}

/// The actor of the request being served (the token id, or `anonymous`).
pub fn actor() -> String {
    ACTOR
        .try_with(|a| a.to_string())
        .unwrap_or_else(|_| ANONYMOUS.to_owned())
}

/// Who is asking: in the request's extensions once authenticated.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The token (None in open mode).
    pub token_id: Option<Uuid>,
    /// Its role (`admin` in open mode).
    pub role: Role,
    /// Workflows in scope (empty = all).
    pub workflows: Vec<Uuid>,
    /// Branches in scope (empty = all).
    pub branches: Vec<Uuid>,
}

impl Principal {
    /// The actor name events record.
    pub fn actor(&self) -> String {
        self.token_id
            .map_or_else(|| ANONYMOUS.to_owned(), |id| id.to_string())
    }

    fn open() -> Principal {
        Principal {
            token_id: None,
            role: Role::Admin,
            workflows: Vec::new(),
            branches: Vec::new(),
        }
    }
}

/// What a route needs: `None` for the probes, else the least action.
pub fn action_of(method: &Method, path: &str) -> Option<Action> {
    match path {
        "/healthz" | "/readyz" => None,
        "/v1/tokens" | "/v1/tokens/{id}" | "/v1/stream" | "/v1/audit" | "/metrics"
        | "/v1/health" => Some(Action::Admin),
        _ if *method == Method::GET || *method == Method::HEAD => Some(Action::Read),
        _ => Some(Action::Write),
    }
}

/// Whether `?access_token=` is accepted on this route.
fn takes_query_token(method: &Method, path: &str) -> bool {
    *method == Method::GET && matches!(path, "/v1/stream" | "/v1/workflows/{wf}/stream")
}

/// A 401 with `WWW-Authenticate: Bearer`.
fn unauthorized(detail: &str) -> Response {
    let mut resp =
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail.to_owned()).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"arbor\""),
    );
    resp
}

/// The middleware (see the module docs).
pub async fn authenticate(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Some(action) = action_of(req.method(), &path) else {
        return next.run(req).await;
    };
    let from_query = takes_query_token(req.method(), &path);
    let (mut req, query_token) = take_query_token(req);
    if query_token.is_some() && !from_query {
        return Problem::bad_request("access_token is accepted only on GET stream endpoints")
            .into_response();
    }
    let principal = if app.store.has_tokens() {
        let header = match req.headers().get(header::AUTHORIZATION) {
            None => None,
            Some(v) => match v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")) {
                Some(t) => Some(t.trim().to_owned()),
                None => return unauthorized("the Authorization header must be `Bearer <token>`"),
            },
        };
        let Some(presented) = header.or(query_token) else {
            return unauthorized("this route needs an access token");
        };
        match check(&app, &presented) {
            Ok(p) => p,
            Err(detail) => return unauthorized(detail),
        }
    } else {
        Principal::open()
    };
    if !principal.role.may(action) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "role {} may not do this (needs {})",
                principal.role,
                action.least_role()
            ),
        )
        .into_response();
    }
    let actor: Arc<str> = principal.actor().into();
    req.extensions_mut().insert(principal);
    ACTOR.scope(actor, next.run(req)).await
}

/// Checks a presented token against the table.
fn check(app: &AppState, presented: &str) -> Result<Principal, &'static str> {
    const INVALID: &str = "invalid access token";
    let (id, part) = secret::parse(presented).ok_or(INVALID)?;
    let token = app.store.token(&id).ok_or(INVALID)?;
    if !SecretHash(token.secret_hash.0).matches(part) {
        return Err(INVALID);
    }
    if token.revoked_at.is_some() {
        return Err("this access token is revoked");
    }
    if !token.is_live(Timestamp::now()) {
        return Err("this access token has expired");
    }
    let role = token.spec.role.parse::<Role>().map_err(|_| INVALID)?;
    Ok(Principal {
        token_id: Some(id),
        role,
        workflows: token.spec.workflows,
        branches: token.spec.branches,
    })
}

/// Takes `access_token` out of the query string, returning it.
fn take_query_token(mut req: Request) -> (Request, Option<String>) {
    let Some(query) = req.uri().query() else {
        return (req, None);
    };
    if !query.split('&').any(|p| p.starts_with("access_token=")) {
        return (req, None);
    }
    let mut token = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| match p.strip_prefix("access_token=") {
            Some(v) => {
                token = Some(v.to_owned());
                false
            }
            None => true,
        })
        .collect();
    let path = req.uri().path();
    let rebuilt = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    if let Ok(uri) = rebuilt.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    (req, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_their_least_action() {
        let get = Method::GET;
        assert_eq!(action_of(&get, "/healthz"), None);
        assert_eq!(action_of(&get, "/readyz"), None);
        assert_eq!(action_of(&get, "/v1/workflows/{wf}"), Some(Action::Read));
        assert_eq!(
            action_of(&Method::PATCH, "/v1/workflows/{wf}"),
            Some(Action::Write)
        );
        for admin in ["/v1/stream", "/metrics", "/v1/health", "/v1/tokens"] {
            assert_eq!(action_of(&get, admin), Some(Action::Admin), "{admin}");
        }
        assert!(takes_query_token(&get, "/v1/workflows/{wf}/stream"));
        assert!(!takes_query_token(&get, "/v1/workflows/{wf}/events"));
        assert!(!takes_query_token(&Method::POST, "/v1/stream"));
    }

    #[test]
    fn the_access_token_leaves_the_uri() {
        let req = Request::builder()
            .uri("/v1/stream?after=3&access_token=arbor_x_y")
            .body(axum::body::Body::empty())
            .expect("request");
        let (req, token) = take_query_token(req);
        assert_eq!(token.as_deref(), Some("arbor_x_y"));
        assert_eq!(req.uri().to_string(), "/v1/stream?after=3");
        let req = Request::builder()
            .uri("/v1/stream?access_token=t")
            .body(axum::body::Body::empty())
            .expect("request");
        let (req, _) = take_query_token(req);
        assert_eq!(req.uri().to_string(), "/v1/stream");
    }
}
