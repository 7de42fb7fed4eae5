//! Staged merges (SQLite, `dc_core::stage`): the same result as a direct
//! merge, no write lock while staging, a diff made again when the table
//! changed after staging, and a failed apply that changes no table.
//! Streamed merges (rows in batches) equal direct merges on both backends.

use dc_core::merge;
use dc_core::stage::StagedRun;
use dc_core::{AppId, Database, RuntimeId, Settings};
use dc_plugin_api::{MergeSummary, TableDecl};
use serde_json::{Map, Value, json};

use crate::common::{
    TestDb, canonical, feed, feed_entries_are_whole, item, items_decl, live, new_app, new_run, obj, pair, pairs_decl,
    req, unique_indexes,
};

fn pool(db: &Database) -> &sqlx::SqlitePool {
    match db {
        Database::Sqlite(p) => p,
        Database::Postgres(_) => panic!("staging is for SQLite"),
    }
}

/// Stages one merge, applies it and commits.
async fn staged(
    db: &Database,
    app: &AppId,
    rid: Option<&RuntimeId>,
    decl: &TableDecl,
    rows: &[Map<String, Value>],
) -> (MergeSummary, MergeSummary) {
    let mut s = StagedRun::open(pool(db)).await.expect("open");
    let at_staging = s.stage(req(app, rid, decl), rows).await.expect("stage");
    let (tx, applied) = s.apply().await.expect("apply");
    tx.commit().await.expect("commit");
    (at_staging, applied)
}

fn renamed(decl: &TableDecl, name: &str) -> TableDecl {
    let mut d = decl.clone();
    d.name = name.to_string();
    d
}

/// Every step of a merge cycle, staged into one table and merged directly
/// into its twin: the same counts, content and change feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_merges_equal_direct_merges() {
    let t = TestDb::sqlite().await;
    let db = &t.db;
    let app = new_app(db, "stage_equal").await;
    type Make = fn(usize, bool) -> Map<String, Value>;
    let cases: [(TableDecl, Make, usize); 2] =
        [(items_decl("st_items"), item, 300), (pairs_decl("st_pairs"), pair, 120)];
    for (decl, make, n) in cases {
        let twin = renamed(&decl, &format!("{}_direct", decl.name));
        merge::ensure_table(db, &app, &decl).await.expect("ensure");
        merge::ensure_table(db, &app, &twin).await.expect("ensure twin");
        let first: Vec<_> = (0..n).map(|i| make(i, false)).collect();
        let third: Vec<_> = (0..n)
            .filter(|i| i % 20 != 7)
            .map(|i| make(i, i % 10 == 3))
            .chain((n..n + n / 20 + 3).map(|i| make(i, false)))
            .collect();
        for (step, rows) in [("first", &first), ("again", &first), ("third", &third)] {
            let (r1, r2) = (new_run(db, &app).await, new_run(db, &app).await);
            let (at_staging, applied) = staged(db, &app, Some(&r1), &decl, rows).await;
            let direct = merge::merge(db, req(&app, Some(&r2), &twin), rows).await.expect("direct");
            assert_eq!(applied, direct, "{} {step}", decl.name);
            assert_eq!(at_staging, direct, "{} {step}: the staged counts are the applied ones", decl.name);
            assert_eq!(live(db, &decl).await, live(db, &twin).await, "{} {step}", decl.name);
            assert_eq!(live(db, &decl).await, canonical(&decl, rows), "{} {step}", decl.name);
            let strip = |f: Vec<(String, String, String)>| f.into_iter().map(|(_, op, k)| (op, k)).collect::<Vec<_>>();
            assert_eq!(strip(feed(db, &r1).await), strip(feed(db, &r2).await), "{} {step}", decl.name);
        }
        // archiving instead of deleting
        let mut archive = req(&app, None, &decl);
        archive.archive_missing = true;
        let mut twin_archive = req(&app, None, &twin);
        twin_archive.archive_missing = true;
        let fewer: Vec<_> = first.iter().take(n / 2).cloned().collect();
        let mut s = StagedRun::open(pool(db)).await.expect("open");
        s.stage(archive, &fewer).await.expect("stage");
        let (tx, applied) = s.apply().await.expect("apply");
        tx.commit().await.expect("commit");
        let direct = merge::merge(db, twin_archive, &fewer).await.expect("direct");
        assert_eq!(applied, direct, "{} archive", decl.name);
        assert_eq!(live(db, &decl).await, live(db, &twin).await, "{} archive", decl.name);
    }
}

/// Staging reads only: it completes while another connection holds the write
/// lock (with a busy timeout of 1 s, a write would fail "database is locked").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_takes_no_write_lock() {
    let t = TestDb::sqlite().await;
    let app = new_app(&t.db, "stage_lock").await;
    let decl = items_decl("st_lock");
    merge::ensure_table(&t.db, &app, &decl).await.expect("ensure");
    let rows: Vec<_> = (0..500).map(|i| item(i, false)).collect();
    merge::merge(&t.db, req(&app, None, &decl), &rows[..100]).await.expect("seed");
    let mut settings = Settings::default();
    settings.database.busy_timeout_secs = 1;
    let impatient = Database::connect_url(&t.url, &settings).await.expect("connect");
    let holder = t.db.begin_write().await.expect("take the write lock");
    let mut s = StagedRun::open(pool(&impatient)).await.expect("open");
    let at_staging = s.stage(req(&app, None, &decl), &rows).await.expect("staging needs no write lock");
    assert_eq!(at_staging, MergeSummary::new(400, 0, 0, 100));
    holder.rollback().await.expect("release the lock");
    let (tx, applied) = s.apply().await.expect("apply");
    tx.commit().await.expect("commit");
    assert_eq!(applied, at_staging);
    assert_eq!(live(&t.db, &decl).await, canonical(&decl, &rows));
}

/// A table written after the merge was staged (another run of the app, a
/// second merge of the same table in one run): the diff is made again under
/// the lock, so the result is that of merging into the table as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_changed_after_staging_is_compared_again() {
    let t = TestDb::sqlite().await;
    let db = &t.db;
    let app = new_app(db, "stage_again").await;
    let decl = items_decl("st_again");
    merge::ensure_table(db, &app, &decl).await.expect("ensure");
    let snapshot: Vec<_> = (0..50).map(|i| item(i, false)).collect();
    merge::merge(db, req(&app, None, &decl), &snapshot[..40]).await.expect("seed");
    let mut s = StagedRun::open(pool(db)).await.expect("open");
    let at_staging = s.stage(req(&app, None, &decl), &snapshot).await.expect("stage");
    assert_eq!(at_staging, MergeSummary::new(10, 0, 0, 40));
    // meanwhile: row 1 changes, row 45 arrives, row 99 (not in the snapshot) arrives
    let mut meanwhile = req(&app, None, &decl);
    meanwhile.full_snapshot = false;
    merge::merge(db, meanwhile, &[item(1, true), item(45, false), item(99, false)]).await.expect("meanwhile");
    // and the same table merged a second time in the same staged run
    let mut again = req(&app, None, &decl);
    again.full_snapshot = false;
    s.stage(again, &[item(2, true)]).await.expect("stage again");
    let (tx, applied) = s.apply().await.expect("apply");
    tx.commit().await.expect("commit");
    // the snapshot: 9 new rows (45 came meanwhile), row 1 back, row 99 deleted; then row 2 changed
    assert_eq!(applied, MergeSummary::new(9, 2, 1, 40));
    let mut expected = snapshot.clone();
    expected[2] = item(2, true);
    assert_eq!(live(db, &decl).await, canonical(&decl, &expected));
}

/// A run whose second staged merge fails to apply changes no table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_apply_changes_no_table() {
    let t = TestDb::sqlite().await;
    let db = &t.db;
    let app = new_app(db, "stage_fail").await;
    let (a, b) = (items_decl("st_fail_a"), items_decl("st_fail_b"));
    for d in [&a, &b] {
        merge::ensure_table(db, &app, d).await.expect("ensure");
    }
    let before: Vec<_> = (0..30).map(|i| item(i, false)).collect();
    merge::merge(db, req(&app, None, &a), &before).await.expect("seed");
    let run = new_run(db, &app).await;
    let mut s = StagedRun::open(pool(db)).await.expect("open");
    let replaced: Vec<_> = (10..60).map(|i| item(i, true)).collect();
    s.stage(req(&app, Some(&run), &a), &replaced).await.expect("stage a");
    s.stage(req(&app, Some(&run), &b), &[obj(json!({"sku": "x"}))]).await.expect("stage b");
    sqlx::raw_sql(
        "CREATE TRIGGER refuse BEFORE INSERT ON st_fail_b BEGIN SELECT RAISE(ABORT, 'injected apply failure'); END",
    )
    .execute(pool(db))
    .await
    .expect("trigger");
    let err = s.apply().await.expect_err("the second apply fails");
    assert!(err.to_string().contains("injected apply failure"), "{err}");
    assert_eq!(live(db, &a).await, canonical(&a, &before), "the first table is as it was");
    assert!(feed(db, &run).await.is_empty());
    // the database is not left locked
    merge::merge(db, req(&app, None, &a), &replaced).await.expect("a later merge");
}

/// Merges `rows` as a run streams them: batches of `batch` rows into one
/// streamed merge (SQLite: the run's `StagedRun`; PostgreSQL: a `PgStream`
/// in the run's transaction), closed as a full snapshot, then committed.
async fn streamed(
    db: &Database,
    app: &AppId,
    rid: &RuntimeId,
    decl: &TableDecl,
    rows: &[Map<String, Value>],
    batch: usize,
) -> MergeSummary {
    use dc_core::stage::PgStream;
    match db {
        Database::Sqlite(pool) => {
            let mut s = StagedRun::open(pool).await.expect("open");
            let n = s.open_stream(req(app, Some(rid), decl)).await.expect("open stream");
            for chunk in rows.chunks(batch) {
                s.append(n, chunk).await.expect("append");
            }
            let at_close = s.close_stream(n, true).await.expect("close");
            let (tx, applied) = s.apply().await.expect("apply");
            tx.commit().await.expect("commit");
            assert_eq!(at_close, applied, "the counts at the close are the applied ones");
            applied
        }
        Database::Postgres(_) => {
            let mut tx = db.begin_write().await.expect("begin");
            let mut s = PgStream::open(&mut tx, 0, req(app, Some(rid), decl)).await.expect("open stream");
            for chunk in rows.chunks(batch) {
                s.append(&mut tx, chunk).await.expect("append");
            }
            let summary = s.finish(&mut tx, true).await.expect("finish");
            tx.commit().await.expect("commit");
            summary
        }
    }
}

/// A merge whose rows arrive in batches gives what one direct merge of all
/// of them gives — counts, rows and change feed — through a first load, an
/// unchanged run and a run with changed, new and missing rows; a key sent
/// again in a later batch is refused, naming the record by its place among
/// all the rows. On both backends.
async fn streamed_merges_equal_direct_merges(t: TestDb) {
    let db = &t.db;
    let app = new_app(db, "stream_equal").await;
    let decl = items_decl("sm_items");
    let twin = renamed(&decl, "sm_items_direct");
    merge::ensure_table(db, &app, &decl).await.expect("ensure");
    merge::ensure_table(db, &app, &twin).await.expect("ensure twin");
    // more keys inserted and updated than a change-feed entry holds
    let n = 12_000;
    let first: Vec<_> = (0..n).map(|i| item(i, false)).collect();
    let third: Vec<_> = (0..n)
        .filter(|i| i % 20 != 7)
        .map(|i| item(i, i % 10 == 3))
        .chain((n..n + 60).map(|i| item(i, false)))
        .collect();
    for (step, rows) in [("first", &first), ("again", &first), ("third", &third)] {
        let (r1, r2) = (new_run(db, &app).await, new_run(db, &app).await);
        let got = streamed(db, &app, &r1, &decl, rows, 1_000).await;
        let direct = merge::merge(db, req(&app, Some(&r2), &twin), rows).await.expect("direct");
        assert_eq!(got, direct, "{step}");
        assert_eq!(live(db, &decl).await, live(db, &twin).await, "{step}");
        let strip = |f: Vec<(String, String, String)>| {
            let mut v: Vec<_> = f.into_iter().map(|(_, op, k)| (op, k)).collect();
            v.sort();
            v
        };
        assert_eq!(strip(feed(db, &r1).await), strip(feed(db, &r2).await), "{step}");
    }
    feed_entries_are_whole(db).await;
    // the same key in two batches: refused, naming the second one's place
    let mut rows: Vec<_> = (0..300).map(|i| item(i, false)).collect();
    rows[250] = item(5, false);
    let rid = new_run(db, &app).await;
    let refused = match db {
        Database::Sqlite(pool) => {
            let mut s = StagedRun::open(pool).await.expect("open");
            let n = s.open_stream(req(&app, Some(&rid), &decl)).await.expect("open stream");
            s.append(n, &rows[..200]).await.expect("first batch");
            s.append(n, &rows[200..]).await.expect_err("a key again").to_string()
        }
        Database::Postgres(_) => {
            let mut tx = db.begin_write().await.expect("begin");
            let mut s = dc_core::stage::PgStream::open(&mut tx, 0, req(&app, Some(&rid), &decl)).await.expect("open");
            s.append(&mut tx, &rows[..200]).await.expect("first batch");
            s.append(&mut tx, &rows[200..]).await.expect_err("a key again").to_string()
        }
    };
    assert!(refused.contains("sm_items") && refused.contains("more than once"), "{refused}");
    if matches!(db, Database::Sqlite(_)) {
        assert!(refused.contains("250"), "names the record: {refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_merges_equal_direct_merges_sqlite() {
    streamed_merges_equal_direct_merges(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_merges_equal_direct_merges_postgres() {
    streamed_merges_equal_direct_merges(TestDb::postgres().await).await;
}

/// PostgreSQL builds a table's key index at the end of its first load, in
/// the run's transaction, which stays open until the run ends: readers of
/// the table are not held by it (they see the table as it was), through
/// both the worker's streamed merge and a plugin's own `merge` call, and
/// the index is there once the transaction commits. A reader that had to
/// wait for a lock fails at once (`lock_timeout`), so a held reader fails
/// the test instead of hanging it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_load_holds_no_reader_of_its_table_postgres() {
    use dc_core::stage::PgStream;
    let t = TestDb::postgres().await;
    let db = &t.db;
    let Database::Postgres(pool) = db else { unreachable!("a PostgreSQL test database") };
    let app = new_app(db, "readers").await;
    let rows: Vec<_> = (0..2_000).map(|i| item(i, false)).collect();
    let read_now = |table: &'static str| async move {
        let mut c = pool.acquire().await.expect("a second connection");
        sqlx::query("SET lock_timeout = '50ms'").execute(&mut *c).await.expect("lock_timeout");
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM \"{table}\"")))
            .fetch_one(&mut *c)
            .await
    };
    for (table, streamed) in [("rd_streamed", true), ("rd_merged", false)] {
        let d = items_decl(table);
        merge::ensure_table(db, &app, &d).await.expect("ensure_table");
        assert_eq!(unique_indexes(db, table).await, 0, "a new table has no key index before its first rows");
        let rid = new_run(db, &app).await;
        let mut tx = db.begin_write().await.expect("begin");
        if streamed {
            let mut s = PgStream::open(&mut tx, 0, req(&app, Some(&rid), &d)).await.expect("open stream");
            s.append(&mut tx, &rows).await.expect("append");
            s.finish(&mut tx, true).await.expect("finish");
        } else {
            merge::merge_in(&mut tx, req(&app, Some(&rid), &d), &rows).await.expect("merge_in");
        }
        // the run's transaction is open, its index built inside it
        let seen = read_now(table).await.unwrap_or_else(|e| panic!("{table}: a reader waited for the first load: {e}"));
        assert_eq!(seen, 0, "{table}: the uncommitted rows are not seen");
        tx.commit().await.expect("commit");
        assert_eq!(read_now(table).await.expect("read after commit"), 2_000);
        assert_eq!(unique_indexes(db, table).await, 1, "{table}: the key index after the first load");
        // a key stored twice is refused by it
        let again = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{table}\" (sku, _row_key, _row_hash) SELECT sku, _row_key, _row_hash FROM \"{table}\" LIMIT 1"
        )))
        .execute(pool)
        .await
        .expect_err("a repeated key");
        assert!(again.to_string().contains("duplicate key"), "{again}");
    }
}
