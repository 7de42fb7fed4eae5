//! Tests with separate OS processes, made by re-invoking this test binary on an
//! ignored child test (`--exact procs::<child> --ignored`) with environment
//! variables telling it what to do:
//!
//! - several writer processes on ONE SQLite file at once must never fail with
//!   "database is locked", and every row and log record must arrive;
//! - a process SIGKILLed in the middle of a big merge leaves the table holding
//!   exactly the old snapshot or exactly the new one, never a mix.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use dc_core::enums::RunStatus;
use dc_core::logs::LogRow;
use dc_core::{AppId, Database, RuntimeId, Settings, apps, logs, merge, runs};
use dc_plugin_api::TableDecl;
use serde_json::{Map, Value, json};
use sqlx::{Connection, Row};

use crate::common::{TestDb, canonical, child_command, counters, decl, feed, live, new_app, new_run, obj, req};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// A running child process; killed (SIGKILL) and reaped if dropped early.
struct Running {
    what: String,
    child: Child,
    lines: Receiver<String>,
    stdout_seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    fn start(what: String, mut cmd: std::process::Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Running { what, child, lines, stdout_seen: Vec::new(), stderr: Some(stderr) }
    }

    /// Waits for a stdout line containing `want` (libtest may prefix it with `test name ... `).
    fn wait_line(&mut self, want: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(want);
                    self.stdout_seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for exit (killing it after `timeout`); returns status, stdout, stderr.
    /// The end of the child's stdout (EOF, when it exits) is the event waited
    /// on; `timeout` only bounds a broken child.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => self.stdout_seen.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    eprintln!("{} did not finish within {timeout:?}; killed", self.what);
                    self.stdout_seen.extend(self.lines.iter());
                    break;
                }
            }
        }
        let status = self.child.wait().expect("wait");
        let err = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        (status, self.stdout_seen.join("\n"), err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// concurrent writers on one SQLite file

const WRITER_TEST: &str = "procs::writer_child";
const WRITERS: usize = 4;
const ROUNDS: usize = 30;
const ROWS: usize = 200;
const LOG_BATCH: usize = 20;

fn writer_decl(w: usize) -> TableDecl {
    decl(json!({
        "name": format!("writer_{w}"), "key": ["id"],
        "columns": [
            {"name": "id", "type": "integer"},
            {"name": "v", "type": "text"},
            {"name": "w", "type": "integer"}
        ]
    }))
}

/// Round `round` of writer `w`: a sliding window of ids with shifting values,
/// so every round inserts, updates, deletes and keeps rows.
fn writer_snapshot(w: usize, round: usize) -> Vec<Map<String, Value>> {
    (round * 5..round * 5 + ROWS)
        .map(|id| obj(json!({"id": id, "v": format!("v{}", (id * (round + 1) + w) % 4), "w": w})))
        .collect()
}

/// What the run counters of writer `w` must add up to.
fn writer_expected_counters(w: usize) -> [i64; 4] {
    let mut state: BTreeMap<i64, String> = BTreeMap::new();
    let mut c = [0i64; 4];
    for round in 0..ROUNDS {
        let next: BTreeMap<i64, String> = writer_snapshot(w, round)
            .into_iter()
            .map(|r| (r["id"].as_i64().expect("id"), r["v"].as_str().expect("v").to_string()))
            .collect();
        for (id, v) in &next {
            match state.get(id) {
                None => c[0] += 1,
                Some(old) if old != v => c[1] += 1,
                Some(_) => c[3] += 1,
            }
        }
        c[2] += state.keys().filter(|id| !next.contains_key(id)).count() as i64;
        state = next;
    }
    c
}

#[test]
#[ignore = "child process of concurrent_sqlite_writers_in_separate_processes"]
fn writer_child() {
    let Ok(url) = std::env::var("DC_IT_WRITER_DB") else { return };
    let w: usize = env("DC_IT_WRITER_IDX").parse().expect("index");
    let rid = RuntimeId::from(env("DC_IT_WRITER_RID"));
    let app = AppId::from(env("DC_IT_WRITER_APP"));
    if let Err(e) = runtime().block_on(writer_main(&url, w, &rid, &app)) {
        panic!("writer {w} failed: {e}");
    }
    println!("DC_IT_WRITER_DONE {w}");
}

async fn writer_main(url: &str, w: usize, rid: &RuntimeId, app: &AppId) -> Result<(), BoxError> {
    let db = Database::connect_url(url, &Settings::default()).await?;
    runs::mark_started(&db, rid, std::process::id()).await?;
    let d = writer_decl(w);
    merge::ensure_table(&db, app, &d).await?;
    let merges = async {
        for round in 0..ROUNDS {
            merge::merge(&db, req(app, Some(rid), &d), &writer_snapshot(w, round)).await?;
            runs::set_progress(&db, rid, round as i64 + 1, ROUNDS as i64, 0).await?;
            // a row every writer updates
            apps::set_progress(&db, app, round as i64, ROUNDS as i64, w as i64).await?;
        }
        Ok::<(), BoxError>(())
    };
    let log_writes = async {
        for round in 0..ROUNDS {
            let rows: Vec<LogRow> = (0..LOG_BATCH)
                .map(|i| LogRow {
                    ts: Utc::now(),
                    level: "INFO".into(),
                    target: "it::writer".into(),
                    message: format!("writer {w} round {round} record {i}"),
                    app_id: Some(app.clone()),
                    runtime_id: Some(rid.clone()),
                    context: sqlx::types::Json(json!({"w": w, "round": round, "i": i})),
                })
                .collect();
            logs::insert_batch(&db, &rows).await?;
            // shared rows of the app registry, written by every process
            apps::record_db_object(&db, app, "shared_object", dc_core::enums::DbObjectType::View, "verify").await?;
        }
        Ok::<(), BoxError>(())
    };
    let (a, b) = tokio::join!(merges, log_writes);
    a?;
    b?;
    runs::finish(&db, rid, RunStatus::Success, None).await?;
    db.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sqlite_writers_in_separate_processes() {
    let t = TestDb::sqlite().await;
    let db = &t.db;
    let app = new_app(db, "writers").await;
    let mut rids = Vec::new();
    for _ in 0..WRITERS {
        rids.push(new_run(db, &app).await);
    }
    let started = Instant::now();
    let children: Vec<Running> = (0..WRITERS)
        .map(|w| {
            let mut cmd = child_command(WRITER_TEST);
            cmd.env("DC_IT_WRITER_DB", &t.url)
                .env("DC_IT_WRITER_IDX", w.to_string())
                .env("DC_IT_WRITER_RID", rids[w].as_str())
                .env("DC_IT_WRITER_APP", app.as_str());
            Running::start(format!("writer {w}"), cmd)
        })
        .collect();
    // the parent keeps writing too while the children run
    let parent_rows: Vec<LogRow> = (0..50)
        .map(|i| LogRow {
            ts: Utc::now(),
            level: "INFO".into(),
            target: "it::parent".into(),
            message: format!("parent {i}"),
            app_id: None,
            runtime_id: None,
            context: sqlx::types::Json(json!({})),
        })
        .collect();
    for chunk in parent_rows.chunks(5) {
        logs::insert_batch(db, chunk).await.expect("parent log insert while children write");
    }
    let results = tokio::task::spawn_blocking(move || {
        children.into_iter().map(|c| c.finish(Duration::from_secs(90))).collect::<Vec<_>>()
    })
    .await
    .expect("join");
    eprintln!("{WRITERS} writer processes took {:?}", started.elapsed());
    for (w, (status, out, err)) in results.iter().enumerate() {
        assert!(
            !err.contains("database is locked") && !out.contains("database is locked"),
            "writer {w} hit a lock:\n{err}"
        );
        assert!(status.success(), "writer {w} exited with {status}\nstdout:\n{out}\nstderr:\n{err}");
        assert!(out.contains(&format!("DC_IT_WRITER_DONE {w}")), "writer {w} did not run its work:\n{out}\n{err}");
    }

    for (w, rid) in rids.iter().enumerate() {
        let d = writer_decl(w);
        let last = writer_snapshot(w, ROUNDS - 1);
        assert_eq!(live(db, &d).await, canonical(&d, &last), "writer {w}: final table content");
        assert_eq!(merge::count_rows(db, &d.name).await.expect("count"), ROWS as i64);
        let expected = writer_expected_counters(w);
        assert_eq!(counters(db, rid).await, expected, "writer {w}: run counters");
        assert_eq!(
            feed(db, rid).await.len() as i64,
            expected[0] + expected[1] + expected[2],
            "writer {w}: change feed"
        );
        let run = runs::get(db, rid).await.expect("run");
        assert_eq!(run.status, "SUCCESS", "writer {w}");
        assert_eq!((run.current_count, run.total_count), (ROUNDS as i64, ROUNDS as i64));
        let logs = logs::for_run(db, rid, 100_000).await.expect("for_run");
        assert_eq!(logs.len(), ROUNDS * LOG_BATCH, "writer {w}: log records");
        for (n, l) in logs.iter().enumerate() {
            assert_eq!(l.message, format!("writer {w} round {} record {}", n / LOG_BATCH, n % LOG_BATCH));
        }
    }
    let total: i64 =
        dc_core::on_pool!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM logs").fetch_one(pool).await)
            .expect("count logs");
    assert_eq!(total, (WRITERS * ROUNDS * LOG_BATCH + 50) as i64);
    let objs = apps::db_objects(db, Some(&app)).await.expect("db_objects");
    assert_eq!(objs.len(), WRITERS + 1, "{objs:?}");
    let check: String =
        dc_core::on_pool!(db, pool => sqlx::query_scalar("PRAGMA integrity_check").fetch_one(pool).await)
            .expect("integrity_check");
    assert_eq!(check, "ok");
}

#[test]
fn writer_expectations_exercise_every_kind_of_change() {
    let c = writer_expected_counters(0);
    assert!(c.iter().all(|&n| n > 0), "{c:?}");
    assert_eq!(c[0] - c[2], ROWS as i64);
}

// ---------------------------------------------------------------------------
// SIGKILL in the middle of a merge

const CRASH_TEST: &str = "procs::crash_child";

fn crash_rows(backend: dc_core::Backend) -> usize {
    if let Ok(n) = std::env::var("DC_IT_CRASH_ROWS") {
        return n.parse().expect("DC_IT_CRASH_ROWS");
    }
    // large enough that the merge transaction lasts well beyond the kill delay,
    // small enough for a debug build (SQLite merges row by row)
    match backend {
        dc_core::Backend::Sqlite => 20_000,
        dc_core::Backend::Postgres => 100_000,
    }
}

fn crash_decl() -> TableDecl {
    decl(json!({
        "name": "bulk", "key": ["id"],
        "columns": [
            {"name": "id", "type": "integer"},
            {"name": "title", "type": "text"},
            {"name": "n", "type": "integer"},
            {"name": "price", "type": "real"},
            {"name": "flag", "type": "boolean"}
        ]
    }))
}

#[derive(Debug, Clone, PartialEq)]
struct BulkRow {
    id: i64,
    title: String,
    n: i64,
    price: f64,
    flag: bool,
}

/// Generation 1 is ids 0..N; generation 2 drops the first tenth, changes every
/// remaining row and adds a tenth of new ids.
fn bulk_row(id: i64, generation: i64) -> BulkRow {
    BulkRow {
        id,
        title: format!("g{generation} row {id} {}", "x".repeat((id % 7) as usize)),
        n: id * generation,
        price: id as f64 / 4.0 + generation as f64,
        flag: (id + generation) % 3 == 0,
    }
}

fn bulk_ids(n: usize, generation: i64) -> std::ops::Range<i64> {
    let n = n as i64;
    if generation == 1 { 0..n } else { n / 10..n + n / 10 }
}

fn bulk_snapshot(n: usize, generation: i64) -> Vec<Map<String, Value>> {
    bulk_ids(n, generation)
        .map(|id| {
            let r = bulk_row(id, generation);
            obj(json!({"id": r.id, "title": r.title, "n": r.n, "price": r.price, "flag": r.flag}))
        })
        .collect()
}

async fn read_bulk(db: &Database) -> Vec<BulkRow> {
    dc_core::on_pool!(db, pool => {
        let rows = sqlx::query("SELECT id, title, n, price, flag, _archived_at IS NULL FROM bulk")
            .fetch_all(pool)
            .await
            .expect("read bulk");
        rows.iter()
            .map(|r| {
                assert!(r.try_get::<bool, _>(5).expect("archived flag"), "no row may be archived");
                BulkRow {
                    id: r.try_get(0).expect("id"),
                    title: r.try_get(1).expect("title"),
                    n: r.try_get(2).expect("n"),
                    price: r.try_get(3).expect("price"),
                    flag: r.try_get(4).expect("flag"),
                }
            })
            .collect()
    })
}

/// Which generation the whole table equals (1 or 2), or a description of the mix.
fn classify(rows: &[BulkRow], n: usize) -> Result<i64, String> {
    let (mut g1, mut g2, mut other) = (0usize, 0usize, 0usize);
    for r in rows {
        if bulk_ids(n, 1).contains(&r.id) && *r == bulk_row(r.id, 1) {
            g1 += 1;
        } else if bulk_ids(n, 2).contains(&r.id) && *r == bulk_row(r.id, 2) {
            g2 += 1;
        } else {
            other += 1;
        }
    }
    let mut ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let distinct = ids.len() == rows.len();
    if distinct && other == 0 && g2 == 0 && g1 == n {
        Ok(1)
    } else if distinct && other == 0 && g1 == 0 && g2 == n {
        Ok(2)
    } else {
        Err(format!(
            "MIXED table: {} rows ({} distinct ids), {g1} of the old snapshot, {g2} of the new one, {other} of neither (expected exactly {n} of one)",
            rows.len(),
            ids.len()
        ))
    }
}

#[test]
fn classify_detects_a_mix() {
    let n = 100;
    let old: Vec<BulkRow> = bulk_ids(n, 1).map(|id| bulk_row(id, 1)).collect();
    let new: Vec<BulkRow> = bulk_ids(n, 2).map(|id| bulk_row(id, 2)).collect();
    assert_eq!(classify(&old, n), Ok(1));
    assert_eq!(classify(&new, n), Ok(2));
    let mut mixed = old.clone();
    mixed[50] = bulk_row(50, 2);
    assert!(classify(&mixed, n).is_err());
    assert!(classify(&old[1..], n).is_err());
    let mut dup = new.clone();
    dup[0] = new[1].clone();
    assert!(classify(&dup, n).is_err());
    let mut half = old[..n / 2].to_vec();
    half.extend(new[n / 2..].iter().cloned());
    assert!(classify(&half, n).is_err());
}

#[test]
#[ignore = "child process of crash_mid_merge (merges, then hangs until killed)"]
fn crash_child() {
    let Ok(url) = std::env::var("DC_IT_CRASH_DB") else { return };
    let rid = RuntimeId::from(env("DC_IT_CRASH_RID"));
    let app = AppId::from(env("DC_IT_CRASH_APP"));
    let n: usize = env("DC_IT_CRASH_N").parse().expect("n");
    // the merge's debug events on stdout: the parent waits for the one that
    // says the merge transaction is writing
    tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .with_env_filter("dc_core::merge=debug")
        .init();
    runtime().block_on(async {
        let db = Database::connect_url(&url, &Settings::default()).await.expect("child connect");
        let d = crash_decl();
        let rows = bulk_snapshot(n, 2);
        println!("merging");
        let started = Instant::now();
        let s = merge::merge(&db, req(&app, Some(&rid), &d), &rows).await.expect("child merge");
        println!("merged {s:?} in {:?}", started.elapsed());
        // hang: the parent's SIGKILL is what ends this process
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

/// True once another session holds an open write transaction.
async fn writer_active(t: &TestDb, probe: &mut Option<sqlx::sqlite::SqliteConnection>) -> bool {
    match &t.db {
        Database::Sqlite(_) => {
            let conn = probe.as_mut().expect("probe connection");
            match sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
                Ok(_) => {
                    sqlx::query("ROLLBACK").execute(&mut *conn).await.expect("rollback probe");
                    false
                }
                Err(e) => {
                    let m = e.to_string();
                    assert!(m.contains("locked") || m.contains("busy"), "probe failed: {m}");
                    true
                }
            }
        }
        Database::Postgres(p) => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL",
            )
            .fetch_one(p)
            .await
            .expect("pg_stat_activity");
            n > 0
        }
    }
}

/// Waits until no other transaction holds the crash table's lock (the killed
/// child's, which the server rolls back when it sees the client gone): an
/// exclusive lock on it is granted at that moment. After 30 s the orphan is
/// terminated instead.
async fn orphan_gone(p: &sqlx::PgPool) {
    let lock = async |timeout: &str| -> Result<(), sqlx::Error> {
        let mut tx = p.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL lock_timeout = '{timeout}'"))).execute(&mut *tx).await?;
        sqlx::query("LOCK TABLE bulk IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await?;
        tx.rollback().await
    };
    if let Err(e) = lock("30s").await {
        eprintln!("the killed child's transaction was not ended within 30 s ({e}); terminating it");
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL")
            .execute(p)
            .await
            .expect("terminate orphan");
        lock("30s").await.expect("the table's lock after terminating the orphan");
    }
}

both_backends!(crash_mid_merge);

async fn crash_mid_merge(t: &TestDb) {
    let db = &t.db;
    let n = crash_rows(db.backend());
    let app = new_app(db, "crash").await;
    let d = crash_decl();
    merge::ensure_table(db, &app, &d).await.expect("ensure_table");
    let t0 = Instant::now();
    let s = merge::merge(db, req(&app, None, &d), &bulk_snapshot(n, 1)).await.expect("old snapshot");
    assert_eq!(s.inserted, n as u64);
    eprintln!("{:?}: initial merge of {n} rows took {:?}", db.backend(), t0.elapsed());
    assert_eq!(classify(&read_bulk(db).await, n), Ok(1));
    let rid = new_run(db, &app).await;

    let mut probe = match db {
        Database::Sqlite(_) => {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&t.url).expect("url").busy_timeout(Duration::ZERO);
            Some(sqlx::sqlite::SqliteConnection::connect_with(&opts).await.expect("probe connect"))
        }
        Database::Postgres(_) => None,
    };

    let mut cmd = child_command(CRASH_TEST);
    cmd.env("DC_IT_CRASH_DB", &t.url)
        .env("DC_IT_CRASH_RID", rid.as_str())
        .env("DC_IT_CRASH_APP", app.as_str())
        .env("DC_IT_CRASH_N", n.to_string());
    let mut child = Running::start("crash child".into(), cmd);
    // the event: the child's merge logs that its transaction is writing
    // (SQLite: it holds the write lock; PostgreSQL: the table lock)
    assert!(
        child.wait_line("merge: writing under the", Duration::from_secs(60)),
        "the child's merge never started writing: {:?}",
        child.stdout_seen
    );
    let t1 = Instant::now();
    // kill somewhere inside the transaction
    let delay = Duration::from_millis(100 + u64::from(Utc::now().timestamp_subsec_micros()) % 200);
    tokio::time::sleep(delay).await;
    let still_writing = writer_active(t, &mut probe).await;
    assert!(child.alive(), "child exited on its own before the kill");
    child.child.kill().expect("SIGKILL");
    let waited = t1.elapsed();
    drop(probe);
    let (status, out, _err) =
        tokio::task::spawn_blocking(move || child.finish(Duration::from_secs(10))).await.expect("join");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "child must die by SIGKILL: {status}");
    let committed_before_kill = out.contains("merged Merge");
    eprintln!(
        "{:?}: killed {waited:?} after the transaction began (delay {delay:?}); still writing at kill: {still_writing}; merge had committed: {committed_before_kill}",
        db.backend()
    );

    // PostgreSQL: the server ends the orphaned transaction when it notices its
    // client is gone; taking the table's lock waits for exactly that
    if let Database::Postgres(p) = db {
        orphan_gone(p).await;
    }

    // reopen (a new pool, as the host would after a crash) and look
    let fresh = t.reconnect().await;
    if let Database::Sqlite(p) = &fresh {
        let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(p).await.expect("integrity_check");
        assert_eq!(check, "ok");
    }
    let rows = read_bulk(&fresh).await;
    let generation = classify(&rows, n).unwrap_or_else(|e| panic!("{:?}: {e}", fresh.backend()));
    let c = counters(&fresh, &rid).await;
    let feed_len = feed(&fresh, &rid).await.len();
    let tenth = (n / 10) as i64;
    match generation {
        1 => {
            assert_eq!(c, [0, 0, 0, 0], "old table but counters moved");
            assert_eq!(feed_len, 0, "old table but a change feed was written");
            assert!(!committed_before_kill, "the child reported a committed merge, yet the old snapshot is there");
        }
        _ => {
            assert_eq!(c, [tenth, n as i64 - tenth, tenth, 0], "new table but counters do not match");
            assert_eq!(feed_len as i64, n as i64 + tenth);
        }
    }
    assert!(
        still_writing && !committed_before_kill,
        "the kill did not land inside the merge transaction (still writing: {still_writing}, committed: {committed_before_kill}); \
         the table was consistent (generation {generation}) but the test did not exercise a mid-merge crash — raise DC_IT_CRASH_ROWS"
    );

    // the database is usable afterwards: the interrupted merge can simply be repeated
    let s = merge::merge(&fresh, req(&app, Some(&rid), &d), &bulk_snapshot(n, 2)).await.expect("merge after crash");
    if generation == 1 {
        assert_eq!((s.inserted, s.updated, s.deleted), ((n / 10) as u64, (n - n / 10) as u64, (n / 10) as u64));
    } else {
        assert_eq!(s.unchanged, n as u64);
    }
    assert_eq!(classify(&read_bulk(&fresh).await, n), Ok(2));
    fresh.close().await;
}
