//! Authentication and the role check (DESIGN §8), one middleware on every route.
//!
//! - A store that never had a token runs open: every request acts as `anonymous` with
//!   every right (the server refuses a non-loopback bind in that state, so open means
//!   loopback only). Once any token exists — revoked ones count — it never opens again.
//! - Otherwise every route but `/healthz`, `/readyz`, the web UI's files, `/openapi.json`
//!   and `/docs` (the API's description and its page) needs a live token: from
//!   `Authorization: Bearer <token>`, or `?access_token=` on the GET stream endpoints
//!   only (EventSource cannot set headers). Missing, malformed, unknown, expired or
//!   revoked → 401 with `WWW-Authenticate: Bearer`. The `access_token` parameter is
//!   taken out of the URI before the handler sees it.
//! - Failed authentications are limited per client address (`--auth-failure-rate`): an
//!   address that used up its failures gets 429 with `Retry-After`, even for a right
//!   token, until its bucket refills — so guessing costs time whatever the guess.
//! - An authenticated token is limited to its `rate` (else the server's `--rate-limit`),
//!   burst twice that: over it → 429 with `Retry-After`.
//! - A role below the route's action ([`action_of`]) → 403; so is token management or
//!   the audit log for an admin token limited to some workflows or branches.
//! - The request then runs with its [`Principal`] in the extensions and its actor (the
//!   token id) in a task-local, which every append records ([`actor`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::connect_info::ConnectInfo;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use arbor_storage::Timestamp;

use super::problem::Problem;
use super::AppState;
use crate::auth::rate::{Limiter, Rate};
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

/// The server's rate limiters (DESIGN §8 "Rate limits").
pub struct Access {
    /// Requests per second of a token without a `rate` of its own.
    default_rate: f64,
    /// A bucket per token.
    tokens: Limiter<Uuid>,
    /// A bucket of failed authentications per client address.
    failures: Limiter<IpAddr>,
    /// The rate of `failures`.
    failure_rate: Rate,
}

impl Access {
    /// Limiters with `default_rate` for tokens that have none of their own, and
    /// `failures_per_second` failed authentications per client address after a burst of
    /// 20 (or twice the rate). With the default of one a second, a client with a stale
    /// token notices at once, guessing a 256-bit secret stays hopeless, and a flood of bad
    /// tokens costs the server a map lookup each.
    pub fn new(default_rate: f64, failures_per_second: f64) -> Access {
        Access {
            default_rate,
            tokens: Limiter::default(),
            failures: Limiter::default(),
            failure_rate: Rate {
                per_second: failures_per_second,
                burst: (failures_per_second * 2.0).max(20.0),
            },
        }
    }
}

/// A 429 with `Retry-After` (whole seconds, at least 1).
fn too_many(wait: Duration, detail: &str) -> Response {
    let mut resp = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        detail.to_owned(),
    )
    .into_response();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
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
    /// The token's own rate (requests per second), if it has one.
    pub rate: Option<f64>,
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
            rate: None,
        }
    }
}

/// What a route needs: `None` for the probes, else the least action.
pub fn action_of(method: &Method, path: &str) -> Option<Action> {
    match path {
        // The probes, the web UI's files and the API's description (public: no data).
        "/healthz" | "/readyz" | "/" | "/ui/{file}" | "/openapi.json" | "/docs" => None,
        "/v1/tokens" | "/v1/tokens/{id}" | "/v1/stream" | "/v1/audit" | "/metrics"
        | "/v1/health" => Some(Action::Admin),
        _ if *method == Method::GET || *method == Method::HEAD => Some(Action::Read),
        _ => Some(Action::Write),
    }
}

/// Routes about access to the whole store: a token limited to some workflows or branches
/// may not use them even as an admin (else it could mint itself a wider token).
fn manages_access(path: &str) -> bool {
    matches!(path, "/v1/tokens" | "/v1/tokens/{id}" | "/v1/audit")
}

/// Whether `?access_token=` is accepted on this route.
pub fn takes_query_token(method: &Method, path: &str) -> bool {
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
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = peer {
            if let Err(wait) =
                app.access
                    .failures
                    .peek(&ip, app.access.failure_rate, Instant::now())
            {
                app.metrics.rate_limited.inc();
                return too_many(wait, "too many failed authentications from this address");
            }
        }
        match presented_token(&req, query_token).and_then(|t| check(&app, &t)) {
            Ok(p) => p,
            Err(detail) => {
                app.metrics.auth_failures.inc();
                if let Some(ip) = peer {
                    // Counted; the next attempt is refused once the bucket is empty.
                    let _ = app
                        .access
                        .failures
                        .check(&ip, app.access.failure_rate, Instant::now());
                }
                return unauthorized(detail);
            }
        }
    } else {
        Principal::open()
    };
    if let Some(id) = principal.token_id {
        let rate = Rate::per_second(principal.rate.unwrap_or(app.access.default_rate));
        if let Err(wait) = app.access.tokens.check(&id, rate, Instant::now()) {
            app.metrics.rate_limited.inc();
            return too_many(wait, "this access token is over its rate limit");
        }
    }
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
    if manages_access(&path) && !principal.unscoped() {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "tokens and the audit log need an admin token without workflow or branch scope",
        )
        .into_response();
    }
    let actor: Arc<str> = principal.actor().into();
    req.extensions_mut().insert(principal);
    ACTOR.scope(actor, next.run(req)).await
}

/// The token of the request: the `Authorization` header, else `?access_token=`.
fn presented_token(req: &Request, query_token: Option<String>) -> Result<String, &'static str> {
    match req.headers().get(header::AUTHORIZATION) {
        None => query_token.ok_or("this route needs an access token"),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned())
            .ok_or("the Authorization header must be `Bearer <token>`"),
    }
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
        rate: token.spec.rate,
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
        assert_eq!(action_of(&get, "/openapi.json"), None);
        assert_eq!(action_of(&get, "/docs"), None);
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
