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
    /// Headers sent with every request of this thread (replaces earlier ones,
    /// unless `keep_headers`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Proxy URL for this thread (`None` keeps the current one).
    #[serde(default)]
    pub proxy: Option<String>,
    /// Drop this thread's cookies.
    #[serde(default)]
    pub reset_cookies: bool,
    /// Since 1.4: leave this thread's headers as they are (`headers` is
    /// ignored). The SDK's setters other than `set_headers` and
    /// `reset_headers` send it; a 1.3 plugin never does, so its `headers`
    /// replace the thread's as before.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_headers: bool,
    /// Since 1.4: cookies put into this thread's cookie jar (after
    /// `reset_cookies`, when both are set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<SessionCookie>,
    /// Since 1.4: credentials sent with every request of this thread
    /// (`None` keeps the current ones; [`SessionAuth::None`] drops them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SessionAuth>,
    /// Since 1.4: drop this thread's own proxy (its requests go direct, or
    /// through the run's proxies when the host has them for the app).
    #[serde(default, skip_serializing_if = "is_false")]
    pub clear_proxy: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl SessionConfig {
    /// Settings with no headers (sent, they replace the thread's headers
    /// with none, as in 1.0; add [`SessionConfig::keep_headers`] to leave them).
    pub fn new() -> SessionConfig {
        SessionConfig::default()
    }

    /// Adds a header sent with every request of this thread.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> SessionConfig {
        self.headers.insert(name.into(), value.into());
        self.keep_headers = false;
        self
    }

    /// Routes this thread's requests through a proxy URL.
    pub fn proxy(mut self, url: impl Into<String>) -> SessionConfig {
        self.proxy = Some(url.into());
        self.clear_proxy = false;
        self
    }

    /// Drops this thread's cookies.
    pub fn reset_cookies(mut self) -> SessionConfig {
        self.reset_cookies = true;
        self
    }

    /// Since 1.4: leaves this thread's headers as they are.
    pub fn keep_headers(mut self) -> SessionConfig {
        self.keep_headers = true;
        self
    }

    /// Since 1.4: puts a cookie `name=value` for `url` into this thread's jar.
    pub fn cookie(
        mut self,
        url: impl Into<String>,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> SessionConfig {
        self.cookies.push(SessionCookie { url: url.into(), name: name.into(), value: value.into() });
        self
    }

    /// Since 1.4: sends these credentials with every request of this thread.
    pub fn auth(mut self, auth: SessionAuth) -> SessionConfig {
        self.auth = Some(auth);
        self
    }

    /// Since 1.4: drops this thread's own proxy.
    pub fn clear_proxy(mut self) -> SessionConfig {
        self.proxy = None;
        self.clear_proxy = true;
        self
    }
}

/// Since 1.4: a cookie a plugin puts into its thread's cookie jar, as if
/// `url` had answered `Set-Cookie: name=value` (so it is sent to that host
/// and path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SessionCookie {
    /// The URL the cookie belongs to (`https://example.com/`).
    pub url: String,
    /// Cookie name.
    pub name: String,
    /// Cookie value.
    pub value: String,
}

/// Since 1.4: credentials a session sends with every request, as an
/// `Authorization` header. Crosses as JSON tagged by `kind`:
/// `{"kind": "basic", "username", "password"?}`, `{"kind": "bearer",
/// "token"}`, `{"kind": "none"}`. Its `Debug` never shows a password or token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SessionAuth {
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password (none: an empty one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
    /// A bearer token (`Authorization: Bearer TOKEN`).
    Bearer {
        /// The token.
        token: String,
    },
    /// No credentials: drops the session's.
    None,
}

impl std::fmt::Debug for SessionAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionAuth::Basic { username, .. } => write!(f, "Basic({username}:***)"),
            SessionAuth::Bearer { .. } => f.write_str("Bearer(***)"),
            SessionAuth::None => f.write_str("None"),
        }
    }
}

/// Per-request options, carried in [`crate::abi::FfiHttpRequest::extensions`].
/// The host refuses an option it does not know, naming it. The options added
/// in 1.4 (`retries`, `follow_redirects`, `proxy`) come with the capability
/// [`crate::capability::HTTP`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Refuse a response body larger than this many bytes (the host's default
    /// limit applies when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Since 1.4: retries after the first attempt for this request (0: never
    /// retry), instead of the host's setting. Which statuses and errors are
    /// retried, and that only idempotent methods are, stays the host's rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Since 1.4: whether to follow redirects (`true`: up to the host's
    /// default of 10, `false`: answer with the 3xx itself), or the most
    /// redirects to follow (a number; 0 is `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<FollowRedirects>,
    /// Since 1.4: the proxy URL for this request only, or [`NO_PROXY`]
    /// (`"none"`) to send it directly; the session's proxy and the run's
    /// proxies are not used for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

/// Since 1.4: the [`RequestOptions::proxy`] value that sends a request directly.
pub const NO_PROXY: &str = "none";

/// Since 1.4: how a request follows redirects ([`RequestOptions::follow_redirects`]);
/// crosses as a JSON boolean or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FollowRedirects {
    /// Follow up to the default number of redirects, or none.
    Follow(bool),
    /// Follow at most this many.
    AtMost(u32),
}

impl FollowRedirects {
    /// The host's default number of redirects followed.
    pub const DEFAULT_MAX: u32 = 10;

    /// The most redirects to follow (0: none).
    pub fn max(self) -> u32 {
        match self {
            FollowRedirects::Follow(true) => FollowRedirects::DEFAULT_MAX,
            FollowRedirects::Follow(false) => 0,
            FollowRedirects::AtMost(n) => n,
        }
    }
}

impl RequestOptions {
    /// True when no option is set (then nothing needs to cross).
    pub fn is_empty(&self) -> bool {
        self == &RequestOptions::default()
    }
}

/// Since 1.4: why a request failed, machine-readably. The host puts the class
/// in front of its (human) error message as a tag, `[timeout] GET https://…
/// failed after 3 attempts: …` ([`tag_error`]); a plugin of 1.4 or later
/// reads it back with [`split_error`], an older one shows the message with
/// the tag, still readable. New classes may come: a reader treats a tag it
/// does not know as [`ErrorClass::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// No answer in time (after the host's retries).
    Timeout,
    /// The connection could not be made, or was reset (after retries).
    Connection,
    /// The site refuses this client: 401, 403, 407, 429 (after retries) or
    /// 451, or a proxy exit it banned.
    Blocked,
    /// The body was larger than the request's `max_body_bytes`.
    BodyTooLarge,
    /// Reading or decoding the body failed.
    Body,
    /// Refused at once: the domain's circuit breaker is open.
    CircuitOpen,
    /// Refused: the site's robots.txt disallows the URL.
    RobotsDenied,
    /// A proxy could not be used (invalid URL, none left to lease).
    Proxy,
    /// The request itself is invalid (method, URL, options).
    InvalidRequest,
    /// Another non-2xx status (from `error_for_status`).
    HttpStatus,
    /// Anything else (too many redirects, …).
    Other,
}

impl ErrorClass {
    /// Every class, in the order above.
    pub const ALL: &'static [ErrorClass] = &[
        ErrorClass::Timeout,
        ErrorClass::Connection,
        ErrorClass::Blocked,
        ErrorClass::BodyTooLarge,
        ErrorClass::Body,
        ErrorClass::CircuitOpen,
        ErrorClass::RobotsDenied,
        ErrorClass::Proxy,
        ErrorClass::InvalidRequest,
        ErrorClass::HttpStatus,
        ErrorClass::Other,
    ];

    /// Its name in the tag (`timeout`, `body_too_large`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connection => "connection",
            ErrorClass::Blocked => "blocked",
            ErrorClass::BodyTooLarge => "body_too_large",
            ErrorClass::Body => "body",
            ErrorClass::CircuitOpen => "circuit_open",
            ErrorClass::RobotsDenied => "robots_denied",
            ErrorClass::Proxy => "proxy",
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::Other => "other",
        }
    }

    /// The class a tag names ([`ErrorClass::Other`] for a name this version
    /// does not know).
    pub fn from_tag(tag: &str) -> ErrorClass {
        ErrorClass::ALL.iter().copied().find(|c| c.as_str() == tag).unwrap_or(ErrorClass::Other)
    }
}

/// Since 1.4: `message` with `class`'s tag in front: `[timeout] message`.
pub fn tag_error(class: ErrorClass, message: &str) -> String {
    format!("[{}] {message}", class.as_str())
}

/// Since 1.4: the class and the message of an error string [`tag_error`]
/// made; an untagged string has no class and is its own message. A tag is
/// `[` + lower-case letters and `_` + `] ` at the very start.
pub fn split_error(error: &str) -> (Option<ErrorClass>, &str) {
    let Some(rest) = error.strip_prefix('[') else { return (None, error) };
    let Some((tag, message)) = rest.split_once("] ") else { return (None, error) };
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return (None, error);
    }
    (Some(ErrorClass::from_tag(tag)), message)
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
    fn options_of_1_4_cross_as_json() {
        let o: RequestOptions =
            serde_json::from_str(r#"{"retries": 0, "follow_redirects": false, "proxy": "none"}"#).expect("parses");
        assert_eq!((o.retries, o.follow_redirects.map(FollowRedirects::max)), (Some(0), Some(0)));
        assert_eq!(o.proxy.as_deref(), Some(NO_PROXY));
        let o: RequestOptions = serde_json::from_str(r#"{"follow_redirects": 3}"#).expect("a number");
        assert_eq!(o.follow_redirects, Some(FollowRedirects::AtMost(3)));
        assert_eq!(FollowRedirects::Follow(true).max(), 10);
        let err = serde_json::from_str::<RequestOptions>(r#"{"follow_redirects": "yes"}"#).expect_err("a string");
        assert!(err.to_string().contains("FollowRedirects"), "{err}");
        assert_eq!(serde_json::to_string(&RequestOptions::default()).expect("json"), "{}");
    }

    #[test]
    fn a_1_3_session_config_replaces_headers_and_secrets_stay_out_of_debug() {
        // what a 1.3 plugin sends: no keep_headers, so its headers replace the thread's
        let old: SessionConfig =
            serde_json::from_str(r#"{"headers": {"a": "b"}, "proxy": null, "reset_cookies": false}"#).expect("1.3");
        assert!(!old.keep_headers && old.cookies.is_empty() && old.auth.is_none());
        let new = SessionConfig::new()
            .keep_headers()
            .cookie("http://h/", "sid", "1")
            .auth(SessionAuth::Basic { username: "u".into(), password: Some("hunter2".into()) });
        let json = serde_json::to_string(&new).expect("json");
        assert_eq!(serde_json::from_str::<SessionConfig>(&json).expect("round trip"), new);
        assert!(json.contains(r#""auth":{"kind":"basic","username":"u","password":"hunter2"}"#), "{json}");
        let shown = format!("{new:?}");
        assert!(!shown.contains("hunter2") && shown.contains("Basic(u:***)"), "{shown}");
        let bearer = format!("{:?}", SessionAuth::Bearer { token: "t0ken".into() });
        assert!(!bearer.contains("t0ken"), "{bearer}");
        let err = serde_json::from_str::<SessionAuth>(r#"{"kind": "digest"}"#).expect_err("unknown kind");
        assert!(err.to_string().contains("digest"), "{err}");
    }

    #[test]
    fn error_classes_are_tagged_and_split() {
        for c in ErrorClass::ALL {
            let tagged = tag_error(*c, "GET http://h/ failed: [x] y");
            assert_eq!(split_error(&tagged), (Some(*c), "GET http://h/ failed: [x] y"));
        }
        assert_eq!(split_error("plain message"), (None, "plain message"));
        assert_eq!(split_error("[Not A Tag] x"), (None, "[Not A Tag] x"));
        assert_eq!(split_error("[from_the_future] x"), (Some(ErrorClass::Other), "x"), "an unknown class");
        assert_eq!(split_error("[timeout]x"), (None, "[timeout]x"));
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
