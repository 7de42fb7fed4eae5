//! The stable ABI between the host and a plugin: the root module (a prefix type,
//! so later minor versions append fields), the scraper object the plugin hands
//! out, and the host callbacks the plugin calls.
//!
//! Everything structured (manifests, work items, records, merge summaries,
//! per-request options) crosses as JSON text (see [`crate::manifest`] and
//! [`crate::wire`]), which keeps the layout small and lets payloads grow without
//! a layout change.
//!
//! Growth rules (enforced by the compatibility tests, see `docs/plugin-abi.md`):
//! - the types and methods of 1.0 are frozen: never change, reorder or remove them;
//! - a minor version appends methods after `#[sabi(last_prefix_field)]` (each with a
//!   default body, the fallback abi_stable uses when a vtable is older) or adds new
//!   types used only by such methods; it never adds a field to an existing struct
//!   or a variant to an existing exhaustive enum;
//! - anything else is a new major version.

#![allow(non_local_definitions)] // sabi_trait expands to impls inside a const block

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString, RVec},
};

/// One HTTP header.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiHeader {
    /// Header name.
    pub name: RString,
    /// Header value.
    pub value: RString,
}

/// An HTTP request a plugin asks the host to perform.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiRequest {
    /// `GET`, `POST`, ...
    pub method: RString,
    /// Absolute URL.
    pub url: RString,
    /// Extra headers for this request (on top of the thread's session headers).
    pub headers: RVec<FfiHeader>,
    /// Request body (empty for none).
    pub body: RVec<u8>,
    /// Timeout in milliseconds; 0 means the host default.
    pub timeout_ms: u64,
}

/// The host's answer to an [`FfiRequest`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiResponse {
    /// HTTP status code.
    pub status: u16,
    /// The URL after redirects.
    pub url: RString,
    /// Response headers.
    pub headers: RVec<FfiHeader>,
    /// Response body.
    pub body: RVec<u8>,
}

/// Severity of a plugin log record (interface 1.0). Frozen: it cannot gain
/// variants; interface 1.1 logs through [`HostCallbacks::log_at`] with a numeric
/// severity instead, so new levels need no layout change.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfiLogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something odd that did not stop the run.
    Warn,
    /// A failure.
    Error,
}

/// An HTTP request with per-request options (interface 1.1, used by
/// [`HostCallbacks::fetch_http`]).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiHttpRequest {
    /// `GET`, `POST`, ...
    pub method: RString,
    /// Absolute URL.
    pub url: RString,
    /// Extra headers for this request (on top of the thread's session headers).
    pub headers: RVec<FfiHeader>,
    /// Request body (empty for none).
    pub body: RVec<u8>,
    /// Timeout in milliseconds; 0 means the host default.
    pub timeout_ms: u64,
    /// Per-request options as a JSON object ([`crate::wire::RequestOptions`]);
    /// empty means none. New options are new keys, never a layout change.
    pub extensions: RString,
}

/// The host's answer to an [`FfiHttpRequest`] (interface 1.1).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiHttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// The URL after redirects.
    pub url: RString,
    /// Response headers.
    pub headers: RVec<FfiHeader>,
    /// Response body.
    pub body: RVec<u8>,
    /// What the host knows about the exchange as a JSON object
    /// ([`crate::wire::ResponseInfo`]); empty means nothing.
    pub extensions: RString,
}

/// What the host offers a plugin. Implemented by the host's worker process.
///
/// The methods up to `should_stop` are interface 1.0. Later minor versions
/// append methods below it, each with a default body: abi_stable calls that
/// default when the vtable comes from an older host, so a newer method never
/// crashes a plugin (the host also refuses plugins newer than itself).
#[sabi_trait]
pub trait HostCallbacks: Send + Sync {
    /// Perform an HTTP request on the calling thread's session (cookies, session
    /// headers and proxy are per thread).
    fn fetch(&self, request: FfiRequest) -> RResult<FfiResponse, RString>;

    /// Configure the calling thread's session from JSON
    /// (`{"headers": {..}, "proxy": "http://..", "reset_cookies": true}`).
    fn configure_session(&self, config_json: RStr<'_>) -> RResult<(), RString>;

    /// Merge rows (a JSON array of objects) into a declared table; returns the
    /// merge summary as JSON.
    fn merge(&self, table: RStr<'_>, rows_json: RStr<'_>, full_snapshot: bool) -> RResult<RString, RString>;

    /// Write a structured log record; `context_json` is a JSON object (or empty).
    fn log(&self, level: FfiLogLevel, message: RStr<'_>, context_json: RStr<'_>);

    /// Report progress; the host also counts items on its own.
    fn progress(&self, current: u64, total: u64, errors: u64);

    /// The validated runtime arguments as JSON.
    fn args_json(&self) -> RString;

    /// True once an operator asked the run to stop; plugins should return soon.
    #[sabi(last_prefix_field)]
    fn should_stop(&self) -> bool;

    /// Since 1.1: the capabilities this host implements, as a JSON array of
    /// names ([`crate::capability`]). An older host answers the 1.0 set.
    fn capabilities(&self) -> RString {
        RString::from(crate::capability::INTERFACE_1_0_JSON)
    }

    /// Since 1.1: an HTTP request with per-request options on the calling
    /// thread's session.
    fn fetch_http(&self, request: FfiHttpRequest) -> RResult<FfiHttpResponse, RString> {
        let _ = request;
        RResult::RErr(RString::from("this host does not implement fetch_http (plugin interface 1.1); upgrade dc-host"))
    }

    /// Since 1.1: a structured log record with a numeric severity
    /// ([`crate::wire::severity`]: trace 10, debug 20, info 30, warn 40,
    /// error 50; values in between and above are allowed and rounded down to
    /// the nearest level the host knows). An older host gets the nearest 1.0 level.
    fn log_at(&self, severity: u8, message: RStr<'_>, context_json: RStr<'_>) {
        self.log(crate::wire::severity::to_ffi_level(severity), message, context_json)
    }

    /// Since 1.2: adds work items to the run's crawl frontier while it
    /// prepares or collects. `entries_json` is a JSON array of
    /// [`crate::wire::EnqueueEntry`]; the answer is a
    /// [`crate::wire::EnqueueAnswer`] as JSON. The host deduplicates by key
    /// (canonical URL for URLs), gives each item the depth of the item being
    /// collected plus one, and drops what is over the manifest's
    /// [`crate::manifest::CrawlLimits`], counting it in the answer.
    fn enqueue(&self, entries_json: RStr<'_>) -> RResult<RString, RString> {
        let _ = entries_json;
        RResult::RErr(RString::from(
            "this host does not implement enqueue (plugin interface 1.2, capability \"frontier\"); upgrade dc-host",
        ))
    }

    /// Since 1.3: a named host method with a JSON request and a JSON answer
    /// ([`crate::host_call`]), so a new capability crosses the boundary as new
    /// method names, never as a layout change. Methods are namespaced by the
    /// capability they belong to (`captcha.solve`, `captcha.balance`); the host
    /// refuses a method whose capability the plugin's manifest does not
    /// `require`, and a method it does not know, naming it.
    fn call(&self, method: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString> {
        let _ = request_json;
        RResult::RErr(RString::from(format!(
            "this host does not implement host calls (plugin interface 1.3), so it cannot answer {:?}; upgrade dc-host",
            method.as_str()
        )))
    }
}

/// The host callbacks as the plugin receives them.
pub type HostBox = HostCallbacks_TO<'static, RBox<()>>;

/// The lifecycle a plugin implements, as seen across the ABI. Authors implement
/// [`crate::Scraper`] instead; the SDK adapts it to this trait and catches panics.
#[sabi_trait]
pub trait ScraperFfi: Send + Sync {
    /// Returns the work items as a JSON array.
    fn prepare_list(&mut self) -> RResult<RString, RString>;

    /// Collects one work item (JSON) and returns records as a JSON array of
    /// `{"table": .., "row": {..}}`. Called concurrently from several threads.
    fn collect(&self, item_json: RStr<'_>) -> RResult<RString, RString>;

    /// Receives every record collected in the run (same JSON shape as `collect`).
    fn store(&mut self, records_json: RStr<'_>) -> RResult<(), RString>;

    /// Always called last, also after a failure.
    #[sabi(last_prefix_field)]
    fn cleanup(&mut self) -> RResult<(), RString>;
}

/// A scraper object as the host holds it.
pub type ScraperBox = ScraperFfi_TO<'static, RBox<()>>;

/// The root module every plugin exports. Fields appended in later minor
/// versions go after `new`, and their accessors return `Option` (a plugin built
/// against an older version lacks them), so reading one never panics.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// The interface version the plugin was built against.
    pub interface_version: extern "C" fn() -> u32,
    /// The plugin manifest as JSON.
    pub manifest: extern "C" fn() -> RString,
    /// Builds a scraper for one run from the runtime arguments and host callbacks.
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(args_json: RStr<'_>, host: HostBox) -> RResult<ScraperBox, RString>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "dc_plugin";
    const NAME: &'static str = "dc_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
