//! Shared tables (issue #7 item 2) on both backends: a second app may write
//! into a table only when both declare it shared with the same shape; each
//! app's full snapshots remove only the rows it inserted, on every merge path
//! (direct, and SQLite's staged merge the worker uses); deleting one sharer
//! with its data leaves the others' rows.

use dc_core::merge::{self, MergeError};
use dc_core::stage::StagedRun;
use dc_core::{Database, apps};
use dc_plugin_api::{ColumnDecl, MergeSummary, TableDecl};
use serde_json::{Map, Value};

use crate::common::*;

#[derive(Clone, Copy, Debug)]
enum Path {
    Direct,
    Staged,
}

/// Merges `rows` as a full snapshot of `app` through `path`.
async fn put(
    db: &Database,
    path: Path,
    app: &dc_core::AppId,
    decl: &TableDecl,
    rows: &[Map<String, Value>],
) -> MergeSummary {
    match (path, db) {
        (Path::Staged, Database::Sqlite(pool)) => {
            let mut s = StagedRun::open(pool).await.expect("open");
            s.stage(req(app, None, decl), rows).await.expect("stage");
            let (tx, applied) = s.apply().await.expect("apply");
            tx.commit().await.expect("commit");
            applied
        }
        _ => merge::merge(db, req(app, None, decl), rows).await.expect("merge"),
    }
}

fn counts(s: &MergeSummary) -> (u64, u64, u64, u64) {
    (s.inserted, s.updated, s.deleted, s.unchanged)
}

fn refused(r: Result<Vec<String>, MergeError>, words: &[&str]) {
    let e = r.expect_err("refused");
    assert!(matches!(e, MergeError::NotYours(_)), "{e:?}");
    for w in words {
        assert!(e.to_string().contains(w), "{w:?} missing from: {e}");
    }
}

async fn owners(db: &Database, table: &str) -> Vec<(String, Option<String>)> {
    let sql = format!("SELECT _row_key, _app_id FROM \"{table}\" ORDER BY _row_key");
    dc_core::on_pool!(db, pool => sqlx::query_as::<_, (String, Option<String>)>(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await)
        .expect("owners")
}

async fn both_apps_must_opt_in_with_one_shape(t: &TestDb) {
    let db = &t.db;
    let a = new_app(db, "share_a").await;
    let b = new_app(db, "share_b").await;
    let plain = items_decl("offers");
    let shared = items_decl("offers").shared();
    merge::ensure_table(db, &a, &plain).await.expect("a creates it");
    // rows A stored before sharing stay A's
    put(db, Path::Direct, &a, &plain, &[item(1, false), item(2, false)]).await;

    refused(merge::ensure_table(db, &b, &plain).await, &["belongs to app it/tests/share_a", ".shared()"]);
    refused(merge::ensure_table(db, &b, &shared).await, &["does not declare it shared", "share_a"]);
    // the owner shares it: `_app_id` is added and its rows marked as its own
    merge::ensure_table(db, &a, &shared).await.expect("a shares it");
    let marked = owners(db, "offers").await;
    assert_eq!(marked.len(), 2);
    assert!(marked.iter().all(|(_, o)| o.as_deref() == Some(a.as_str())), "{marked:?}");

    refused(merge::ensure_table(db, &b, &plain).await, &["is shared by app it/tests/share_a", "declare it shared too"]);
    let wider = shared.clone().column(ColumnDecl::text("colour"));
    refused(merge::ensure_table(db, &b, &wider).await, &["same columns and key", "colour"]);
    merge::ensure_table(db, &b, &shared).await.expect("b shares it");
    // from now on neither may change its shape or stop sharing alone
    refused(merge::ensure_table(db, &a, &wider).await, &["shared with app it/tests/share_b", "same columns"]);
    refused(merge::ensure_table(db, &a, &plain).await, &["must stay shared", "share_b"]);
    refused(merge::ensure_table(db, &b, &plain).await, &["is shared by app it/tests/share_a"]);
    // a third app declaring it without sharing is still refused, naming the owner
    let c = new_app(db, "share_c").await;
    refused(merge::ensure_table(db, &c, &plain).await, &["share_a"]);
}

async fn snapshots_remove_only_the_writers_rows(t: &TestDb) {
    let paths: &[Path] = match t.db {
        Database::Sqlite(_) => &[Path::Direct, Path::Staged],
        Database::Postgres(_) => &[Path::Direct],
    };
    for &path in paths {
        let db = &t.db;
        let name = format!("snap_{path:?}").to_lowercase();
        let (a, b) = (new_app(db, &format!("{name}_a")).await, new_app(db, &format!("{name}_b")).await);
        let decl = items_decl(&name).shared();
        merge::ensure_table(db, &a, &decl).await.expect("a");
        merge::ensure_table(db, &b, &decl).await.expect("b");
        let rows = |r: std::ops::Range<usize>| r.map(|i| item(i, false)).collect::<Vec<_>>();

        assert_eq!(counts(&put(db, path, &a, &decl, &rows(0..10)).await), (10, 0, 0, 0), "{path:?}");
        assert_eq!(counts(&put(db, path, &b, &decl, &rows(10..20)).await), (10, 0, 0, 0), "{path:?}");
        // B's full snapshot did not delete A's ten rows, nor A's B's
        assert_eq!(counts(&put(db, path, &a, &decl, &rows(0..10)).await), (0, 0, 0, 10), "{path:?}");
        assert_eq!(raw_count(db, &name).await, 20);
        // B updates a key A inserted: the row changes and stays A's
        assert_eq!(counts(&put(db, path, &b, &decl, &[item(3, true)]).await), (0, 1, 10, 0), "{path:?}");
        assert_eq!(raw_count(db, &name).await, 10, "B's snapshot removed its own ten rows only");
        // an empty snapshot of B removes nothing of A's, the updated row included
        assert_eq!(counts(&put(db, path, &b, &decl, &[]).await), (0, 0, 0, 0), "{path:?}");
        let o = owners(db, &name).await;
        assert_eq!(o.len(), 10, "{o:?}");
        assert!(o.iter().all(|(_, w)| w.as_deref() == Some(a.as_str())), "{o:?}");
        // A's own snapshot still removes its own missing rows
        assert_eq!(counts(&put(db, path, &a, &decl, &rows(0..5)).await), (0, 1, 5, 4), "{path:?}");
        assert_eq!(raw_count(db, &name).await, 5);

        // B inserts again; deleting B with its data leaves A's rows and the table
        put(db, path, &b, &decl, &rows(100..103)).await;
        let gone = apps::delete_app(db, &b, true).await.expect("delete b");
        assert_eq!(gone.left_shared_tables, vec![name.clone()]);
        assert!(gone.dropped_tables.is_empty(), "{gone:?}");
        assert_eq!(raw_count(db, &name).await, 5);
        // the last app to leave drops it
        let gone = apps::delete_app(db, &a, true).await.expect("delete a");
        assert_eq!(gone.dropped_tables, vec![name.clone()]);
        assert!(!db.table_exists(&name).await.expect("exists"));
    }
}

both_backends!(both_apps_must_opt_in_with_one_shape, snapshots_remove_only_the_writers_rows);
