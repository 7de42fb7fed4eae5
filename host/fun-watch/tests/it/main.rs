//! Integration tests of `#[fun_watch]`: watched sync, async, method and unit
//! functions run with the recorder installed on a temporary SQLite database,
//! and their `function_log` rows are checked.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use dc_core::fun_watch::{self, FunctionLogRow};
use dc_core::{Database, Settings};
use dc_fun_watch::fun_watch;

#[fun_watch]
fn parse_ids(input: &str) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for part in input.split(',') {
        // `?` leaves the closure early: the error must still be recorded
        ids.push(part.trim().parse::<u32>().map_err(|e| format!("bad id {part:?}: {e}"))?);
    }
    Ok(ids)
}

#[fun_watch]
async fn fetch_titles(n: usize) -> Vec<String> {
    tokio::task::yield_now().await;
    (0..n).map(|i| format!("title {i}")).collect()
}

#[fun_watch]
async fn fetch_checked(n: usize) -> Result<Vec<usize>, std::io::Error> {
    tokio::task::yield_now().await;
    if n == 0 {
        return Err(std::io::Error::other("nothing to fetch"));
    }
    Ok((0..n).collect())
}

#[fun_watch]
fn tick() {}

#[fun_watch]
fn first_even(values: &[u32]) -> Option<Vec<u32>> {
    for v in values {
        if v % 2 == 0 {
            return Some(vec![*v]);
        }
    }
    None
}

#[fun_watch]
fn evens<T: Copy + Into<u64>>(values: &[T]) -> impl Iterator<Item = u64> + '_ {
    values.iter().map(|v| (*v).into()).filter(|v| v % 2 == 0)
}

#[derive(Debug)]
struct NotDisplay {
    code: u8,
}

#[fun_watch]
fn debug_only_error(code: u8) -> Result<u8, NotDisplay> {
    if code > 0 { Err(NotDisplay { code }) } else { Ok(0) }
}

struct Store {
    items: Vec<u32>,
}

impl Store {
    #[fun_watch]
    fn count_above(&self, min: u32) -> usize {
        self.items.iter().filter(|v| **v > min).count()
    }

    #[fun_watch(name = "store_push")]
    fn push(&mut self, v: u32) -> &mut u32 {
        self.items.push(v);
        let last = self.items.len() - 1;
        &mut self.items[last]
    }

    #[fun_watch]
    fn name(&self) -> &str {
        "store"
    }

    #[fun_watch]
    async fn total(&self, limit: u64) -> Result<u64, String> {
        tokio::task::yield_now().await;
        let sum: u64 = self.items.iter().map(|v| u64::from(*v)).sum();
        if sum > limit { Err(format!("total {sum} over limit {limit}")) } else { Ok(sum) }
    }

    #[fun_watch]
    fn into_items(self) -> Vec<u32> {
        self.items
    }
}

/// The recorder is global: tests run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Recorder {
    rt: tokio::runtime::Runtime,
    db: Database,
    _dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Recorder {
    fn new() -> Recorder {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = rt.block_on(Database::connect_url(&url, &Settings::default())).expect("connect");
        rt.block_on(db.migrate()).expect("migrate");
        Recorder { rt, db, _dir: dir, _serial: serial }
    }

    fn install(&self) {
        fun_watch::install(self.db.clone(), self.rt.handle().clone(), Some("app-x".into()), Some("run-x".into()))
            .expect("install");
    }

    fn rows(&self, name: &str) -> Vec<FunctionLogRow> {
        fun_watch::flush().expect("flush");
        self.rt.block_on(fun_watch::function_log_rows(&self.db, name)).expect("function_log_rows")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = fun_watch::uninstall();
    }
}

fn this_thread() -> String {
    std::thread::current().name().map(str::to_string).unwrap_or_default()
}

#[test]
fn sync_result_fn_records_rows_and_errors() {
    let r = Recorder::new();
    // not installed: runs, records nothing
    assert_eq!(parse_ids("4"), Ok(vec![4]));
    r.install();
    assert_eq!(parse_ids("1, 2, 3"), Ok(vec![1, 2, 3]));
    let err = parse_ids("1,x").expect_err("x is not a number");
    assert!(err.starts_with("bad id \"x\""), "{err}");

    let rows = r.rows("parse_ids");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let (ok, failed) = (&rows[0], &rows[1]);
    assert_eq!(ok.module_path, "it");
    assert_eq!(ok.function_hash, fun_watch::function_hash("it", "parse_ids"));
    assert_eq!(ok.rows_count, 3);
    assert!(!ok.is_error);
    assert_eq!(ok.error_msg, None);
    assert_eq!(ok.thread_name, this_thread());
    assert_eq!(ok.app_id.as_deref(), Some("app-x"));
    assert_eq!(ok.runtime_id.as_deref(), Some("run-x"));
    assert!(ok.elapsed_ms >= 0.0 && ok.elapsed_ms < 10_000.0, "{}", ok.elapsed_ms);
    assert_eq!(failed.rows_count, 0);
    assert!(failed.is_error);
    assert_eq!(failed.error_msg.as_deref(), Some(err.as_str()));
    let functions = r.rt.block_on(fun_watch::app_functions(&r.db)).expect("app_functions");
    assert_eq!(functions.iter().filter(|f| f.function_name == "parse_ids").count(), 1);
}

#[test]
fn calls_from_threads_get_one_row_each_with_their_thread_name() {
    let r = Recorder::new();
    r.install();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("scraper-{i}"))
                .spawn(move || parse_ids(&vec!["7"; i + 1].join(",")))
                .expect("spawn")
        })
        .collect();
    for h in handles {
        h.join().expect("thread panicked").expect("parses");
    }
    let rows = r.rows("parse_ids");
    let got: BTreeSet<(String, i64)> = rows.iter().map(|row| (row.thread_name.clone(), row.rows_count)).collect();
    let want: BTreeSet<(String, i64)> = (0..3).map(|i| (format!("scraper-{i}"), i + 1)).collect();
    assert_eq!(got, want);
}

#[test]
fn async_fns_and_methods_are_recorded() {
    let r = Recorder::new();
    r.install();
    let titles = r.rt.block_on(fetch_titles(4));
    assert_eq!(titles.len(), 4);
    assert_eq!(r.rt.block_on(fetch_checked(2)).expect("two").len(), 2);
    let err = r.rt.block_on(fetch_checked(0)).expect_err("zero fails");

    let mut store = Store { items: vec![1, 5, 9] };
    assert_eq!(store.count_above(2), 2);
    *store.push(20) += 1;
    assert_eq!(store.items, vec![1, 5, 9, 21]);
    assert_eq!(store.name(), "store");
    assert_eq!(r.rt.block_on(store.total(100)), Ok(36));
    assert_eq!(r.rt.block_on(store.total(10)), Err("total 36 over limit 10".to_string()));
    assert_eq!(store.into_items().len(), 4);

    let rows = r.rows("fetch_titles");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].rows_count, 4);
    assert!(!rows[0].is_error);

    let rows = r.rows("fetch_checked");
    assert_eq!(rows.iter().map(|row| row.rows_count).collect::<Vec<_>>(), vec![2, 0]);
    assert_eq!(rows.iter().map(|row| row.is_error).collect::<Vec<_>>(), vec![false, true]);
    assert_eq!(rows[1].error_msg.as_deref(), Some(err.to_string().as_str()));
    assert_eq!(rows[1].error_msg.as_deref(), Some("nothing to fetch"));

    let rows = r.rows("count_above");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].rows_count, 2, "a usize result counts as rows");

    let rows = r.rows("store_push");
    assert_eq!(rows.len(), 1, "recorded under the custom name");
    assert_eq!(rows[0].function_hash, fun_watch::function_hash("it", "store_push"));
    assert_eq!(rows[0].rows_count, 0);
    assert!(r.rows("push").is_empty());

    assert_eq!(r.rows("name").len(), 1);

    let rows = r.rows("total");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].rows_count, 36, "a u64 Ok value counts as rows");
    assert!(rows[1].is_error);
    assert_eq!(rows[1].error_msg.as_deref(), Some("total 36 over limit 10"));

    let rows = r.rows("into_items");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].rows_count, 4);
}

#[test]
fn unit_option_generic_and_debug_error_fns_are_recorded() {
    let r = Recorder::new();
    r.install();
    tick();
    tick();
    assert_eq!(first_even(&[3, 8, 10]), Some(vec![8]));
    assert_eq!(first_even(&[3]), None);
    assert_eq!(evens(&[1u32, 2, 4]).collect::<Vec<_>>(), vec![2, 4]);
    assert_eq!(debug_only_error(0).map_err(|e| e.code), Ok(0));
    assert_eq!(debug_only_error(7).map_err(|e| e.code), Err(7));

    let rows = r.rows("tick");
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row.rows_count == 0 && !row.is_error && row.error_msg.is_none()));

    let rows = r.rows("first_even");
    assert_eq!(rows.iter().map(|row| row.rows_count).collect::<Vec<_>>(), vec![1, 0], "early return is recorded");
    assert!(rows.iter().all(|row| !row.is_error));

    let rows = r.rows("evens");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].rows_count, 0, "an opaque iterator has no row count");

    let rows = r.rows("debug_only_error");
    assert_eq!(rows.len(), 2);
    assert!(!rows[0].is_error);
    assert!(rows[1].is_error);
    assert_eq!(rows[1].error_msg.as_deref(), Some("NotDisplay { code: 7 }"));
}

#[test]
fn nothing_is_recorded_after_uninstall() {
    let r = Recorder::new();
    r.install();
    tick();
    fun_watch::uninstall().expect("uninstall");
    tick();
    tick();
    assert_eq!(r.rows("tick").len(), 1);
    assert_eq!(fun_watch::stats().written, 1);
}
