//! The JSON documents that cross the boundary besides the manifest: merge
//! summaries (host → plugin), session settings (plugin → host), per-request
//! options and response information (the `extensions` of
//! [`crate::abi::FfiHttpRequest`] / [`crate::abi::FfiHttpResponse`]), and the
//! numeric log severities of [`crate::abi::HostCallbacks::log_at`].
//!
//! Every struct is `#[non_exhaustive]` and every field is optional on the wire,
//! so a minor version adds fields without breaking plugin source or layout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a merge did, as the host reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MergeSummary {
    /// New rows.
    #[serde(default)]
    pub inserted: u64,
    /// Rows whose content changed.
    #[serde(default)]
    pub updated: u64,
    /// Rows removed (or archived) because a full snapshot no longer had them.
    #[serde(default)]
    pub deleted: u64,
    /// Rows that were already up to date (no write at all).
    #[serde(default)]
    pub unchanged: u64,
}

impl MergeSummary {
    /// A summary with these counts.
    pub fn new(inserted: u64, updated: u64, deleted: u64, unchanged: u64) -> MergeSummary {
        MergeSummary { inserted, updated, deleted, unchanged }
    }
}

/// Settings for the calling thread's HTTP session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Headers sent with every request of this thread (replaces earlier ones).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Proxy URL for this thread (`None` keeps the current one).
    #[serde(default)]
    pub proxy: Option<String>,
    /// Drop this thread's cookies.
    #[serde(default)]
    pub reset_cookies: bool,
}

impl SessionConfig {
    /// Settings that change nothing.
    pub fn new() -> SessionConfig {
        SessionConfig::default()
    }

    /// Adds a header sent with every request of this thread.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> SessionConfig {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Routes this thread's requests through a proxy URL.
    pub fn proxy(mut self, url: impl Into<String>) -> SessionConfig {
        self.proxy = Some(url.into());
        self
    }

    /// Drops this thread's cookies.
    pub fn reset_cookies(mut self) -> SessionConfig {
        self.reset_cookies = true;
        self
    }
}

/// Per-request options, carried in [`crate::abi::FfiHttpRequest::extensions`].
/// The host refuses an option it does not know, naming it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Refuse a response body larger than this many bytes (the host's default
    /// limit applies when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}

impl RequestOptions {
    /// True when no option is set (then nothing needs to cross).
    pub fn is_empty(&self) -> bool {
        self == &RequestOptions::default()
    }
}

/// What the host reports about an exchange, carried in
/// [`crate::abi::FfiHttpResponse::extensions`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResponseInfo {
    /// Milliseconds from sending the request to the end of the body.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Attempts the host made (1 without retries; 0 from a host that does
    /// not say). Added in 1.1 as a JSON key: older plugins ignore it.
    #[serde(default)]
    pub attempts: u32,
}

/// Since 1.2: one work item a plugin adds to the run's frontier
/// ([`crate::abi::HostCallbacks::enqueue`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EnqueueEntry {
    /// The work item, passed to `collect` as `prepare_list` items are.
    pub item: serde_json::Value,
    /// What makes two items the same. Without it the host derives one: the
    /// canonical URL when the item is a URL string or an object with a `url`
    /// string, else the item's JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl EnqueueEntry {
    /// An item whose key the host derives.
    pub fn new(item: serde_json::Value) -> EnqueueEntry {
        EnqueueEntry { item, key: None }
    }

    /// An item with an explicit deduplication key.
    pub fn keyed(key: impl Into<String>, item: serde_json::Value) -> EnqueueEntry {
        EnqueueEntry { item, key: Some(key.into()) }
    }
}

/// Since 1.2: what became of the entries of one `enqueue` call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EnqueueAnswer {
    /// Added to the frontier (will be collected).
    #[serde(default)]
    pub added: u64,
    /// Already seen in this run (same key), dropped.
    #[serde(default)]
    pub duplicates: u64,
    /// Deeper than the manifest's `max_depth`, dropped.
    #[serde(default)]
    pub over_depth: u64,
    /// Beyond the run's item limit, dropped.
    #[serde(default)]
    pub over_limit: u64,
}

/// Numeric log severities for [`crate::abi::HostCallbacks::log_at`]. The scale
/// leaves room between levels, so a new level is a new number, not a layout
/// change; a receiver rounds an unknown number down to the nearest level it knows.
pub mod severity {
    use crate::abi::FfiLogLevel;

    /// Very detailed tracing.
    pub const TRACE: u8 = 10;
    /// Debugging detail.
    pub const DEBUG: u8 = 20;
    /// Normal progress.
    pub const INFO: u8 = 30;
    /// Something odd that did not stop the run.
    pub const WARN: u8 = 40;
    /// A failure.
    pub const ERROR: u8 = 50;

    /// The nearest 1.0 level at or below `severity` (below TRACE is TRACE).
    pub fn to_ffi_level(severity: u8) -> FfiLogLevel {
        match severity {
            s if s >= ERROR => FfiLogLevel::Error,
            s if s >= WARN => FfiLogLevel::Warn,
            s if s >= INFO => FfiLogLevel::Info,
            s if s >= DEBUG => FfiLogLevel::Debug,
            _ => FfiLogLevel::Trace,
        }
    }

    /// The severity number of a 1.0 level.
    pub fn of_ffi_level(level: FfiLogLevel) -> u8 {
        match level {
            FfiLogLevel::Trace => TRACE,
            FfiLogLevel::Debug => DEBUG,
            FfiLogLevel::Info => INFO,
            FfiLogLevel::Warn => WARN,
            FfiLogLevel::Error => ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::FfiLogLevel;

    #[test]
    fn severities_round_down_to_known_levels() {
        assert_eq!(severity::to_ffi_level(0), FfiLogLevel::Trace);
        assert_eq!(severity::to_ffi_level(35), FfiLogLevel::Info, "a future NOTICE between info and warn");
        assert_eq!(severity::to_ffi_level(60), FfiLogLevel::Error, "a future FATAL above error");
        for l in [FfiLogLevel::Trace, FfiLogLevel::Debug, FfiLogLevel::Info, FfiLogLevel::Warn, FfiLogLevel::Error] {
            assert_eq!(severity::to_ffi_level(severity::of_ffi_level(l)), l);
        }
    }

    #[test]
    fn unknown_request_options_are_refused_by_name() {
        let err = serde_json::from_str::<RequestOptions>(r#"{"max_body_bytes": 5, "teleport": true}"#)
            .expect_err("unknown option");
        assert!(err.to_string().contains("teleport"), "{err}");
        let ok: RequestOptions = serde_json::from_str(r#"{"max_body_bytes": 5}"#).expect("known option");
        assert_eq!(ok.max_body_bytes, Some(5));
        assert!(RequestOptions::default().is_empty());
    }

    #[test]
    fn summaries_from_older_or_newer_peers_parse() {
        let s: MergeSummary = serde_json::from_str(r#"{"inserted": 3}"#).expect("missing fields default");
        assert_eq!(s, MergeSummary::new(3, 0, 0, 0));
        let s: MergeSummary =
            serde_json::from_str(r#"{"inserted": 1, "updated": 2, "deleted": 3, "unchanged": 4, "skipped": 9}"#)
                .expect("unknown fields are ignored");
        assert_eq!(s, MergeSummary::new(1, 2, 3, 4));
    }
}
