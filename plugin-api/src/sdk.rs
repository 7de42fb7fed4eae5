//! The author SDK: the [`Scraper`] trait a plugin implements in plain Rust, the
//! [`Context`] it calls the host through, and the adapter (used by
//! [`crate::export_plugin!`]) that turns a `Scraper` into the ABI root module and
//! catches every panic at the boundary.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, RErr, ROk, RResult, RStr, RString},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::abi::{
    FfiHeader, FfiLogLevel, FfiRequest, HostBox, PluginMod, PluginModRef, ScraperBox, ScraperFfi, ScraperFfi_TO,
};
use crate::manifest::{Manifest, SnapshotMode};

/// An error a plugin returns. Anything that implements `std::error::Error`
/// converts into it with `?`; [`Error::msg`] makes one from text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(message: impl std::fmt::Display) -> Error {
        Error(message.to_string())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Error {
        Error(e.to_string())
    }
}

/// Result with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One collected row and the declared table it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Declared table name.
    pub table: String,
    /// Column name → value.
    pub row: Map<String, Value>,
}

impl Record {
    /// A record for `table` from a JSON object (anything else becomes an empty row,
    /// which the host then rejects naming the missing key columns).
    pub fn new(table: impl Into<String>, row: Value) -> Record {
        let row = match row {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Record { table: table.into(), row }
    }
}

/// What a merge did, as the host reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeSummary {
    /// New rows.
    pub inserted: u64,
    /// Rows whose content changed.
    pub updated: u64,
    /// Rows removed (or archived) because a full snapshot no longer had them.
    pub deleted: u64,
    /// Rows that were already up to date (no write at all).
    pub unchanged: u64,
}

/// An HTTP request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Timeout in milliseconds (0 = host default).
    pub timeout_ms: u64,
}

impl Request {
    /// A GET request.
    pub fn get(url: impl Into<String>) -> Request {
        Request { method: "GET".into(), url: url.into(), headers: vec![], body: vec![], timeout_ms: 0 }
    }

    /// A POST request with a body.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
        Request { method: "POST".into(), url: url.into(), headers: vec![], body: body.into(), timeout_ms: 0 }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Final URL after redirects.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (invalid UTF-8 is replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The body parsed as an HTML document.
    pub fn html(&self) -> scraper::Html {
        scraper::Html::parse_document(&self.text())
    }

    /// An error unless the status is 2xx, naming the URL and status
    /// (`"{url} returned HTTP {status}"`).
    pub fn error_for_status(self) -> Result<Response> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(Error::msg(format!("{} returned HTTP {}", self.url, self.status)))
        }
    }

    /// First header value with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Settings for the calling thread's HTTP session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Unexpected but not fatal.
    Warn,
    /// A failure.
    Error,
}

impl From<LogLevel> for FfiLogLevel {
    fn from(l: LogLevel) -> FfiLogLevel {
        match l {
            LogLevel::Trace => FfiLogLevel::Trace,
            LogLevel::Debug => FfiLogLevel::Debug,
            LogLevel::Info => FfiLogLevel::Info,
            LogLevel::Warn => FfiLogLevel::Warn,
            LogLevel::Error => FfiLogLevel::Error,
        }
    }
}

impl From<FfiLogLevel> for LogLevel {
    fn from(l: FfiLogLevel) -> LogLevel {
        match l {
            FfiLogLevel::Trace => LogLevel::Trace,
            FfiLogLevel::Debug => LogLevel::Debug,
            FfiLogLevel::Info => LogLevel::Info,
            FfiLogLevel::Warn => LogLevel::Warn,
            FfiLogLevel::Error => LogLevel::Error,
        }
    }
}

/// The host, as a plugin sees it: HTTP, merge, logging, progress, arguments and
/// the stop flag. Cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct Context {
    host: Arc<HostBox>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

fn from_r<T>(r: RResult<T, RString>) -> Result<T> {
    r.into_result().map_err(|e| Error(e.into_string()))
}

impl Context {
    /// Wraps host callbacks (the SDK and [`crate::testing`] do this for you).
    pub fn from_host(host: HostBox) -> Context {
        Context { host: Arc::new(host) }
    }

    /// Performs a request on this thread's session.
    pub fn fetch(&self, req: Request) -> Result<Response> {
        let ffi = FfiRequest {
            method: req.method.into(),
            url: req.url.into(),
            headers: req
                .headers
                .into_iter()
                .map(|(name, value)| FfiHeader { name: name.into(), value: value.into() })
                .collect(),
            body: req.body.into(),
            timeout_ms: req.timeout_ms,
        };
        let r = from_r(self.host.fetch(ffi))?;
        Ok(Response {
            status: r.status,
            url: r.url.into_string(),
            headers: r.headers.into_iter().map(|h| (h.name.into_string(), h.value.into_string())).collect(),
            body: r.body.into_vec(),
        })
    }

    /// GET a URL and fail unless the status is 2xx.
    pub fn get(&self, url: &str) -> Result<Response> {
        self.fetch(Request::get(url))?.error_for_status()
    }

    /// GET a URL and parse it as HTML (fails unless 2xx).
    pub fn get_html(&self, url: &str) -> Result<scraper::Html> {
        Ok(self.get(url)?.html())
    }

    /// Configures this thread's HTTP session.
    pub fn configure_session(&self, config: &SessionConfig) -> Result<()> {
        let json = serde_json::to_string(config)?;
        from_r(self.host.configure_session(RStr::from_str(&json)))
    }

    /// Merges rows into a declared table. `full_snapshot` removes rows absent
    /// from `rows` (as the table declares: delete or archive).
    pub fn merge(&self, table: &str, rows: &[Map<String, Value>], full_snapshot: bool) -> Result<MergeSummary> {
        let json = serde_json::to_string(rows)?;
        let out = from_r(self.host.merge(table.into(), RStr::from_str(&json), full_snapshot))?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Writes a log record with structured context (a JSON object).
    pub fn log(&self, level: LogLevel, message: &str, context: Value) {
        let ctx = if context.is_null() { String::new() } else { context.to_string() };
        self.host.log(level.into(), message.into(), RStr::from_str(&ctx));
    }

    /// Info-level log without context.
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message, Value::Null)
    }

    /// Warn-level log without context.
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message, Value::Null)
    }

    /// Reports progress (current of total, with errors).
    pub fn progress(&self, current: u64, total: u64, errors: u64) {
        self.host.progress(current, total, errors)
    }

    /// The runtime arguments, deserialized.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_str(&self.host.args_json())?)
    }

    /// The runtime arguments as JSON.
    pub fn args_value(&self) -> Value {
        serde_json::from_str(&self.host.args_json()).unwrap_or(Value::Null)
    }

    /// True once the operator asked this run to stop.
    pub fn should_stop(&self) -> bool {
        self.host.should_stop()
    }
}

/// The lifecycle a plugin implements. `collect` runs on several threads at once,
/// so it takes `&self`; the other steps run once, in order, on one thread.
/// `cleanup` is always called, also after a failure.
pub trait Scraper: Send + Sync + Sized + 'static {
    /// Identity, version, tables and argument schema.
    fn manifest() -> Manifest;

    /// Builds the scraper for one run (arguments are already validated).
    fn new(ctx: &Context) -> Result<Self>;

    /// Returns the work items (any JSON values, e.g. URLs).
    fn prepare_list(&mut self, ctx: &Context) -> Result<Vec<Value>>;

    /// Collects one work item into records.
    fn collect(&self, ctx: &Context, item: &Value) -> Result<Vec<Record>>;

    /// Stores every record of the run. The default ([`default_store`]) merges
    /// each declared table that received records in one call, as a full
    /// snapshot unless the table is declared incremental. Override it when a
    /// run may be partial (for example a listing cut short), so a full snapshot
    /// does not remove rows the run merely did not see.
    fn store(&mut self, ctx: &Context, records: Vec<Record>) -> Result<()> {
        default_store(&Self::manifest(), ctx, records)
    }

    /// Releases resources. Always called.
    fn cleanup(&mut self, _ctx: &Context) -> Result<()> {
        Ok(())
    }
}

/// The default `store`: one merge per declared table that received records, as
/// a full snapshot unless the table is declared incremental.
///
/// A table that received no records is not merged at all, not even as an empty
/// full snapshot, so a run that collected nothing (for that table or at all)
/// never wipes it; a plugin that really wants to empty a table must merge it
/// itself. Records for a table the manifest does not declare are an error, and
/// then nothing is merged.
pub fn default_store(manifest: &Manifest, ctx: &Context, records: Vec<Record>) -> Result<()> {
    let mut by_table: BTreeMap<String, Vec<Map<String, Value>>> = BTreeMap::new();
    for r in records {
        if manifest.table(&r.table).is_none() {
            return Err(Error::msg(format!(
                "record for table {:?}, which the manifest does not declare; declare it under \"tables\"",
                r.table
            )));
        }
        by_table.entry(r.table).or_default().push(r.row);
    }
    for (table, rows) in by_table {
        let full = manifest.table(&table).map(|t| t.snapshot == SnapshotMode::Full).unwrap_or(false);
        let s = ctx.merge(&table, &rows, full)?;
        ctx.log(
            LogLevel::Info,
            "merged table",
            serde_json::json!({"table": table, "inserted": s.inserted, "updated": s.updated,
                "deleted": s.deleted, "unchanged": s.unchanged}),
        );
    }
    Ok(())
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let msg = if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    };
    format!("plugin panicked: {msg}")
}

/// Runs plugin code, turning errors and panics into the ABI's error string
/// (a panic becomes `"plugin panicked: {message}"`).
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => ROk(v),
        Ok(Err(e)) => RErr(e.0.into()),
        Err(p) => RErr(panic_message(p).into()),
    }
}

struct Adapter<S: Scraper> {
    inner: S,
    ctx: Context,
}

impl<S: Scraper> ScraperFfi for Adapter<S> {
    fn prepare_list(&mut self) -> RResult<RString, RString> {
        guarded(|| Ok(serde_json::to_string(&self.inner.prepare_list(&self.ctx)?)?.into()))
    }

    fn collect(&self, item_json: RStr<'_>) -> RResult<RString, RString> {
        guarded(|| {
            let item: Value = serde_json::from_str(item_json.as_str())?;
            Ok(serde_json::to_string(&self.inner.collect(&self.ctx, &item)?)?.into())
        })
    }

    fn store(&mut self, records_json: RStr<'_>) -> RResult<(), RString> {
        guarded(|| {
            let records: Vec<Record> = serde_json::from_str(records_json.as_str())?;
            self.inner.store(&self.ctx, records)
        })
    }

    fn cleanup(&mut self) -> RResult<(), RString> {
        guarded(|| self.inner.cleanup(&self.ctx))
    }
}

extern "C" fn interface_version_fn() -> u32 {
    crate::INTERFACE_VERSION
}

extern "C" fn manifest_fn<S: Scraper>() -> RString {
    match catch_unwind(S::manifest) {
        Ok(m) => serde_json::to_string(&m).unwrap_or_default().into(),
        // an empty manifest is refused by the host as "invalid manifest"
        Err(_) => RString::new(),
    }
}

extern "C" fn new_fn<S: Scraper>(_args_json: RStr<'_>, host: HostBox) -> RResult<ScraperBox, RString> {
    let ctx = Context::from_host(host);
    guarded(|| {
        let inner = S::new(&ctx)?;
        Ok(ScraperFfi_TO::from_value(Adapter { inner, ctx: ctx.clone() }, TD_Opaque))
    })
}

/// Builds the root module for `S`. Called by [`crate::export_plugin!`].
#[doc(hidden)]
pub fn __root_module<S: Scraper>() -> PluginModRef {
    PluginMod { interface_version: interface_version_fn, manifest: manifest_fn::<S>, new: new_fn::<S> }
        .leak_into_prefix()
}

/// Adapts a scraper into a boxed ABI object without going through a library;
/// used by [`crate::testing`].
pub(crate) fn adapt<S: Scraper>(inner: S, ctx: Context) -> ScraperBox {
    ScraperFfi_TO::from_ptr(RBox::new(Adapter { inner, ctx }), TD_Opaque)
}

/// Exports a [`Scraper`] as a dc-host plugin. Put it once in the plugin crate's
/// `lib.rs` (the crate must be `crate-type = ["cdylib", "rlib"]` and list
/// `abi_stable` among its dependencies, as the scaffolded template does).
#[macro_export]
macro_rules! export_plugin {
    ($scraper:ty) => {
        #[$crate::abi_stable::export_root_module]
        pub fn __dc_plugin_root_module() -> $crate::abi::PluginModRef {
            $crate::sdk::__root_module::<$scraper>()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_for_status_names_url_and_status() {
        let resp = |status| Response { status, url: "http://h/x".into(), headers: vec![], body: vec![] };
        assert_eq!(resp(204).error_for_status().map(|r| r.status), Ok(204));
        let err = resp(503).error_for_status().expect_err("503 is an error");
        assert_eq!(err.message(), "http://h/x returned HTTP 503");
        assert!(resp(302).error_for_status().is_err());
    }

    #[test]
    fn log_levels_round_trip_through_the_abi() {
        for l in [LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error] {
            assert_eq!(LogLevel::from(FfiLogLevel::from(l)), l);
        }
    }

    #[test]
    fn guarded_turns_panics_into_errors() {
        let r: RResult<(), RString> = guarded(|| panic!("boom"));
        assert_eq!(r.into_result().map_err(|e| e.into_string()), Err("plugin panicked: boom".to_string()));
        let r: RResult<u8, RString> = guarded(|| Err(Error::msg("nope")));
        assert_eq!(r.into_result().map_err(|e| e.into_string()), Err("nope".to_string()));
    }
}
