//! The shared enums (roadmap WP-01). They are stored in the database as stable
//! upper-case strings (`START`, `PENDING`, `SUCCESS`, ...) and parsed back with
//! `FromStr`; code uses these types, never string literals.

use serde::{Deserialize, Serialize};
use strum::{AsRefStr, Display, EnumIter, EnumString, IntoStaticStr};

macro_rules! stored_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize,
                 Display, EnumString, AsRefStr, IntoStaticStr, EnumIter)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        #[strum(serialize_all = "SCREAMING_SNAKE_CASE", ascii_case_insensitive)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// The stable string stored in the database.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }
    };
}

stored_enum! {
    /// An operator command for an app.
    pub enum CmdName { Start, Stop, Restart, Enable, Disable }
}

stored_enum! {
    /// Where an app's pending command stands.
    pub enum CmdFlag { Idle, Pending, Done }
}

stored_enum! {
    /// The state of one run (a `runtime` row).
    pub enum RunStatus {
        /// Created, worker not started yet.
        Pending,
        /// Worker running.
        Running,
        /// Finished without error.
        Success,
        /// Ended with an error, a crash or a time-out (see `reason`).
        Failed,
        /// Stopped on an operator's request.
        Stopped,
    }
}

impl RunStatus {
    /// True for SUCCESS, FAILED and STOPPED.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::Failed | RunStatus::Stopped)
    }
}

stored_enum! {
    /// Why an app is held back from running.
    pub enum FatalFlag {
        /// Healthy.
        None,
        /// The plugin could not be loaded or started.
        FailedToStart,
        /// Disabled after repeated failed runs.
        RepeatedFailures,
        /// The last run crashed (signal or abort).
        Crashed,
    }
}

stored_enum! {
    /// The kind of a database object an app depends on.
    pub enum DbObjectType { Table, View, Procedure, Function, Schema, Index }
}

stored_enum! {
    /// The Unicode normalization applied to text before hashing.
    pub enum UnicodeForm {
        /// Canonical composition.
        Nfc,
        /// Compatibility composition.
        Nfkc,
        /// Canonical decomposition.
        Nfd,
        /// Compatibility decomposition.
        Nfkd,
        /// Hash the text as is.
        None,
    }
}

stored_enum! {
    /// Severity of an operator alert.
    pub enum AlertSeverity { Info, Warning, Error, Critical }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use strum::IntoEnumIterator;

    #[test]
    fn stored_strings_round_trip() {
        for s in RunStatus::iter() {
            assert_eq!(RunStatus::from_str(s.as_str()), Ok(s));
        }
        assert_eq!(CmdName::Start.as_str(), "START");
        assert_eq!(FatalFlag::RepeatedFailures.as_str(), "REPEATED_FAILURES");
        assert_eq!(UnicodeForm::from_str("nfkc"), Ok(UnicodeForm::Nfkc));
        assert!(DbObjectType::from_str("TABLEAU").is_err());
        assert_eq!(serde_json::to_string(&AlertSeverity::Critical).expect("serializes"), "\"CRITICAL\"");
    }
}
