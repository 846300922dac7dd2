//! Token secrets: generation, wire form, hashing and the constant-time check.
//!
//! A token travels as `arbor_<id>_<secret>`: `id` is the token's UUID (32 hex digits, so
//! the server finds the token without comparing secrets), `secret` is 256 random bits
//! (64 hex digits). The store keeps only `BLAKE3(secret)`; a presented token is checked
//! by hashing its secret and comparing hashes in constant time (`blake3::Hash`'s `==`).
//! A plain fast hash is enough: the secret is random and as long as the hash, so there
//! is nothing to brute-force that a slow password hash would protect.

use std::fmt;

use uuid::Uuid;

/// Prefix of every token's wire form (lets secret scanners recognise leaked tokens).
pub const PREFIX: &str = "arbor_";

/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;

/// A token in its wire form. `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// The wire form, to print once to whoever created the token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

impl fmt::Display for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted token>")
    }
}

/// The stored form of a secret: its BLAKE3 hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

impl SecretHash {
    fn of(secret: &str) -> SecretHash {
        SecretHash(*blake3::hash(secret.as_bytes()).as_bytes())
    }

    /// Whether `secret` (the part after the id) hashes to this, in constant time.
    pub fn matches(&self, secret: &str) -> bool {
        blake3::hash(secret.as_bytes()) == blake3::Hash::from_bytes(self.0)
    }
}

/// Failure to draw randomness from the operating system.
#[derive(Debug, thiserror::Error)]
#[error("no randomness from the operating system: {0}")]
pub struct RandomnessError(String);

/// A new secret for token `id`: its wire form (show once) and the hash to store.
pub fn generate(id: Uuid) -> Result<(TokenSecret, SecretHash), RandomnessError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| RandomnessError(e.to_string()))?;
    let secret = hex(&bytes);
    let hash = SecretHash::of(&secret);
    Ok((
        TokenSecret(format!("{PREFIX}{}_{secret}", id.simple())),
        hash,
    ))
}

/// Splits a presented token into its id and secret part; `None` if it is not of the
/// wire form (the caller answers 401 without looking anything up).
pub fn parse(token: &str) -> Option<(Uuid, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.len() != SECRET_BYTES * 2 {
        return None;
    }
    if !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((Uuid::try_parse(id).ok()?, secret))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_back_and_matches_only_its_hash() {
        let id = Uuid::now_v7();
        let (token, hash) = generate(id).expect("randomness");
        let (got_id, secret) = parse(token.expose()).expect("parses");
        assert_eq!(got_id, id);
        assert!(hash.matches(secret));
        let (other, other_hash) = generate(id).expect("randomness");
        assert_ne!(other, token, "two secrets differ");
        assert!(!other_hash.matches(secret));
        let mut flipped = secret.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!hash.matches(std::str::from_utf8(&flipped).expect("ascii")));
    }

    #[test]
    fn secrets_carry_256_random_bits() {
        let (token, _) = generate(Uuid::nil()).expect("randomness");
        let (_, secret) = parse(token.expose()).expect("parses");
        assert_eq!(secret.len(), 64, "64 hex digits = 256 bits");
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let (token, _) = generate(Uuid::now_v7()).expect("randomness");
        let t = token.expose();
        for bad in [
            "",
            "arbor_",
            "Bearer x",
            &t[1..],
            &t[..t.len() - 1],
            &format!("{t}0"),
            &t.replace(PREFIX, "arbr_"),
            &format!("{}g", &t[..t.len() - 1]),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let (token, hash) = generate(Uuid::now_v7()).expect("randomness");
        let (_, secret) = parse(token.expose()).expect("parses");
        for shown in [
            format!("{token:?}"),
            format!("{token}"),
            format!("{hash:?}"),
        ] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains(&secret[..16]), "{shown}");
        }
    }
}
