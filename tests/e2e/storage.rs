//! Storage safety end to end: a run stores all of its tables or none (a second
//! table that fails, a plugin that ignores a failed merge); a registration that
//! fails part-way leaves no table, app, `app_db_objects` row or store file;
//! a database file deleted under a running worker fails the run instead of
//! reporting SUCCESS into an unlinked file; a large merge leaves other apps' runs
//! free to store (SQLite stages it without the write lock). On SQLite and PostgreSQL.

use std::process::Stdio;
use std::time::Duration;

use dc_e2e::{ApiVariant, Fifo, Host, dir_snapshot, plugin_lib, tiny_plugin};
use serde_json::{Value, json};

const MISBEHAVE: &str = "test/fixtures/misbehave";
/// Bounds a broken test only; every wait below ends on an event.
const LIMIT: Duration = Duration::from_secs(60);

pub(crate) fn with_misbehave(host: Host) -> Host {
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    host
}

pub(crate) fn run(host: &Host, args: Value) -> Value {
    let out = host.run(&["run", MISBEHAVE, "--args", &args.to_string(), "--threads", "1", "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no run JSON ({e}); stderr:\n{}", String::from_utf8_lossy(&out.stderr)))
}

pub(crate) fn rows(host: &Host, table: &str) -> Vec<Value> {
    host.json(&["data", "head", table, "--limit", "100", "--json"]).as_array().cloned().unwrap_or_default()
}

fn all_or_nothing(host: Host) {
    let host = with_misbehave(host);
    let ok = run(&host, json!({"mode": "ok", "items": 3}));
    assert_eq!(ok["status"], "SUCCESS", "{ok}");
    let before = rows(&host, "misbehave_rows");
    assert_eq!(before.len(), 3);
    // the first table (misbehave_rows, 4 items: one new row) merges, the
    // second fails: the first must be as it was
    let r = run(&host, json!({"mode": "second_bad", "items": 4}));
    assert_eq!(r["status"], "FAILED", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("misbehave_second")
            && reason.contains("field \"note\"")
            && reason.contains("the run's merges were rolled back, nothing was stored"),
        "{reason}"
    );
    assert_eq!(rows(&host, "misbehave_rows"), before, "the first table is as it was");
    assert!(rows(&host, "misbehave_second").is_empty());
    assert_eq!(
        (r["inserted"].as_i64(), r["updated"].as_i64()),
        (Some(0), Some(0)),
        "no counts for rolled-back rows: {r}"
    );
    // a plugin that ignores the failed merge and returns Ok stores nothing either
    let r = run(&host, json!({"mode": "swallow", "items": 4}));
    assert_eq!(r["status"], "FAILED", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("a merge failed (table misbehave_second") && reason.contains("nothing of this run was stored"),
        "{reason}"
    );
    assert_eq!(rows(&host, "misbehave_rows"), before);
    // no change feed for a rolled-back run
    let shown = host.json(&["runs", "show", r["runtime_id"].as_str().expect("id"), "--changes", "--json"]);
    assert_eq!(shown["changes"].as_array().map(Vec::len), Some(0), "{shown}");
}

#[test]
fn a_run_stores_all_its_tables_or_none_on_sqlite() {
    all_or_nothing(Host::sqlite());
}

#[test]
fn a_run_stores_all_its_tables_or_none_on_postgres() {
    all_or_nothing(Host::postgres());
}

/// A registration that fails after it created the app's table (here: the
/// database refuses the version row, through a trigger) leaves nothing.
fn refused_registration_leaves_nothing(host: Host, fail_sql: &str, unfail_sql: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tiny = tiny_plugin("atomic", ApiVariant::Workspace, &[("DC_FIXTURE_TABLE", "atomic_rows")], dir.path());
    host.ok(&["db", "migrate"]);
    host.db_exec(fail_sql);
    host.install(&tiny, "tiny.so");
    let store = host.dir.path().join("store");
    let store_before = dir_snapshot(&store);
    let (code, out) = host.fails(&["reload"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("injected registration failure"), "{out}");
    let count = |sql: &str| host.db_rows(sql).first().cloned().unwrap_or_default();
    assert_eq!(count("SELECT COUNT(*) FROM apps"), "0", "no app row");
    assert_eq!(count("SELECT COUNT(*) FROM app_db_objects WHERE object_name = 'atomic_rows'"), "0");
    assert_eq!(count("SELECT COUNT(*) FROM dc_plugin_tables"), "0");
    let tables = match host.database_url().starts_with("sqlite:") {
        true => "SELECT COUNT(*) FROM sqlite_master WHERE name = 'atomic_rows'",
        false => "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'atomic_rows'",
    };
    assert_eq!(count(tables), "0", "no table");
    assert_eq!(dir_snapshot(&store), store_before, "no store file");
    // once the database accepts it, the same file registers
    host.db_exec(unfail_sql);
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered test/fixtures/tiny 1.0.0"), "{out}");
    assert_eq!(count(tables), "1");
}

#[test]
fn a_refused_registration_leaves_nothing_on_sqlite() {
    refused_registration_leaves_nothing(
        Host::sqlite(),
        "CREATE TRIGGER refuse BEFORE INSERT ON plugin_versions BEGIN SELECT RAISE(ABORT, 'injected registration failure'); END",
        "DROP TRIGGER refuse",
    );
}

#[test]
fn a_refused_registration_leaves_nothing_on_postgres() {
    refused_registration_leaves_nothing(
        Host::postgres_empty(),
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected registration failure'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON plugin_versions FOR EACH ROW EXECUTE FUNCTION refuse()",
        "DROP TRIGGER refuse ON plugin_versions",
    );
}

#[test]
fn a_database_file_deleted_under_a_run_fails_the_run() {
    let host = with_misbehave(Host::sqlite());
    let (ready, go) = (Fifo::new(), Fifo::new());
    let args =
        json!({"mode": "wait", "at": "store", "items": 2, "ready_fifo": ready.as_str(), "continue_fifo": go.as_str()});
    let child = host
        .command(&["run", MISBEHAVE, "--args", &args.to_string(), "--threads", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dc-host run starts");
    let line = ready.read_line(LIMIT);
    assert!(line.starts_with("ready "), "{line}");
    let db = host.dir.path().join("dc-host.db");
    for suffix in ["", "-wal", "-shm"] {
        let f = format!("{}{suffix}", db.display());
        if std::path::Path::new(&f).exists() {
            std::fs::remove_file(&f).expect("delete the database file");
        }
    }
    go.release();
    let out = child.wait_with_output().expect("dc-host run ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let gone = "is gone (No such file or directory (os error 2)); it was deleted or moved while this run was running, so the run's rows were not stored";
    match serde_json::from_slice::<Value>(&out.stdout) {
        // the supervisor still had a connection to the deleted file: it reports the run
        // (the worker opens its connections lazily: when its log sink or merge
        // needs a new one after the deletion, it fails saying the file cannot
        // be opened any more, and the supervisor quotes that)
        Ok(r) => {
            assert_eq!(r["status"], "FAILED", "{r}\n{stderr}");
            let reason = r["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains(gone)
                    || reason.contains("the SQLite database file cannot be opened any more")
                        && reason.contains("it was deleted or moved"),
                "{r}"
            );
        }
        // it had to open a new one: it says the file is gone (and the worker's
        // reason shows too when the supervisor relayed its stderr before failing)
        Err(_) => {
            assert!(!out.status.success(), "{stderr}");
            assert!(
                stderr.contains("the SQLite database file cannot be opened any more") || stderr.contains(gone),
                "{stderr}"
            );
            assert!(!stderr.contains("SUCCESS"), "{stderr}");
        }
    }
    assert!(!db.exists(), "no empty database was created in its place");
}

/// Holds SQLite's write lock on the host's database (`BEGIN IMMEDIATE` on a
/// connection of the test's own) until released, like a process in the
/// middle of a long commit.
struct WriteLock {
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl WriteLock {
    fn take(host: &Host) -> WriteLock {
        let url = host.database_url();
        let (locked, is_locked) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let mut c = sqlx::SqliteConnection::connect(&url).await.expect("open the host's SQLite database");
                sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut c).await.expect("take the write lock");
                locked.send(()).expect("the test waits");
                let _ = released.recv();
                sqlx::raw_sql("COMMIT").execute(&mut c).await.expect("release the write lock");
            });
        });
        is_locked.recv_timeout(LIMIT).expect("the write lock is taken");
        WriteLock { release, thread }
    }

    fn release(self) {
        let _ = self.release.send(());
        self.thread.join().expect("the lock holder ends");
    }
}

/// Three tiny apps (one table each, one row per run) beside misbehave.
fn with_small_apps(host: Host, names: &[&str]) -> Host {
    let dir = tempfile::tempdir().expect("tempdir");
    for n in names {
        let table = format!("{n}_rows");
        let p =
            tiny_plugin(n, ApiVariant::Workspace, &[("DC_FIXTURE_NAME", n), ("DC_FIXTURE_TABLE", &table)], dir.path());
        host.install(&p, &format!("{n}.so"));
    }
    with_misbehave(host)
}

/// Starts `dc-host run` of each app; each run's output (with its stderr)
/// arrives on the returned channel when it ends.
fn start_small_runs(host: &Host, names: &[&'static str]) -> std::sync::mpsc::Receiver<(&'static str, Value, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    for &n in names {
        let child = host
            .command(&["run", &format!("test/fixtures/{n}"), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dc-host run starts");
        let tx = tx.clone();
        std::thread::spawn(move || {
            let out = child.wait_with_output().expect("a small run ends");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let r = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| json!({"no run JSON": e.to_string()}));
            let _ = tx.send((n, r, stderr));
        });
    }
    rx
}

/// SQLite has one writer at a time. While another process holds the write
/// lock (a run applying its merges, here the test itself), other apps' runs
/// wait, and say so, instead of failing with "database is locked" once the
/// busy timeout (here 1 s) has passed: they wait as long as their time limit
/// allows.
#[test]
fn sqlite_writers_wait_for_a_run_holding_the_lock_instead_of_failing() {
    let mut host = Host::sqlite();
    host.env.push(("DC_DATABASE_BUSY_TIMEOUT_SECS".into(), "1".into()));
    let names = ["lock_a", "lock_b", "lock_c"];
    let host = with_small_apps(host, &names);
    let lock = WriteLock::take(&host);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut small = Vec::new();
    for n in names {
        let mut child = host
            .command(&["run", &format!("test/fixtures/{n}"), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dc-host run starts");
        let stderr = child.stderr.take().expect("stderr");
        let tx = tx.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = String::new();
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("waiting for the database") {
                    let _ = tx.send(n);
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        small.push((n, child, reader));
    }
    // every small run says it waits (an event, not a timer) before the lock is released
    let mut waiting: Vec<&str> =
        (0..names.len()).map(|_| rx.recv_timeout(LIMIT).expect("each run says it waits for the database")).collect();
    waiting.sort();
    waiting.dedup();
    assert_eq!(waiting.len(), names.len(), "{waiting:?}");
    lock.release();
    for (n, child, reader) in small {
        let out = child.wait_with_output().expect("a small run ends");
        let stderr = reader.join().expect("stderr reader");
        let r: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{n}: no run JSON ({e}): {stderr}"));
        assert_eq!((r["status"].as_str(), r["inserted"].as_i64()), (Some("SUCCESS"), Some(1)), "{n}: {r}\n{stderr}");
        assert!(!stderr.contains("database is locked"), "{stderr}");
    }
}

/// Items × rows of the large merge: 20,000 rows of about 200 bytes (100,000
/// took 7 minutes per backend in a debug build on a loaded machine); the
/// ordering below does not depend on the size (the large run is held between
/// its merge and its end by a named pipe), and 1M rows are measured in
/// `scripts/bench-staged-merge.sh`.
const LARGE: (u64, u64) = (10, 2_000);
/// Bounds the large run's steps in a broken test only.
const LARGE_LIMIT: Duration = Duration::from_secs(600);

/// One large merge and three small runs of other apps at once: the large run
/// merges (on SQLite: stages, without the write lock) and is then held before
/// its end; the small runs must all store and end SUCCESS meanwhile — while
/// the large run is RUNNING with none of its rows stored — and the large run
/// then stores every row. Had the large run held SQLite's write lock from its
/// merge on (as before staging), the small runs could not end before it was
/// released, and the test fails at `recv_timeout`.
fn large_merge_beside_small_runs(host: Host) {
    let names = ["small_a", "small_b", "small_c"];
    let host = with_small_apps(host, &names);
    let (ready, go) = (Fifo::new(), Fifo::new());
    let (items, per_item) = LARGE;
    let args = json!({"mode": "hold", "items": items, "rows": per_item, "ready_fifo": ready.as_str(), "continue_fifo": go.as_str()});
    let large = host
        .command(&["run", MISBEHAVE, "--args", &args.to_string(), "--threads", "2", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dc-host run starts");
    let line = ready.read_line(LARGE_LIMIT);
    assert!(line.starts_with("ready "), "the large run merged and waits: {line}");
    let large_id = host.db_rows("SELECT runtime_id FROM runtime WHERE status = 'RUNNING'");
    assert_eq!(large_id.len(), 1, "only the large run is running: {large_id:?}");
    let large_id = large_id[0].clone();

    let ended = start_small_runs(&host, &names);
    for _ in names {
        let (n, r, stderr) = ended.recv_timeout(LIMIT).unwrap_or_else(|_| {
            go.release();
            panic!("the small runs did not end while the large run held its merge: it holds the write lock")
        });
        assert_eq!((r["status"].as_str(), r["inserted"].as_i64()), (Some("SUCCESS"), Some(1)), "{n}: {r}\n{stderr}");
        assert!(!stderr.contains("database is locked"), "{stderr}");
    }
    // the order of events, from the records: every small run has ended and
    // stored its row while the large run is still running, none of its rows stored
    let status = |id: &str| host.db_rows(&format!("SELECT status FROM runtime WHERE runtime_id = '{id}'"));
    assert_eq!(status(&large_id), ["RUNNING"]);
    assert_eq!(host.db_rows("SELECT COUNT(*) FROM misbehave_rows"), ["0"], "nothing of the large run is stored yet");
    let small_ended =
        host.db_rows("SELECT COUNT(*) FROM runtime WHERE status = 'SUCCESS' AND ended_at IS NOT NULL AND app_id <> (SELECT app_id FROM runtime WHERE runtime_id = '{large_id}')".replace("{large_id}", &large_id).as_str());
    assert_eq!(small_ended, ["3"]);
    for n in names {
        assert_eq!(host.db_rows(&format!("SELECT COUNT(*) FROM {n}_rows")), ["1"], "{n}");
    }

    go.release();
    let out = large.wait_with_output().expect("the large run ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no run JSON ({e}): {stderr}"));
    let total = (items * per_item) as i64;
    assert_eq!((r["status"].as_str(), r["inserted"].as_i64()), (Some("SUCCESS"), Some(total)), "{r}\n{stderr}");
    assert!(!stderr.contains("database is locked"), "{stderr}");
    assert_eq!(host.db_rows("SELECT COUNT(*) FROM misbehave_rows"), [total.to_string()]);
    assert_eq!(
        host.db_rows("SELECT CAST(SUM(key_count) AS BIGINT) FROM run_changes WHERE op = 'insert' AND table_name = 'misbehave_rows'"),
        [total.to_string()]
    );
    let note = host.db_rows("SELECT note FROM misbehave_rows WHERE id = 12345");
    assert_eq!(note.len(), 1);
    assert!(note[0].starts_with("row        12345 ---") && note[0].len() > 190, "{note:?}");
    // SQLite staged the merge: its log says so, before the run's end
    if host.database_url().starts_with("sqlite:") {
        let logs = host.json(&["runs", "show", &large_id, "--logs", "--json"]);
        let logs = logs["logs"].as_array().cloned().unwrap_or_default();
        let staged = logs.iter().position(|l| {
            l["message"].as_str().is_some_and(|m| m.starts_with("merge staged")) && l["context"]["inserted"] == total
        });
        let ended = logs.iter().position(|l| l["message"] == "run ended");
        assert!(staged.is_some(), "{logs:?}");
        if let (Some(s), Some(e)) = (staged, ended) {
            assert!(s < e, "{logs:?}");
        }
    }
}

#[test]
fn a_large_merge_leaves_other_apps_runs_free_on_sqlite() {
    large_merge_beside_small_runs(Host::sqlite());
}

#[test]
fn a_large_merge_leaves_other_apps_runs_free_on_postgres() {
    large_merge_beside_small_runs(Host::postgres());
}
