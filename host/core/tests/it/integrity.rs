//! Data integrity across tables and versions: an injective row hash (the
//! collision pairs of hash version 1 are updates now), the upgrade of tables
//! hashed with version 1 (no row reported as changed), one transaction for the
//! merges of several tables, and the database-file identity a run checks.

use dc_core::enums::UnicodeForm;
use dc_core::hash::{HashVersion, RowHasher};
use dc_core::merge::{self, MergeError};
use dc_core::{Database, WriteTx, on_tx};
use dc_plugin_api::{MergeSummary, TableDecl};
use serde_json::{Map, Value, json};
use sqlx::AssertSqlSafe;

use crate::common::{TestDb, canonical, decl, item, items_decl, live, new_app, obj, req};

both_backends!(collision_pairs_are_updates, version_1_tables_upgrade_without_changes, a_failed_table_undoes_the_others);

fn kab_decl(name: &str) -> TableDecl {
    decl(json!({
        "name": name, "key": ["k"],
        "columns": [
            {"name": "k", "type": "integer", "nullable": false},
            {"name": "a", "type": "text"},
            {"name": "b", "type": "text"},
            {"name": "j", "type": "json"}
        ]
    }))
}

/// Rows that hash version 1 could not tell apart are told apart: the second
/// of each pair is an update, and its content is stored.
async fn collision_pairs_are_updates(t: &TestDb) {
    let db = &t.db;
    let d = kab_decl("kab_collisions");
    let app = new_app(db, "kab_collisions").await;
    merge::ensure_table(db, &app, &d).await.expect("ensure_table");
    let pairs = [
        (json!({"k": 1, "a": "X\u{1e}b\u{1f}sY"}), json!({"k": 1, "a": "X", "b": "Y"})),
        (json!({"k": 2, "j": ["a\",\"b"]}), json!({"k": 2, "j": ["a", "b"]})),
    ];
    for (first, second) in pairs {
        let (first, second) = (obj(first), obj(second));
        let s = merge::merge(db, req(&app, None, &d), std::slice::from_ref(&first)).await.expect("first of the pair");
        assert_eq!(s.inserted + s.updated, 1, "{first:?}");
        let s = merge::merge(db, req(&app, None, &d), std::slice::from_ref(&second)).await.expect("second");
        assert_eq!(s, MergeSummary::new(0, 1, 0, 0), "{second:?} must be an update of {first:?}");
        let stored = live(db, &d).await;
        let key = canonical(&d, std::slice::from_ref(&second)).into_keys().next().expect("a key");
        assert_eq!(stored.get(&key), canonical(&d, std::slice::from_ref(&second)).get(&key), "content stored");
    }
}

/// Rewrites a table's stored hashes the way dc-host before hash version 2 made
/// them, and forgets its version (as a table from before the migration).
async fn make_version_1(db: &Database, d: &TableDecl, rows: &[Map<String, Value>]) {
    let names: Vec<&str> = d.columns.iter().map(|c| c.name.as_str()).collect();
    let prepared = merge::prepare_rows(d, rows, UnicodeForm::Nfc).expect("rows are valid");
    let mut v1 = RowHasher::with_version(&names, UnicodeForm::Nfc, HashVersion::V1);
    let mut tx = db.begin_write().await.expect("begin");
    let update = format!("UPDATE \"{}\" SET _row_hash = $1 WHERE _row_key = $2", d.name);
    for (cells, key) in prepared.cells.iter().zip(&prepared.keys) {
        let h = v1.hash_hex(cells);
        let n = on_tx!(&mut tx, conn => sqlx::query(AssertSqlSafe(update.clone())).bind(h).bind(key).execute(&mut *conn).await.map(|r| r.rows_affected()))
            .expect("rewrite hash");
        assert_eq!(n, 1, "row {key} exists");
    }
    on_tx!(&mut tx, conn => sqlx::query("DELETE FROM dc_plugin_tables WHERE table_name = $1").bind(&d.name).execute(&mut *conn).await.map(|r| r.rows_affected()))
        .expect("forget version");
    assert_eq!(merge::table_hash_version(&mut tx, &d.name).await.expect("version"), HashVersion::V1);
    tx.commit().await.expect("commit");
}

async fn version_1_tables_upgrade_without_changes(t: &TestDb) {
    let db = &t.db;
    let d = items_decl("items_v1");
    let app = new_app(db, "items_v1").await;
    merge::ensure_table(db, &app, &d).await.expect("ensure_table");
    let rows: Vec<_> = (0..120).map(|i| item(i, false)).collect();
    merge::merge(db, req(&app, None, &d), &rows).await.expect("first merge");
    make_version_1(db, &d, &rows).await;
    // the same snapshot after the upgrade: nothing changed, so nothing is reported
    let s = merge::merge(db, req(&app, None, &d), &rows).await.expect("merge after upgrade");
    assert_eq!(s, MergeSummary::new(0, 0, 0, 120), "the hash upgrade must not report rows as changed");
    let mut tx = db.begin_write().await.expect("begin");
    assert_eq!(merge::table_hash_version(&mut tx, &d.name).await.expect("version"), HashVersion::CURRENT);
    tx.rollback().await.expect("rollback");
    // and a real change is still seen
    let mut changed = rows.clone();
    changed[7] = item(7, true);
    let s = merge::merge(db, req(&app, None, &d), &changed).await.expect("merge a change");
    assert_eq!(s, MergeSummary::new(0, 1, 0, 119));
    assert_eq!(live(db, &d).await, canonical(&d, &changed));
}

/// Merges of several tables in one transaction: when the second fails, a
/// rollback leaves the first as it was.
async fn a_failed_table_undoes_the_others(t: &TestDb) {
    let db = &t.db;
    let (first, second) = (kab_decl("tx_first"), kab_decl("tx_second"));
    let app = new_app(db, "tx_tables").await;
    merge::ensure_table(db, &app, &first).await.expect("ensure first");
    merge::ensure_table(db, &app, &second).await.expect("ensure second");
    let before = [obj(json!({"k": 1, "a": "before"}))];
    merge::merge(db, req(&app, None, &first), &before).await.expect("seed");
    let mut tx: WriteTx = db.begin_write().await.expect("begin");
    let replaced = [obj(json!({"k": 2, "a": "after"}))];
    let s = merge::merge_in(&mut tx, req(&app, None, &first), &replaced).await.expect("first table merges");
    assert_eq!(s, MergeSummary::new(1, 0, 1, 0));
    let bad = [obj(json!({"k": 1, "a": 5}))];
    let err = merge::merge_in(&mut tx, req(&app, None, &second), &bad).await.expect_err("second table refused");
    assert!(matches!(err, MergeError::BadRecord { .. }), "{err}");
    drop(tx);
    assert_eq!(live(db, &first).await, canonical(&first, &before), "the first table is as it was");
    assert!(live(db, &second).await.is_empty());
}

#[tokio::test]
async fn a_replaced_or_deleted_database_file_is_noticed() {
    let t = TestDb::sqlite().await;
    let id = t.db.sqlite_file_identity().expect("identity").expect("a file");
    id.check().expect("same file");
    let path = id.path().to_path_buf();
    let other = t.dir.path().join("other.db");
    std::fs::write(&other, b"").expect("write");
    std::fs::rename(&other, &path).expect("replace");
    let err = id.check().expect_err("replaced").to_string();
    assert!(err.contains("was replaced by another file") && err.contains("run it again"), "{err}");
    std::fs::remove_file(&path).expect("remove");
    let err = id.check().expect_err("deleted").to_string();
    assert!(err.contains("is gone") && err.contains("restore the file"), "{err}");
    let pg = TestDb::postgres().await;
    assert!(pg.db.sqlite_file_identity().expect("no file").is_none());
}

both_backends!(
    additive_changes_apply_and_breaking_ones_are_refused,
    migration_keeps_history_or_changes_nothing,
    an_unchanged_declaration_writes_nothing
);

fn shop_decl(v: Value) -> TableDecl {
    let mut d = json!({"name": "shop", "key": ["id"], "columns": [
        {"name": "id", "type": "integer", "nullable": false},
        {"name": "title", "type": "text", "max_len": 20},
        {"name": "price", "type": "text"}
    ]});
    if let (Some(m), Some(extra)) = (d.as_object_mut(), v.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    decl(d)
}

async fn additive_changes_apply_and_breaking_ones_are_refused(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "shop").await;
    let v1 = shop_decl(json!({}));
    assert!(merge::ensure_table(db, &app, &v1).await.expect("create").is_empty());
    merge::merge(db, req(&app, None, &v1), &[obj(json!({"id": 1, "title": "a", "price": "10"}))]).await.expect("merge");
    // additive: a nullable column and a wider max_len, applied and described
    let v2 = shop_decl(json!({"columns": [
        {"name": "id", "type": "integer", "nullable": false},
        {"name": "title", "type": "text", "max_len": 80},
        {"name": "price", "type": "text"},
        {"name": "colour", "type": "text"}
    ]}));
    let applied = merge::ensure_table(db, &app, &v2).await.expect("additive change applies");
    assert_eq!(applied.len(), 2, "{applied:?}");
    let s = merge::merge(db, req(&app, None, &v2), &[obj(json!({"id": 1, "title": "a", "price": "10"}))])
        .await
        .expect("merge");
    assert_eq!(s, MergeSummary::new(0, 0, 0, 1), "a new NULL column changes no row");
    // breaking: refused, nothing changed, the live declaration is still v2
    let v3 = shop_decl(json!({"columns": [
        {"name": "id", "type": "integer", "nullable": false},
        {"name": "title", "type": "text", "max_len": 80},
        {"name": "price", "type": "real"}
    ]}));
    match merge::ensure_table(db, &app, &v3).await {
        Err(MergeError::SchemaChange { changes, live, .. }) => {
            assert!(
                changes.iter().any(|c| c == "column \"price\" changes type: text, nullable → real, nullable"),
                "{changes:?}"
            );
            assert!(
                changes.iter().any(|c| c.starts_with("column \"colour\" (text, nullable) is dropped")),
                "{changes:?}"
            );
            assert_eq!(*live, v2);
        }
        other => panic!("a breaking change must be refused: {other:?}"),
    }
    let mut tx = db.begin_write().await.expect("begin");
    assert_eq!(merge::live_declaration(&mut tx, "shop").await.expect("live"), Some(v2));
    tx.rollback().await.expect("rollback");
}

/// What a run's start writes for its tables: `(generation, updated_at of the app's
/// `app_db_objects` row)`.
async fn table_writes(db: &Database, app: &str, table: &str) -> (i64, String) {
    let generation: i64 = dc_core::on_pool!(db, pool => sqlx::query_scalar(
        "SELECT generation FROM dc_plugin_tables WHERE table_name = $1").bind(table).fetch_one(pool).await)
    .expect("generation");
    let updated: String = dc_core::on_pool!(db, pool => sqlx::query_scalar(
        "SELECT CAST(updated_at AS TEXT) FROM app_db_objects WHERE app_id = $1 AND object_name = $2")
        .bind(app).bind(table).fetch_one(pool).await)
    .expect("updated_at");
    (generation, updated)
}

/// Every run's start ensures its tables: an unchanged declaration writes
/// nothing (no write lock, no generation bump that would make another run's
/// staged merge diff again), a changed one is still applied, and another app
/// declaring the same table is still refused.
async fn an_unchanged_declaration_writes_nothing(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "shop").await;
    let v1 = shop_decl(json!({}));
    merge::ensure_table(db, &app, &v1).await.expect("create");
    merge::ensure_table(db, &app, &v1).await.expect("first verify");
    let before = table_writes(db, &app, "shop").await;
    for _ in 0..3 {
        assert!(merge::ensure_table(db, &app, &v1).await.expect("unchanged").is_empty());
    }
    assert_eq!(table_writes(db, &app, "shop").await, before, "an unchanged declaration must write nothing");
    let v2 = shop_decl(json!({"columns": [
        {"name": "id", "type": "integer", "nullable": false},
        {"name": "title", "type": "text", "max_len": 20},
        {"name": "price", "type": "text"},
        {"name": "colour", "type": "text"}
    ]}));
    assert_eq!(merge::ensure_table(db, &app, &v2).await.expect("additive").len(), 1);
    let after = table_writes(db, &app, "shop").await;
    assert!(after.0 > before.0, "a changed declaration bumps the generation: {before:?} -> {after:?}");
    let other = new_app(db, "other_shop").await;
    let e = merge::ensure_table(db, &other, &v2).await.expect_err("another app's table");
    assert!(matches!(e, MergeError::NotYours(_)), "{e:?}");
}

async fn migration_keeps_history_or_changes_nothing(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "shop").await;
    let v1 = shop_decl(json!({}));
    merge::ensure_table(db, &app, &v1).await.expect("create");
    let rows =
        [obj(json!({"id": 1, "title": "a", "price": "10.5"})), obj(json!({"id": 2, "title": "b", "price": "3"}))];
    merge::merge(db, req(&app, None, &v1), &rows).await.expect("merge");
    let first_seen = |db: &Database| {
        let db = db.clone();
        async move {
            let sql = "SELECT CAST(_first_seen AS TEXT) FROM shop ORDER BY _row_key";
            dc_core::on_pool!(&db, pool => sqlx::query_scalar::<_, String>(sql).fetch_all(pool).await)
                .expect("first seen")
        }
    };
    let before = first_seen(db).await;
    // price text → real: converted, history kept, and the same data is unchanged afterwards
    let v2 = shop_decl(json!({"columns": [
        {"name": "id", "type": "integer", "nullable": false},
        {"name": "title", "type": "text", "max_len": 20},
        {"name": "price", "type": "real"}
    ]}));
    let mut tx = db.begin_write().await.expect("begin");
    let m = dc_core::evolve::migrate_table_in(&mut tx, &app, &v1, &v2, UnicodeForm::Nfc).await.expect("migrates");
    tx.commit().await.expect("commit");
    assert_eq!((m.rows, m.converted, m.values_dropped), (2, 2, 0), "{m:?}");
    assert_eq!(first_seen(db).await, before, "first-seen history is kept");
    let typed = [obj(json!({"id": 1, "title": "a", "price": 10.5})), obj(json!({"id": 2, "title": "b", "price": 3.0}))];
    let s = merge::merge(db, req(&app, None, &v2), &typed).await.expect("merge after migration");
    assert_eq!(s, MergeSummary::new(0, 0, 0, 2));
    // a value that does not fit fails the whole migration, naming row and field
    let incremental = |d| merge::MergeRequest { full_snapshot: false, ..req(&app, None, d) };
    merge::merge(db, incremental(&v2), &[obj(json!({"id": 3, "title": "c", "price": 1.0}))])
        .await
        .expect("incremental");
    let v3 = shop_decl(json!({"columns": [
        {"name": "id", "type": "integer", "nullable": false},
        {"name": "title", "type": "text", "max_len": 20},
        {"name": "price", "type": "integer"}
    ]}));
    let mut tx = db.begin_write().await.expect("begin");
    let err = dc_core::evolve::migrate_table_in(&mut tx, &app, &v2, &v3, UnicodeForm::Nfc)
        .await
        .expect_err("10.5 is no integer");
    drop(tx);
    let msg = err.to_string();
    assert!(
        msg.contains("the stored row with key [1] does not fit the new declaration") && msg.contains("field \"price\""),
        "{msg}"
    );
    assert_eq!(live(db, &v2).await.len(), 3, "the table is as it was");
    // a new key that makes two rows one is refused the same way
    let v4 = shop_decl(json!({"key": ["title"], "columns": [
        {"name": "id", "type": "integer", "nullable": false},
        {"name": "title", "type": "text", "max_len": 20},
        {"name": "price", "type": "real"}
    ]}));
    merge::merge(db, incremental(&v2), &[obj(json!({"id": 4, "title": "a", "price": 1.0}))]).await.expect("same title");
    let mut tx = db.begin_write().await.expect("begin");
    let err =
        dc_core::evolve::migrate_table_in(&mut tx, &app, &v2, &v4, UnicodeForm::Nfc).await.expect_err("duplicate key");
    assert!(err.to_string().contains("appears more than once"), "{err}");
}

both_backends!(errors_have_kinds);

/// Callers (the REST API's status codes) match on `ErrorKind`, not on text.
async fn errors_have_kinds(t: &TestDb) {
    use dc_core::ErrorKind;
    let db = &t.db;
    let e = dc_core::apps::resolve_app(db, "no/such/app").await.expect_err("no app");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = dc_core::runs::get(db, "0123456789abcdef").await.expect_err("no run");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let app = new_app(db, "kinds").await;
    let row = dc_core::apps::PluginVersionRow {
        app_id: app.clone(),
        version: "1.0.0".into(),
        sha256: "ab".repeat(32),
        interface_version: 1,
        interface_abi: None,
        manifest: "{}".into(),
        store_path: "/nonexistent".into(),
        source_file: "/nonexistent".into(),
        registered_at: chrono::Utc::now(),
    };
    dc_core::apps::register_version(db, &row, "", None, None).await.expect("first");
    let e = dc_core::apps::register_version(db, &row, "", None, None).await.expect_err("the same version twice");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let d = kab_decl("kinds_rows");
    merge::ensure_table(db, &app, &d).await.expect("table");
    let e = merge::merge(db, req(&app, None, &d), &[obj(json!({"k": "not a number"}))]).await.expect_err("bad record");
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    let other = new_app(db, "kinds_other").await;
    let e = merge::ensure_table(db, &other, &d).await.expect_err("another app's table");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let e = Database::connect_url("postgres://u@127.0.0.1:1/x", &dc_core::Settings::default())
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

both_backends!(retention_purges_old_ended_runs_in_batches);

async fn retention_purges_old_ended_runs_in_batches(t: &TestDb) {
    use dc_core::enums::RunStatus;
    use dc_core::{retention, runs};
    let db = &t.db;
    let app = new_app(db, "retention").await;
    let d = kab_decl("retention_rows");
    merge::ensure_table(db, &app, &d).await.expect("table");
    let old = chrono::Utc::now() - chrono::TimeDelta::days(40);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let rid = crate::common::new_run(db, &app).await;
        ids.push(rid);
    }
    // run 0: ended 40 days ago, with a change feed of 3 entries (1,000 +
    // 1,000 + 500 keys); run 1: ended now; run 2: still running since 40 days
    let rows: Vec<_> = (0..2_500).map(|k| obj(json!({"k": k}))).collect();
    merge::merge(db, req(&app, Some(&ids[0]), &d), &rows).await.expect("merge");
    runs::finish(db, &ids[0], RunStatus::Success, None).await.expect("finish");
    runs::finish(db, &ids[1], RunStatus::Success, None).await.expect("finish");
    runs::mark_started(db, &ids[2], 1).await.expect("start");
    dc_core::on_pool!(db, pool => sqlx::query("UPDATE runtime SET ended_at = $1, created_at = $1 WHERE runtime_id = $2")
        .bind(old).bind(&ids[0]).execute(pool).await.map(|r| r.rows_affected())).expect("age run 0");
    dc_core::on_pool!(db, pool => sqlx::query("UPDATE runtime SET created_at = $1 WHERE runtime_id = $2")
        .bind(old).bind(&ids[2]).execute(pool).await.map(|r| r.rows_affected()))
    .expect("age run 2");
    for (i, ts) in [old, old, old, chrono::Utc::now()].into_iter().enumerate() {
        dc_core::on_pool!(db, pool => sqlx::query("INSERT INTO logs (ts, level, target, message) VALUES ($1, 'INFO', 'test', $2)")
            .bind(ts).bind(format!("record {i}")).execute(pool).await.map(|r| r.rows_affected())).expect("log");
    }
    let cutoff = chrono::Utc::now() - chrono::TimeDelta::days(30);
    let purged = retention::purge(db, cutoff, 2).await.expect("purge");
    assert_eq!(
        purged,
        retention::Purged { runs: 1, changes: 3, logs: 3, function_calls: 0, run_items: 0, audit_entries: 0 },
        "in batches of 2, everything old and ended (3 feed entries), nothing else"
    );
    let left: Vec<dc_core::RuntimeId> =
        runs::list(db, Some(&app), 10).await.expect("runs").into_iter().map(|r| r.runtime_id).collect();
    assert!(!left.contains(&ids[0]) && left.contains(&ids[1]) && left.contains(&ids[2]), "{left:?}");
    assert!(retention::purge(db, cutoff, 2).await.expect("again").is_empty());
}

both_backends!(audit_retention_deletes_only_entries_older_than_the_cutoff);

async fn audit_retention_deletes_only_entries_older_than_the_cutoff(t: &TestDb) {
    use dc_core::{audit, retention};
    let db = &t.db;
    let now = chrono::Utc::now();
    for (i, days) in [400, 366, 364, 0, 500].into_iter().enumerate() {
        let entry = audit::NewAuditEntry {
            at: now - chrono::TimeDelta::days(days),
            subject: Some(format!("s{i}")),
            role: None,
            method: "POST".into(),
            route: "/api/v1/apps/{app_id}/commands".into(),
            target: None,
            status: 202,
            client_addr: None,
            request_id: None,
        };
        audit::record(db, entry).await.expect("record");
    }
    let cutoff = now - chrono::TimeDelta::days(365);
    assert_eq!(retention::purge_audit(db, cutoff, 2).await.expect("purge"), 3, "in batches of 2");
    let left = audit::page(db, &audit::AuditQuery { limit: 10, ..Default::default() }).await.expect("page");
    let mut subjects: Vec<_> = left.into_iter().filter_map(|e| e.subject).collect();
    subjects.sort();
    assert_eq!(subjects, ["s2", "s3"]);
    assert_eq!(retention::purge_audit(db, cutoff, 2).await.expect("again"), 0);
}

both_backends!(a_new_versions_default_schedule_replans_unless_the_operator_set_one);

async fn a_new_versions_default_schedule_replans_unless_the_operator_set_one(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "replan").await;
    let version = |v: &str| dc_core::apps::PluginVersionRow {
        app_id: app.clone(),
        version: v.into(),
        sha256: format!("{v:0>64}"),
        interface_version: 1,
        interface_abi: None,
        manifest: "{}".into(),
        store_path: "/nonexistent".into(),
        source_file: "/nonexistent".into(),
        registered_at: chrono::Utc::now(),
    };
    let get = |db: &Database| {
        let (db, app) = (db.clone(), app.clone());
        async move { dc_core::apps::get_app(&db, &app).await.expect("get").expect("the app") }
    };
    dc_core::apps::register_version(db, &version("1"), "", Some("0 * * * *"), None).await.expect("v1");
    let planned = chrono::Utc::now() + chrono::TimeDelta::minutes(30);
    assert!(dc_core::apps::claim_next_run(db, &app, None, Some(planned)).await.expect("plan"));
    // the plugin's own schedule changes with the version: the old plan is dropped
    dc_core::apps::register_version(db, &version("2"), "", Some("*/5 * * * *"), None).await.expect("v2");
    let a = get(db).await;
    assert_eq!((a.schedule_cron.as_deref(), a.next_run), (Some("*/5 * * * *"), None));
    // an operator's schedule stays, with its plan, across versions
    let mine = dc_core::apps::AppSchedule { interval_secs: Some(60), anchor: Some(planned), ..Default::default() };
    dc_core::apps::set_schedule(db, &app, &mine, Some(planned)).await.expect("operator");
    dc_core::apps::register_version(db, &version("3"), "", Some("0 0 * * *"), None).await.expect("v3");
    let a = get(db).await;
    assert_eq!((a.schedule_cron, a.interval_secs, a.schedule_origin.as_str()), (None, Some(60), "operator"));
    assert!(a.next_run.is_some());
}
