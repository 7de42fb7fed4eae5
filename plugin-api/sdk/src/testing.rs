//! Test support for plugin authors: run a [`Scraper`] through its whole
//! lifecycle in-process, without the host, with HTTP answered by a function you
//! supply (canned pages or fixture files). Merges and logs (with level and
//! structured context) are recorded so a test can assert on them.
//!
//! [`TestHost`] refuses what the host would refuse, so a plugin that passes
//! `cargo test` is not refused after a whole crawl: the manifest (as at
//! registration), the runtime arguments against the manifest's `args_schema`
//! (as before a run), every merged record against its declared table
//! ([`dc_plugin_api::TableDecl::check_row`]) and keys that repeat within one
//! merge batch (compared as the host compares them: text NFC-normalized).
//!
//! This module exists with the cargo feature `testing` only (it brings a JSON
//! Schema validator and Unicode normalization): enable it in the plugin's
//! `[dev-dependencies]`, so that none of it is compiled into the cdylib.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, RResult, RStr, RString},
};
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

use dc_plugin_api::abi::{
    FfiHeader, FfiHttpRequest, FfiHttpResponse, FfiLogLevel, FfiRequest, FfiResponse, HostCallbacks, HostCallbacks_TO,
};
use dc_plugin_api::wire::{RequestOptions, ResponseInfo, severity, tag_error};
use dc_plugin_api::{ColumnType, ErrorClass, MergeSummary, SessionAuth, SessionConfig, SessionCookie, TableDecl};

use crate::sdk::{Context, LogLevel, Request, Response, Result, Scraper, adapt, guarded};

/// What the collecting threads gathered: records, collect errors, items with their depth.
type Collected = (Vec<Value>, Vec<String>, Vec<(Value, u32)>);
type Fetcher = dyn Fn(&Request) -> Result<Response> + Send + Sync;
type HostCallAnswer = dyn Fn(&str, &Value) -> Result<Value> + Send + Sync;

/// One merge call the plugin made.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeCall {
    /// Table name.
    pub table: String,
    /// Rows.
    pub rows: Vec<Map<String, Value>>,
    /// Whether it was a full snapshot.
    pub full_snapshot: bool,
}

/// What a test run recorded.
#[derive(Debug, Default, Clone)]
pub struct TestRun {
    /// Work items from `prepare_list`.
    pub items: Vec<Value>,
    /// Every merge call.
    pub merges: Vec<MergeCall>,
    /// Log messages, in order.
    pub logs: Vec<String>,
    /// Log records, in order: level, message and structured context (the JSON
    /// the plugin passed; `Value::Null` when it passed none).
    pub log_records: Vec<(LogLevel, String, Value)>,
    /// Errors from `collect`, one per failed item.
    pub collect_errors: Vec<String>,
    /// Every item collected, in order: the `prepare_list` items, then what
    /// `collect` enqueued (interface 1.2), each with its depth.
    pub collected: Vec<(Value, u32)>,
    /// What `enqueue` dropped over the run: duplicates, items over
    /// `max_depth` and items over `max_items` (`added` is 0).
    pub dropped: dc_plugin_api::EnqueueAnswer,
    /// Every host call the plugin made (interface 1.3): method and request,
    /// in order, including the ones refused.
    pub host_calls: Vec<(String, Value)>,
    /// Every session change the plugin made (`configure_session` and the
    /// setters: `set_headers`, `set_cookies`, `set_auth`, …), in order.
    pub sessions: Vec<SessionConfig>,
}

#[derive(Default)]
struct Recorded {
    merges: Vec<MergeCall>,
    log_records: Vec<(LogLevel, String, Value)>,
    host_calls: Vec<(String, Value)>,
    sessions: Vec<SessionConfig>,
    /// One session per thread, as the host keeps them: the thread that runs
    /// `new`, `prepare_list`, `store` and `cleanup` has one, and every
    /// collecting thread its own.
    session: HashMap<ThreadId, TestSession>,
}

/// The session the test host applies to every request a thread hands the
/// fetcher (one per thread, like the host's).
#[derive(Default)]
struct TestSession {
    headers: Vec<(String, String)>,
    cookies: Vec<SessionCookie>,
    auth: Option<SessionAuth>,
    proxy: Option<String>,
}

impl TestSession {
    fn apply(&mut self, cfg: &SessionConfig) {
        if !cfg.keep_headers {
            self.headers = cfg.headers.clone().into_iter().collect();
        }
        if cfg.reset_cookies {
            self.cookies.clear();
        }
        for c in &cfg.cookies {
            self.cookies.retain(|o| !(o.name == c.name && same_origin(&o.url, &c.url)));
            self.cookies.push(c.clone());
        }
        match &cfg.auth {
            Some(SessionAuth::None) => self.auth = None,
            Some(a) => self.auth = Some(a.clone()),
            None => {}
        }
        if cfg.clear_proxy {
            self.proxy = None;
        } else if cfg.proxy.is_some() {
            self.proxy = cfg.proxy.clone();
        }
    }

    /// The session's headers, credentials and cookies added to `req` (its
    /// own headers win), as the host sends them.
    fn decorate(&self, req: &mut Request) {
        let has = |req: &Request, name: &str| req.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        for (n, v) in &self.headers {
            if !has(req, n) {
                req.headers.push((n.clone(), v.clone()));
            }
        }
        if !has(req, "authorization") {
            use base64::Engine as _;
            match &self.auth {
                Some(SessionAuth::Basic { username, password }) => {
                    let pair = format!("{username}:{}", password.as_deref().unwrap_or_default());
                    let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
                    req.headers.push(("authorization".into(), format!("Basic {b64}")));
                }
                Some(SessionAuth::Bearer { token }) => {
                    req.headers.push(("authorization".into(), format!("Bearer {token}")))
                }
                _ => {}
            }
        }
        let jar: Vec<String> = self
            .cookies
            .iter()
            .filter(|c| same_host(&c.url, &req.url))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        if !jar.is_empty() && !has(req, "cookie") {
            req.headers.push(("cookie".into(), jar.join("; ")));
        }
    }
}

fn same_host(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.host_str().is_some() && a.host_str() == b.host_str(),
        _ => false,
    }
}

fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

struct TestCallbacks {
    fetch: Arc<Fetcher>,
    args: String,
    rec: Arc<Mutex<Recorded>>,
    manifest: dc_plugin_api::Manifest,
    frontier: Arc<dc_frontier::Frontier>,
    /// The depth of the item each collecting thread is collecting (none
    /// outside `collect`).
    depth: Arc<Mutex<HashMap<ThreadId, u32>>>,
    host_call: Option<Arc<HostCallAnswer>>,
}

fn lock(rec: &Mutex<Recorded>) -> std::sync::MutexGuard<'_, Recorded> {
    rec.lock().unwrap_or_else(|p| p.into_inner())
}

impl TestCallbacks {
    fn record_log(&self, level: LogLevel, message: RStr<'_>, context_json: RStr<'_>) {
        let raw = context_json.as_str();
        let context = if raw.is_empty() {
            Value::Null
        } else {
            // keep unparseable context visible to the test instead of dropping it
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
        };
        lock(&self.rec).log_records.push((level, message.to_string(), context));
    }

    /// The fetcher's answer to `req` with the session applied; an error
    /// crosses as the host's does (tagged with its class, when it has one).
    fn answer(&self, req: &mut Request) -> std::result::Result<Response, String> {
        lock(&self.rec).session.entry(std::thread::current().id()).or_default().decorate(req);
        (self.fetch)(req).map_err(|e| e.to_wire())
    }
}

fn headers_in(h: abi_stable::std_types::RVec<FfiHeader>) -> Vec<(String, String)> {
    h.into_iter().map(|h| (h.name.into_string(), h.value.into_string())).collect()
}

fn headers_out(h: Vec<(String, String)>) -> abi_stable::std_types::RVec<FfiHeader> {
    h.into_iter().map(|(n, v)| FfiHeader { name: n.into(), value: v.into() }).collect()
}

impl HostCallbacks for TestCallbacks {
    fn fetch(&self, r: FfiRequest) -> RResult<FfiResponse, RString> {
        let mut req = Request {
            method: r.method.into_string(),
            url: r.url.into_string(),
            headers: headers_in(r.headers),
            body: r.body.into_vec(),
            timeout_ms: r.timeout_ms,
            options: RequestOptions::default(),
        };
        match self.answer(&mut req) {
            Ok(resp) => ROk(FfiResponse {
                status: resp.status,
                url: resp.url.into(),
                headers: headers_out(resp.headers),
                body: resp.body.into(),
            }),
            Err(e) => RErr(e.into()),
        }
    }

    fn fetch_http(&self, r: FfiHttpRequest) -> RResult<FfiHttpResponse, RString> {
        // the same checks the host makes on the options
        let options: RequestOptions = if r.extensions.is_empty() {
            RequestOptions::default()
        } else {
            match serde_json::from_str(&r.extensions) {
                Ok(o) => o,
                Err(e) => {
                    let msg = format!("{} {}: invalid request options: {e}", r.method, r.url);
                    return RErr(tag_error(ErrorClass::InvalidRequest, &msg).into());
                }
            }
        };
        let mut req = Request {
            method: r.method.into_string(),
            url: r.url.into_string(),
            headers: headers_in(r.headers),
            body: r.body.into_vec(),
            timeout_ms: r.timeout_ms,
            options,
        };
        match self.answer(&mut req) {
            Ok(resp) => {
                if let Some(limit) = req.options.max_body_bytes
                    && resp.body.len() as u64 > limit
                {
                    let msg = format!("{} {}: the response body exceeds max_body_bytes {limit}", req.method, req.url);
                    return RErr(tag_error(ErrorClass::BodyTooLarge, &msg).into());
                }
                let mut info = ResponseInfo::default();
                info.elapsed_ms = resp.elapsed_ms;
                info.attempts = resp.attempts;
                ROk(FfiHttpResponse {
                    status: resp.status,
                    url: resp.url.into(),
                    headers: headers_out(resp.headers),
                    body: resp.body.into(),
                    extensions: serde_json::to_string(&info).unwrap_or_default().into(),
                })
            }
            Err(e) => RErr(e.into()),
        }
    }

    fn capabilities(&self) -> RString {
        use dc_plugin_api::capability::{CAPTCHA, FETCH, FRONTIER, HTTP, LOG, MERGE, PROGRESS};
        let mut caps = vec![FETCH, MERGE, LOG, PROGRESS, FRONTIER, HTTP];
        if self.host_call.is_some() {
            caps.push(CAPTCHA);
        }
        serde_json::to_string(&caps).unwrap_or_default().into()
    }

    fn call(&self, method: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString> {
        let method = method.as_str();
        let request: Value = match serde_json::from_str(request_json.as_str()) {
            Ok(r) => r,
            Err(e) => return RErr(format!("the request of host method {method:?} is not JSON: {e}").into()),
        };
        lock(&self.rec).host_calls.push((method.to_string(), request.clone()));
        // the checks the host makes before it answers
        if let Err(refusal) = dc_plugin_api::host_call::check_call(method, &self.manifest.requires) {
            return RErr(refusal.into());
        }
        if method == dc_plugin_api::host_call::CAPTCHA_SOLVE
            && let Err(e) = serde_json::from_value::<dc_plugin_api::CaptchaTask>(request.clone())
        {
            return RErr(format!("invalid captcha.solve request: {e}").into());
        }
        let Some(answer) = &self.host_call else {
            return RErr(
                format!(
                    "TestHost has no answer for the host method {method:?}; give it one with TestHost::on_host_call"
                )
                .into(),
            );
        };
        match answer(method, &request) {
            Ok(v) => ROk(v.to_string().into()),
            Err(e) => RErr(e.to_string().into()),
        }
    }

    fn enqueue(&self, entries_json: RStr<'_>) -> RResult<RString, RString> {
        // the same parsing and rules as the host (`dc-frontier`)
        let entries: Vec<dc_plugin_api::EnqueueEntry> = match serde_json::from_str(entries_json.as_str()) {
            Ok(e) => e,
            Err(e) => return RErr(format!("enqueue needs a JSON array of {{\"item\", \"key\"}} entries: {e}").into()),
        };
        let depth = self.depth.lock().unwrap_or_else(|p| p.into_inner()).get(&std::thread::current().id()).copied();
        match self.frontier.enqueue(depth, entries) {
            Ok(answer) => ROk(serde_json::to_string(&answer).unwrap_or_default().into()),
            Err(e) => RErr(e.into()),
        }
    }

    fn log_at(&self, level: u8, message: RStr<'_>, context_json: RStr<'_>) {
        self.record_log(LogLevel::from_severity(level), message, context_json);
    }

    fn configure_session(&self, config_json: RStr<'_>) -> RResult<(), RString> {
        // the same parsing as the host
        let cfg: SessionConfig = match serde_json::from_str(config_json.as_str()) {
            Ok(c) => c,
            Err(e) => return RErr(format!("invalid session config: {e}").into()),
        };
        let mut rec = lock(&self.rec);
        rec.session.entry(std::thread::current().id()).or_default().apply(&cfg);
        rec.sessions.push(cfg);
        ROk(())
    }

    fn merge(&self, table: RStr<'_>, rows_json: RStr<'_>, full_snapshot: bool) -> RResult<RString, RString> {
        let rows: Vec<Map<String, Value>> = match serde_json::from_str(rows_json.as_str()) {
            Ok(r) => r,
            Err(e) => return RErr(format!("rows are not a JSON array of objects: {e}").into()),
        };
        // the checks the host makes before it writes anything
        let Some(decl) = self.manifest.declared_table(table.as_str()) else {
            return RErr(
                format!(
                    "table {:?} is not declared in the plugin manifest; declare it under \"tables\"",
                    table.as_str()
                )
                .into(),
            );
        };
        for (i, row) in rows.iter().enumerate() {
            if let Err(problem) = decl.check_row(row) {
                return RErr(
                    format!("record {i} for table {}: {problem}; nothing of this batch was written", decl.name).into(),
                );
            }
        }
        // then, as the host does, keys that repeat within the batch
        let mut seen = HashSet::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let key = batch_key(decl, row);
            if seen.contains(&key) {
                return RErr(
                    format!(
                        "record {i} for table {}: key {key} appears more than once in the batch; nothing of this batch was written",
                        decl.name
                    )
                    .into(),
                );
            }
            seen.insert(key);
        }
        let summary = MergeSummary::new(rows.len() as u64, 0, 0, 0);
        lock(&self.rec).merges.push(MergeCall { table: table.to_string(), rows, full_snapshot });
        ROk(serde_json::to_string(&summary).unwrap_or_default().into())
    }

    fn log(&self, level: FfiLogLevel, message: RStr<'_>, context_json: RStr<'_>) {
        self.record_log(LogLevel::from_severity(severity::of_ffi_level(level)), message, context_json);
    }

    fn progress(&self, _current: u64, _total: u64, _errors: u64) {}

    fn args_json(&self) -> RString {
        self.args.clone().into()
    }

    fn should_stop(&self) -> bool {
        false
    }
}

/// Runs scrapers in-process for tests, refusing what the host would refuse
/// (see the [module docs](self)).
pub struct TestHost {
    fetch: Arc<Fetcher>,
    args: Value,
    host_call: Option<Arc<HostCallAnswer>>,
    threads: usize,
}

impl TestHost {
    /// A test host whose HTTP requests are answered by `fetch`.
    pub fn new(fetch: impl Fn(&Request) -> Result<Response> + Send + Sync + 'static) -> TestHost {
        TestHost { fetch: Arc::new(fetch), args: Value::Object(Map::new()), host_call: None, threads: 1 }
    }

    /// Answers the plugin's host calls (`Context::host_call` and the helpers
    /// on it, such as `Context::solve_recaptcha_v2`): `answer` gets the method
    /// and the JSON request and returns the JSON answer (for `captcha.solve`,
    /// a [`dc_plugin_api::CaptchaSolution`], e.g. `json!({"answer": "token"})`)
    /// or an error the plugin sees. Before it is asked, a call is refused as the
    /// host refuses it: an unknown method, or one whose capability the manifest
    /// does not require. With an answer, the test host offers `captcha`.
    pub fn on_host_call(mut self, answer: impl Fn(&str, &Value) -> Result<Value> + Send + Sync + 'static) -> TestHost {
        self.host_call = Some(Arc::new(answer));
        self
    }

    /// Sets the runtime arguments (default `{}`, as the host's). [`TestHost::run`]
    /// checks them against the scraper's `args_schema`.
    pub fn args(mut self, args: Value) -> TestHost {
        self.args = args;
        self
    }

    /// Collects on `n` threads (default 1, which collects the items in a
    /// reproducible order), like the host's `--threads`.
    pub fn threads(mut self, n: usize) -> TestHost {
        self.threads = n.max(1);
        self
    }

    /// Runs `new → prepare_list → collect (each item) → store → cleanup`
    /// through the same ABI adapter and panic guard the host uses, so a panic in
    /// any step (including `new`) comes back as an error containing
    /// "plugin panicked". As in the host, `collect` runs on collecting threads
    /// of its own ([`TestHost::threads`]), each with its own HTTP session
    /// (headers, cookies, credentials, proxy): what `new` or `prepare_list`
    /// sets on the session is not sent by `collect`.
    ///
    /// Before any plugin code runs, the manifest is checked as at registration
    /// ("the manifest is invalid: ...") and the arguments against its
    /// `args_schema` as before a run ("invalid runtime arguments for
    /// group/parent/name: field max_pages: ..."). A merge is refused as the host
    /// refuses it, naming the record: an undeclared table, a record that does
    /// not fit its table, or a key that repeats within the batch.
    pub fn run<S: Scraper>(&self) -> Result<TestRun> {
        // the manifest is checked as the host checks it at registration
        let manifest = crate::sdk::stamped_manifest::<S>();
        let problems = manifest.validate();
        if !problems.is_empty() {
            return Err(crate::sdk::Error::msg(format!("the manifest is invalid: {}", problems.join("; "))));
        }
        // and the arguments as the host checks them before it starts a run
        let problems = args_problems(&manifest.args_schema, &self.args);
        if !problems.is_empty() {
            return Err(crate::sdk::Error::msg(format!(
                "invalid runtime arguments for {}/{}/{}: {}",
                manifest.group,
                manifest.parent,
                manifest.name,
                problems.join("; ")
            )));
        }
        let rec = Arc::new(Mutex::new(Recorded::default()));
        let frontier = Arc::new(dc_frontier::Frontier::new(manifest.crawl, dc_frontier::DEFAULT_MAX_ITEMS));
        let depth = Arc::new(Mutex::new(HashMap::new()));
        let callbacks = TestCallbacks {
            fetch: self.fetch.clone(),
            args: self.args.to_string(),
            rec: rec.clone(),
            manifest,
            frontier: frontier.clone(),
            depth: depth.clone(),
            host_call: self.host_call.clone(),
        };
        let ctx = Context::from_host(HostCallbacks_TO::from_value(callbacks, TD_Opaque));
        let scraper = into(guarded(|| S::new(&ctx)))?;
        let mut obj = adapt(scraper, ctx);
        let mut run = TestRun::default();
        let outcome = (|| -> Result<()> {
            let items: Vec<Value> = serde_json::from_str(&into(obj.prepare_list())?)?;
            run.items = items.clone();
            frontier.seed(items);
            let collected: Mutex<Collected> = Mutex::default();
            let failed: Mutex<Option<crate::sdk::Error>> = Mutex::new(None);
            let plugin = &obj;
            // collecting threads of their own, each with its own session, as in the host
            std::thread::scope(|scope| {
                for t in 0..self.threads {
                    let (frontier, depth, collected, failed) = (&frontier, &depth, &collected, &failed);
                    let spawned =
                        std::thread::Builder::new().name(format!("collect-{t}")).spawn_scoped(scope, move || {
                            let me = std::thread::current().id();
                            while let Some(work) = frontier.next() {
                                depth.lock().unwrap_or_else(|p| p.into_inner()).insert(me, work.depth);
                                let answer = into(plugin.collect(RStr::from_str(&work.item.to_string())));
                                depth.lock().unwrap_or_else(|p| p.into_inner()).remove(&me);
                                let parsed = answer.map(|json| serde_json::from_str::<Vec<Value>>(&json));
                                let mut c = collected.lock().unwrap_or_else(|p| p.into_inner());
                                match parsed {
                                    Ok(Ok(recs)) => c.0.extend(recs),
                                    Ok(Err(e)) => {
                                        failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e.into());
                                    }
                                    Err(e) => c.1.push(e.to_string()),
                                }
                                c.2.push((work.item, work.depth));
                                drop(c);
                                frontier.done();
                            }
                        });
                    if let Err(e) = spawned {
                        failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e.into());
                        frontier.stop();
                    }
                }
            });
            if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
                return Err(e);
            }
            let (records, errors, items) = collected.into_inner().unwrap_or_else(|p| p.into_inner());
            run.collect_errors = errors;
            run.collected = items;
            run.dropped = frontier.dropped();
            into(obj.store(RStr::from_str(&Value::Array(records).to_string())))?;
            Ok(())
        })();
        let cleaned = into(obj.cleanup());
        outcome?;
        cleaned?;
        let rec = std::mem::take(&mut *lock(&rec));
        run.merges = rec.merges;
        run.logs = rec.log_records.iter().map(|(_, message, _)| message.clone()).collect();
        run.log_records = rec.log_records;
        run.host_calls = rec.host_calls;
        run.sessions = rec.sessions;
        Ok(run)
    }
}

/// The problems the host finds in `args` against `schema` before a run (the
/// host's own validator, `dc-args`); empty when they are valid.
fn args_problems(schema: &Value, args: &Value) -> Vec<String> {
    dc_args::validate(schema, args).err().unwrap_or_default()
}

/// The key of a row that passed [`TableDecl::check_row`], as the host compares
/// keys within a batch: the JSON array of the key cells in `key` order, text
/// normalized to NFC (the host's default Unicode form), integers written as
/// `3` also when sent as `3.0`, reals as numbers, timestamps in UTC with
/// microseconds.
fn batch_key(decl: &TableDecl, row: &Map<String, Value>) -> String {
    let cells = decl
        .key
        .iter()
        .filter_map(|k| decl.columns.iter().find(|c| &c.name == k))
        .map(|c| {
            let v = row.get(&c.name).unwrap_or(&Value::Null);
            match c.ty {
                ColumnType::Text => match v.as_str() {
                    Some(t) if !t.is_ascii() => Value::String(t.nfc().collect()),
                    _ => v.clone(),
                },
                ColumnType::Integer => match (v.as_i64(), v.as_f64()) {
                    (Some(i), _) => Value::from(i),
                    // check_row let only whole numbers below 9e15 through
                    (None, Some(f)) => Value::from(f as i64),
                    _ => v.clone(),
                },
                ColumnType::Real => {
                    v.as_f64().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
                }
                ColumnType::Timestamp => v.as_str().and_then(utc_micros).map_or_else(|| v.clone(), Value::String),
                _ => v.clone(),
            }
        })
        .collect();
    Value::Array(cells).to_string()
}

/// An RFC 3339 timestamp as the host stores and compares it: in UTC, with six
/// fraction digits (more are cut off) and `Z`, e.g. `2026-01-31T12:00:00.000000Z`
/// for `2026-01-31T13:00:00+01:00`. A leap second stays `:60`.
fn utc_micros(s: &str) -> Option<String> {
    if !dc_plugin_api::manifest::is_rfc3339(s) {
        return None;
    }
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> i64 {
        b.get(from..from + len).unwrap_or_default().iter().fold(0, |n, d| n * 10 + i64::from(d - b'0'))
    };
    let mut i = 19;
    let mut micros = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let mut digits = 0;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if digits < 6 {
                micros = micros * 10 + i64::from(d - b'0');
                digits += 1;
            }
            i += 1;
        }
        micros *= 10_i64.pow(6 - digits);
    }
    let offset = match b.get(i) {
        Some(b'+') => num(i + 1, 2) * 3600 + num(i + 4, 2) * 60,
        Some(b'-') => -(num(i + 1, 2) * 3600 + num(i + 4, 2) * 60),
        _ => 0,
    };
    let sec = num(17, 2);
    let at =
        days_from_civil(num(0, 4), num(5, 2), num(8, 2)) * 86_400 + num(11, 2) * 3600 + num(14, 2) * 60 + sec.min(59)
            - offset;
    let (days, time) = (at.div_euclid(86_400), at.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let year = if (0..=9999).contains(&y) { format!("{y:04}") } else { format!("{y:+05}") };
    let second = if sec == 60 { 60 } else { time % 60 };
    Some(format!("{year}-{m:02}-{d:02}T{:02}:{:02}:{second:02}.{micros:06}Z", time / 3600, time % 3600 / 60))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn into<T>(r: RResult<T, RString>) -> Result<T> {
    r.into_result().map_err(crate::sdk::Error::msg)
}

impl TestRun {
    /// All rows merged into `table`.
    pub fn rows(&self, table: &str) -> Vec<&Map<String, Value>> {
        self.merges.iter().filter(|m| m.table == table).flat_map(|m| m.rows.iter()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdk::{Error, Record};
    use dc_plugin_api::{ColumnDecl, Manifest, SnapshotMode, TableDecl};
    use serde_json::json;

    fn table(name: &str, snapshot: SnapshotMode) -> TableDecl {
        TableDecl::new(name).column(ColumnDecl::text("id").not_null()).key(["id"]).snapshot(snapshot)
    }

    fn manifest() -> Manifest {
        Manifest::new("g", "p", "t", "1.0.0")
            .table(table("full_t", SnapshotMode::Full))
            .table(table("incr_t", SnapshotMode::Incremental))
    }

    /// Behaviour chosen by the `mode` argument.
    struct Probe {
        mode: String,
    }

    impl Scraper for Probe {
        fn manifest() -> Manifest {
            manifest()
        }

        fn new(ctx: &Context) -> Result<Self> {
            let mode = ctx.args_value()["mode"].as_str().unwrap_or_default().to_string();
            match mode.as_str() {
                "panic_in_new" => panic!("new exploded"),
                "fail_in_new" => Err(Error::msg("new refused")),
                _ => Ok(Probe { mode }),
            }
        }

        fn prepare_list(&mut self, ctx: &Context) -> Result<Vec<Value>> {
            ctx.log(LogLevel::Warn, "listing", json!({"pages": 2}));
            ctx.info("plain");
            Ok(match self.mode.as_str() {
                "nothing" => vec![],
                _ => vec![json!("a"), json!("b")],
            })
        }

        fn collect(&self, _ctx: &Context, item: &Value) -> Result<Vec<Record>> {
            let table = match self.mode.as_str() {
                "undeclared" => "nope",
                "incremental" => "incr_t",
                _ => "full_t",
            };
            Ok(vec![Record::new(table, json!({"id": item}))])
        }
    }

    fn run(mode: &str) -> Result<TestRun> {
        TestHost::new(|r| Err(Error::msg(format!("no HTTP in this test: {}", r.url))))
            .args(json!({"mode": mode}))
            .run::<Probe>()
    }

    #[test]
    fn panic_in_new_is_an_error() {
        let err = run("panic_in_new").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("plugin panicked") && err.contains("new exploded"), "{err:?}");
        let err = run("fail_in_new").err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(err, "new refused");
    }

    #[test]
    fn records_log_levels_and_context() {
        let r = run("").expect("run succeeds");
        assert_eq!(r.logs[..2], ["listing", "plain"]);
        assert_eq!(r.log_records[0], (LogLevel::Warn, "listing".to_string(), json!({"pages": 2})));
        assert_eq!(r.log_records[1], (LogLevel::Info, "plain".to_string(), Value::Null));
        let merged = r.log_records.iter().find(|(_, m, _)| m == "merged table").expect("merge is logged");
        assert_eq!(merged.0, LogLevel::Info);
        assert_eq!(merged.2["table"], "full_t");
        assert_eq!(merged.2["inserted"], 2);
        assert_eq!(r.logs.len(), r.log_records.len());
    }

    #[test]
    fn default_store_merges_only_tables_with_records() {
        let r = run("").expect("run succeeds");
        assert_eq!(r.merges.len(), 1, "{:?}", r.merges);
        assert_eq!((r.merges[0].table.as_str(), r.merges[0].full_snapshot), ("full_t", true));
        assert_eq!(r.rows("full_t").len(), 2);

        let r = run("incremental").expect("run succeeds");
        assert_eq!(r.merges.len(), 1, "{:?}", r.merges);
        assert_eq!((r.merges[0].table.as_str(), r.merges[0].full_snapshot), ("incr_t", false));

        let r = run("nothing").expect("run succeeds");
        assert_eq!(r.merges, vec![], "a run that collected nothing must not merge (and wipe) any table");
    }

    #[test]
    fn records_are_checked_like_the_host_checks_them() {
        let r = TestHost::new(|r| Err(Error::msg(format!("no HTTP: {}", r.url))))
            .args(json!({"mode": "incremental"}))
            .run::<BadRows>();
        let err = r.expect_err("a record the host would refuse fails the test run");
        assert!(
            err.message()
                .contains("record 1 for table incr_t: key field \"id\" is missing; nothing of this batch was written"),
            "{err}"
        );
        let err = TestHost::new(|_| Err(Error::msg("no HTTP"))).run::<BadManifest>().expect_err("refused");
        assert!(err.message().contains("the manifest is invalid: version \"1.0\""), "{err}");
    }

    /// Returns one good and one keyless record.
    struct BadRows;

    impl Scraper for BadRows {
        fn manifest() -> Manifest {
            manifest()
        }
        fn new(_ctx: &Context) -> Result<Self> {
            Ok(BadRows)
        }
        fn prepare_list(&mut self, _ctx: &Context) -> Result<Vec<Value>> {
            Ok(vec![json!(1)])
        }
        fn collect(&self, _ctx: &Context, _item: &Value) -> Result<Vec<Record>> {
            Ok(vec![Record::new("incr_t", json!({"id": "a"})), Record::new("incr_t", json!({"id": null}))])
        }
    }

    /// Declares a version the host refuses.
    struct BadManifest;

    impl Scraper for BadManifest {
        fn manifest() -> Manifest {
            Manifest::new("g", "p", "t", "1.0")
        }
        fn new(_ctx: &Context) -> Result<Self> {
            Ok(BadManifest)
        }
        fn prepare_list(&mut self, _ctx: &Context) -> Result<Vec<Value>> {
            Ok(vec![])
        }
        fn collect(&self, _ctx: &Context, _item: &Value) -> Result<Vec<Record>> {
            Ok(vec![])
        }
    }

    /// Declares a strict `args_schema`; `collect` merges nothing.
    struct Strict;

    impl Scraper for Strict {
        fn manifest() -> Manifest {
            Manifest::new("g", "p", "strict", "1.0.0").table(table("full_t", SnapshotMode::Full)).args_schema(json!({
                "type": "object",
                "required": ["base_url"],
                "additionalProperties": false,
                "properties": {
                    "base_url": {"type": "string"},
                    "max_pages": {"type": "integer", "minimum": 1},
                    "speed": {"enum": ["fast", "slow"]}
                }
            }))
        }
        fn new(ctx: &Context) -> Result<Self> {
            ctx.info("new ran");
            Ok(Strict)
        }
        fn prepare_list(&mut self, _ctx: &Context) -> Result<Vec<Value>> {
            Ok(vec![])
        }
        fn collect(&self, _ctx: &Context, _item: &Value) -> Result<Vec<Record>> {
            Ok(vec![])
        }
    }

    fn run_strict(args: Value) -> Result<TestRun> {
        TestHost::new(|_| Err(Error::msg("no HTTP"))).args(args).run::<Strict>()
    }

    /// The refusal of `args`, which must be refused.
    fn refused_args(args: Value) -> String {
        let err = run_strict(args.clone()).expect_err(&format!("{args} must be refused")).to_string();
        assert!(err.starts_with("invalid runtime arguments for g/p/strict: "), "{err}");
        err
    }

    #[test]
    fn args_are_checked_against_args_schema_like_the_host_checks_them() {
        let err = refused_args(json!({"base_url": 5}));
        assert!(err.contains("field base_url: 5 is not of type \"string\""), "{err}");
        let err = refused_args(json!({"base_url": "http://x/", "max_pages": "two"}));
        assert!(err.contains("field max_pages: \"two\" is not of type \"integer\""), "{err}");
        let err = refused_args(json!({"base_url": "http://x/", "max_pages": 0}));
        assert!(err.contains("field max_pages: 0 is less than the minimum of 1"), "{err}");
        let err = refused_args(json!({}));
        assert!(err.contains("\"base_url\" is a required property"), "{err}");
        let err = refused_args(json!({"base_url": "http://x/", "colour": 1}));
        assert!(err.contains("Additional properties are not allowed ('colour' was unexpected)"), "{err}");
        let err = refused_args(json!({"base_url": "http://x/", "speed": "warp"}));
        assert!(err.contains("field speed: \"warp\" is not one of"), "{err}");
        // every problem is reported, joined as the host joins them
        let err = refused_args(json!({"max_pages": "two"}));
        assert!(err.contains("; ") && err.contains("base_url") && err.contains("max_pages"), "{err}");
    }

    #[test]
    fn args_the_schema_allows_run() {
        for args in
            [json!({"base_url": "http://x/"}), json!({"base_url": "http://x/", "max_pages": 3, "speed": "slow"})]
        {
            let r = run_strict(args.clone()).unwrap_or_else(|e| panic!("{args} is valid, yet: {e}"));
            assert_eq!(r.logs[0], "new ran");
        }
        // the default schema (any object) takes the default arguments
        assert!(TestHost::new(|_| Err(Error::msg("no HTTP"))).run::<Dups>().is_ok());
    }

    /// Declares an args_schema that is no JSON schema.
    struct BadSchema;

    impl Scraper for BadSchema {
        fn manifest() -> Manifest {
            manifest().args_schema(json!({"type": 5}))
        }
        fn new(_ctx: &Context) -> Result<Self> {
            Ok(BadSchema)
        }
        fn prepare_list(&mut self, _ctx: &Context) -> Result<Vec<Value>> {
            Ok(vec![])
        }
        fn collect(&self, _ctx: &Context, _item: &Value) -> Result<Vec<Record>> {
            Ok(vec![])
        }
    }

    #[test]
    fn an_args_schema_that_is_no_json_schema_is_refused() {
        let err = TestHost::new(|_| Err(Error::msg("no HTTP"))).run::<BadSchema>().expect_err("refused");
        assert!(
            err.message()
                .contains("invalid runtime arguments for g/p/t: the plugin's args_schema is not a valid JSON schema"),
            "{err}"
        );
    }

    /// Merges the keys given in the `keys` argument (strings or `[sku, n]`
    /// pairs for the two-column key table `pairs`) in one batch.
    struct Dups {
        keys: Vec<Value>,
    }

    impl Scraper for Dups {
        fn manifest() -> Manifest {
            manifest().table(
                TableDecl::new("pairs")
                    .column(ColumnDecl::integer("n"))
                    .column(ColumnDecl::text("sku"))
                    .column(ColumnDecl::timestamp("at"))
                    .key(["sku", "n", "at"]),
            )
        }
        fn new(ctx: &Context) -> Result<Self> {
            let keys = ctx.args_value()["keys"].as_array().cloned().unwrap_or_default();
            Ok(Dups { keys })
        }
        fn prepare_list(&mut self, _ctx: &Context) -> Result<Vec<Value>> {
            Ok(vec![json!(1)])
        }
        fn collect(&self, _ctx: &Context, _item: &Value) -> Result<Vec<Record>> {
            Ok(self
                .keys
                .iter()
                .map(|k| match k {
                    Value::Array(p) => Record::new("pairs", json!({"sku": p[0], "n": p[1], "at": p[2]})),
                    id => Record::new("full_t", json!({"id": id})),
                })
                .collect())
        }
    }

    fn run_dups(keys: Value) -> Result<TestRun> {
        TestHost::new(|_| Err(Error::msg("no HTTP"))).args(json!({ "keys": keys })).run::<Dups>()
    }

    #[test]
    fn a_key_repeated_in_one_batch_is_refused_like_the_host_refuses_it() {
        let err = run_dups(json!(["a", "b", "c", "b"])).expect_err("a repeated key is refused").to_string();
        assert_eq!(
            err,
            "record 3 for table full_t: key [\"b\"] appears more than once in the batch; nothing of this batch was written"
        );
        // "Café" composed and decomposed are one key (NFC), written composed
        let err =
            run_dups(json!(["Caf\u{e9}", "x", "Cafe\u{301}"])).expect_err("NFC-equal keys are refused").to_string();
        assert!(err.starts_with("record 2 for table full_t: key [\"Caf\u{e9}\"] appears more than once"), "{err}");
        let err = run_dups(json!(["Cafe\u{301}", "Caf\u{e9}"])).expect_err("in either order").to_string();
        assert!(err.starts_with("record 1 for table full_t: key [\"Caf\u{e9}\"] appears"), "{err}");
        // several key columns, an integer sent as 3.0, one instant at two offsets
        let err = run_dups(json!([
            ["a", 3, "2026-01-31T12:00:00Z"],
            ["a", 4, "2026-01-31T12:00:00Z"],
            ["a", 3.0, "2026-01-31T13:00:00.0000009+01:00"]
        ]))
        .expect_err("one key written three ways")
        .to_string();
        assert!(
            err.starts_with(
                "record 2 for table pairs: key [\"a\",3,\"2026-01-31T12:00:00.000000Z\"] appears more than once"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_batch_of_distinct_keys_is_merged() {
        let r = run_dups(json!(["a", "b", "A", "Caf\u{e9}", "Cafe", "Cafe\u{300}"])).expect("distinct keys are merged");
        assert_eq!(r.rows("full_t").len(), 6);
        let r = run_dups(json!([
            ["a", 3, "2026-01-31T12:00:00Z"],
            ["a", 3, "2026-01-31T12:00:00.000001Z"],
            ["b", 3, "2026-01-31T12:00:00Z"],
            ["a", 3, "2026-01-31T12:00:00+01:00"]
        ]))
        .expect("distinct keys are merged");
        assert_eq!(r.rows("pairs").len(), 4);
    }

    #[test]
    fn timestamps_are_compared_in_utc_with_microseconds() {
        for (given, utc) in [
            ("2026-01-31T12:00:00Z", "2026-01-31T12:00:00.000000Z"),
            ("2026-01-31t12:00:00.5z", "2026-01-31T12:00:00.500000Z"),
            ("2026-01-31 13:00:00.1234567+01:00", "2026-01-31T12:00:00.123456Z"),
            ("2026-03-01T00:30:00+01:00", "2026-02-28T23:30:00.000000Z"),
            ("2024-03-01T00:30:00+01:00", "2024-02-29T23:30:00.000000Z"),
            ("2025-12-31T23:30:00-01:30", "2026-01-01T01:00:00.000000Z"),
            ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999Z"),
            ("2016-12-31T23:59:60Z", "2016-12-31T23:59:60.000000Z"),
            ("0000-01-01T00:00:00+01:00", "-0001-12-31T23:00:00.000000Z"),
        ] {
            assert_eq!(utc_micros(given).as_deref(), Some(utc), "{given}");
        }
        assert_eq!(utc_micros("2026-01-31"), None);
    }

    /// Solves a reCAPTCHA v2 and stores the token; `REQUIRES` decides whether
    /// the manifest requires the capability.
    struct Solver<const REQUIRES: bool>;

    impl<const REQUIRES: bool> Scraper for Solver<REQUIRES> {
        fn manifest() -> Manifest {
            if REQUIRES { manifest().requires(dc_plugin_api::capability::CAPTCHA) } else { manifest() }
        }
        fn new(_ctx: &Context) -> Result<Self> {
            Ok(Solver)
        }
        fn prepare_list(&mut self, _ctx: &Context) -> Result<Vec<Value>> {
            Ok(vec![json!("https://site.test/login")])
        }
        fn collect(&self, ctx: &Context, item: &Value) -> Result<Vec<Record>> {
            let token = ctx.solve_recaptcha_v2("site-key-1", item.as_str().unwrap_or_default())?;
            Ok(vec![Record::new("incr_t", json!({"id": token}))])
        }
    }

    #[test]
    fn host_calls_are_answered_after_the_hosts_checks() {
        let host = || TestHost::new(|_| Err(Error::msg("no HTTP")));
        let answered = host()
            .on_host_call(|method, req| {
                assert_eq!(method, "captcha.solve");
                Ok(json!({"answer": format!("token-for-{}", req["website_key"].as_str().unwrap_or_default()), "cost": 0.002}))
            })
            .run::<Solver<true>>()
            .expect("solved");
        assert_eq!(answered.rows("incr_t")[0]["id"], "token-for-site-key-1");
        assert_eq!(
            answered.host_calls,
            vec![(
                "captcha.solve".to_string(),
                json!({"kind": "recaptcha_v2", "website_url": "https://site.test/login", "website_key": "site-key-1"})
            )]
        );
        // no answer configured: the plugin's collect fails, naming the fix
        let unanswered = host().run::<Solver<true>>().expect("the run completes");
        assert!(unanswered.collect_errors[0].contains("TestHost::on_host_call"), "{:?}", unanswered.collect_errors);
    }

    #[test]
    fn a_host_call_without_the_capability_in_the_manifest_is_refused() {
        let r = TestHost::new(|_| Err(Error::msg("no HTTP")))
            .on_host_call(|_, _| Ok(json!({"answer": "never"})))
            .run::<Solver<false>>()
            .expect("the run completes");
        assert!(
            r.collect_errors[0].contains("which the plugin's manifest does not require; add .requires(\"captcha\")"),
            "{:?}",
            r.collect_errors
        );
    }

    #[test]
    fn undeclared_table_is_an_error() {
        let err = run("undeclared").expect_err("undeclared table is refused");
        assert!(err.message().contains("\"nope\"") && err.message().contains("declare it"), "{err}");
    }

    /// Drives the HTTP controls of interface 1.4: session setters, then a
    /// request with options, then errors of each class the fetcher returns.
    struct Sessions;

    impl Scraper for Sessions {
        fn manifest() -> Manifest {
            Manifest::new("g", "p", "s", "1.0.0").table(table("incr_t", SnapshotMode::Incremental))
        }

        fn new(_ctx: &Context) -> Result<Self> {
            Ok(Sessions)
        }

        fn prepare_list(&mut self, _ctx: &Context) -> Result<Vec<Value>> {
            Ok(vec![json!("x")])
        }

        fn collect(&self, ctx: &Context, _item: &Value) -> Result<Vec<Record>> {
            let mut seen = vec![];
            let mut note = |r: Result<crate::sdk::Response>| {
                seen.push(match r {
                    Ok(r) => format!("{} {}", r.status, r.text()),
                    Err(e) => format!("{:?}: {}", e.class(), e.message()),
                })
            };
            ctx.set_headers([("x-a", "1"), ("x-b", "2")])?;
            ctx.set_cookies("http://site.test/", [("sid", "abc")])?;
            ctx.set_basic_auth("ann", Some("s3cret"))?;
            note(ctx.fetch(crate::sdk::Request::get("http://site.test/echo")));
            ctx.reset_headers()?;
            ctx.reset_cookies()?;
            ctx.set_bearer_auth("tok")?;
            note(ctx.fetch(
                crate::sdk::Request::get("http://site.test/echo").retries(0).follow_redirects(false).no_proxy(),
            ));
            ctx.set_auth(SessionAuth::None)?;
            for path in ["timeout", "reset", "robots", "circuit", "big"] {
                note(ctx.fetch(crate::sdk::Request::get(format!("http://site.test/{path}")).max_body_bytes(3)));
            }
            note(ctx.get("http://site.test/forbidden"));
            note(ctx.get("http://site.test/missing"));
            let rows =
                seen.into_iter().enumerate().map(|(i, s)| Record::new("incr_t", json!({"id": format!("{i:02} {s}")})));
            Ok(rows.collect())
        }
    }

    fn site(r: &Request) -> Result<crate::sdk::Response> {
        use dc_plugin_api::ErrorClass as C;
        let path = r.url.trim_start_matches("http://site.test/");
        let class = match path {
            "timeout" => C::Timeout,
            "reset" => C::Connection,
            "robots" => C::RobotsDenied,
            "circuit" => C::CircuitOpen,
            "forbidden" => return Ok(crate::sdk::Response::new(403, &r.url, "no")),
            "missing" => return Ok(crate::sdk::Response::new(404, &r.url, "gone")),
            "big" => return Ok(crate::sdk::Response::new(200, &r.url, "0123456789")),
            _ => {
                let mut h: Vec<String> = r.headers.iter().map(|(n, v)| format!("{n}={v}")).collect();
                h.sort();
                let o = &r.options;
                let opts = format!("retries={:?} redirects={:?} proxy={:?}", o.retries, o.follow_redirects, o.proxy);
                return Ok(crate::sdk::Response::new(200, &r.url, format!("{} | {opts}", h.join(" "))));
            }
        };
        Err(Error::with_class(class, format!("GET {} failed: {path}", r.url)))
    }

    /// Sets a header on the main thread's session, and on each collecting
    /// thread's own: both collecting threads hold their item at once (a
    /// barrier) before they fetch.
    struct PerThread;

    static BOTH_COLLECTING: std::sync::LazyLock<std::sync::Barrier> =
        std::sync::LazyLock::new(|| std::sync::Barrier::new(2));

    impl Scraper for PerThread {
        const STORE: Option<crate::StoreFn<Self>> = Some(Self::store_seen);

        fn manifest() -> Manifest {
            Manifest::new("g", "p", "s", "1.0.0").table(table("incr_t", SnapshotMode::Incremental))
        }

        fn new(_ctx: &Context) -> Result<Self> {
            Ok(PerThread)
        }

        fn prepare_list(&mut self, ctx: &Context) -> Result<Vec<Value>> {
            ctx.set_headers([("x-main", "1")])?;
            Ok(vec![json!("a"), json!("b")])
        }

        fn collect(&self, ctx: &Context, item: &Value) -> Result<Vec<Record>> {
            let me = item.as_str().unwrap_or_default();
            ctx.set_headers([("x-item", me)])?;
            BOTH_COLLECTING.wait();
            let seen = ctx.get("http://site.test/echo")?.text();
            Ok(vec![Record::new(
                "incr_t",
                json!({"id": format!("{me}: {}", seen.split(" | ").next().unwrap_or_default())}),
            )])
        }
    }

    impl PerThread {
        fn store_seen(&mut self, ctx: &Context, records: Vec<Record>) -> Result<()> {
            let seen = ctx.get("http://site.test/echo")?.text();
            let mut records = records;
            records.push(Record::new(
                "incr_t",
                json!({"id": format!("store: {}", seen.split(" | ").next().unwrap_or_default())}),
            ));
            crate::sdk::default_store(&Self::manifest(), ctx, records)
        }
    }

    #[test]
    fn every_collecting_thread_has_its_own_session_as_in_the_host() {
        let run = TestHost::new(site).threads(2).run::<PerThread>().expect("run succeeds");
        let mut ids: Vec<String> =
            run.merges[0].rows.iter().map(|r| r["id"].as_str().unwrap_or_default().to_string()).collect();
        ids.sort();
        // each thread sends its own header only, never the other's or the main thread's
        assert_eq!(ids, ["a: x-item=a", "b: x-item=b", "store: x-main=1"], "{:?}", run.sessions);
    }

    /// One declaration decides both where records go and whether the host
    /// streams them: a plugin with its own store is handed every record
    /// (`stream_records` false), one without is streamed.
    #[test]
    fn a_store_of_its_own_turns_streaming_off() {
        assert!(!crate::sdk::stamped_manifest::<PerThread>().stream_records, "PerThread has a store of its own");
        assert!(crate::sdk::stamped_manifest::<Sessions>().stream_records, "Sessions keeps the default store");
    }

    #[test]
    fn session_setters_options_and_error_classes_reach_the_fetcher_and_come_back() {
        let run = TestHost::new(site).run::<Sessions>().expect("run succeeds");
        let rows: Vec<String> =
            run.rows("incr_t").iter().map(|r| r["id"].as_str().unwrap_or_default().to_string()).collect();
        // "ann:s3cret" in base64
        assert_eq!(
            rows[0],
            "00 200 authorization=Basic YW5uOnMzY3JldA== cookie=sid=abc x-a=1 x-b=2 | retries=None redirects=None proxy=None"
        );
        assert_eq!(
            rows[1],
            "01 200 authorization=Bearer tok | retries=Some(0) redirects=Some(Follow(false)) proxy=Some(\"none\")",
            "headers and cookies reset, the bearer token replaced the basic credentials"
        );
        assert_eq!(rows[2], "02 Some(Timeout): GET http://site.test/timeout failed: timeout");
        assert_eq!(rows[3], "03 Some(Connection): GET http://site.test/reset failed: reset");
        assert_eq!(rows[4], "04 Some(RobotsDenied): GET http://site.test/robots failed: robots");
        assert_eq!(rows[5], "05 Some(CircuitOpen): GET http://site.test/circuit failed: circuit");
        assert_eq!(
            rows[6],
            "06 Some(BodyTooLarge): GET http://site.test/big: the response body exceeds max_body_bytes 3"
        );
        assert_eq!(rows[7], "07 Some(Blocked): http://site.test/forbidden returned HTTP 403");
        assert_eq!(rows[8], "08 Some(HttpStatus): http://site.test/missing returned HTTP 404");
        // every change was recorded, and none shows a secret in Debug
        assert_eq!(run.sessions.len(), 7, "{:?}", run.sessions);
        assert!(run.sessions[1].keep_headers && run.sessions[1].cookies.len() == 1);
        let shown = format!("{:?}", run.sessions);
        assert!(!shown.contains("s3cret") && !shown.contains("tok\""), "{shown}");
    }

    #[test]
    fn error_predicates_follow_the_class_and_a_class_survives_the_boundary() {
        use dc_plugin_api::ErrorClass as C;
        let e = Error::with_class(C::Timeout, "GET u failed");
        assert!(e.is_timeout() && !e.is_connection() && e.class() == Some(C::Timeout));
        assert_eq!(e.to_string(), "GET u failed", "the message stays human");
        assert_eq!(Error::from_host(&e.to_wire()), e);
        let plain = Error::from_host("an older host's message");
        assert_eq!((plain.class(), plain.message()), (None, "an older host's message"));
        for (c, p) in [
            (C::Connection, Error::is_connection as fn(&Error) -> bool),
            (C::Blocked, Error::is_blocked),
            (C::BodyTooLarge, Error::is_body_too_large),
            (C::CircuitOpen, Error::is_circuit_open),
            (C::RobotsDenied, Error::is_robots_denied),
            (C::HttpStatus, Error::is_http_status),
        ] {
            assert!(p(&Error::with_class(c, "m")) && !p(&Error::msg("m")), "{c:?}");
        }
    }

    #[test]
    fn the_test_host_offers_the_http_capability() {
        struct AsksCaps;
        impl Scraper for AsksCaps {
            fn manifest() -> Manifest {
                manifest()
            }
            fn new(ctx: &Context) -> Result<Self> {
                let caps = ctx.host_capabilities();
                assert!(caps.contains(&"http".to_string()), "{caps:?}");
                Ok(AsksCaps)
            }
            fn prepare_list(&mut self, _ctx: &Context) -> Result<Vec<Value>> {
                Ok(vec![])
            }
            fn collect(&self, _ctx: &Context, _item: &Value) -> Result<Vec<Record>> {
                Ok(vec![])
            }
        }
        TestHost::new(site).run::<AsksCaps>().expect("offers http");
    }

    #[test]
    fn typed_items_round_trip_through_enqueue() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Page {
            url: String,
            n: u32,
        }
        struct Typed;
        impl Scraper for Typed {
            fn manifest() -> Manifest {
                manifest()
            }
            fn new(_ctx: &Context) -> Result<Self> {
                Ok(Typed)
            }
            fn prepare_list(&mut self, _ctx: &Context) -> Result<Vec<Value>> {
                Ok(vec![serde_json::to_value(Page { url: "http://h/1".into(), n: 1 })?, json!("not a page")])
            }
            fn collect(&self, ctx: &Context, item: &Value) -> Result<Vec<Record>> {
                let page: Page = ctx.item(item)?;
                if page.n < 3 {
                    ctx.enqueue(Page { url: format!("http://h/{}", page.n + 1), n: page.n + 1 })?;
                }
                Ok(vec![Record::new("incr_t", json!({"id": page.url}))])
            }
        }
        let run = TestHost::new(site).run::<Typed>().expect("run succeeds");
        let ids: Vec<&Value> = run.rows("incr_t").iter().map(|r| &r["id"]).collect();
        assert_eq!(ids, [&json!("http://h/1"), &json!("http://h/2"), &json!("http://h/3")]);
        assert_eq!(run.collect_errors.len(), 1, "{:?}", run.collect_errors);
        let err = &run.collect_errors[0];
        assert!(err.starts_with("work item \"not a page\" is not a ") && err.contains("Page"), "{err}");
    }
}
