//! The host side of the plugin interface inside a worker: HTTP through a
//! per-thread session (cookies, session headers, proxy; every attempt
//! recorded in the run's request metrics, behind its per-domain circuit
//! breakers), merges into declared tables, structured logging in the run's
//! span, progress, arguments, the cooperative stop flag and the named host
//! calls of interface 1.3 (`crate::host_call`). Plugin threads call in here; async work is driven on
//! the worker's tokio runtime with `Handle::block_on`.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use abi_stable::std_types::RVec;
use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString};
use dc_core::Database;
use dc_core::enums::UnicodeForm;
use dc_core::merge::{self, MergeRequest};
use dc_plugin_api::abi::{
    FfiHeader, FfiHttpRequest, FfiHttpResponse, FfiLogLevel, FfiRequest, FfiResponse, HostCallbacks,
};
use dc_plugin_api::wire::{RequestOptions, ResponseInfo, severity};
use dc_plugin_api::{Manifest, MergeSummary, SessionConfig};
use serde_json::{Map, Value};
use tokio::runtime::Handle;

/// State shared by the worker and every plugin thread.
pub struct RunShared {
    /// The worker's runtime.
    pub rt: Handle,
    /// Database.
    pub db: Database,
    /// App id.
    pub app_id: String,
    /// Run id.
    pub runtime_id: String,
    /// The plugin's manifest.
    pub manifest: Manifest,
    /// Validated arguments.
    pub args_json: String,
    /// Set when an operator asked the run to stop.
    pub stop: AtomicBool,
    /// Items collected.
    pub current: AtomicU64,
    /// Items in total.
    pub total: AtomicU64,
    /// Items failed.
    pub errors: AtomicU64,
    /// Normalization for hashing.
    pub form: UnicodeForm,
    /// Archive instead of delete.
    pub archive_missing: bool,
    /// Default HTTP timeout.
    pub http_timeout: Duration,
    /// Retries of failed requests.
    pub retry: dc_net::RetryPolicy,
    /// The politeness limiter every attempt waits on (the machine's, or the run's own).
    pub limiter: dc_net::HostLimiter,
    /// The run's request metrics (every attempt of every thread).
    pub metrics: dc_net::RequestMetrics,
    /// The run's circuit breakers, one per domain.
    pub breakers: dc_net::Breakers,
    /// The run's span (app_id, runtime_id).
    pub span: tracing::Span,
    /// The run's writes: one transaction for every merge of the run, which
    /// the worker commits together with the run's end (or rolls back).
    pub writes: std::sync::Mutex<RunWrites>,
    /// The run's work items: `prepare_list`'s and what `collect` enqueues.
    pub frontier: dc_frontier::Frontier,
    /// The run's proxies, when `proxy.apps` names its app (requests of a
    /// session whose plugin set its own proxy do not use them).
    pub proxies: Option<Arc<dc_proxy::ProxyManager>>,
    /// The named host methods (`captcha.solve`, ...) of interface 1.3.
    pub host_calls: crate::host_call::HostCalls,
    /// Where finished items are journaled (`runs.persist_frontier`); the
    /// frontier journals added items itself.
    pub journal: Option<crate::journal::JournalSender>,
}

thread_local! {
    /// The depth of the item this thread is collecting (`None` outside
    /// `collect`): an item enqueued from here is one deeper.
    static COLLECTING_DEPTH: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (a plugin's `collect`) with this thread's collecting depth set.
pub fn collecting<T>(depth: u32, f: impl FnOnce() -> T) -> T {
    COLLECTING_DEPTH.with(|d| d.set(Some(depth)));
    let out = f();
    COLLECTING_DEPTH.with(|d| d.set(None));
    out
}

/// The uncommitted writes of a run. Every merge of a run goes into one
/// transaction, which the worker commits with the run's status and counts, so
/// a run whose second table fails leaves the first as it was, and a commit
/// that fails (disk full) cannot leave rows stored under a run reported
/// failed. On PostgreSQL the first merge opens that transaction; on SQLite
/// merges are staged without the write lock ([`dc_core::stage`]) and the
/// worker opens the transaction only to apply them at the run's end.
#[derive(Debug, Default)]
pub struct RunWrites {
    /// The open transaction, if a merge happened (PostgreSQL).
    pub tx: Option<dc_core::WriteTx>,
    /// The staged merges, if a merge happened (SQLite).
    pub staged: Option<dc_core::stage::StagedRun>,
    /// Sum of the merges' counts.
    pub totals: MergeSummary,
    /// Why a merge failed; once set, the run stores nothing.
    pub failed: Option<String>,
}

impl RunWrites {
    fn add(&mut self, s: &MergeSummary) {
        let t = &self.totals;
        self.totals = MergeSummary::new(
            t.inserted + s.inserted,
            t.updated + s.updated,
            t.deleted + s.deleted,
            t.unchanged + s.unchanged,
        );
    }
}

struct Session {
    client: reqwest::Client,
    headers: Vec<(String, String)>,
    proxy: Option<String>,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

fn build_client(proxy: Option<&str>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .cookie_store(true)
        .timeout(timeout)
        .user_agent(concat!("dc-host/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = proxy {
        b = b.proxy(reqwest::Proxy::all(p).map_err(|e| format!("invalid proxy {p:?}: {e}"))?);
    }
    b.build().map_err(|e| format!("cannot build HTTP client: {e}"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An HTTP request as the worker performs it, from either interface version.
struct HttpCall {
    method: String,
    url: String,
    headers: RVec<FfiHeader>,
    body: RVec<u8>,
    timeout_ms: u64,
    options: RequestOptions,
}

/// The callbacks object handed to the plugin.
pub struct WorkerCallbacks(pub Arc<RunShared>);

impl WorkerCallbacks {
    fn with_session<T>(&self, f: impl FnOnce(&mut Session) -> Result<T, String>) -> Result<T, String> {
        SESSION.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot =
                    Some(Session { client: build_client(None, self.0.http_timeout)?, headers: vec![], proxy: None });
            }
            match slot.as_mut() {
                Some(s) => f(s),
                None => Err("no HTTP session".into()),
            }
        })
    }

    /// One HTTP exchange on this thread's session: the 1.0 `fetch` and the 1.1
    /// `fetch_http` both end here (1.0 requests have no options).
    fn do_fetch(&self, r: HttpCall) -> Result<FfiHttpResponse, String> {
        let method = reqwest::Method::from_bytes(r.method.as_bytes())
            .map_err(|_| format!("invalid HTTP method {:?}", r.method))?;
        let url = r.url;
        let (client, session_headers, own_proxy) =
            self.with_session(|s| Ok((s.client.clone(), s.headers.clone(), s.proxy.clone())))?;
        // the run's proxies (dc-proxy): this request's proxy, judged when it is answered
        let lease = match (&self.0.proxies, own_proxy.is_some()) {
            (Some(m), false) => Some(m.lease().map_err(|e| format!("{method} {url}: {e}"))?),
            _ => None,
        };
        let client = lease.as_ref().map_or(client, |l| l.client.clone());
        // the proxy as the request metrics name it: never with its password
        let proxy =
            lease.as_ref().map(|l| l.proxy.clone()).or_else(|| own_proxy.as_deref().map(dc_core::settings::redact_url));
        let mut req = client.request(method.clone(), &url);
        for (n, v) in session_headers {
            req = req.header(n, v);
        }
        for h in r.headers.iter() {
            req = req.header(h.name.as_str(), h.value.as_str());
        }
        if !r.body.is_empty() {
            req = req.body(r.body.to_vec());
        }
        if r.timeout_ms > 0 {
            req = req.timeout(Duration::from_millis(r.timeout_ms));
        }
        let limit = r.options.max_body_bytes;
        let retry = self.0.retry.clone();
        let limiter = &self.0.limiter;
        // counts the request; records every attempt and asks the domain's circuit first
        let exchange = dc_net::Exchange::start(&self.0.metrics, &self.0.breakers, &url, proxy.as_deref());
        let answer = self.0.rt.block_on(async move {
            let started = std::time::Instant::now();
            let (sent, attempts) = dc_net::send_limited(req, &method, &retry, Some(limiter), &exchange).await;
            let mut resp = sent.map_err(|e| {
                let tries = if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() };
                match e {
                    dc_net::SendError::Http(e) => format!("{method} {url} failed{tries}: {}", error_chain(&e)),
                    dc_net::SendError::Refused(why) => format!("{method} {url} refused{tries}: {why}"),
                }
            })?;
            let status = resp.status().as_u16();
            let final_url = resp.url().to_string();
            let headers = resp
                .headers()
                .iter()
                .map(|(n, v)| FfiHeader {
                    name: n.as_str().into(),
                    value: String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                })
                .collect();
            let too_big = |n: u64| format!("{method} {url}: the response body exceeds max_body_bytes {n}");
            if let (Some(n), Some(len)) = (limit, resp.content_length())
                && len > n
            {
                exchange.failed(dc_net::ErrorClass::BodyTooLarge);
                return Err(too_big(n));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| {
                exchange.failed(dc_net::ErrorClass::Body);
                format!("{method} {url}: reading the body failed: {}", error_chain(&e))
            })? {
                body.extend_from_slice(&chunk);
                if let Some(n) = limit
                    && body.len() as u64 > n
                {
                    exchange.failed(dc_net::ErrorClass::BodyTooLarge);
                    return Err(too_big(n));
                }
            }
            exchange.received(body.len() as u64);
            let mut info = ResponseInfo::default();
            info.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            info.attempts = attempts;
            Ok(FfiHttpResponse {
                status,
                url: final_url.into(),
                headers,
                body: body.into(),
                extensions: serde_json::to_string(&info).unwrap_or_default().into(),
            })
        });
        if let (Some(m), Some(l)) = (&self.0.proxies, &lease) {
            m.report(l, answer.as_ref().ok().map(|r| (r.status, r.body.as_slice())));
        }
        answer
    }

    fn do_merge(&self, table: &str, rows_json: &str, full_snapshot: bool) -> Result<String, String> {
        let decl = self.0.manifest.declared_table(table).ok_or_else(|| {
            format!("table {table:?} is not declared in the plugin manifest; declare it under \"tables\"")
        })?;
        let rows: Vec<Map<String, Value>> = serde_json::from_str(rows_json)
            .map_err(|e| format!("rows for {table} are not a JSON array of objects: {e}"))?;
        let failed_items = self.0.errors.load(Ordering::Relaxed);
        // a snapshot missing the items that failed in collect is not complete:
        // merge it incrementally so their rows are not removed
        let full_snapshot = if full_snapshot && failed_items > 0 {
            let _g = self.0.span.enter();
            tracing::warn!(
                table,
                failed_items,
                "items failed in collect; merging incrementally instead of as a full snapshot"
            );
            false
        } else {
            full_snapshot
        };
        let req = MergeRequest {
            app_id: &self.0.app_id,
            runtime_id: Some(&self.0.runtime_id),
            decl,
            full_snapshot,
            form: self.0.form,
            archive_missing: self.0.archive_missing,
        };
        let summary = {
            let mut writes = self.0.writes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(why) = &writes.failed {
                return Err(format!("an earlier merge of this run failed ({why}); nothing of this run will be stored"));
            }
            let merged = self.0.rt.block_on(async {
                if let Database::Sqlite(pool) = &self.0.db {
                    // staged without the write lock; applied when the run ends
                    if writes.staged.is_none() {
                        writes.staged = Some(dc_core::stage::StagedRun::open(pool).await.map_err(|e| e.to_string())?);
                    }
                    return match writes.staged.as_mut() {
                        Some(staged) => staged.stage(req, &rows).await.map_err(|e| e.to_string()),
                        None => Err("no staging for the run's writes".to_string()),
                    };
                }
                if writes.tx.is_none() {
                    writes.tx = Some(self.0.db.begin_write().await.map_err(|e| e.to_string())?);
                }
                match writes.tx.as_mut() {
                    Some(tx) => merge::merge_in(tx, req, &rows).await.map_err(|e| e.to_string()),
                    None => Err("no transaction for the run's writes".to_string()),
                }
            });
            match merged {
                Ok(s) => {
                    writes.add(&s);
                    s
                }
                Err(e) => {
                    writes.failed = Some(format!("table {table}: {e}"));
                    return Err(e);
                }
            }
        };
        let _g = self.0.span.enter();
        let staged = matches!(self.0.db, Database::Sqlite(_));
        tracing::info!(
            table,
            staged,
            inserted = summary.inserted,
            updated = summary.updated,
            deleted = summary.deleted,
            unchanged = summary.unchanged,
            full_snapshot,
            "{}",
            if staged { "merge staged (applied when the run ends)" } else { "merge done" }
        );
        serde_json::to_string(&summary).map_err(|e| e.to_string())
    }
}

impl HostCallbacks for WorkerCallbacks {
    fn fetch(&self, r: FfiRequest) -> RResult<FfiResponse, RString> {
        let call = HttpCall {
            method: r.method.into_string(),
            url: r.url.into_string(),
            headers: r.headers,
            body: r.body,
            timeout_ms: r.timeout_ms,
            options: RequestOptions::default(),
        };
        match self.do_fetch(call) {
            Ok(r) => ROk(FfiResponse { status: r.status, url: r.url, headers: r.headers, body: r.body }),
            Err(e) => RErr(e.into()),
        }
    }

    fn fetch_http(&self, r: FfiHttpRequest) -> RResult<FfiHttpResponse, RString> {
        let options: RequestOptions = if r.extensions.is_empty() {
            RequestOptions::default()
        } else {
            match serde_json::from_str(r.extensions.as_str()) {
                Ok(o) => o,
                Err(e) => {
                    return RErr(format!("{} {}: invalid request options: {e}", r.method, r.url).into());
                }
            }
        };
        let call = HttpCall {
            method: r.method.into_string(),
            url: r.url.into_string(),
            headers: r.headers,
            body: r.body,
            timeout_ms: r.timeout_ms,
            options,
        };
        match self.do_fetch(call) {
            Ok(r) => ROk(r),
            Err(e) => RErr(e.into()),
        }
    }

    fn capabilities(&self) -> RString {
        serde_json::to_string(&self.0.host_calls.capabilities()).unwrap_or_default().into()
    }

    fn call(&self, method: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString> {
        let _g = self.0.span.enter();
        let s = &self.0;
        match s.host_calls.dispatch(&s.rt, &s.manifest, &s.metrics, method.as_str(), request_json.as_str()) {
            Ok(answer) => ROk(answer.into()),
            Err(e) => {
                tracing::warn!(method = method.as_str(), error = %e, "host call refused or failed");
                RErr(e.into())
            }
        }
    }

    fn log_at(&self, level: u8, message: RStr<'_>, context_json: RStr<'_>) {
        self.log(severity::to_ffi_level(level), message, context_json)
    }

    fn configure_session(&self, config_json: RStr<'_>) -> RResult<(), RString> {
        let result = (|| -> Result<(), String> {
            let cfg: SessionConfig =
                serde_json::from_str(config_json.as_str()).map_err(|e| format!("invalid session config: {e}"))?;
            let timeout = self.0.http_timeout;
            self.with_session(|s| {
                let proxy_changed = cfg.proxy.is_some() && cfg.proxy != s.proxy;
                if proxy_changed {
                    s.proxy = cfg.proxy.clone();
                }
                if proxy_changed || cfg.reset_cookies {
                    s.client = build_client(s.proxy.as_deref(), timeout)?;
                }
                s.headers = cfg.headers.clone().into_iter().collect();
                Ok(())
            })
        })();
        match result {
            Ok(()) => ROk(()),
            Err(e) => RErr(e.into()),
        }
    }

    fn merge(&self, table: RStr<'_>, rows_json: RStr<'_>, full_snapshot: bool) -> RResult<RString, RString> {
        match self.do_merge(table.as_str(), rows_json.as_str(), full_snapshot) {
            Ok(s) => ROk(s.into()),
            Err(e) => RErr(e.into()),
        }
    }

    fn log(&self, level: FfiLogLevel, message: RStr<'_>, context_json: RStr<'_>) {
        let _g = self.0.span.enter();
        let msg = message.as_str();
        let ctx = context_json.as_str();
        match level {
            FfiLogLevel::Trace => tracing::trace!(target: "plugin", context_json = ctx, "{msg}"),
            FfiLogLevel::Debug => tracing::debug!(target: "plugin", context_json = ctx, "{msg}"),
            FfiLogLevel::Info => tracing::info!(target: "plugin", context_json = ctx, "{msg}"),
            FfiLogLevel::Warn => tracing::warn!(target: "plugin", context_json = ctx, "{msg}"),
            FfiLogLevel::Error => tracing::error!(target: "plugin", context_json = ctx, "{msg}"),
        }
    }

    fn progress(&self, current: u64, total: u64, errors: u64) {
        self.0.current.store(current, Ordering::Relaxed);
        self.0.total.store(total, Ordering::Relaxed);
        self.0.errors.store(errors, Ordering::Relaxed);
    }

    fn args_json(&self) -> RString {
        self.0.args_json.clone().into()
    }

    fn should_stop(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed)
    }

    fn enqueue(&self, entries_json: RStr<'_>) -> RResult<RString, RString> {
        let entries: Vec<dc_plugin_api::EnqueueEntry> = match serde_json::from_str(entries_json.as_str()) {
            Ok(e) => e,
            Err(e) => {
                return RErr(format!("enqueue needs a JSON array of {{\"item\", \"key\"}} entries: {e}").into());
            }
        };
        let depth = COLLECTING_DEPTH.with(std::cell::Cell::get);
        match self.0.frontier.enqueue(depth, entries) {
            Ok(answer) => {
                self.0.total.store(self.0.frontier.total(), Ordering::Relaxed);
                if answer.over_depth + answer.over_limit > 0 {
                    let _g = self.0.span.enter();
                    tracing::debug!(
                        over_depth = answer.over_depth,
                        over_limit = answer.over_limit,
                        "enqueued items dropped by the crawl limits"
                    );
                }
                ROk(serde_json::to_string(&answer).unwrap_or_default().into())
            }
            Err(e) => RErr(e.into()),
        }
    }
}
