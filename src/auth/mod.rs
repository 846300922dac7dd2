//! Access control primitives (DESIGN §8): token secrets, roles, rate limits.
//!
//! - [`secret`]: a token's secret — generated from the OS's randomness (256 bits), shown
//!   once in its wire form `arbor_<id>_<secret>`, stored only as a BLAKE3 hash, checked
//!   in constant time, and never printed by `Debug`.
//! - [`role`]: `reader` < `writer` < `reviewer` < `admin`, each including the one before,
//!   and the [`role::Action`] each route needs.
//! - [`rate`]: token buckets (per token, and per client address for failed
//!   authentications) that answer how long to wait when empty.
//! - [`token`]: issuing a token (id, secret, `token.created`) and its public view.
//! - [`cli`]: `arbor token create|list|revoke`, offline.

pub mod cli;
pub mod rate;
pub mod role;
pub mod secret;
pub mod token;
