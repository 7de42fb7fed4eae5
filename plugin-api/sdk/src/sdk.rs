//! The author SDK: the [`Scraper`] trait a plugin implements in plain Rust, the
//! [`Context`] it calls the host through, and the adapter (used by
//! [`crate::export_plugin!`]) that turns a `Scraper` into the ABI root module and
//! catches every panic at the boundary.
//!
//! Types a plugin builds (`Request`, `Response`, `Record`) are
//! `#[non_exhaustive]` with constructors and builder methods, and `LogLevel` is
//! a non-exhaustive enum, so the SDK can grow without breaking plugin source.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, RResult, RStr, RString},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use dc_plugin_api::abi::{
    FfiHeader, FfiHttpRequest, FfiLogLevel, HostBox, PluginMod, PluginModRef, ScraperBox, ScraperFfi, ScraperFfi_TO,
};
use dc_plugin_api::host_call;
use dc_plugin_api::wire::{RequestOptions, ResponseInfo, severity};
use dc_plugin_api::{
    CaptchaBalance, CaptchaSolution, CaptchaTask, EnqueueAnswer, EnqueueEntry, ErrorClass, FollowRedirects, Manifest,
    MergeSummary, ProxyExit, ProxyReport, ProxyVerdict, SessionAuth, SessionConfig, SnapshotMode,
};

use crate::html::Document;

/// An error a plugin returns. Anything that implements `std::error::Error`
/// converts into it with `?`; [`Error::msg`] makes one from text.
///
/// An error from [`Context::fetch`] (and the helpers on it) also says why the
/// request failed, machine-readably (interface 1.4, capability `http`):
/// [`Error::class`], [`Error::is_timeout`], [`Error::is_blocked`], …, while
/// [`Error::message`] stays the host's human sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    class: Option<ErrorClass>,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl std::fmt::Display) -> Error {
        Error { message: message.to_string(), class: None }
    }

    /// An error of a transport class (what the host reports; a
    /// `testing::TestHost` fetcher returns one to imitate a failure).
    pub fn with_class(class: ErrorClass, message: impl std::fmt::Display) -> Error {
        Error { message: message.to_string(), class: Some(class) }
    }

    /// An error as it crosses the boundary from the host: a tagged string
    /// (`[timeout] GET … failed`) gives its class and the message after the
    /// tag; anything else is a plain message.
    pub(crate) fn from_host(text: &str) -> Error {
        let (class, message) = dc_plugin_api::wire::split_error(text);
        Error { message: message.to_string(), class }
    }

    /// The error as it crosses the boundary to the host: tagged with its
    /// class, when it has one.
    pub(crate) fn to_wire(&self) -> String {
        match self.class {
            Some(c) => dc_plugin_api::wire::tag_error(c, &self.message),
            None => self.message.clone(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Why a request failed, when this error is a failed request's (None for
    /// other errors, and from a host older than interface 1.4).
    pub fn class(&self) -> Option<ErrorClass> {
        self.class
    }

    /// No answer in time, after the host's retries.
    pub fn is_timeout(&self) -> bool {
        self.class == Some(ErrorClass::Timeout)
    }

    /// The connection could not be made or was reset, after the host's retries.
    pub fn is_connection(&self) -> bool {
        self.class == Some(ErrorClass::Connection)
    }

    /// The site refuses this client: 401, 403, 407, 429 (after the host's
    /// retries) or 451 from [`Response::error_for_status`] / [`Context::get`],
    /// or a banned proxy exit — a sign to slow down, change proxy or stop.
    pub fn is_blocked(&self) -> bool {
        self.class == Some(ErrorClass::Blocked)
    }

    /// The body was larger than the request's `max_body_bytes`.
    pub fn is_body_too_large(&self) -> bool {
        self.class == Some(ErrorClass::BodyTooLarge)
    }

    /// Refused at once: the domain's circuit breaker is open after repeated
    /// failures (try again after its cool-down).
    pub fn is_circuit_open(&self) -> bool {
        self.class == Some(ErrorClass::CircuitOpen)
    }

    /// Refused: the site's robots.txt disallows the URL.
    pub fn is_robots_denied(&self) -> bool {
        self.class == Some(ErrorClass::RobotsDenied)
    }

    /// Another non-2xx status, from [`Response::error_for_status`] / [`Context::get`].
    pub fn is_http_status(&self) -> bool {
        self.class == Some(ErrorClass::HttpStatus)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Error {
        Error::msg(e)
    }
}

/// Result with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One collected row and the declared table it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
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

/// An HTTP request. Build it with [`Request::get`] or [`Request::post`] and
/// the builder methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
    /// Per-request options the host applies (sent as the request's extensions).
    pub options: RequestOptions,
}

impl Request {
    /// A request with any method and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Request {
        Request {
            method: method.into(),
            url: url.into(),
            headers: vec![],
            body: vec![],
            timeout_ms: 0,
            options: RequestOptions::default(),
        }
    }

    /// A GET request.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new("GET", url)
    }

    /// A POST request with a body.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
        Request::new("POST", url).body(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets the timeout for this request.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Request {
        self.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        self
    }

    /// Refuses a response body larger than `bytes` (the host answers with an
    /// error naming the URL and the limit).
    pub fn max_body_bytes(mut self, bytes: u64) -> Request {
        self.options.max_body_bytes = Some(bytes);
        self
    }

    /// Retries after the first attempt for this request only (0: never
    /// retry), instead of the host's setting (interface 1.4).
    pub fn retries(mut self, retries: u32) -> Request {
        self.options.retries = Some(retries);
        self
    }

    /// Follows redirects (the default: up to 10) or not: with `false` the
    /// response is the 3xx itself, its `Location` header unfollowed
    /// (interface 1.4).
    pub fn follow_redirects(mut self, follow: bool) -> Request {
        self.options.follow_redirects = Some(FollowRedirects::Follow(follow));
        self
    }

    /// Follows at most `max` redirects; one more fails the request (interface 1.4).
    pub fn max_redirects(mut self, max: u32) -> Request {
        self.options.follow_redirects = Some(FollowRedirects::AtMost(max));
        self
    }

    /// Sends this request through the proxy at `url` (`http://user:pass@host:port`,
    /// `socks5://…`), not the session's or the run's (interface 1.4).
    pub fn proxy(mut self, url: impl Into<String>) -> Request {
        self.options.proxy = Some(url.into());
        self
    }

    /// Sends this request directly, through no proxy at all (interface 1.4).
    pub fn no_proxy(mut self) -> Request {
        self.options.proxy = Some(dc_plugin_api::wire::NO_PROXY.to_string());
        self
    }
}

/// An HTTP response. Plugins get them from [`Context::fetch`]; tests make them
/// with [`Response::new`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Final URL after redirects.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Milliseconds from sending the request to the end of the body (0 when
    /// the host did not say).
    pub elapsed_ms: u64,
    /// Attempts the host made: more than 1 when it retried a 429/502/503/504,
    /// a timeout or a connection failure (0 when the host did not say).
    pub attempts: u32,
}

impl Response {
    /// A response (for tests and `testing::TestHost` fetchers).
    pub fn new(status: u16, url: impl Into<String>, body: impl Into<Vec<u8>>) -> Response {
        Response { status, url: url.into(), headers: vec![], body: body.into(), elapsed_ms: 0, attempts: 1 }
    }

    /// A `200 OK` response with an HTML body.
    pub fn html_page(url: impl Into<String>, body: &str) -> Response {
        Response::new(200, url, body.as_bytes().to_vec()).with_header("content-type", "text/html; charset=utf-8")
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The body as text, decoded by the charset it declares: a byte-order
    /// mark first, then the `Content-Type` header's `charset`, then (for
    /// HTML) a `<meta charset>` or `<meta http-equiv="Content-Type">` in the
    /// first 1024 bytes, else UTF-8. Bytes invalid in that charset become
    /// U+FFFD.
    pub fn text(&self) -> String {
        let (text, _, _) = self.encoding().decode(&self.body);
        text.into_owned()
    }

    /// The name of the charset [`Response::text`] decodes with (`UTF-8`,
    /// `windows-1252`, `Shift_JIS`, ...; WHATWG names).
    pub fn charset(&self) -> &'static str {
        self.encoding().name()
    }

    fn encoding(&self) -> &'static encoding_rs::Encoding {
        if let Some((enc, _)) = encoding_rs::Encoding::for_bom(&self.body) {
            return enc;
        }
        let content_type = self.header("content-type").unwrap_or_default().to_ascii_lowercase();
        if let Some(enc) = charset_param(&content_type).and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes())) {
            return enc;
        }
        if (content_type.is_empty() || content_type.contains("html"))
            && let Some(enc) = meta_charset(&self.body[..self.body.len().min(1024)])
        {
            // a page cannot declare itself UTF-16 in its own ASCII bytes (WHATWG)
            return if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE { encoding_rs::UTF_8 } else { enc };
        }
        encoding_rs::UTF_8
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The body parsed as an HTML document.
    pub fn html(&self) -> Document {
        Document::parse(&self.text())
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The site refuses this client: 401, 403, 407, 429 (after the host's
    /// retries) or 451 — a sign to slow down, change proxy or stop.
    pub fn is_blocked(&self) -> bool {
        matches!(self.status, 401 | 403 | 407 | 429 | 451)
    }

    /// 4xx (including the blocked statuses).
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.status)
    }

    /// 5xx (what is left after the host retried 502/503/504).
    pub fn is_server_error(&self) -> bool {
        (500..600).contains(&self.status)
    }

    /// An error unless the status is 2xx, naming the URL and status
    /// (`"{url} returned HTTP {status}"`).
    /// Its class says which: [`Error::is_blocked`] for the blocked statuses,
    /// else [`Error::is_http_status`].
    pub fn error_for_status(self) -> Result<Response> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            let class = if self.is_blocked() { ErrorClass::Blocked } else { ErrorClass::HttpStatus };
            Err(Error::with_class(class, format!("{} returned HTTP {}", self.url, self.status)))
        }
    }

    /// First header value with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The value of `charset=` in a lower-cased header or `content` attribute.
fn charset_param(s: &str) -> Option<&str> {
    let at = s.find("charset=")? + "charset=".len();
    let v = s[at..].trim_start_matches(['"', '\'', ' ']);
    let end = v.find(['"', '\'', ';', ' ', '>', '/']).unwrap_or(v.len());
    Some(&v[..end]).filter(|v| !v.is_empty())
}

/// The charset a `<meta>` tag declares in `head` (the first bytes of a page).
fn meta_charset(head: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("<meta") {
        let tag = &rest[i..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        if let Some(enc) = charset_param(tag).and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes())) {
            return Some(enc);
        }
        rest = &rest[i + 5..];
    }
    None
}

/// Log severity. More levels may come; they map to numeric severities
/// ([`LogLevel::severity`]) that older hosts round down to a level they know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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

impl LogLevel {
    /// The numeric severity that crosses the boundary (`dc_plugin_api::wire::severity`).
    pub fn severity(self) -> u8 {
        match self {
            LogLevel::Trace => severity::TRACE,
            LogLevel::Debug => severity::DEBUG,
            LogLevel::Info => severity::INFO,
            LogLevel::Warn => severity::WARN,
            LogLevel::Error => severity::ERROR,
        }
    }

    /// The level of a numeric severity, rounded down to the nearest level.
    pub fn from_severity(s: u8) -> LogLevel {
        match severity::to_ffi_level(s) {
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
    r.into_result().map_err(|e| Error::from_host(&e))
}

impl Context {
    /// Wraps host callbacks (the SDK and `testing::TestHost` do this for you).
    pub fn from_host(host: HostBox) -> Context {
        Context { host: Arc::new(host) }
    }

    /// Performs a request on this thread's session.
    pub fn fetch(&self, req: Request) -> Result<Response> {
        let extensions = if req.options.is_empty() { String::new() } else { serde_json::to_string(&req.options)? };
        let ffi = FfiHttpRequest {
            method: req.method.into(),
            url: req.url.into(),
            headers: req
                .headers
                .into_iter()
                .map(|(name, value)| FfiHeader { name: name.into(), value: value.into() })
                .collect(),
            body: req.body.into(),
            timeout_ms: req.timeout_ms,
            extensions: extensions.into(),
        };
        let r = from_r(self.host.fetch_http(ffi))?;
        let info: ResponseInfo =
            if r.extensions.is_empty() { ResponseInfo::default() } else { serde_json::from_str(&r.extensions)? };
        Ok(Response {
            status: r.status,
            url: r.url.into_string(),
            headers: r.headers.into_iter().map(|h| (h.name.into_string(), h.value.into_string())).collect(),
            body: r.body.into_vec(),
            elapsed_ms: info.elapsed_ms,
            attempts: info.attempts,
        })
    }

    /// The capabilities the host implements (`dc_plugin_api::capability`), for
    /// a plugin that uses an optional one only when it is there.
    pub fn host_capabilities(&self) -> Vec<String> {
        serde_json::from_str(&self.host.capabilities()).unwrap_or_default()
    }

    /// GET a URL and fail unless the status is 2xx.
    pub fn get(&self, url: &str) -> Result<Response> {
        self.fetch(Request::get(url))?.error_for_status()
    }

    /// GET a URL and parse it as HTML (fails unless 2xx).
    pub fn get_html(&self, url: &str) -> Result<Document> {
        Ok(self.get(url)?.html())
    }

    /// Configures this thread's HTTP session in one call (the setters below
    /// each send one change).
    pub fn configure_session(&self, config: &SessionConfig) -> Result<()> {
        let json = serde_json::to_string(config)?;
        from_r(self.host.configure_session(RStr::from_str(&json)))
    }

    /// Sends these headers with every request of this thread, replacing the
    /// headers set before (a request's own headers still win).
    pub fn set_headers<K: Into<String>, V: Into<String>>(
        &self,
        headers: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        let config = headers.into_iter().fold(SessionConfig::new(), |c, (k, v)| c.header(k, v));
        self.configure_session(&config)
    }

    /// Stops sending the headers [`Context::set_headers`] set.
    pub fn reset_headers(&self) -> Result<()> {
        self.configure_session(&SessionConfig::new())
    }

    /// Puts cookies (name, value) for `url` into this thread's cookie jar, as
    /// if `url` had set them: they go with later requests to its host and
    /// path, next to the cookies sites set (interface 1.4).
    pub fn set_cookies<K: Into<String>, V: Into<String>>(
        &self,
        url: &str,
        cookies: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        let config = cookies.into_iter().fold(SessionConfig::new().keep_headers(), |c, (k, v)| c.cookie(url, k, v));
        self.configure_session(&config)
    }

    /// Empties this thread's cookie jar.
    pub fn reset_cookies(&self) -> Result<()> {
        self.configure_session(&SessionConfig::new().keep_headers().reset_cookies())
    }

    /// Sends credentials with every request of this thread: basic
    /// (`SessionAuth::Basic`), a bearer token, or none (`SessionAuth::None`,
    /// dropping earlier ones). The host never logs them (interface 1.4).
    pub fn set_auth(&self, auth: SessionAuth) -> Result<()> {
        self.configure_session(&SessionConfig::new().keep_headers().auth(auth))
    }

    /// Basic credentials for every request of this thread ([`Context::set_auth`]).
    pub fn set_basic_auth(&self, username: &str, password: Option<&str>) -> Result<()> {
        self.set_auth(SessionAuth::Basic { username: username.into(), password: password.map(str::to_string) })
    }

    /// A bearer token for every request of this thread ([`Context::set_auth`]).
    pub fn set_bearer_auth(&self, token: &str) -> Result<()> {
        self.set_auth(SessionAuth::Bearer { token: token.into() })
    }

    /// Sends this thread's requests through the proxy at `url`
    /// (`http://user:pass@host:port`), or, with `None`, without one of its
    /// own (then the run's proxies apply, when the host has them for the app).
    /// The password never appears in logs or metrics.
    pub fn set_proxy(&self, url: Option<&str>) -> Result<()> {
        let config = SessionConfig::new().keep_headers();
        self.configure_session(&match url {
            Some(u) => config.proxy(u),
            None => config.clear_proxy(),
        })
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
        self.host.log_at(level.severity(), message.into(), RStr::from_str(&ctx));
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

    /// Adds a work item to this run's crawl frontier (interface 1.2: declare
    /// `requires(capability::FRONTIER)` in the manifest). Call it from
    /// `collect` (or `prepare_list`), on the thread the host called you on:
    /// the item is collected later in this run, once, even when several pages
    /// link to it (deduplicated by canonical URL when the item is a URL or an
    /// object with a `url`, else by its JSON), unless it is deeper than the
    /// manifest's `max_depth` or the run holds `max_items` already — then it
    /// is dropped and counted in the answer.
    pub fn enqueue(&self, item: impl Serialize) -> Result<EnqueueAnswer> {
        self.enqueue_entries(vec![EnqueueEntry::new(serde_json::to_value(item)?)])
    }

    /// [`Context::enqueue`] with an explicit deduplication key (e.g. a product
    /// id when several URLs show one product).
    pub fn enqueue_keyed(&self, key: &str, item: impl Serialize) -> Result<EnqueueAnswer> {
        self.enqueue_entries(vec![EnqueueEntry::keyed(key, serde_json::to_value(item)?)])
    }

    /// [`Context::enqueue`] for many items in one call to the host.
    pub fn enqueue_all<T: Serialize>(&self, items: impl IntoIterator<Item = T>) -> Result<EnqueueAnswer> {
        let entries =
            items.into_iter().map(|i| serde_json::to_value(i).map(EnqueueEntry::new)).collect::<Result<Vec<_>, _>>()?;
        self.enqueue_entries(entries)
    }

    /// A work item as a value of your own type (any `Deserialize` type: a
    /// struct for object items, `String` for URL items, …), e.g.
    /// `let page: Page = ctx.item(item)?;` in `collect`; fails naming the
    /// item and the type. Items you enqueue are serialized the same way
    /// ([`Context::enqueue`] takes any `Serialize` value), so a typed item
    /// round-trips.
    pub fn item<T: DeserializeOwned>(&self, item: &Value) -> Result<T> {
        T::deserialize(item).map_err(|e| {
            let mut shown = item.to_string();
            if shown.len() > 200 {
                let mut cut = 200;
                while !shown.is_char_boundary(cut) {
                    cut -= 1;
                }
                shown.truncate(cut);
                shown.push('…');
            }
            Error::msg(format!("work item {shown} is not a {}: {e}", std::any::type_name::<T>()))
        })
    }

    /// Calls a named host method (interface 1.3, [`dc_plugin_api::host_call`])
    /// with a JSON request and returns its JSON answer. The method's
    /// capability (the part of its name before the dot) must be in the
    /// manifest's `requires`, or the host refuses the call, naming it. The
    /// typed helpers below (`solve_recaptcha_v2`, ...) are built on this.
    pub fn host_call(&self, method: &str, request: impl Serialize) -> Result<Value> {
        let json = serde_json::to_string(&request)?;
        let out = from_r(self.host.call(RStr::from_str(method), RStr::from_str(&json)))?;
        serde_json::from_str(&out).map_err(|e| Error::msg(format!("the host's answer to {method} is not JSON: {e}")))
    }

    /// Solves a CAPTCHA through the host's solver (`captcha.solve`; declare
    /// `requires(capability::CAPTCHA)` in the manifest) and returns the whole
    /// answer: the token or text, and what it cost. Waits until the solver
    /// answers (typically 10-60 s for reCAPTCHA), so call it from `collect`.
    pub fn solve_captcha(&self, task: &CaptchaTask) -> Result<CaptchaSolution> {
        let answer = self.host_call(host_call::CAPTCHA_SOLVE, task)?;
        Ok(serde_json::from_value(answer)?)
    }

    /// Solves a reCAPTCHA v2 (`data-sitekey` `site_key` on `page_url`) and
    /// returns the token to submit as `g-recaptcha-response`.
    pub fn solve_recaptcha_v2(&self, site_key: &str, page_url: &str) -> Result<String> {
        Ok(self.solve_captcha(&CaptchaTask::recaptcha_v2(site_key, page_url))?.answer)
    }

    /// Solves a reCAPTCHA v3 for `page_action` (as the page passes it to
    /// `grecaptcha.execute`; `None` for the default) with a score of at least
    /// `min_score` (0.3, 0.7 or 0.9) and returns the token.
    pub fn solve_recaptcha_v3(
        &self,
        site_key: &str,
        page_url: &str,
        min_score: f64,
        page_action: Option<&str>,
    ) -> Result<String> {
        let task = CaptchaTask::recaptcha_v3(site_key, page_url, min_score, page_action.map(str::to_string));
        Ok(self.solve_captcha(&task)?.answer)
    }

    /// Solves an hCaptcha and returns the token (`h-captcha-response`).
    pub fn solve_hcaptcha(&self, site_key: &str, page_url: &str) -> Result<String> {
        Ok(self.solve_captcha(&CaptchaTask::hcaptcha(site_key, page_url))?.answer)
    }

    /// Reads the text of an image CAPTCHA (the bytes of a PNG, JPEG or GIF
    /// file, e.g. a fetched response's body).
    pub fn solve_image(&self, image: &[u8]) -> Result<String> {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(image);
        Ok(self.solve_captcha(&CaptchaTask::image_base64(body))?.answer)
    }

    /// The balance of the host's CAPTCHA solver account, in USD (`captcha.balance`).
    pub fn captcha_balance(&self) -> Result<f64> {
        let answer: CaptchaBalance = serde_json::from_value(self.host_call(host_call::CAPTCHA_BALANCE, Map::new())?)?;
        Ok(answer.balance)
    }

    /// The run's request metrics so far (`metrics.get`; declare
    /// `requires(capability::METRICS)` in the manifest): requests, attempts,
    /// retries, answers by status, errors by class, bytes, latency
    /// percentiles, per domain and per proxy — the document `dc-host runs show
    /// ID --metrics --json` prints. A plugin can slow down or change course
    /// when, say, its error rate climbs.
    pub fn request_metrics(&self) -> Result<Value> {
        self.host_call(host_call::METRICS_GET, Map::new())
    }

    /// The run's proxy this thread's requests go through (`proxy.current`;
    /// declare `requires(capability::PROXY)` in the manifest; the host offers
    /// it when its `[proxy]` section names the app): the URL with its
    /// password redacted, the exit IP, the health score.
    pub fn proxy_current(&self) -> Result<ProxyExit> {
        Ok(serde_json::from_value(self.host_call(host_call::PROXY_CURRENT, Map::new())?)?)
    }

    /// Moves this thread to the run's next usable proxy (`proxy.rotate`): a
    /// new exit, e.g. after the site started to recognise this one.
    pub fn proxy_rotate(&self) -> Result<ProxyExit> {
        Ok(serde_json::from_value(self.host_call(host_call::PROXY_ROTATE, Map::new())?)?)
    }

    /// Tells the host how this thread's proxy fared (`proxy.report`), when
    /// the plugin knows better than the status (a block page served with
    /// 200): a ban lowers the proxy's health score — a proxy that falls
    /// below the host's threshold is retired — and moves the thread on.
    /// Returns the proxy the thread uses now.
    pub fn proxy_report(&self, verdict: ProxyVerdict) -> Result<ProxyExit> {
        let answer = self.host_call(host_call::PROXY_REPORT, ProxyReport::new(verdict))?;
        Ok(serde_json::from_value(answer)?)
    }

    fn enqueue_entries(&self, entries: Vec<EnqueueEntry>) -> Result<EnqueueAnswer> {
        if entries.is_empty() {
            return Ok(EnqueueAnswer::default());
        }
        let json = serde_json::to_string(&entries)?;
        let out = from_r(self.host.enqueue(RStr::from_str(&json)))?;
        Ok(serde_json::from_str(&out)?)
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

    /// A `store` of your own, replacing the default ([`default_store`]), which
    /// merges each declared table that received records as a full snapshot
    /// unless the table is declared incremental. Set it when a run may be
    /// partial (for example a listing cut short), so a full snapshot does not
    /// remove rows the run merely did not see:
    ///
    /// ```ignore
    /// const STORE: Option<StoreFn<Self>> = Some(Self::store_listing);
    /// ```
    ///
    /// The host then keeps every record of the run in memory (twice: as the
    /// records and as the JSON handed over) and calls it with all of them at
    /// the end. Left `None`, the host merges the records as `collect` returns
    /// them, in batches of a few thousand rows: a run of any size holds only a
    /// bounded number of rows in memory.
    ///
    /// (Before SDK 0.7 this was a `store` method plus `CUSTOM_STORE = true`;
    /// an overridden `store` without the flag was silently never called. One
    /// declaration now decides both, and the old form no longer compiles.)
    const STORE: Option<StoreFn<Self>> = None;

    /// Releases resources. Always called.
    fn cleanup(&mut self, _ctx: &Context) -> Result<()> {
        Ok(())
    }
}

/// A plugin's own `store` ([`Scraper::STORE`]): every record of the run, at its end.
pub type StoreFn<S> = fn(&mut S, &Context, Vec<Record>) -> Result<()>;

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
        if manifest.declared_table(&r.table).is_none() {
            return Err(Error::msg(format!(
                "record for table {:?}, which the manifest does not declare; declare it under \"tables\"",
                r.table
            )));
        }
        by_table.entry(r.table).or_default().push(r.row);
    }
    for (table, rows) in by_table {
        let full = manifest.declared_table(&table).map(|t| t.snapshot == SnapshotMode::Full).unwrap_or(false);
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
        Ok(Err(e)) => RErr(e.to_wire().into()),
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
            match S::STORE {
                Some(store) => store(&mut self.inner, &self.ctx, records),
                None => default_store(&S::manifest(), &self.ctx, records),
            }
        })
    }

    fn cleanup(&mut self) -> RResult<(), RString> {
        guarded(|| self.inner.cleanup(&self.ctx))
    }
}

extern "C" fn interface_version_fn() -> u32 {
    crate::INTERFACE_VERSION
}

/// The manifest as it crosses: what the plugin declares, stamped with the
/// interface and SDK versions it was built with.
pub(crate) fn stamped_manifest<S: Scraper>() -> Manifest {
    let mut m = S::manifest();
    m.interface_version = crate::INTERFACE_VERSION;
    m.sdk_version = Some(crate::SDK_VERSION.to_string());
    m.stream_records = S::STORE.is_none();
    m
}

extern "C" fn manifest_fn<S: Scraper>() -> RString {
    match catch_unwind(stamped_manifest::<S>) {
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

/// Builds the root module for `S` (called when the host loads the library).
pub(crate) fn root_module<S: Scraper>() -> PluginModRef {
    PluginMod { interface_version: interface_version_fn, manifest: manifest_fn::<S>, new: new_fn::<S> }
        .leak_into_prefix()
}

/// Adapts a scraper into a boxed ABI object without going through a library;
/// used by `testing::TestHost`.
#[cfg(feature = "testing")]
pub(crate) fn adapt<S: Scraper>(inner: S, ctx: Context) -> ScraperBox {
    ScraperFfi_TO::from_ptr(abi_stable::std_types::RBox::new(Adapter { inner, ctx }), TD_Opaque)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_for_status_names_url_and_status() {
        let resp = |status| Response::new(status, "http://h/x", vec![]);
        assert_eq!(resp(204).error_for_status().map(|r| r.status), Ok(204));
        let err = resp(503).error_for_status().expect_err("503 is an error");
        assert_eq!(err.message(), "http://h/x returned HTTP 503");
        assert!(resp(302).error_for_status().is_err());
    }

    #[test]
    fn statuses_are_classified() {
        let r = |status| Response::new(status, "http://h/", vec![]);
        assert!(r(204).is_success() && !r(204).is_client_error());
        assert!(r(429).is_blocked() && r(429).is_client_error() && !r(404).is_blocked());
        assert!(r(503).is_server_error() && !r(503).is_blocked());
    }

    #[test]
    fn text_is_decoded_by_the_declared_charset() {
        let latin = Response::new(200, "http://h/", b"caf\xe9".to_vec());
        assert_eq!(latin.text(), "caf\u{fffd}", "undeclared: UTF-8 with replacement");
        let declared = latin.clone().with_header("Content-Type", "text/html; charset=ISO-8859-1");
        assert_eq!((declared.text().as_str(), declared.charset()), ("café", "windows-1252"));
        // Shift_JIS declared in a meta tag only
        let mut page = b"<html><head><meta charset=\"shift_jis\"><title>".to_vec();
        page.extend_from_slice(b"\x93\xfa\x96\x7b");
        page.extend_from_slice(b"</title>");
        let sjis = Response::new(200, "http://h/", page).with_header("content-type", "text/html");
        assert_eq!(sjis.html().title().as_deref(), Some("日本"));
        let equiv = Response::new(
            200,
            "http://h/",
            b"<meta http-equiv='Content-Type' content='text/html; charset=windows-1251'>\xcf\xf0\xe8".to_vec(),
        );
        assert!(equiv.text().ends_with("При"), "{}", equiv.text());
        // a byte-order mark wins over every declaration
        let bom = Response::new(200, "http://h/", vec![0xff, 0xfe, b'h', 0, b'i', 0])
            .with_header("content-type", "text/plain; charset=iso-8859-1");
        assert_eq!((bom.text().as_str(), bom.charset()), ("hi", "UTF-16LE"));
        // an unknown label falls back to UTF-8; JSON is never sniffed for meta tags
        let odd = Response::new(200, "http://h/", "ü".as_bytes().to_vec())
            .with_header("content-type", "text/html; charset=klingon");
        assert_eq!(odd.text(), "ü");
        let json = Response::new(200, "http://h/", br#"{"a":"<meta charset=latin1>\u00fc"}"#.to_vec())
            .with_header("content-type", "application/json");
        assert_eq!(json.charset(), "UTF-8");
    }

    #[test]
    fn log_levels_round_trip_through_the_abi() {
        for l in [LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error] {
            assert_eq!(LogLevel::from_severity(l.severity()), l);
        }
        assert_eq!(LogLevel::from_severity(45), LogLevel::Warn, "an unknown severity rounds down");
    }

    #[test]
    fn request_builders_fill_the_options() {
        let r = Request::get("http://h/").timeout(std::time::Duration::from_millis(1500)).max_body_bytes(10);
        assert_eq!((r.method.as_str(), r.timeout_ms, r.options.max_body_bytes), ("GET", 1500, Some(10)));
        let p = Request::post("http://h/", "x").header("a", "b");
        assert_eq!((p.body.as_slice(), p.headers.len()), (b"x".as_slice(), 1));
    }

    #[test]
    fn guarded_turns_panics_into_errors() {
        let r: RResult<(), RString> = guarded(|| panic!("boom"));
        assert_eq!(r.into_result().map_err(|e| e.into_string()), Err("plugin panicked: boom".to_string()));
        let r: RResult<u8, RString> = guarded(|| Err(Error::msg("nope")));
        assert_eq!(r.into_result().map_err(|e| e.into_string()), Err("nope".to_string()));
    }
}
