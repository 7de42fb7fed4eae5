//! Shared harness: per-test databases on both backends, table declarations,
//! row generators and readers that see the tables the way a test must.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use dc_core::enums::UnicodeForm;
use dc_core::merge::{self, MergeRequest};
use dc_core::{AppId, Database, RuntimeId, Settings, apps, runs};
use dc_plugin_api::{ColumnType, TableDecl};
use serde_json::{Map, Value, json};
use sqlx::{AssertSqlSafe, Row};

pub use dc_e2e::pg::{PgScratch, pg_admin_url};

/// A fresh, migrated database of one backend, removed when dropped.
pub struct TestDb {
    /// The pool.
    pub db: Database,
    /// Its URL (for child processes).
    pub url: String,
    /// A scratch directory (holds the SQLite file; tests may put files here).
    pub dir: tempfile::TempDir,
    // dropped last: drops the PostgreSQL scratch database
    _pg: Option<PgScratch>,
}

impl TestDb {
    /// SQLite file `t.db` in a new temp dir, migrated.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = connect_migrated(&url).await;
        TestDb { db, url, dir, _pg: None }
    }

    /// A new PostgreSQL scratch database, migrated. Panics (the test FAILS) when
    /// the server is unreachable, saying how to start it.
    pub async fn postgres() -> TestDb {
        let url = scratch_pg_url().await;
        let pg = PgScratch::for_url(&url);
        let dir = tempfile::tempdir().expect("tempdir");
        let db = connect_migrated(&url).await;
        TestDb { db, url, dir, _pg: Some(pg) }
    }

    /// Connects another pool to the same database.
    pub async fn reconnect(&self) -> Database {
        Database::connect_url(&self.url, &Settings::default())
            .await
            .unwrap_or_else(|e| panic!("reconnect to {}: {e}", self.url))
    }
}

/// Creates a scratch PostgreSQL database, or fails the test with instructions.
pub async fn scratch_pg_url() -> String {
    dc_e2e::pg::scratch_url("dc_test").await
}

async fn connect_migrated(url: &str) -> Database {
    let db = Database::connect_url(url, &Settings::default()).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let applied = db.migrate().await.unwrap_or_else(|e| panic!("migrate {url}: {e}"));
    let status = db.status().await.expect("status");
    assert!(!status.is_empty(), "no embedded migrations");
    assert_eq!(applied, status.len(), "a fresh database must get every migration applied: {status:?}");
    assert!(status.iter().all(|m| m.applied), "{status:?}");
    db
}

/// A JSON object literal as a record.
pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// A declaration from JSON.
pub fn decl(v: Value) -> TableDecl {
    serde_json::from_value(v).expect("table declaration parses")
}

/// A table with a column of every type, keyed on `sku`.
pub fn items_decl(name: &str) -> TableDecl {
    decl(json!({
        "name": name, "key": ["sku"],
        "columns": [
            {"name": "sku", "type": "text", "nullable": false},
            {"name": "title", "type": "text"},
            {"name": "qty", "type": "integer"},
            {"name": "price", "type": "real"},
            {"name": "active", "type": "boolean"},
            {"name": "attrs", "type": "json"},
            {"name": "seen", "type": "timestamp"}
        ]
    }))
}

/// Row `i` of the items table; `changed` alters exactly one field, cycling
/// through the column types.
pub fn item(i: usize, changed: bool) -> Map<String, Value> {
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let mut title = if i.is_multiple_of(17) { Value::Null } else { json!(format!("Item {i} caf\u{e9} \u{1F600}")) };
    let mut qty = json!(i as i64 * 3 - 100);
    let mut price = json!(i as f64 * 1.25 + 0.5);
    let mut active = json!(i.is_multiple_of(2));
    let colour = ["red", "green", "blue"][i % 3];
    let mut attrs = json!({"colour": colour, "tags": [i, "x"], "nested": {"a": i}});
    let mut seen = base + chrono::Duration::minutes(i as i64) + chrono::Duration::microseconds(i as i64 * 7);
    if changed {
        match i % 6 {
            0 => title = json!(format!("Item {i} renamed")),
            1 => qty = json!(i as i64 * 3 - 99),
            2 => price = json!(i as f64 * 1.25 + 0.51),
            3 => active = json!(!i.is_multiple_of(2)),
            4 => attrs = json!({"colour": "changed", "tags": [i, "x"], "nested": {"a": i}}),
            _ => seen += chrono::Duration::microseconds(1),
        }
    }
    obj(json!({
        "sku": format!("sku-{i:05}"),
        "title": title,
        "qty": qty,
        "price": price,
        "active": active,
        "attrs": attrs,
        "seen": seen.to_rfc3339_opts(SecondsFormat::Micros, true),
    }))
}

/// A table keyed on two columns of different types.
pub fn pairs_decl(name: &str) -> TableDecl {
    decl(json!({
        "name": name, "key": ["region", "id"],
        "columns": [
            {"name": "region", "type": "text"},
            {"name": "id", "type": "integer"},
            {"name": "val", "type": "text"},
            {"name": "n", "type": "real"}
        ]
    }))
}

/// Row `i` of the pairs table (regions alternate, ids repeat across regions).
pub fn pair(i: usize, changed: bool) -> Map<String, Value> {
    let region = ["eu", "us"][i % 2];
    let n = if changed { i as f64 + 0.5 } else { i as f64 };
    obj(json!({"region": region, "id": (i / 2) as i64, "val": format!("v{i}"), "n": n}))
}

/// A merge request with the usual defaults (full snapshot, NFC, delete).
pub fn req<'a>(app_id: &'a AppId, runtime_id: Option<&'a RuntimeId>, decl: &'a TableDecl) -> MergeRequest<'a> {
    MergeRequest {
        app_id,
        runtime_id,
        decl,
        full_snapshot: true,
        form: UnicodeForm::Nfc,
        archive_missing: false,
        clock: &dc_core::clock::SYSTEM,
    }
}

/// Ensures an app `it/tests/<name>` and returns its id.
pub async fn new_app(db: &Database, name: &str) -> AppId {
    apps::ensure_app(db, "it", "tests", name, "scraper", "integration test app").await.expect("ensure_app");
    apps::app_id_for("it", "tests", name)
}

/// Creates a PENDING run of the app.
pub async fn new_run(db: &Database, app_id: &AppId) -> RuntimeId {
    runs::create(
        db,
        &runs::NewRun { app_id, plugin_version: "1.0.0", plugin_hash: "0000", args: "{}", threads: 1, host_name: "it" },
    )
    .await
    .expect("runs::create")
}

/// Rows in the table, archived ones included.
/// How many unique indexes (a UNIQUE constraint's included) `table` has.
pub async fn unique_indexes(db: &Database, table: &str) -> i64 {
    match db {
        Database::Postgres(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM pg_index WHERE indrelid = to_regclass($1) AND indisunique")
                .bind(format!("\"{table}\""))
                .fetch_one(pool)
                .await
        }
        Database::Sqlite(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM pragma_index_list($1) WHERE \"unique\" = 1")
                .bind(table)
                .fetch_one(pool)
                .await
        }
    }
    .expect("unique indexes")
}

pub async fn raw_count(db: &Database, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM \"{table}\"");
    dc_core::on_pool!(db, pool => sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).fetch_one(pool).await)
        .expect("count")
}

/// The bookkeeping columns of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub hash: String,
    pub runtime_id: Option<String>,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
}

/// `_row_key` -> bookkeeping columns, for every row (archived ones included).
pub async fn metas(db: &Database, table: &str) -> BTreeMap<String, Meta> {
    let sql =
        format!("SELECT _row_key, _row_hash, _runtime_id, _first_seen, _last_seen, _archived_at FROM \"{table}\"");
    dc_core::on_pool!(db, pool => {
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await.expect("read metas");
        rows.iter()
            .map(|r| {
                (
                    r.try_get::<String, _>(0).expect("_row_key"),
                    Meta {
                        hash: r.try_get(1).expect("_row_hash"),
                        runtime_id: r.try_get(2).expect("_runtime_id"),
                        first_seen: r.try_get(3).expect("_first_seen"),
                        last_seen: r.try_get(4).expect("_last_seen"),
                        archived_at: r.try_get(5).expect("_archived_at"),
                    },
                )
            })
            .collect()
    })
}

/// Canonical form of a record for comparison: every declared column present,
/// timestamps as RFC 3339 UTC with microseconds, reals as f64; keyed by the
/// canonical key (JSON array of the key values, as `_row_key` stores it).
pub fn canonical(decl: &TableDecl, rows: &[Map<String, Value>]) -> BTreeMap<String, Map<String, Value>> {
    let mut out = BTreeMap::new();
    for row in rows {
        let mut m = Map::new();
        for c in &decl.columns {
            let v = row.get(&c.name).cloned().unwrap_or(Value::Null);
            let v = match (c.ty, &v) {
                (_, Value::Null) => Value::Null,
                (ColumnType::Timestamp, Value::String(s)) => {
                    let t: DateTime<Utc> = s.parse().unwrap_or_else(|e| panic!("timestamp {s:?}: {e}"));
                    Value::String(t.to_rfc3339_opts(SecondsFormat::Micros, true))
                }
                (ColumnType::Real, v) => json!(v.as_f64().expect("real")),
                (ColumnType::Integer, v) => json!(v.as_i64().expect("integer")),
                _ => v,
            };
            m.insert(c.name.clone(), v);
        }
        let key = Value::Array(decl.key.iter().map(|k| m[k].clone()).collect()).to_string();
        assert!(out.insert(key.clone(), m).is_none(), "duplicate key {key}");
    }
    out
}

/// Live (not archived) rows of a declared table, canonical.
pub async fn live(db: &Database, decl: &TableDecl) -> BTreeMap<String, Map<String, Value>> {
    let rows = merge::preview(db, decl, i64::MAX).await.expect("preview");
    canonical(decl, &rows)
}

/// A run's change feed as sorted (table, op, key) triples.
pub async fn feed(db: &Database, runtime_id: &RuntimeId) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = runs::changes(db, runtime_id)
        .await
        .expect("changes")
        .into_iter()
        .map(|c| (c.table_name, c.op, c.row_key))
        .collect();
    v.sort();
    v
}

/// Checks every change-feed entry in `db`: its `key_count` is the number of
/// keys its `row_keys` array holds, at most `feed::KEYS_PER_ENTRY`, and each
/// (run, table, operation) has as few entries as its keys need (all full but
/// one). Returns the number of entries.
pub async fn feed_entries_are_whole(db: &Database) -> usize {
    use dc_core::feed::{KEYS_PER_ENTRY, expand};
    let entries: Vec<(String, String, String, i64, String)> = dc_core::on_pool!(db, pool => sqlx::query_as(
        "SELECT runtime_id, table_name, op, CAST(key_count AS BIGINT), row_keys FROM run_changes ORDER BY id")
        .fetch_all(pool).await)
    .expect("read the feed's entries");
    let mut per: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
    for (rid, table, op, count, keys) in &entries {
        let n = expand(keys).unwrap_or_else(|e| panic!("entry of {rid} {table} {op}: {e}: {keys}")).len();
        assert_eq!(n as i64, *count, "{rid} {table} {op}: key_count against the keys held");
        assert!((1..=KEYS_PER_ENTRY).contains(&n), "{rid} {table} {op}: {n} keys in one entry");
        let e = per.entry((rid.clone(), table.clone(), op.clone())).or_default();
        e.0 += 1;
        e.1 += n;
    }
    for ((rid, table, op), (n_entries, n_keys)) in per {
        assert_eq!(n_entries, n_keys.div_ceil(KEYS_PER_ENTRY), "{rid} {table} {op}: {n_keys} keys");
    }
    entries.len()
}

/// The four merge counters of a run.
pub async fn counters(db: &Database, runtime_id: &str) -> [i64; 4] {
    let r = runs::get(db, runtime_id).await.expect("runs::get");
    [r.inserted, r.updated, r.deleted, r.unchanged]
}

/// Path of this test binary and the arguments that run exactly one ignored child test.
pub fn child_command(test: &str) -> std::process::Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut c = std::process::Command::new(exe);
    c.args([test, "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    c
}
