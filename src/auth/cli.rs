//! `arbor token create|list|revoke`: token administration offline (server stopped),
//! so that the first admin token can exist before the server does.
//!
//! `create` prints the token as one JSON line with its secret (`token`), the only
//! time it is shown; `list` prints one JSON line per token, never a secret; `revoke`
//! prints the revoked token. Offline actions are recorded with actor `cli`.

use anyhow::Context;
use clap::Subcommand;
use uuid::Uuid;

use arbor_storage::{Store, StoreOptions};

use super::role::Role;
use super::token::{after_now, issue, parse_duration, parse_rate, NewToken, TokenView};
use crate::config::BaseArgs;

/// The actor of offline token administration.
pub const CLI_ACTOR: &str = "cli";

/// `arbor token …`.
#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Create a token and print it, with its secret, once.
    Create {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// reader, writer, reviewer or admin.
        #[arg(long)]
        role: Role,
        /// Limit the token to this workflow (repeatable; none = all).
        #[arg(long = "workflow")]
        workflows: Vec<Uuid>,
        /// Limit the token to this branch (repeatable; none = all).
        #[arg(long = "branch")]
        branches: Vec<Uuid>,
        /// Expire after this long (e.g. 30d, 12h).
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// Requests per second for this token (e.g. 50/s; default: the server's).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
    },
    /// List tokens (never their secrets).
    List {
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
    },
    /// Revoke a token at once.
    Revoke {
        /// Token id.
        id: Uuid,
        /// `--config`, `--data-dir`.
        #[command(flatten)]
        base: BaseArgs,
    },
}

fn open(base: &BaseArgs, create: bool) -> anyhow::Result<Store> {
    let dir = base.resolve(None)?.data_dir;
    if create {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    } else if !dir.join("db").exists() {
        anyhow::bail!("{} holds no arbor store", dir.display());
    }
    Store::open(&dir, StoreOptions::default()).with_context(|| {
        format!(
            "opening {} (is a server running on it? stop it first)",
            dir.display()
        )
    })
}

/// Runs a token subcommand.
pub async fn run(action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::Create {
            name,
            role,
            workflows,
            branches,
            expires_in,
            rate,
            base,
        } => {
            let store = open(&base, true)?;
            let new = NewToken {
                name,
                role,
                workflows,
                branches,
                expires_at: expires_in.map(after_now),
                rate,
            };
            let res = issue(&store, new, CLI_ACTOR);
            store.close().await;
            let (view, secret) = res?;
            let mut out = serde_json::to_value(&view)?;
            out["token"] = secret.expose().into();
            println!("{out}");
        }
        TokenAction::List { base } => {
            let store = open(&base, false)?;
            let tokens = store.tokens();
            store.close().await;
            for t in &tokens {
                println!("{}", serde_json::to_string(&TokenView::from(t))?);
            }
        }
        TokenAction::Revoke { id, base } => {
            let store = open(&base, false)?;
            let res = store.revoke_token(&id, CLI_ACTOR);
            store.close().await;
            println!("{}", serde_json::to_string(&TokenView::from(&res?))?);
        }
    }
    Ok(())
}
