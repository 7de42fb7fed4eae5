//! Test support for plugin authors: run a [`Scraper`] through its whole
//! lifecycle in-process, without the host, with HTTP answered by a function you
//! supply (canned pages or fixture files). Merges and logs are recorded so a
//! test can assert on them.

use std::sync::{Arc, Mutex};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, RResult, RStr, RString},
};
use serde_json::{Map, Value};

use crate::abi::{FfiHeader, FfiLogLevel, FfiRequest, FfiResponse, HostCallbacks, HostCallbacks_TO};
use crate::sdk::{Context, MergeSummary, Request, Response, Result, Scraper, adapt};

type Fetcher = dyn Fn(&Request) -> Result<Response> + Send + Sync;

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
    /// Log messages.
    pub logs: Vec<String>,
    /// Errors from `collect`, one per failed item.
    pub collect_errors: Vec<String>,
}

#[derive(Default)]
struct Recorded {
    merges: Vec<MergeCall>,
    logs: Vec<String>,
}

struct TestCallbacks {
    fetch: Arc<Fetcher>,
    args: String,
    rec: Arc<Mutex<Recorded>>,
}

fn lock(rec: &Mutex<Recorded>) -> std::sync::MutexGuard<'_, Recorded> {
    rec.lock().unwrap_or_else(|p| p.into_inner())
}

impl HostCallbacks for TestCallbacks {
    fn fetch(&self, r: FfiRequest) -> RResult<FfiResponse, RString> {
        let req = Request {
            method: r.method.into_string(),
            url: r.url.into_string(),
            headers: r.headers.into_iter().map(|h| (h.name.into_string(), h.value.into_string())).collect(),
            body: r.body.into_vec(),
            timeout_ms: r.timeout_ms,
        };
        match (self.fetch)(&req) {
            Ok(resp) => ROk(FfiResponse {
                status: resp.status,
                url: resp.url.into(),
                headers: resp
                    .headers
                    .into_iter()
                    .map(|(n, v)| FfiHeader { name: n.into(), value: v.into() })
                    .collect(),
                body: resp.body.into(),
            }),
            Err(e) => RErr(e.to_string().into()),
        }
    }

    fn configure_session(&self, _config_json: RStr<'_>) -> RResult<(), RString> {
        ROk(())
    }

    fn merge(&self, table: RStr<'_>, rows_json: RStr<'_>, full_snapshot: bool) -> RResult<RString, RString> {
        let rows: Vec<Map<String, Value>> = match serde_json::from_str(rows_json.as_str()) {
            Ok(r) => r,
            Err(e) => return RErr(format!("rows are not a JSON array of objects: {e}").into()),
        };
        let summary = MergeSummary { inserted: rows.len() as u64, ..Default::default() };
        lock(&self.rec).merges.push(MergeCall { table: table.to_string(), rows, full_snapshot });
        ROk(serde_json::to_string(&summary).unwrap_or_default().into())
    }

    fn log(&self, _level: FfiLogLevel, message: RStr<'_>, _context_json: RStr<'_>) {
        lock(&self.rec).logs.push(message.to_string());
    }

    fn progress(&self, _current: u64, _total: u64, _errors: u64) {}

    fn args_json(&self) -> RString {
        self.args.clone().into()
    }

    fn should_stop(&self) -> bool {
        false
    }
}

/// Runs scrapers in-process for tests.
pub struct TestHost {
    fetch: Arc<Fetcher>,
    args: Value,
}

impl TestHost {
    /// A test host whose HTTP requests are answered by `fetch`.
    pub fn new(fetch: impl Fn(&Request) -> Result<Response> + Send + Sync + 'static) -> TestHost {
        TestHost { fetch: Arc::new(fetch), args: Value::Object(Map::new()) }
    }

    /// Sets the runtime arguments.
    pub fn args(mut self, args: Value) -> TestHost {
        self.args = args;
        self
    }

    /// Runs `prepare_list → collect (each item) → store → cleanup` through the
    /// same ABI adapter the host uses (so panics come back as errors too).
    pub fn run<S: Scraper>(&self) -> Result<TestRun> {
        let rec = Arc::new(Mutex::new(Recorded::default()));
        let callbacks = TestCallbacks { fetch: self.fetch.clone(), args: self.args.to_string(), rec: rec.clone() };
        let ctx = Context::from_host(HostCallbacks_TO::from_value(callbacks, TD_Opaque));
        let scraper = S::new(&ctx)?;
        let mut obj = adapt(scraper, ctx);
        let mut run = TestRun::default();
        let outcome = (|| -> Result<()> {
            let items: Vec<Value> = serde_json::from_str(&into(obj.prepare_list())?)?;
            let mut records = Vec::new();
            for item in &items {
                match into(obj.collect(RStr::from_str(&item.to_string()))) {
                    Ok(json) => records.extend(serde_json::from_str::<Vec<Value>>(&json)?),
                    Err(e) => run.collect_errors.push(e.to_string()),
                }
            }
            run.items = items;
            into(obj.store(RStr::from_str(&Value::Array(records).to_string())))?;
            Ok(())
        })();
        let cleaned = into(obj.cleanup());
        outcome?;
        cleaned?;
        let rec = std::mem::take(&mut *lock(&rec));
        run.merges = rec.merges;
        run.logs = rec.logs;
        Ok(run)
    }
}

fn into<T>(r: RResult<T, RString>) -> Result<T> {
    r.into_result().map_err(|e| crate::sdk::Error::msg(e))
}

impl TestRun {
    /// All rows merged into `table`.
    pub fn rows(&self, table: &str) -> Vec<&Map<String, Value>> {
        self.merges.iter().filter(|m| m.table == table).flat_map(|m| m.rows.iter()).collect()
    }
}
