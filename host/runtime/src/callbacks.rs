//! The host side of the plugin interface inside a worker: HTTP through a
//! per-thread session (cookies, session headers, proxy; every attempt
//! recorded in the run's request metrics, behind its per-domain circuit
//! breakers), merges into declared tables, structured logging in the run's
//! span, progress, arguments, the cooperative stop flag and the named host
//! calls of interface 1.3 (`crate::host_call`). Plugin threads call in here; async work is driven on
//! the worker's tokio runtime with `Handle::block_on`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
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
use dc_plugin_api::wire::{ErrorClass, FollowRedirects, NO_PROXY, RequestOptions, ResponseInfo, severity, tag_error};
use dc_plugin_api::{Manifest, MergeSummary, SessionAuth, SessionConfig, SessionCookie};
use serde_json::{Map, Value};
use tokio::runtime::Handle;

/// State shared by the worker and every plugin thread.
pub struct RunShared {
    /// The worker's runtime.
    pub rt: Handle,
    /// Database.
    pub db: Database,
    /// App id.
    pub app_id: dc_core::AppId,
    /// Run id.
    pub runtime_id: dc_core::RuntimeId,
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
    /// This collecting thread's own runtime ([`with_own_runtime`]).
    static OWN_RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `f` (a collecting thread's loop) with a runtime of the thread's own:
/// the requests of the thread's session run on it, so a response wakes this
/// thread directly instead of passing through the worker's runtime threads.
/// The session's connections belong to it alone, so nothing else waits on a
/// runtime that runs only while this thread does. It is shut down when `f`
/// returns or unwinds (without waiting for a name lookup still running), not
/// left to the thread's end, where a runtime cannot be dropped safely.
pub fn with_own_runtime<T>(f: impl FnOnce() -> T) -> T {
    struct ShutDown;
    impl Drop for ShutDown {
        fn drop(&mut self) {
            if let Some(rt) = OWN_RUNTIME.with(|c| c.borrow_mut().take()) {
                rt.shutdown_background();
            }
        }
    }
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => OWN_RUNTIME.with(|c| *c.borrow_mut() = Some(rt)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot build a runtime for this collecting thread; its requests run on the worker's")
        }
    }
    let _shut_down = ShutDown;
    f()
}

/// Runs `fut` on this thread's own runtime, if it has one, else on `shared`.
fn block_on_own<F: std::future::Future>(shared: &tokio::runtime::Handle, fut: F) -> F::Output {
    OWN_RUNTIME.with(|c| match c.borrow().as_ref() {
        Some(rt) => rt.block_on(fut),
        None => shared.block_on(fut),
    })
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
    /// A plugin merged rows itself (`merge` from `collect`): they commit
    /// only with the run, so a work item saved as done after this could
    /// outlive them ([`crate::journal`]). Streamed records do not count: the
    /// journal saves them with their item.
    pub merged_directly: bool,
    /// The records `collect` returned, by table, on their way to the run's
    /// staging ([`RunShared::stream_records`]).
    pub streams: BTreeMap<String, TableStream>,
}

/// Records of one table between `collect` and the run's staging: at most
/// [`STREAM_BATCH`] rows are buffered, then validated and staged.
#[derive(Debug, Default)]
pub struct TableStream {
    buffer: Vec<Map<String, Value>>,
    staged: Option<StreamHandle>,
    /// Rows staged so far.
    staged_rows: u64,
}

/// Where a table's streamed rows are staged.
#[derive(Debug)]
enum StreamHandle {
    /// A streamed merge of the run's [`dc_core::stage::StagedRun`] (SQLite).
    Sqlite(usize),
    /// A `TEMP` table of the run's transaction (PostgreSQL).
    Postgres(dc_core::stage::PgStream),
}

/// Rows of one table buffered before they are staged: this bounds what a
/// run holds in memory, whatever its size.
pub const STREAM_BATCH: usize = 5_000;

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

/// What tells apart the clients of one session: the proxy (None: direct),
/// or the run's proxy it goes through (its pool index), and the most
/// redirects followed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    proxy: Option<String>,
    leased: Option<usize>,
    redirects: u32,
}

/// More clients than this in one session (per-request proxies that change
/// every time, or a larger pool of the run's proxies, rotating per request)
/// and the cache starts again. A client costs about 4 KiB and keeps at most
/// one idle connection (its thread sends one request at a time).
const MAX_CLIENTS: usize = 256;

/// One collecting thread's HTTP session: one cookie jar shared by its
/// clients (one per proxy — its own or one of the run's — and redirect
/// setting, built when first needed, so their connections belong to the
/// thread's own runtime),
/// headers and credentials sent with every request, and its own proxy.
struct Session {
    jar: Arc<reqwest::cookie::Jar>,
    headers: Vec<(String, String)>,
    auth: Option<SessionAuth>,
    proxy: Option<String>,
    clients: HashMap<ClientKey, reqwest::Client>,
}

impl Session {
    fn new() -> Session {
        Session {
            jar: Arc::new(reqwest::cookie::Jar::default()),
            headers: vec![],
            auth: None,
            proxy: None,
            clients: HashMap::new(),
        }
    }

    /// The session's client for `proxy` and `redirects`.
    fn client(&mut self, proxy: Option<&str>, redirects: u32, timeout: Duration) -> Result<reqwest::Client, String> {
        let key = ClientKey { proxy: proxy.map(str::to_string), leased: None, redirects };
        let jar = self.jar.clone();
        self.cached(key, || build_client(&jar, proxy, redirects, timeout))
    }

    /// The session's client through the run's proxy `lease` (a new exit made
    /// for one request gets a client of its own, not kept).
    fn leased_client(
        &mut self,
        proxies: &dc_proxy::ProxyManager,
        lease: &dc_proxy::Lease,
        redirects: u32,
    ) -> Result<reqwest::Client, String> {
        let build = |jar| proxies.new_client(lease, redirects, jar).map_err(|e| e.to_string());
        match lease.pool_index() {
            Some(i) => {
                let jar = self.jar.clone();
                self.cached(ClientKey { proxy: None, leased: Some(i), redirects }, || build(jar))
            }
            None => build(self.jar.clone()),
        }
    }

    fn cached(
        &mut self,
        key: ClientKey,
        build: impl FnOnce() -> Result<reqwest::Client, String>,
    ) -> Result<reqwest::Client, String> {
        if let Some(c) = self.clients.get(&key) {
            return Ok(c.clone());
        }
        if self.clients.len() >= MAX_CLIENTS {
            self.clients.clear();
        }
        let c = build()?;
        self.clients.insert(key, c.clone());
        Ok(c)
    }

    /// Applies a plugin's session settings; nothing changes when one is invalid.
    fn configure(&mut self, cfg: &SessionConfig) -> Result<(), String> {
        let mut cookies = Vec::with_capacity(cfg.cookies.len());
        for c in &cfg.cookies {
            cookies.push(cookie_line(c)?);
        }
        if let Some(p) = &cfg.proxy {
            reqwest::Proxy::all(p.as_str())
                .map_err(|e| format!("invalid proxy {:?}: {e}", dc_core::settings::redact_url(p)))?;
        }
        if cfg.reset_cookies {
            self.jar = Arc::new(reqwest::cookie::Jar::default());
            self.clients.clear();
        }
        for (line, url) in cookies {
            self.jar.add_cookie_str(&line, &url);
        }
        if cfg.clear_proxy {
            self.proxy = None;
        } else if cfg.proxy.is_some() {
            self.proxy = cfg.proxy.clone();
        }
        match &cfg.auth {
            Some(SessionAuth::None) => self.auth = None,
            Some(a) => self.auth = Some(a.clone()),
            None => {}
        }
        if !cfg.keep_headers {
            self.headers = cfg.headers.clone().into_iter().collect();
        }
        Ok(())
    }
}

/// A plugin's cookie as a `Set-Cookie` line and the URL it is stored for.
fn cookie_line(c: &SessionCookie) -> Result<(String, reqwest::Url), String> {
    let url = reqwest::Url::parse(&c.url)
        .ok()
        .filter(|u| u.host_str().is_some())
        .ok_or_else(|| format!("invalid cookie {:?}: its URL {:?} is not an absolute http(s) URL", c.name, c.url))?;
    let bad_name = c.name.is_empty()
        || c.name.contains(|ch: char| ch == '=' || ch == ';' || ch.is_whitespace() || ch.is_control());
    if bad_name {
        return Err(format!(
            "invalid cookie name {:?} for {}: it must be a non-empty token without '=', ';' or spaces",
            c.name, c.url
        ));
    }
    if c.value.contains(|ch: char| ch == ';' || ch.is_control()) {
        return Err(format!(
            "invalid value of cookie {:?} for {}: it must not contain ';' or control characters",
            c.name, c.url
        ));
    }
    Ok((format!("{}={}", c.name, c.value), url))
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

fn build_client(
    jar: &Arc<reqwest::cookie::Jar>,
    proxy: Option<&str>,
    redirects: u32,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let redirect = if redirects == 0 {
        reqwest::redirect::Policy::none()
    } else {
        reqwest::redirect::Policy::limited(redirects as usize)
    };
    let mut b = dc_net::tls::client_builder()
        .cookie_provider(jar.clone())
        .pool_max_idle_per_host(1)
        .redirect(redirect)
        .timeout(timeout)
        .user_agent(concat!("dc-host/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = proxy {
        b = b.proxy(
            reqwest::Proxy::all(p).map_err(|e| format!("invalid proxy {:?}: {e}", dc_core::settings::redact_url(p)))?,
        );
    }
    b.build().map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// The class a plugin sees for a failed exchange.
fn http_class(e: &reqwest::Error) -> ErrorClass {
    match dc_net::ErrorClass::of(e) {
        dc_net::ErrorClass::Timeout => ErrorClass::Timeout,
        dc_net::ErrorClass::Connection => ErrorClass::Connection,
        dc_net::ErrorClass::Body => ErrorClass::Body,
        dc_net::ErrorClass::BodyTooLarge => ErrorClass::BodyTooLarge,
        dc_net::ErrorClass::CircuitOpen => ErrorClass::CircuitOpen,
        _ if e.is_builder() || (e.is_request() && e.url().is_none()) => ErrorClass::InvalidRequest,
        _ => ErrorClass::Other,
    }
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

impl RunShared {
    /// Takes the records one `collect` returned (`{"table", "row"}` objects)
    /// on their way to the run's staging: each table's rows are buffered up
    /// to [`STREAM_BATCH`], then validated and staged (SQLite: the run's
    /// `TEMP` tables; PostgreSQL: `COPY` into a `TEMP` table of the run's
    /// transaction), so a run holds a bounded number of rows in memory
    /// however many it collects. A record for an undeclared table or a bad
    /// record fails the run's writes (nothing of the run is stored).
    pub fn stream_records(&self, records: Vec<Value>) -> Result<(), String> {
        let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if writes.failed.is_some() {
            // nothing of the run will be stored: the records are dropped
            return Ok(());
        }
        let mut full = Vec::new();
        for r in records {
            let (table, row) = match split_record(r) {
                Ok(tr) => tr,
                Err(e) => {
                    writes.failed = Some(e.clone());
                    return Err(e);
                }
            };
            if self.manifest.declared_table(&table).is_none() {
                let e = format!(
                    "record for table {table:?}, which the manifest does not declare; declare it under \"tables\""
                );
                writes.failed = Some(e.clone());
                return Err(e);
            }
            let stream = writes.streams.entry(table.clone()).or_default();
            stream.buffer.push(row);
            if stream.buffer.len() >= STREAM_BATCH {
                full.push(table);
            }
        }
        for table in full {
            if let Err(e) = self.flush_stream(&mut writes, &table) {
                let e = format!("table {table}: {e}");
                writes.failed = Some(e.clone());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Stages the buffered rows of `table` (opening its staging first).
    fn flush_stream(&self, writes: &mut RunWrites, table: &str) -> Result<(), String> {
        let decl = self
            .manifest
            .declared_table(table)
            .ok_or_else(|| format!("table {table:?} is not declared in the plugin manifest"))?;
        let RunWrites { tx, staged, streams, .. } = writes;
        let Some(stream) = streams.get_mut(table) else {
            return Ok(());
        };
        if stream.buffer.is_empty() && stream.staged.is_some() {
            return Ok(());
        }
        let rows = std::mem::take(&mut stream.buffer);
        let count = rows.len() as u64;
        let req = MergeRequest {
            app_id: &self.app_id,
            runtime_id: Some(&self.runtime_id),
            decl,
            full_snapshot: false,
            form: self.form,
            archive_missing: self.archive_missing,
            clock: &dc_core::clock::SYSTEM,
        };
        let staged_now = self.rt.block_on(async {
            match &self.db {
                Database::Sqlite(pool) => {
                    if staged.is_none() {
                        *staged = Some(dc_core::stage::StagedRun::open(pool).await.map_err(|e| e.to_string())?);
                    }
                    let Some(run) = staged.as_mut() else {
                        return Err("no staging for the run's writes".to_string());
                    };
                    let n = match stream.staged {
                        Some(StreamHandle::Sqlite(n)) => n,
                        _ => {
                            let n = run.open_stream(req).await.map_err(|e| e.to_string())?;
                            stream.staged = Some(StreamHandle::Sqlite(n));
                            n
                        }
                    };
                    run.append(n, &rows).await.map_err(|e| e.to_string())
                }
                Database::Postgres(_) => {
                    if tx.is_none() {
                        *tx = Some(self.db.begin_write().await.map_err(|e| e.to_string())?);
                    }
                    let Some(t) = tx.as_mut() else {
                        return Err("no transaction for the run's writes".to_string());
                    };
                    if stream.staged.is_none() {
                        let n = STREAM_IDS.fetch_add(1, Ordering::Relaxed) as usize;
                        let pg = dc_core::stage::PgStream::open(t, n, req).await.map_err(|e| e.to_string())?;
                        stream.staged = Some(StreamHandle::Postgres(pg));
                    }
                    match stream.staged.as_mut() {
                        Some(StreamHandle::Postgres(pg)) => pg.append(t, &rows).await.map_err(|e| e.to_string()),
                        _ => Err("no staging for the table's rows".to_string()),
                    }
                }
            }
        });
        drop(rows);
        staged_now?;
        stream.staged_rows += count;
        // tools and tests can follow staging on the worker's stderr
        // (`DC_LOG=dc_runtime::callbacks=debug`)
        let _g = self.span.enter();
        tracing::debug!(table, staged_rows = stream.staged_rows, "records staged");
        Ok(())
    }

    /// Ends the run's streams once `collect` is over: stages what is still
    /// buffered and closes each table's merge, as a full snapshot when the
    /// table declares one and no item failed in `collect` (a snapshot
    /// missing the rows of failed items would remove them), else
    /// incrementally. The counts add to the run's. Tables that received no
    /// records are not merged at all (a run that collected nothing never
    /// wipes a table).
    pub fn finish_streams(&self) -> Result<(), String> {
        let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &writes.failed {
            return Err(format!("a merge failed ({why})"));
        }
        let failed_items = self.errors.load(Ordering::Relaxed);
        let tables: Vec<String> = writes.streams.keys().cloned().collect();
        for table in tables {
            let done = self.flush_stream(&mut writes, &table).and_then(|()| {
                let declared_full = self
                    .manifest
                    .declared_table(&table)
                    .is_some_and(|d| d.snapshot == dc_plugin_api::SnapshotMode::Full);
                let full = declared_full && failed_items == 0;
                if declared_full && !full {
                    let _g = self.span.enter();
                    tracing::warn!(
                        table,
                        failed_items,
                        "items failed in collect; merging incrementally instead of as a full snapshot"
                    );
                }
                let RunWrites { tx, staged, streams, .. } = &mut *writes;
                let handle = streams.get_mut(&table).and_then(|s| s.staged.take());
                let summary = self.rt.block_on(async {
                    match (handle, staged.as_mut(), tx.as_mut()) {
                        (Some(StreamHandle::Sqlite(n)), Some(run), _) => {
                            run.close_stream(n, full).await.map_err(|e| e.to_string())
                        }
                        (Some(StreamHandle::Postgres(pg)), _, Some(t)) => {
                            pg.finish(t, full).await.map_err(|e| e.to_string())
                        }
                        (None, ..) => Ok(MergeSummary::default()),
                        _ => Err("the table's staged rows are gone".to_string()),
                    }
                })?;
                let _g = self.span.enter();
                tracing::info!(
                    table,
                    staged = matches!(self.db, Database::Sqlite(_)),
                    inserted = summary.inserted,
                    updated = summary.updated,
                    deleted = summary.deleted,
                    unchanged = summary.unchanged,
                    full_snapshot = full,
                    "merged table (records streamed from collect)"
                );
                Ok(summary)
            });
            match done {
                Ok(s) => writes.add(&s),
                Err(e) => {
                    let e = format!("table {table}: {e}");
                    writes.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
        writes.streams.clear();
        Ok(())
    }
}

/// Numbers the PostgreSQL stream tables of a worker (one run per worker).
static STREAM_IDS: AtomicU64 = AtomicU64::new(0);

/// A record as `collect` returns it: `{"table": name, "row": {...}}` (a
/// row that is not an object becomes an empty row, as the SDK does, which
/// the merge then refuses naming the missing key columns).
fn split_record(r: Value) -> Result<(String, Map<String, Value>), String> {
    let Value::Object(mut o) = r else {
        return Err(format!("collect returned a record that is not a {{\"table\", \"row\"}} object: {r}"));
    };
    let table = match o.remove("table") {
        Some(Value::String(t)) => t,
        _ => return Err("collect returned a record without a \"table\" name".to_string()),
    };
    let row = match o.remove("row") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    Ok((table, row))
}

/// The callbacks object handed to the plugin.
pub struct WorkerCallbacks(pub Arc<RunShared>);

impl WorkerCallbacks {
    fn with_session<T>(&self, f: impl FnOnce(&mut Session) -> Result<T, String>) -> Result<T, String> {
        SESSION.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(Session::new());
            }
            match slot.as_mut() {
                Some(s) => f(s),
                None => Err("no HTTP session".into()),
            }
        })
    }

    /// One HTTP exchange on this thread's session: the 1.0 `fetch` and the 1.1
    /// `fetch_http` both end here (1.0 requests have no options). A failure
    /// comes back with its class (the caller tags the message with it).
    fn do_fetch(&self, r: HttpCall) -> Result<FfiHttpResponse, (ErrorClass, String)> {
        let invalid = |m: String| (ErrorClass::InvalidRequest, m);
        let method = reqwest::Method::from_bytes(r.method.as_bytes())
            .map_err(|_| invalid(format!("invalid HTTP method {:?}", r.method)))?;
        let url = r.url;
        let opts = &r.options;
        let redirects = opts.follow_redirects.map_or(FollowRedirects::DEFAULT_MAX, FollowRedirects::max);
        // the request's own proxy (or none) wins over the session's, which wins over the run's
        let request_proxy: Option<Option<&str>> =
            opts.proxy.as_deref().map(|p| if p == NO_PROXY { None } else { Some(p) });
        let timeout = self.0.http_timeout;
        // the run's proxies (dc-proxy) serve a request that chose no proxy of
        // its own (nor none) in a session without one: a lease, judged when
        // it is answered
        let (client, session_headers, auth, own_proxy, lease) = self
            .with_session(|s| {
                let proxy = match request_proxy {
                    Some(p) => p.map(str::to_string),
                    None => s.proxy.clone(),
                };
                let (client, lease) = match (&self.0.proxies, request_proxy.is_none() && proxy.is_none()) {
                    (Some(m), true) => {
                        let lease = m.lease().map_err(|e| e.to_string())?;
                        (s.leased_client(m, &lease, redirects)?, Some(lease))
                    }
                    _ => (s.client(proxy.as_deref(), redirects, timeout)?, None),
                };
                Ok((client, s.headers.clone(), s.auth.clone(), proxy, lease))
            })
            .map_err(|e| (ErrorClass::Proxy, format!("{method} {url}: {e}")))?;
        // the proxy as the request metrics name it: never with its password
        let proxy =
            lease.as_ref().map(|l| l.proxy.clone()).or_else(|| own_proxy.as_deref().map(dc_core::settings::redact_url));
        let mut req = client.request(method.clone(), &url);
        // the request's own headers win over the session's (and its credentials)
        let own = |name: &str| r.headers.iter().any(|h| h.name.as_str().eq_ignore_ascii_case(name));
        match &auth {
            _ if own("authorization") => {}
            Some(SessionAuth::Basic { username, password }) => req = req.basic_auth(username, password.as_deref()),
            Some(SessionAuth::Bearer { token }) => req = req.bearer_auth(token),
            _ => {}
        }
        for (n, v) in session_headers {
            if !own(&n) {
                req = req.header(n, v);
            }
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
        let limit = opts.max_body_bytes;
        let mut retry = self.0.retry.clone();
        if let Some(n) = opts.retries {
            retry.retries = n;
        }
        let limiter = &self.0.limiter;
        // counts the request; records every attempt and asks the domain's circuit first
        let exchange = dc_net::Exchange::start(&self.0.metrics, &self.0.breakers, &url, proxy.as_deref());
        let exchanged = async move {
            let started = std::time::Instant::now();
            let (sent, attempts) = dc_net::send_limited(req, &method, &retry, Some(limiter), &exchange).await;
            let mut resp = sent.map_err(|e| {
                let tries = if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() };
                match e {
                    dc_net::SendError::Http(e) => {
                        (http_class(&e), format!("{method} {url} failed{tries}: {}", dc_net::error_chain(&e)))
                    }
                    dc_net::SendError::Refused(why) => {
                        (ErrorClass::CircuitOpen, format!("{method} {url} refused{tries}: {why}"))
                    }
                    dc_net::SendError::RobotsDenied(why) => {
                        (ErrorClass::RobotsDenied, format!("{method} {url} refused{tries}: {why}"))
                    }
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
            let too_big = |n: u64| {
                (ErrorClass::BodyTooLarge, format!("{method} {url}: the response body exceeds max_body_bytes {n}"))
            };
            if let (Some(n), Some(len)) = (limit, resp.content_length())
                && len > n
            {
                exchange.failed(dc_net::ErrorClass::BodyTooLarge);
                return Err(too_big(n));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| {
                exchange.failed(dc_net::ErrorClass::Body);
                let class = if e.is_timeout() { ErrorClass::Timeout } else { ErrorClass::Body };
                (class, format!("{method} {url}: reading the body failed: {}", dc_net::error_chain(&e)))
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
        };
        let answer = block_on_own(&self.0.rt, exchanged);
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
            clock: &dc_core::clock::SYSTEM,
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
            writes.merged_directly = true;
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
            Err((class, e)) => RErr(tag_error(class, &e).into()),
        }
    }

    fn fetch_http(&self, r: FfiHttpRequest) -> RResult<FfiHttpResponse, RString> {
        let options: RequestOptions = if r.extensions.is_empty() {
            RequestOptions::default()
        } else {
            match serde_json::from_str(r.extensions.as_str()) {
                Ok(o) => o,
                Err(e) => {
                    let msg = format!("{} {}: invalid request options: {e}", r.method, r.url);
                    return RErr(tag_error(ErrorClass::InvalidRequest, &msg).into());
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
            Err((class, e)) => RErr(tag_error(class, &e).into()),
        }
    }

    fn capabilities(&self) -> RString {
        serde_json::to_string(&self.0.host_calls.capabilities()).unwrap_or_default().into()
    }

    fn call(&self, method: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString> {
        let _g = self.0.span.enter();
        let s = &self.0;
        let run = crate::host_call::RunState { metrics: &s.metrics, proxies: s.proxies.as_deref() };
        match s.host_calls.dispatch(&s.rt, &s.manifest, run, method.as_str(), request_json.as_str()) {
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
            self.with_session(|s| s.configure(&cfg))
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
