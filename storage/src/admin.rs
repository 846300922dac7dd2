//! The admin log and the token table (DESIGN §8).
//!
//! Token creation and revocation are events, [`AdminEvent`], with their own gap-free
//! seqs and BLAKE3 hash chain, in the `admin` tree next to the workflow log. They are
//! kept apart from the workflow log on purpose: a token event carries the token's
//! secret hash, and the workflow log is what replays, SSE streams, export and every
//! sink read. Keeping the two apart means no path that serves workflow events can ever
//! carry a secret hash, without a filter in each of them; `/v1/audit` reads this log.
//!
//! The token table ([`Token`] by id) is derived from this log: rebuilt at open, and
//! kept current by [`Admin::append`], which writes an event, makes it durable, and only
//! then applies it. Appends are serialised by one lock (tokens are rare; no group
//! commit is needed).

use std::collections::HashMap;
use std::fmt;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::StorageError;
use crate::log::Engine;
use crate::model::Seq;
use crate::record::{hex, Hash, ZERO_HASH};
use crate::time::Timestamp;

/// A token's stored secret hash. `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDigest(pub [u8; 32]);

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(<redacted>)")
    }
}

/// What a token is, as created: everything but its secret, which the creator keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenSpec {
    /// Token id (the `<id>` of `arbor_<id>_<secret>`).
    pub id: Uuid,
    /// A name for people.
    pub name: String,
    /// Role name (`reader`, `writer`, `reviewer`, `admin`; checked by the caller).
    pub role: String,
    /// Workflows in scope; empty = all.
    pub workflows: Vec<Uuid>,
    /// Branches in scope; empty = all.
    pub branches: Vec<Uuid>,
    /// When the token stops working.
    pub expires_at: Option<Timestamp>,
    /// Requests per second; `None` = the server's default.
    pub rate: Option<f64>,
}

/// What an admin event says happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AdminBody {
    /// `token.created`.
    TokenCreated {
        /// The token.
        token: TokenSpec,
        /// BLAKE3 of its secret. Never shown: not by `Debug`, not on the wire.
        secret_hash: SecretDigest,
    },
    /// `token.revoked`.
    TokenRevoked {
        /// The token.
        token_id: Uuid,
    },
}

/// One event of the admin log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminEvent {
    /// Position in the admin log (gap-free from 1).
    pub seq: Seq,
    /// Event id.
    pub id: Uuid,
    /// Server time.
    pub timestamp: Timestamp,
    /// Who did it (token id, `anonymous`, or `cli` offline).
    pub actor: String,
    /// What happened.
    pub body: AdminBody,
    /// Hash of the previous admin event.
    pub prev_hash: Hash,
    /// BLAKE3 over `prev_hash` and the encoding of the fields above.
    pub hash: Hash,
}

impl AdminEvent {
    /// The event kind's wire name.
    pub fn kind(&self) -> &'static str {
        match self.body {
            AdminBody::TokenCreated { .. } => "token.created",
            AdminBody::TokenRevoked { .. } => "token.revoked",
        }
    }

    /// Lowercase hex of [`AdminEvent::hash`].
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }

    fn compute_hash(&self) -> Result<Hash, StorageError> {
        let hashed = (self.seq, self.id, self.timestamp, &self.actor, &self.body);
        let bytes = rmp_serde::to_vec(&hashed).map_err(|e| StorageError::Encode(e.to_string()))?;
        let mut h = blake3::Hasher::new();
        h.update(&self.prev_hash);
        h.update(&bytes);
        Ok(*h.finalize().as_bytes())
    }

    fn decode(bytes: &[u8]) -> Result<AdminEvent, StorageError> {
        rmp_serde::from_slice(bytes)
            .map_err(|e| StorageError::Corrupt(format!("undecodable admin event: {e}")))
    }
}

/// A row of the token table.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// The token as created.
    pub spec: TokenSpec,
    /// BLAKE3 of its secret (redacted in `Debug`).
    pub secret_hash: SecretDigest,
    /// Creation time.
    pub created_at: Timestamp,
    /// Who created it.
    pub created_by: String,
    /// Revocation time, once revoked.
    pub revoked_at: Option<Timestamp>,
}

impl Token {
    /// Whether the token authenticates at `now`: not revoked, not expired.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.spec.expires_at.is_none_or(|t| now < t)
    }
}

/// Why a token could not be created or revoked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// A token with this id exists already.
    #[error("token {0} already exists")]
    Exists(Uuid),
    /// No token with this id.
    #[error("token {0} not found")]
    NotFound(Uuid),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

struct State {
    tokens: HashMap<Uuid, Token>,
    /// Seq and hash of the last admin event.
    last: (Seq, Hash),
}

/// The admin log's writer and the token table.
pub(crate) struct Admin {
    state: Mutex<State>,
    /// Counts revocations, so that open streams notice theirs at once.
    revoked: watch::Sender<u64>,
}

impl Admin {
    /// Rebuilds the token table from the admin log, checking its chain.
    pub(crate) fn open(engine: &Engine) -> Result<Admin, StorageError> {
        let mut state = State {
            tokens: HashMap::new(),
            last: (0, ZERO_HASH),
        };
        for kv in engine.scan_admin(0) {
            let (seq, bytes) = kv?;
            let e = AdminEvent::decode(&bytes)?;
            check_link(&e, seq, state.last)?;
            apply(&mut state.tokens, &e);
            state.last = (e.seq, e.hash);
        }
        Ok(Admin {
            state: Mutex::new(state),
            revoked: watch::Sender::new(0),
        })
    }

    /// Writes `body` as the next admin event, durably, then applies it.
    pub(crate) fn append(
        &self,
        engine: &Engine,
        actor: &str,
        body: AdminBody,
    ) -> Result<AdminEvent, TokenError> {
        let mut state = self.state.lock();
        match &body {
            AdminBody::TokenCreated { token, .. } if state.tokens.contains_key(&token.id) => {
                return Err(TokenError::Exists(token.id));
            }
            AdminBody::TokenRevoked { token_id } if !state.tokens.contains_key(token_id) => {
                return Err(TokenError::NotFound(*token_id));
            }
            _ => {}
        }
        let (last_seq, last_hash) = state.last;
        let mut e = AdminEvent {
            seq: last_seq + 1,
            id: Uuid::now_v7(),
            timestamp: Timestamp::now(),
            actor: actor.to_owned(),
            body,
            prev_hash: last_hash,
            hash: ZERO_HASH,
        };
        e.hash = e.compute_hash()?;
        let bytes = rmp_serde::to_vec(&e).map_err(|err| StorageError::Encode(err.to_string()))?;
        engine.put_admin(e.seq, &bytes)?;
        engine.make_durable()?;
        apply(&mut state.tokens, &e);
        state.last = (e.seq, e.hash);
        drop(state);
        if matches!(e.body, AdminBody::TokenRevoked { .. }) {
            self.revoked.send_modify(|n| *n += 1);
        }
        Ok(e)
    }

    /// The token `id`.
    pub(crate) fn token(&self, id: &Uuid) -> Option<Token> {
        self.state.lock().tokens.get(id).cloned()
    }

    /// Every token, oldest first.
    pub(crate) fn tokens(&self) -> Vec<Token> {
        let mut all: Vec<Token> = self.state.lock().tokens.values().cloned().collect();
        all.sort_by_key(|t| (t.created_at, t.spec.id));
        all
    }

    /// Whether any token was ever created (revoked ones count: a store that had
    /// tokens never silently opens up again).
    pub(crate) fn has_tokens(&self) -> bool {
        !self.state.lock().tokens.is_empty()
    }

    /// Watches the count of revocations.
    pub(crate) fn watch_revoked(&self) -> watch::Receiver<u64> {
        self.revoked.subscribe()
    }
}

/// Reads up to `limit` admin events after `after`, checking nothing (verify does).
pub(crate) fn read(
    engine: &Engine,
    after: Seq,
    limit: usize,
) -> Result<Vec<AdminEvent>, StorageError> {
    engine
        .scan_admin(after)
        .take(limit)
        .map(|kv| AdminEvent::decode(&kv?.1))
        .collect()
}

fn check_link(
    e: &AdminEvent,
    seq: Seq,
    (last_seq, last_hash): (Seq, Hash),
) -> Result<(), StorageError> {
    if e.seq != seq || seq != last_seq + 1 {
        return Err(StorageError::Corrupt(format!(
            "admin log: key {seq} holds seq {} after seq {last_seq}",
            e.seq
        )));
    }
    if e.prev_hash != last_hash || e.compute_hash()? != e.hash {
        return Err(StorageError::Corrupt(format!(
            "admin log: seq {seq} does not chain (tampered or corrupt)"
        )));
    }
    Ok(())
}

fn apply(tokens: &mut HashMap<Uuid, Token>, e: &AdminEvent) {
    match &e.body {
        AdminBody::TokenCreated { token, secret_hash } => {
            tokens.insert(
                token.id,
                Token {
                    spec: token.clone(),
                    secret_hash: *secret_hash,
                    created_at: e.timestamp,
                    created_by: e.actor.clone(),
                    revoked_at: None,
                },
            );
        }
        AdminBody::TokenRevoked { token_id } => {
            if let Some(t) = tokens.get_mut(token_id) {
                t.revoked_at.get_or_insert(e.timestamp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn spec(name: &str) -> TokenSpec {
        TokenSpec {
            id: Uuid::now_v7(),
            name: name.into(),
            role: "writer".into(),
            workflows: vec![Uuid::from_u128(7)],
            branches: Vec::new(),
            expires_at: None,
            rate: Some(5.0),
        }
    }

    #[tokio::test]
    async fn tokens_survive_a_restart_and_revocation_is_recorded_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (spec("a"), spec("b"));
        {
            let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
            assert!(!store.has_tokens());
            let revoked = store.watch_revocations();
            store
                .create_token(a.clone(), [1; 32], "cli")
                .expect("create a");
            store
                .create_token(b.clone(), [2; 32], "cli")
                .expect("create b");
            assert!(matches!(
                store.create_token(a.clone(), [3; 32], "cli"),
                Err(TokenError::Exists(_))
            ));
            let t = store.revoke_token(&a.id, "admin-x").expect("revoke");
            assert!(t.revoked_at.is_some());
            assert!(
                revoked.has_changed().expect("watch"),
                "revocation is signalled"
            );
            store.revoke_token(&a.id, "admin-x").expect("revoke again");
            assert!(matches!(
                store.revoke_token(&Uuid::nil(), "cli"),
                Err(TokenError::NotFound(_))
            ));
            store.close().await;
        }
        let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
        assert!(store.has_tokens());
        let tokens = store.tokens();
        assert_eq!(tokens.len(), 2);
        let ta = store.token(&a.id).expect("a");
        assert_eq!(ta.spec, a);
        assert_eq!(ta.secret_hash, SecretDigest([1; 32]));
        assert!(!ta.is_live(Timestamp::now()), "revoked");
        assert!(store.token(&b.id).expect("b").is_live(Timestamp::now()));
        let events = store.read_admin_events(0, 10).expect("admin log");
        let kinds: Vec<_> = events.iter().map(AdminEvent::kind).collect();
        assert_eq!(kinds, ["token.created", "token.created", "token.revoked"]);
        assert_eq!(events[2].actor, "admin-x");
        assert_eq!(store.head(), 0, "the workflow log holds no token event");
        assert!(store.read_events(0, 10).expect("log").is_empty());
    }

    #[test]
    fn expiry_and_debug() {
        let mut s = spec("e");
        s.expires_at = Some(Timestamp(1_000));
        let t = Token {
            spec: s,
            secret_hash: SecretDigest([0xab; 32]),
            created_at: Timestamp(0),
            created_by: "cli".into(),
            revoked_at: None,
        };
        assert!(t.is_live(Timestamp(999)));
        assert!(!t.is_live(Timestamp(1_000)));
        // The digest's bytes (0xab = 171) appear in no form: not as a decimal or hex
        // array, not as hex. (Not a bare "171": the random v7 id may contain that.)
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("171, 171") && !shown.contains("ab, ab") && !shown.contains("abab"),
            "{shown}"
        );
    }

    #[test]
    fn a_tampered_admin_event_fails_the_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path(), 1 << 20).expect("engine");
        let admin = Admin::open(&engine).expect("admin");
        admin
            .append(
                &engine,
                "cli",
                AdminBody::TokenCreated {
                    token: spec("t"),
                    secret_hash: SecretDigest([5; 32]),
                },
            )
            .expect("append");
        let mut e = read(&engine, 0, 1).expect("read").remove(0);
        if let AdminBody::TokenCreated { token, .. } = &mut e.body {
            token.role = "admin".into();
        }
        let bytes = rmp_serde::to_vec(&e).expect("encode");
        engine.put_admin(1, &bytes).expect("put");
        assert!(matches!(
            Admin::open(&engine),
            Err(StorageError::Corrupt(_))
        ));
    }
}
