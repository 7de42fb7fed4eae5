//! Typed ids: [`AppId`] (an app, 64 hex) and [`RuntimeId`] (a run, 32 hex).
//! Every pub fn of dc-core that takes an app id takes `&AppId`, every one that
//! takes a run id takes `&RuntimeId`, and the row structs carry them, so
//! passing a run id where an app id is expected does not compile:
//!
//! ```compile_fail
//! # async fn f(db: &dc_core::Database, run: &dc_core::runs::RunRow) {
//! // a run id is not an app id
//! dc_core::apps::get_app(db, &run.runtime_id).await;
//! # }
//! ```
//!
//! ```
//! # async fn f(db: &dc_core::Database, run: &dc_core::runs::RunRow) {
//! dc_core::apps::get_app(db, &run.app_id).await;
//! # }
//! ```
//!
//! Both are transparent over `String` in JSON (serde), in the database (sqlx,
//! both backends) and in text (`Display`), so no wire format changes. Values
//! that come from the database, a generated id or another host process convert
//! with `From`; text a user typed goes through [`AppId::parse`] /
//! [`RuntimeId::parse`] (exact ids) or the resolvers that also accept prefixes
//! and paths ([`crate::apps::resolve_app`], [`crate::runs::get`]).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// A string that is not a well-formed id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not {what}: expected {expected}")]
pub struct IdError {
    /// The text given.
    pub value: String,
    /// "an app id" / "a run id".
    pub what: &'static str,
    /// What a valid one looks like.
    pub expected: &'static str,
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, what = $what:literal, hex_len = $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned `String`.
            pub fn into_string(self) -> String {
                self.0
            }

            /// Checks text a user typed: exactly
            #[doc = concat!(stringify!($len), " lowercase hex characters.")]
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if s.len() == $len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    Ok(Self(s.to_string()))
                } else {
                    Err(IdError {
                        value: s.to_string(),
                        what: $what,
                        expected: concat!(stringify!($len), " lowercase hex characters"),
                    })
                }
            }
        }

        /// Debug-formats like the `String` it wraps (`"…"`), so messages and
        /// logs read as they did before the ids were typed.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        impl From<&$name> for $name {
            fn from(s: &$name) -> Self {
                s.clone()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<&$name> for $name {
            fn eq(&self, other: &&$name) -> bool {
                self == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

string_id!(
    /// An app's id: SHA-256 hex of `group|parent|name` ([`crate::apps::app_id_for`]),
    /// or [`AppId::host`] for the objects the host itself owns.
    AppId,
    what = "an app id",
    hex_len = 64
);

string_id!(
    /// A run's id: uuid4 as 32 lowercase hex ([`crate::runs::new_runtime_id`]).
    RuntimeId,
    what = "a run id",
    hex_len = 32
);

impl AppId {
    /// The pseudo app `dc-host` that owns the host's own tables in `app_db_objects`.
    pub fn host() -> Self {
        Self("dc-host".to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn parse_accepts_ids_and_names_what_is_wrong() {
        let app = "a".repeat(64);
        assert_eq!(AppId::parse(&app).map(|a| a.into_string()), Ok(app.clone()));
        assert!(RuntimeId::parse(&"0f".repeat(16)).is_ok());
        let e = RuntimeId::parse(&app).expect_err("64 hex is not a run id");
        assert_eq!(e.to_string(), format!("{app:?} is not a run id: expected 32 lowercase hex characters"));
        assert!(AppId::parse(&"A".repeat(64)).is_err(), "upper case is refused");
        assert!(AppId::parse("group/parent/name").is_err());
    }

    #[test]
    fn ids_are_transparent_strings_in_json_and_text() {
        let id = RuntimeId::from("0123456789abcdef0123456789abcdef");
        assert_eq!(serde_json::to_string(&id).expect("json"), "\"0123456789abcdef0123456789abcdef\"");
        let back: RuntimeId = serde_json::from_str("\"0123456789abcdef0123456789abcdef\"").expect("json");
        assert_eq!(back, id);
        assert_eq!(format!("{id}"), "0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn maps_keyed_by_id_are_looked_up_by_str() {
        let mut m = HashMap::new();
        m.insert(AppId::from("x".repeat(64)), 1);
        assert_eq!(m.get("x".repeat(64).as_str()), Some(&1));
    }
}
