//! Roles and the action each route needs (DESIGN §8).
//!
//! Each role includes the one before: `reader` (every GET and stream in scope) <
//! `writer` (appends, edges, choose, status, jobs, drafts: create and revise) <
//! `reviewer` (review and publish drafts) < `admin` (tokens, lifecycle, the global
//! stream, audit, metrics, health details).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A token's role. The order is the inclusion order.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[schema(as = TokenRole)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads in scope.
    Reader,
    /// Reads and writes in scope.
    Writer,
    /// Writes, and reviews and publishes drafts.
    Reviewer,
    /// Everything.
    Admin,
}

/// What a route does, i.e. the least role it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A GET or a stream of workflows in scope.
    Read,
    /// An append, edge, choice, status change, job or draft edit.
    Write,
    /// A draft review or publish.
    Review,
    /// Tokens, lifecycle, global stream, audit, metrics, health details.
    Admin,
}

impl Action {
    /// The least role that may do this.
    pub fn least_role(self) -> Role {
        match self {
            Action::Read => Role::Reader,
            Action::Write => Role::Writer,
            Action::Review => Role::Reviewer,
            Action::Admin => Role::Admin,
        }
    }
}

impl Role {
    /// Whether this role may do `action`.
    pub fn may(self, action: Action) -> bool {
        self >= action.least_role()
    }

    /// The role's name on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?} (known: reader, writer, reviewer, admin)")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "reviewer" => Ok(Role::Reviewer),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_includes_the_ones_before_and_nothing_above() {
        let roles = [Role::Reader, Role::Writer, Role::Reviewer, Role::Admin];
        let actions = [Action::Read, Action::Write, Action::Review, Action::Admin];
        for (ri, role) in roles.iter().enumerate() {
            for (ai, action) in actions.iter().enumerate() {
                assert_eq!(role.may(*action), ai <= ri, "{role} {action:?}");
            }
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for r in [Role::Reader, Role::Writer, Role::Reviewer, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().expect("parses"), r);
            assert_eq!(serde_json::to_value(r).expect("json"), r.as_str());
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Admin".parse::<Role>().is_err());
    }
}
