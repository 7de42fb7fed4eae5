//! Deleting an app (`dc_core::apps::delete_app`) on both backends: refused
//! while a run is active (nothing changes), then one transaction removes the
//! app, its versions, their stored bytes, its runs and their change feeds;
//! its data table stays (and stays its) unless `drop_data`, another app's
//! rows are untouched.

use chrono::Utc;
use dc_core::apps::{self, PluginVersionRow};
use dc_core::enums::RunStatus;
use dc_core::{DbError, ErrorKind, merge, runs};

use crate::common::*;

async fn version(t: &TestDb, app_id: &str, v: &str, sha: &str) {
    let row = PluginVersionRow {
        app_id: app_id.into(),
        version: v.into(),
        sha256: sha.into(),
        interface_version: 1,
        interface_abi: Some("1.3.0".into()),
        manifest: "{}".into(),
        store_path: format!("/store/{sha}"),
        source_file: "plugin.so".into(),
        registered_at: Utc::now(),
    };
    let mut tx = t.db.begin_write().await.expect("begin");
    apps::store_plugin_file_in(&mut tx, sha, b"bytes").await.expect("file");
    apps::register_version_in(&mut tx, &row, "d", None, None).await.expect("version");
    tx.commit().await.expect("commit");
}

async fn count(t: &TestDb, sql: &str) -> i64 {
    let sql = sql.to_string();
    dc_core::on_pool!(&t.db, pool => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await)
        .expect("count")
}

async fn an_app_is_deleted_in_one_transaction(t: &TestDb) {
    let app = new_app(&t.db, "doomed").await;
    let other = new_app(&t.db, "kept").await;
    version(t, &app, "1.0.0", "aa").await;
    version(t, &app, "1.1.0", "bb").await;
    version(t, &other, "1.0.0", "cc").await;
    let decl = items_decl("doomed_items");
    merge::ensure_table(&t.db, &app, &decl).await.expect("ensure_table");
    let run = new_run(&t.db, &app).await;
    merge::merge(&t.db, req(&app, Some(&run), &decl), &[item(1, false), item(2, false)]).await.expect("merge");
    let other_decl = items_decl("kept_items");
    merge::ensure_table(&t.db, &other, &other_decl).await.expect("ensure_table");
    merge::merge(&t.db, req(&other, None, &other_decl), &[item(1, false)]).await.expect("merge");

    // an active run: refused, nothing changed
    let e = apps::delete_app(&t.db, &app, true).await.expect_err("active run");
    assert!(matches!(e, DbError::Conflict(_)) && e.kind() == ErrorKind::Conflict, "{e:?}");
    assert!(e.to_string().contains(run.as_str()) && e.to_string().contains("runs stop"), "{e}");
    assert!(apps::get_app(&t.db, &app).await.expect("read").is_some());
    assert_eq!(raw_count(&t.db, "doomed_items").await, 2);

    runs::finish(&t.db, &run, RunStatus::Success, None).await.expect("finish");
    let gone = apps::delete_app(&t.db, &app, false).await.expect("delete");
    assert_eq!((gone.path.as_str(), gone.versions, gone.runs), ("it/tests/doomed", 2, 1));
    assert_eq!(gone.kept_tables, ["doomed_items"]);
    assert!(gone.dropped_tables.is_empty());
    assert!(apps::get_app(&t.db, &app).await.expect("read").is_none());
    assert!(apps::versions(&t.db, &app).await.expect("versions").is_empty());
    assert!(apps::plugin_file(&t.db, "aa").await.expect("file").is_none(), "its stored bytes went");
    assert!(apps::plugin_file(&t.db, "cc").await.expect("file").is_some(), "another app's stay");
    assert_eq!(count(t, "SELECT COUNT(*) FROM runtime").await, 0);
    assert_eq!(count(t, &format!("SELECT COUNT(*) FROM run_changes WHERE runtime_id = '{run}'")).await, 0);
    // the data stays, still reserved for the app's id
    assert_eq!(raw_count(&t.db, "doomed_items").await, 2);
    assert_eq!(count(t, &format!("SELECT COUNT(*) FROM dc_plugin_tables WHERE app_id = '{app}'")).await, 1);
    let e = apps::delete_app(&t.db, &app, false).await.expect_err("gone");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // registered again (same path, same id): its table is its own again; then dropped with its data
    new_app(&t.db, "doomed").await;
    merge::ensure_table(&t.db, &app, &decl).await.expect("its table again");
    merge::merge(&t.db, req(&app, None, &decl), &[item(3, false)]).await.expect("its table again");
    let gone = apps::delete_app(&t.db, &app, true).await.expect("delete with data");
    assert_eq!(gone.dropped_tables, ["doomed_items"]);
    assert!(!t.db.table_exists("doomed_items").await.expect("exists"));
    assert_eq!(count(t, &format!("SELECT COUNT(*) FROM app_db_objects WHERE app_id = '{app}'")).await, 0);
    assert_eq!(count(t, &format!("SELECT COUNT(*) FROM dc_plugin_tables WHERE app_id = '{app}'")).await, 0);
    // the other app is untouched
    assert_eq!(raw_count(&t.db, "kept_items").await, 1);
    assert_eq!(apps::versions(&t.db, &other).await.expect("versions").len(), 1);
}

both_backends!(an_app_is_deleted_in_one_transaction);
