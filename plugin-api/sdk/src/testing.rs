//! Test support for plugin authors: run a [`Scraper`] through its whole
//! lifecycle in-process, without the host, with HTTP answered by a function you
//! supply (canned pages or fixture files). Merges and logs (with level and
//! structured context) are recorded so a test can assert on them.

use std::sync::{Arc, Mutex};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, RResult, RStr, RString},
};
use serde_json::{Map, Value};

use dc_plugin_api::MergeSummary;
use dc_plugin_api::abi::{
    FfiHeader, FfiHttpRequest, FfiHttpResponse, FfiLogLevel, FfiRequest, FfiResponse, HostCallbacks, HostCallbacks_TO,
};
use dc_plugin_api::wire::{RequestOptions, ResponseInfo, severity};

use crate::sdk::{Context, LogLevel, Request, Response, Result, Scraper, adapt, guarded};

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
    /// Log messages, in order.
    pub logs: Vec<String>,
    /// Log records, in order: level, message and structured context (the JSON
    /// the plugin passed; `Value::Null` when it passed none).
    pub log_records: Vec<(LogLevel, String, Value)>,
    /// Errors from `collect`, one per failed item.
    pub collect_errors: Vec<String>,
}

#[derive(Default)]
struct Recorded {
    merges: Vec<MergeCall>,
    log_records: Vec<(LogLevel, String, Value)>,
}

struct TestCallbacks {
    fetch: Arc<Fetcher>,
    args: String,
    rec: Arc<Mutex<Recorded>>,
    manifest: dc_plugin_api::Manifest,
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

    fn answer(&self, req: &Request) -> std::result::Result<Response, String> {
        (self.fetch)(req).map_err(|e| e.to_string())
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
        let req = Request {
            method: r.method.into_string(),
            url: r.url.into_string(),
            headers: headers_in(r.headers),
            body: r.body.into_vec(),
            timeout_ms: r.timeout_ms,
            options: RequestOptions::default(),
        };
        match self.answer(&req) {
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
                Err(e) => return RErr(format!("invalid request options: {e}").into()),
            }
        };
        let req = Request {
            method: r.method.into_string(),
            url: r.url.into_string(),
            headers: headers_in(r.headers),
            body: r.body.into_vec(),
            timeout_ms: r.timeout_ms,
            options,
        };
        match self.answer(&req) {
            Ok(resp) => {
                if let Some(limit) = req.options.max_body_bytes
                    && resp.body.len() as u64 > limit
                {
                    return RErr(
                        format!("{} {}: the response body exceeds max_body_bytes {limit}", req.method, req.url).into(),
                    );
                }
                let mut info = ResponseInfo::default();
                info.elapsed_ms = resp.elapsed_ms;
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
        RString::from(dc_plugin_api::capability::INTERFACE_1_0_JSON)
    }

    fn log_at(&self, level: u8, message: RStr<'_>, context_json: RStr<'_>) {
        self.record_log(LogLevel::from_severity(level), message, context_json);
    }

    fn configure_session(&self, _config_json: RStr<'_>) -> RResult<(), RString> {
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

    /// Runs `new → prepare_list → collect (each item) → store → cleanup`
    /// through the same ABI adapter and panic guard the host uses, so a panic in
    /// any step (including `new`) comes back as an error containing
    /// "plugin panicked".
    pub fn run<S: Scraper>(&self) -> Result<TestRun> {
        // the manifest is checked as the host checks it at registration
        let manifest = crate::sdk::stamped_manifest::<S>();
        let problems = manifest.validate();
        if !problems.is_empty() {
            return Err(crate::sdk::Error::msg(format!("the manifest is invalid: {}", problems.join("; "))));
        }
        let rec = Arc::new(Mutex::new(Recorded::default()));
        let callbacks =
            TestCallbacks { fetch: self.fetch.clone(), args: self.args.to_string(), rec: rec.clone(), manifest };
        let ctx = Context::from_host(HostCallbacks_TO::from_value(callbacks, TD_Opaque));
        let scraper = into(guarded(|| S::new(&ctx)))?;
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
        run.logs = rec.log_records.iter().map(|(_, message, _)| message.clone()).collect();
        run.log_records = rec.log_records;
        Ok(run)
    }
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

    #[test]
    fn undeclared_table_is_an_error() {
        let err = run("undeclared").expect_err("undeclared table is refused");
        assert!(err.message().contains("\"nope\"") && err.message().contains("declare it"), "{err}");
    }
}
