//! Migrations, drop, seed and table creation / evolution.

use dc_core::db::CORE_TABLES;
use dc_core::{Database, DbError, RuntimeId, apps, merge, runs};
use serde_json::json;

use crate::common::{TestDb, decl, item, items_decl, live, new_app, obj, req};

both_backends!(
    migrate_status_drop_seed,
    ensure_table_adds_declared_columns,
    a_change_feed_written_before_its_entries_reads_back_after_migrating,
    a_malformed_feed_entry_is_named_with_how_to_remove_it,
);

async fn migrate_status_drop_seed(t: &TestDb) {
    let db = &t.db;
    // the harness applied every migration; again is a no-op
    assert_eq!(db.migrate().await.expect("second migrate"), 0);
    assert_eq!(db.migrate().await.expect("third migrate"), 0);
    let status = db.status().await.expect("status");
    assert!(status.iter().all(|m| m.applied), "{status:?}");
    assert!(status.iter().any(|m| m.version == 1 && m.description.contains("core")), "{status:?}");
    for table in CORE_TABLES {
        assert!(db.table_exists(table).await.expect("table_exists"), "core table {table} missing after migrate");
    }

    // seed records every core table under dc-host, idempotently
    db.seed().await.expect("seed");
    db.seed().await.expect("seed again");
    let seeded = apps::db_objects(db, Some(&dc_core::AppId::host())).await.expect("db_objects");
    let mut names: Vec<&str> = seeded.iter().map(|o| o.object_name.as_str()).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = CORE_TABLES.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert!(seeded.iter().all(|o| o.object_type == "TABLE" && o.last_action == "deploy"), "{seeded:?}");

    // a plugin table recorded for an app
    let app = new_app(db, "schema").await;
    let d = items_decl("plugin_items");
    merge::ensure_table(db, &app, &d).await.expect("ensure_table");
    merge::merge(db, req(&app, None, &d), &[item(1, false)]).await.expect("merge");
    assert!(db.table_exists("plugin_items").await.expect("exists"));

    // refused without confirmation, and nothing dropped
    let err = db.drop_all(false).await.expect_err("drop without confirmation must be refused");
    assert!(matches!(err, DbError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("--yes-drop-everything"), "{err}");
    assert!(db.table_exists("plugin_items").await.expect("exists"));
    assert!(db.table_exists("apps").await.expect("exists"));

    let dropped = db.drop_all(true).await.expect("drop_all");
    assert!(dropped.iter().any(|d| d == "plugin_items"), "{dropped:?}");
    for table in CORE_TABLES.iter().chain(["_sqlx_migrations", "plugin_items"].iter()) {
        assert!(!db.table_exists(table).await.expect("table_exists"), "{table} survived drop_all");
        assert!(dropped.iter().any(|d| d == table), "{table} not reported as dropped: {dropped:?}");
    }
    let status = db.status().await.expect("status after drop");
    assert!(status.iter().all(|m| !m.applied), "{status:?}");

    // and a dropped database migrates from scratch again
    assert_eq!(db.migrate().await.expect("migrate after drop"), status.len());
    assert!(db.table_exists("runtime").await.expect("exists"));
    assert!(apps::db_objects(db, None).await.expect("db_objects").is_empty());
}

async fn ensure_table_adds_declared_columns(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "evolve").await;
    let other = new_app(db, "other").await;
    let v1 = decl(json!({
        "name": "evolving", "key": ["sku"],
        "columns": [
            {"name": "sku", "type": "text", "nullable": false},
            {"name": "title", "type": "text"}
        ]
    }));
    merge::ensure_table(db, &app, &v1).await.expect("create");
    let objs = apps::db_objects(db, Some(&app)).await.expect("db_objects");
    assert_eq!(objs.len(), 1, "{objs:?}");
    assert_eq!((objs[0].object_name.as_str(), objs[0].object_type.as_str()), ("evolving", "TABLE"));
    assert_eq!(objs[0].last_action, "create");
    assert!(apps::db_objects(db, Some(&other)).await.expect("db_objects").is_empty());

    let rows = vec![obj(json!({"sku": "a", "title": "A"})), obj(json!({"sku": "b", "title": "B"}))];
    let s = merge::merge(db, req(&app, None, &v1), &rows).await.expect("merge v1");
    assert_eq!(s.inserted, 2);

    // the new field is refused while the table does not declare it
    let with_new = vec![obj(json!({"sku": "a", "title": "A", "colour": "red", "weight": 1.5, "flags": {"x": true}}))];
    let err = merge::merge(db, req(&app, None, &v1), &with_new).await.expect_err("undeclared field refused");
    assert!(err.to_string().contains("\"colour\""), "{err}");

    let v2 = decl(json!({
        "name": "evolving", "key": ["sku"],
        "columns": [
            {"name": "sku", "type": "text", "nullable": false},
            {"name": "title", "type": "text"},
            {"name": "colour", "type": "text"},
            {"name": "weight", "type": "real"},
            {"name": "flags", "type": "json"}
        ]
    }));
    merge::ensure_table(db, &app, &v2).await.expect("ensure_table v2 adds columns");
    // a second call with nothing new is a no-op that still succeeds
    merge::ensure_table(db, &app, &v2).await.expect("ensure_table v2 again");
    let objs = apps::db_objects(db, Some(&app)).await.expect("db_objects");
    assert_eq!(objs.len(), 1, "{objs:?}");
    assert_eq!(objs[0].last_action, "verify");

    // old rows read back with NULL in the new columns
    let now = live(db, &v2).await;
    assert_eq!(now.len(), 2);
    assert_eq!(now["[\"b\"]"]["colour"], serde_json::Value::Null);
    assert_eq!(now["[\"b\"]"]["title"], json!("B"));

    let s = merge::merge(db, req(&app, None, &v2), &[with_new[0].clone(), rows[1].clone()]).await.expect("merge v2");
    assert_eq!((s.inserted, s.deleted), (0, 0), "{s:?}");
    let now = live(db, &v2).await;
    assert_eq!(now["[\"a\"]"]["colour"], json!("red"));
    assert_eq!(now["[\"a\"]"]["weight"], json!(1.5));
    assert_eq!(now["[\"a\"]"]["flags"], json!({"x": true}));

    // re-merging the same v2 data is idempotent
    let s =
        merge::merge(db, req(&app, None, &v2), &[with_new[0].clone(), rows[1].clone()]).await.expect("merge v2 again");
    assert_eq!((s.inserted, s.updated, s.deleted, s.unchanged), (0, 0, 0, 2), "{s:?}");
}

/// Migration 15 groups the change feed into entries of many keys; the rows
/// written before it (one key each) become entries of one key: a run's feed
/// and its counts read back as they were, and new entries go beside them.
async fn a_change_feed_written_before_its_entries_reads_back_after_migrating(t: &TestDb) {
    use sqlx::migrate::Migrator;
    use std::borrow::Cow;
    let db = &t.db;
    db.drop_all(true).await.expect("drop");
    // the schema as it was before migration 15 (`Migrator`'s fields are
    // public for `migrate!`; a test may narrow its list)
    let before = |mut m: Migrator| {
        m.migrations = Cow::Owned(m.migrations.iter().filter(|m| m.version < 15).cloned().collect());
        m
    };
    match db {
        Database::Sqlite(pool) => before(sqlx::migrate!("../../migrations/sqlite")).run(pool).await,
        Database::Postgres(pool) => before(sqlx::migrate!("../../migrations/postgres")).run(pool).await,
    }
    .expect("migrate to version 14");
    let old =
        [("items", "insert", r#"["a"]"#), ("items", "insert", r#"["b,\"]"]"#), ("pairs", "delete", r#"["eu",1]"#)];
    for (table, op, key) in old {
        dc_core::on_pool!(db, pool => sqlx::query(
            "INSERT INTO run_changes (runtime_id, table_name, op, row_key) VALUES ('0123456789abcdef0123456789abcdef', $1, $2, $3)")
            .bind(table).bind(op).bind(key).execute(pool).await.map(|_| ()))
        .expect("a feed row as version 14 wrote it");
    }
    assert_eq!(db.migrate().await.expect("migrate"), 2, "migrations 15 and 16 only");
    let rid = RuntimeId::parse("0123456789abcdef0123456789abcdef").expect("an id");
    let read: Vec<(String, String, String)> =
        runs::changes(db, &rid).await.expect("changes").into_iter().map(|c| (c.table_name, c.op, c.row_key)).collect();
    let expected: Vec<(String, String, String)> =
        old.iter().map(|(t, o, k)| (t.to_string(), o.to_string(), k.to_string())).collect();
    assert_eq!(read, expected);
    let counts: Vec<(String, String, i64)> = runs::change_summary(db, &rid)
        .await
        .expect("summary")
        .into_iter()
        .map(|c| (c.table_name, c.op, c.count))
        .collect();
    assert_eq!(counts, vec![("items".into(), "insert".into(), 2), ("pairs".into(), "delete".into(), 1)]);
}

/// A feed entry that is not a JSON array of keys (written by hand, outside
/// dc-host) makes reading the run's feed fail with an error that names the
/// entry and says how to delete it; the counts still read.
async fn a_malformed_feed_entry_is_named_with_how_to_remove_it(t: &TestDb) {
    let db = &t.db;
    let rid = "0123456789abcdef0123456789abcdef";
    for keys in [r#"["a"]"#, r#"["b""#] {
        dc_core::on_pool!(db, pool => sqlx::query(
            "INSERT INTO run_changes (runtime_id, table_name, op, row_keys, key_count) VALUES ($1, 'items', 'insert', $2, 1)")
            .bind(rid).bind(keys).execute(pool).await.map(|_| ()))
        .expect("a feed entry");
    }
    let bad: i64 = dc_core::on_pool!(db, pool => sqlx::query_scalar(
        "SELECT id FROM run_changes WHERE runtime_id = $1 AND row_keys = '[\"b\"'").bind(rid).fetch_one(pool).await)
    .expect("the malformed entry's id");
    let rid = RuntimeId::parse(rid).expect("an id");
    let err = runs::changes(db, &rid).await.expect_err("a malformed entry is refused").to_string();
    assert!(
        err.contains(&format!("change feed entry {bad} of run {rid} (items, insert) is not a JSON array of keys")),
        "{err}"
    );
    assert!(err.contains(&format!("DELETE FROM run_changes WHERE id = {bad}")), "{err}");
    let counts = runs::change_summary(db, &rid).await.expect("summary");
    assert_eq!(counts.iter().map(|c| c.count).sum::<i64>(), 2);
}
