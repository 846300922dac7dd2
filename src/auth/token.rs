//! Issuing tokens and showing them: what `arbor token …` and `/v1/tokens` share.
//!
//! [`issue`] draws a fresh id and secret, records `token.created` with the secret's
//! hash, and hands the secret back once. [`TokenView`] is a token as the CLI and the
//! API show it: never its secret, never its hash.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use arbor_storage::{Store, Timestamp, Token, TokenError, TokenSpec};

use super::role::Role;
use super::secret::{self, TokenSecret};

/// A token as shown by `arbor token list` and `GET /v1/tokens`: what it was created
/// as, by whom and when, and whether it is revoked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenView {
    /// Id, name, role, scope, expiry, rate.
    #[serde(flatten)]
    #[schema(value_type = crate::http::schemas::TokenSpec)]
    pub token: TokenSpec,
    /// Creation time.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Creator (token id, `anonymous`, or `cli`).
    pub created_by: String,
    /// Revocation time (null while the token is not revoked).
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub revoked_at: Option<Timestamp>,
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> TokenView {
        TokenView {
            token: t.spec.clone(),
            created_at: t.created_at,
            created_by: t.created_by.clone(),
            revoked_at: t.revoked_at,
        }
    }
}

/// What a new token is to be.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// Name (1–128 characters).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Workflows in scope (empty = all).
    pub workflows: Vec<Uuid>,
    /// Branches in scope (empty = all).
    pub branches: Vec<Uuid>,
    /// Expiry.
    pub expires_at: Option<Timestamp>,
    /// Requests per second.
    pub rate: Option<f64>,
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The request is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No randomness.
    #[error(transparent)]
    Randomness(#[from] secret::RandomnessError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] TokenError),
}

/// Longest token name.
const MAX_NAME: usize = 128;

/// Creates a token: records it (durably) and returns it with its secret, which exists
/// nowhere else from now on.
pub fn issue(
    store: &Store,
    new: NewToken,
    actor: &str,
) -> Result<(TokenView, TokenSecret), IssueError> {
    let name_len = new.name.chars().count();
    if name_len == 0 || name_len > MAX_NAME || new.name.chars().any(char::is_control) {
        return Err(IssueError::Invalid(format!(
            "name must be 1–{MAX_NAME} printable characters"
        )));
    }
    if let Some(r) = new.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(IssueError::Invalid("rate must be a positive number".into()));
        }
    }
    if new.expires_at.is_some_and(|t| t <= Timestamp::now()) {
        return Err(IssueError::Invalid("expires_at is in the past".into()));
    }
    let id = Uuid::now_v7();
    let (secret, hash) = secret::generate(id)?;
    let spec = TokenSpec {
        id,
        name: new.name,
        role: new.role.as_str().to_owned(),
        workflows: new.workflows,
        branches: new.branches,
        expires_at: new.expires_at,
        rate: new.rate,
    };
    let token = store.create_token(spec, hash.0, actor)?;
    Ok((TokenView::from(&token), secret))
}

/// Parses a rate: `N/s`, `N/m` or `N/h` (or a bare `N`, per second), into per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (n, per) = match s.split_once('/') {
        Some((n, unit)) => (
            n,
            match unit {
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                other => return Err(format!("unknown rate unit {other:?} (s, m, h)")),
            },
        ),
        None => (s, 1.0),
    };
    let n: f64 = n
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 100/s"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("{s:?}: a rate must be positive"));
    }
    Ok(n / per)
}

/// Parses a duration: a whole number followed by `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.len().saturating_sub(1);
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30d, 12h, 90m or 3600s"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(secs)
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: out of range"))
}

/// `now + d` as a timestamp.
pub fn after_now(d: Duration) -> Timestamp {
    let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    Timestamp(Timestamp::now().micros().saturating_add(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_parse() {
        assert_eq!(parse_rate("100/s"), Ok(100.0));
        assert_eq!(parse_rate("60/m"), Ok(1.0));
        assert_eq!(parse_rate("5"), Ok(5.0));
        for bad in ["", "0/s", "-1/s", "x/s", "5/d", "NaN"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "d", "0s", "5w", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_issued_token_checks_against_its_stored_hash_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Default::default()).expect("open");
        let new = NewToken {
            name: "ci".into(),
            role: Role::Writer,
            workflows: Vec::new(),
            branches: Vec::new(),
            expires_at: None,
            rate: Some(10.0),
        };
        let (view, secret) = issue(&store, new.clone(), "cli").expect("issue");
        let (id, part) = secret::parse(secret.expose()).expect("wire form");
        assert_eq!(id, view.token.id);
        let stored = store.token(&id).expect("stored");
        assert!(secret::SecretHash(stored.secret_hash.0).matches(part));
        let shown = serde_json::to_string(&view).expect("json");
        assert!(!shown.contains(part), "the view carries no secret");
        let bad = NewToken {
            name: String::new(),
            ..new
        };
        assert!(matches!(
            issue(&store, bad, "cli"),
            Err(IssueError::Invalid(_))
        ));
        assert_eq!(store.tokens().len(), 1, "a refused request stores nothing");
        store.close().await;
    }
}
