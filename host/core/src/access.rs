//! Who may do what through the control plane: the roles (viewer < operator <
//! admin), the authenticated principal a request runs as, and the seam between
//! the REST API (which checks roles on every route) and the authority that
//! verifies bearer tokens (`dc-auth`). Only the types live here, so neither
//! crate depends on the other.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// A control-plane role. Each role may do everything the roles below it may:
/// viewers read, operators also send commands (start, stop, enable, disable,
/// schedules, args), admins also manage plugins, users and clients.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub enum Role {
    /// Reads everything except secrets.
    Viewer,
    /// Also sends commands and changes schedules and args.
    Operator,
    /// Also manages plugins, users and clients.
    Admin,
}

impl Role {
    /// True when this role may do what `required` may.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }

    /// The stable lower-case name (`viewer`, `operator`, `admin`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl TryFrom<String> for Role {
    type Error = String;

    /// Parses a stored role name; the error names the value and the roles.
    fn try_from(s: String) -> Result<Role, String> {
        s.parse().map_err(|_| format!("unknown role {s:?}: use viewer, operator or admin"))
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The user name or client id (the token's `sub`).
    pub subject: String,
    /// What it may do.
    pub role: Role,
}

/// Who made a request, as the audit log records it: put into a response's
/// extensions by whatever knows (the API's role guard: the principal; the
/// token endpoint: the name a login or client authentication claimed, with
/// the role only when it succeeded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The user name or client id (none: not known).
    pub subject: Option<String>,
    /// Its role (none: not authenticated).
    pub role: Option<Role>,
}

impl From<&Principal> for Actor {
    fn from(p: &Principal) -> Actor {
        Actor { subject: Some(p.subject.clone()), role: Some(p.role) }
    }
}

/// Why a bearer token was not accepted. The message is safe to show the caller
/// (it never holds the token or a key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthFailure(pub String);

/// Verifies bearer tokens. Implemented by the token authority (`dc-auth`);
/// the REST API holds one and asks it on every request.
pub trait Authenticate: Send + Sync {
    /// The principal `bearer` (the token after `Bearer `) stands for.
    fn authenticate<'a>(
        &'a self,
        bearer: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, AuthFailure>> + Send + 'a>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert_eq!("OPERATOR".parse::<Role>().expect("parses"), Role::Operator);
        assert_eq!(Role::Admin.as_str(), "admin");
        assert_eq!(serde_json::to_string(&Role::Viewer).expect("json"), "\"viewer\"");
    }
}
