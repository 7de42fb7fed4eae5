//! The plugin interface of dc-host: the only crate whose version the loader
//! checks. It holds the stable ABI ([`abi`]: root module, `sabi_trait`s, FFI
//! structs) and the JSON documents that cross it ([`manifest`], [`wire`],
//! [`capability`], and the named host methods of [`host_call`]). Plugin
//! authors do not use it directly: they depend on
//! `dc-plugin-sdk`, which may change at its own pace.
//!
//! Versioning (see `docs/plugin-abi.md`): a host built against 1.N loads plugins
//! built against 1.0 to 1.N; it refuses a plugin built against a newer minor or
//! another major, naming both versions. Everything here is either frozen (the
//! 1.0 layout), appended after a prefix field, or `#[non_exhaustive]`, so adding
//! a manifest field, an enum variant or a host method is a minor change.
//!
//! Invariant: this crate depends on abi_stable, serde and serde_json only (a
//! test in the suite fails otherwise).
#![deny(missing_docs)]
#![allow(unsafe_code)] // the abi_stable derives expand to unsafe impls; no hand-written unsafe here

pub mod abi;
pub mod capability;
pub mod host_call;
pub mod manifest;
pub mod wire;

pub use host_call::{CaptchaBalance, CaptchaSolution, CaptchaTask, ProxyExit, ProxyReport, ProxyVerdict};
pub use manifest::{
    ColumnDecl, ColumnType, CrawlLimits, Manifest, MissingRows, PluginKind, Schedule, SnapshotMode, TableDecl,
};
pub use wire::{
    EnqueueAnswer, EnqueueEntry, ErrorClass, FollowRedirects, MergeSummary, RequestOptions, ResponseInfo, SessionAuth,
    SessionConfig, SessionCookie,
};

/// The major interface version. A plugin's manifest carries it as
/// `interface_version`; the host refuses a plugin whose major differs.
pub const INTERFACE_VERSION: u32 = 1;

/// The full version of this crate (`MAJOR.MINOR.PATCH`): the interface version
/// abi_stable records in every plugin built against it.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Former name of [`ABI_VERSION`], kept for code written against 1.0.
pub const API_CRATE_VERSION: &str = ABI_VERSION;

/// The oldest minor version of this major that a host built against this crate
/// still loads. Raising it is a breaking change: never do it within a major.
pub const OLDEST_MINOR: u64 = 0;

/// `(major, minor, patch)` of a version string like `1.1.0`.
pub fn parse_version(s: &str) -> Option<(u64, u64, u64)> {
    let mut parts = s.trim().split('.').map(|p| p.parse::<u64>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

/// Why a host built against this crate refuses a plugin built against
/// `plugin_version` (the version abi_stable recorded in the library), or `None`
/// when it loads. The message names both versions and what to do.
pub fn check_plugin_version(plugin_version: &str) -> Option<String> {
    let host = ABI_VERSION;
    let Some((maj, min, _)) = parse_version(plugin_version) else {
        return Some(format!(
            "the plugin records an unreadable interface version {plugin_version:?}; rebuild it against dc-plugin-sdk"
        ));
    };
    let (h_maj, h_min, _) = parse_version(host).unwrap_or((0, 0, 0));
    if maj != h_maj {
        return Some(format!(
            "the plugin was built against plugin interface (dc-plugin-api) {plugin_version}, another major version than this host's {host}; rebuild the plugin against dc-plugin-api {h_maj}.x (a dc-plugin-sdk that uses it)"
        ));
    }
    if min > h_min {
        return Some(format!(
            "the plugin was built against plugin interface (dc-plugin-api) {plugin_version}, newer than this host's {host}; upgrade dc-host, or rebuild the plugin against dc-plugin-api {h_maj}.{h_min}"
        ));
    }
    #[allow(clippy::absurd_extreme_comparisons)] // OLDEST_MINOR is 0 today; the rule stays written out
    if min < OLDEST_MINOR {
        return Some(format!(
            "the plugin was built against plugin interface (dc-plugin-api) {plugin_version}, older than {h_maj}.{OLDEST_MINOR}, the oldest this host's {host} loads; rebuild the plugin"
        ));
    }
    None
}

/// The range of interface versions this crate's host loads, e.g. `1.0 – 1.1`.
pub fn supported_range() -> String {
    let (maj, min, _) = parse_version(ABI_VERSION).unwrap_or((0, 0, 0));
    format!("{maj}.{OLDEST_MINOR} – {maj}.{min}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_this_major_up_to_this_minor_load() {
        let (maj, min, _) = parse_version(ABI_VERSION).expect("own version parses");
        for m in OLDEST_MINOR..=min {
            assert_eq!(check_plugin_version(&format!("{maj}.{m}.7")), None, "{maj}.{m}.7 loads");
        }
    }

    #[test]
    fn newer_minor_and_other_major_are_refused_naming_both() {
        let (maj, min, _) = parse_version(ABI_VERSION).expect("own version parses");
        let newer = format!("{maj}.{}.0", min + 1);
        let msg = check_plugin_version(&newer).expect("newer minor refused");
        assert!(msg.contains(&newer) && msg.contains(ABI_VERSION) && msg.contains("newer"), "{msg}");
        let other = format!("{}.0.0", maj + 1);
        let msg = check_plugin_version(&other).expect("other major refused");
        assert!(msg.contains(&other) && msg.contains(ABI_VERSION) && msg.contains("another major"), "{msg}");
        assert!(check_plugin_version("x.y").expect("garbage refused").contains("unreadable"));
    }
}
