//! The SHA merge: plugin tables are created from their manifest declaration, and
//! `merge` brings a table in line with a batch of records in ONE transaction —
//! inserting new rows, updating changed ones, deleting or archiving rows absent
//! from a full snapshot, and skipping unchanged rows with zero writes. It returns
//! counts and writes a change feed (`run_changes`) for the run.
//!
//! Every record is validated and converted to typed cells before the database
//! is touched, so a bad record (missing key, wrong type, oversized text) rejects
//! the whole batch naming the record and field, and nothing is half-written.
//!
//! Each plugin table carries `_row_key` (canonical JSON of the key cells, unique),
//! `_row_hash` (SHA-256 of the row), `_runtime_id`, `_first_seen`, `_last_seen`
//! and `_archived_at`. PostgreSQL loads an empty table by binary COPY; a
//! re-merge reads the table's `(_row_key, _row_hash)` pairs and diffs on the
//! client, then COPYs new rows straight in, updates changed rows from a
//! staging table holding only them, and removes missing rows by key. SQLite
//! merges through prepared statements in one `BEGIN IMMEDIATE` transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use dc_plugin_api::{ColumnType, MergeSummary, MissingRows, TableDecl};
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Row};

use crate::db::{Backend, Database, DbError, WriteTx};
use crate::enums::{DbObjectType, UnicodeForm};
use crate::feed;
use crate::hash::{Cell, HashVersion, HexDigest, RowHasher};
use crate::ids::{AppId, RuntimeId};

/// Largest text value accepted when a column declares no `max_len`.
pub const MAX_TEXT_CHARS: usize = 1_000_000;

/// Why a merge did not happen. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A record does not fit the table declaration.
    #[error("record {index} for table {table}: {problem}; nothing of this batch was written")]
    BadRecord {
        /// Table.
        table: String,
        /// 0-based index of the record in the batch.
        index: usize,
        /// What is wrong, naming the field.
        problem: String,
    },
    /// The table declaration itself is unusable.
    #[error("table declaration {0}")]
    BadDeclaration(String),
    /// The app may not use this table (reserved name, another app's table).
    #[error("{0}")]
    NotYours(String),
    /// A new declaration changes the table in a way that needs its rows
    /// migrated (`dc-host data migrate`); nothing was changed.
    #[error("table {table:?} cannot change this way without migrating its rows: {}", changes.join("; "))]
    SchemaChange {
        /// The table.
        table: String,
        /// Each breaking change, naming the column with its old and new declaration.
        changes: Vec<String>,
        /// The live declaration the new one was compared with.
        live: Box<TableDecl>,
    },
    /// The database failed; the transaction was rolled back.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl MergeError {
    /// What kind of failure this is: a bad record or declaration is invalid
    /// input; another app's table or a table change that needs a migration
    /// conflicts with the current state.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            MergeError::BadRecord { .. } | MergeError::BadDeclaration(_) => crate::ErrorKind::Invalid,
            MergeError::NotYours(_) | MergeError::SchemaChange { .. } => crate::ErrorKind::Conflict,
            MergeError::Db(e) => e.kind(),
        }
    }
}

impl From<sqlx::Error> for MergeError {
    fn from(e: sqlx::Error) -> Self {
        MergeError::Db(DbError::Query(e))
    }
}

/// Checks an SQL identifier (lowercase ASCII, digits, `_`).
pub fn check_ident(name: &str) -> Result<(), MergeError> {
    let ok = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(MergeError::BadDeclaration(format!(
            "{name:?}: identifiers must be lowercase letters, digits and '_' (at most 63)"
        )))
    }
}

/// The refusal for a column type this host's interface crate knows but this
/// data layer does not store (a variant added to the non-exhaustive enum).
fn unsupported(ty: ColumnType) -> String {
    format!("column type {ty:?} is not supported by this host's data layer; upgrade dc-host")
}

pub(crate) fn sql_type(backend: Backend, ty: ColumnType) -> Result<&'static str, MergeError> {
    Ok(match (backend, ty) {
        (_, ColumnType::Text) => "TEXT",
        (Backend::Sqlite, ColumnType::Integer | ColumnType::Boolean) => "INTEGER",
        (Backend::Sqlite, ColumnType::Real) => "REAL",
        (Backend::Sqlite, ColumnType::Json | ColumnType::Timestamp) => "TEXT",
        (Backend::Postgres, ColumnType::Integer) => "BIGINT",
        (Backend::Postgres, ColumnType::Real) => "DOUBLE PRECISION",
        (Backend::Postgres, ColumnType::Boolean) => "BOOLEAN",
        (Backend::Postgres, ColumnType::Json) => "JSONB",
        (Backend::Postgres, ColumnType::Timestamp) => "TIMESTAMPTZ",
        (_, other) => return Err(MergeError::BadDeclaration(unsupported(other))),
    })
}

pub(crate) fn validate_decl(backend: Backend, decl: &TableDecl) -> Result<(), MergeError> {
    check_ident(&decl.name)?;
    for c in &decl.columns {
        check_ident(&c.name)?;
        sql_type(backend, c.ty)
            .map_err(|e| MergeError::BadDeclaration(format!("{}: column {:?}: {e}", decl.name, c.name)))?;
        if c.name.starts_with('_') {
            return Err(MergeError::BadDeclaration(format!(
                "{}: column {:?} may not start with '_'",
                decl.name, c.name
            )));
        }
    }
    if decl.key.is_empty() || decl.key.iter().any(|k| !decl.columns.iter().any(|c| &c.name == k)) {
        return Err(MergeError::BadDeclaration(format!("{}: key columns must be declared columns", decl.name)));
    }
    Ok(())
}

/// Creates the table if needed, or brings it to a new declaration when the
/// change is additive (see [`crate::evolve`]); returns the additive changes it
/// applied, described for the operator. A breaking change is refused with
/// [`MergeError::SchemaChange`]. Records the table in `app_db_objects` and
/// `dc_plugin_tables`. One transaction: on any error nothing changes.
///
/// Every run's start calls it, and almost always nothing changed: when `decl`
/// is exactly the table's recorded declaration, `app_id` is recorded as
/// writing into it and the table exists, it returns at once after two reads,
/// without the write lock and without bumping the table's generation (which
/// would make a concurrent run's staged merge diff its rows again).
pub async fn ensure_table(db: &Database, app_id: &AppId, decl: &TableDecl) -> Result<Vec<String>, MergeError> {
    if table_is_current(db, app_id, decl).await? {
        return Ok(Vec::new());
    }
    let mut tx = db.begin_write().await?;
    let applied = ensure_table_in(&mut tx, app_id, decl).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Whether [`ensure_table`] has nothing to do for `decl`: it is the table's
/// recorded declaration, `app_id` is recorded as writing into the table, and
/// the table exists. Everything [`ensure_table_in`] checks (the name, the
/// owner, the sharers' shape) held when that declaration was recorded for this
/// app, and any later change to the table goes through `ensure_table_in` or a
/// migration, which record the new declaration.
async fn table_is_current(db: &Database, app_id: &AppId, decl: &TableDecl) -> Result<bool, MergeError> {
    let recorded: Option<String> = crate::on_pool!(db, pool => sqlx::query_scalar(
        "SELECT t.declaration FROM dc_plugin_tables t JOIN app_db_objects o \
         ON o.object_name = t.table_name AND o.object_type = $3 AND o.app_id = $2 WHERE t.table_name = $1")
        .bind(&decl.name).bind(app_id).bind(DbObjectType::Table.as_str()).fetch_optional(pool).await)?;
    let Some(live) = recorded.and_then(|json| serde_json::from_str::<TableDecl>(&json).ok()) else {
        return Ok(false);
    };
    Ok(live == *decl && db.table_exists(&decl.name).await?)
}

/// The host column of a shared table naming the app that inserted each row
/// (its full snapshots remove only those rows).
pub const APP_COLUMN: &str = "_app_id";

/// The `CREATE TABLE` statement of a plugin table named `name` shaped as `decl`.
pub(crate) fn create_table_sql(backend: Backend, name: &str, decl: &TableDecl) -> Result<String, MergeError> {
    let ts = match backend {
        Backend::Sqlite => "TEXT",
        Backend::Postgres => "TIMESTAMPTZ",
    };
    let mut cols: Vec<String> = decl
        .columns
        .iter()
        .map(|c| {
            let not_null = if !c.nullable || decl.key.contains(&c.name) { " NOT NULL" } else { "" };
            Ok(format!("\"{}\" {}{}", c.name, sql_type(backend, c.ty)?, not_null))
        })
        .collect::<Result<_, MergeError>>()?;
    // PostgreSQL: the key's unique index is built after the table's first
    // rows (`ensure_key_index`), one sorted build instead of an index insert
    // per row of a first load
    cols.push(match backend {
        Backend::Sqlite => "_row_key TEXT NOT NULL UNIQUE".into(),
        Backend::Postgres => "_row_key TEXT NOT NULL".into(),
    });
    cols.push("_row_hash TEXT NOT NULL".into());
    cols.push("_runtime_id TEXT".into());
    cols.push(format!("_first_seen {ts}"));
    cols.push(format!("_last_seen {ts}"));
    cols.push(format!("_archived_at {ts}"));
    if decl.shared {
        cols.push(format!("{APP_COLUMN} TEXT"));
    }
    Ok(format!("CREATE TABLE \"{name}\" ({})", cols.join(", ")))
}

/// [`ensure_table`] inside the caller's transaction (registration creates an
/// app's tables, its app row and its version row in one transaction).
pub async fn ensure_table_in(tx: &mut WriteTx, app_id: &AppId, decl: &TableDecl) -> Result<Vec<String>, MergeError> {
    let backend = tx.backend();
    validate_decl(backend, decl)?;
    check_table_ownership(tx, app_id, decl).await?;
    let t = &decl.name;
    if !tx.table_exists(t).await? {
        let sql = create_table_sql(backend, t, decl)?;
        crate::on_tx!(tx, conn => sqlx::query(AssertSqlSafe(sql)).persistent(false).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
        crate::apps::record_db_object_in(tx, app_id, t, DbObjectType::Table, "create").await?;
        record_table(tx, app_id, decl, HashVersion::CURRENT).await?;
        return Ok(Vec::new());
    }
    let existing = table_columns(tx, t).await?;
    let applied = match live_declaration(tx, t).await? {
        Some(live) => {
            let d = crate::evolve::diff(&live, decl);
            if !d.breaking.is_empty() {
                return Err(MergeError::SchemaChange { table: t.clone(), changes: d.breaking, live: Box::new(live) });
            }
            d.additive
        }
        // a table from before declarations were recorded: add what it lacks
        None => decl
            .columns
            .iter()
            .filter(|c| !existing.contains(&c.name))
            .map(|c| format!("column {:?} added ({})", c.name, crate::evolve::describe_column(decl, c)))
            .collect(),
    };
    for c in &decl.columns {
        if !existing.contains(&c.name) {
            let sql = format!("ALTER TABLE \"{t}\" ADD COLUMN \"{}\" {}", c.name, sql_type(backend, c.ty)?);
            crate::on_tx!(tx, conn => sqlx::query(AssertSqlSafe(sql)).persistent(false).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
        }
    }
    if decl.shared {
        share_table(tx, t, &existing).await?;
    }
    let version = table_hash_version(tx, t).await?;
    record_table(tx, app_id, decl, version).await?;
    crate::apps::record_db_object_in(tx, app_id, t, DbObjectType::Table, "verify").await?;
    Ok(applied)
}

/// Makes an existing table ready for shared use: the `_app_id` column, and
/// every row without one marked as its owner's (until a table is shared, only
/// its owner writes into it).
pub(crate) async fn share_table(tx: &mut WriteTx, t: &str, existing: &HashSet<String>) -> Result<(), MergeError> {
    if !existing.contains(APP_COLUMN) {
        let sql = format!("ALTER TABLE \"{t}\" ADD COLUMN {APP_COLUMN} TEXT");
        crate::on_tx!(tx, conn => sqlx::query(AssertSqlSafe(sql)).persistent(false).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    }
    if let Some(owner) = table_owner(tx, t).await? {
        let sql = format!("UPDATE \"{t}\" SET {APP_COLUMN} = $1 WHERE {APP_COLUMN} IS NULL");
        crate::on_tx!(tx, conn => sqlx::query(AssertSqlSafe(sql)).persistent(false).bind(&owner).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// The declaration a table's shape follows: the one recorded in
/// `dc_plugin_tables`, or (for a table from before that table existed) its owner
/// app's active manifest. None if neither is known.
pub async fn live_declaration(tx: &mut WriteTx, table: &str) -> Result<Option<TableDecl>, MergeError> {
    let recorded: Option<String> = crate::on_tx!(tx, conn => sqlx::query_scalar(
        "SELECT declaration FROM dc_plugin_tables WHERE table_name = $1").bind(table).fetch_optional(&mut *conn).await)?;
    if let Some(json) = recorded {
        return serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| MergeError::BadDeclaration(format!("{table}: the recorded declaration is unreadable ({e})")));
    }
    let manifest: Option<String> = crate::on_tx!(tx, conn => sqlx::query_scalar(
        "SELECT pv.manifest FROM app_db_objects o JOIN apps a ON a.app_id = o.app_id \
         JOIN plugin_versions pv ON pv.sha256 = a.active_hash \
         WHERE o.object_name = $1 AND o.object_type = $2 ORDER BY o.created_at LIMIT 1")
        .bind(table).bind(DbObjectType::Table.as_str()).fetch_optional(&mut *conn).await)?;
    Ok(manifest
        .and_then(|m| serde_json::from_str::<dc_plugin_api::Manifest>(&m).ok())
        .and_then(|m| m.declared_table(table).cloned()))
}

/// Why no plugin may use the table name `name`, if it is reserved: dc-host's
/// own tables, and the prefixes SQLite and PostgreSQL keep for themselves.
pub fn reserved_table_name(name: &str) -> Option<String> {
    if crate::db::CORE_TABLES.contains(&name) || name == "_sqlx_migrations" {
        return Some(format!(
            "table {name:?} is one of dc-host's own tables; a plugin may not declare it: choose another table name"
        ));
    }
    // dc-host's own tables added from migration 4 on start with `dc_`, and its
    // work tables (staging, migration) with `_dc`: a plugin table can never be
    // or shadow one, including those of future versions
    for prefix in ["dc_", "_dc"] {
        if name.starts_with(prefix) {
            return Some(format!(
                "table {name:?} starts with {prefix:?}, which dc-host reserves for its own tables: choose another table name"
            ));
        }
    }
    for (prefix, owner) in [("sqlite_", "SQLite"), ("pg_", "PostgreSQL")] {
        if name.starts_with(prefix) {
            return Some(format!(
                "table {name:?} starts with {prefix:?}, which {owner} reserves for itself: choose another table name"
            ));
        }
    }
    None
}

/// Who owns the plugin table `name`: `Ok(None)` when it does not exist yet,
/// `Ok(Some(app_id))` for the app that created it, and an error for a table
/// that exists but that no app created (made outside dc-host).
pub async fn table_owner(tx: &mut WriteTx, name: &str) -> Result<Option<AppId>, MergeError> {
    let owners: Vec<AppId> = crate::on_tx!(tx, conn => sqlx::query_scalar(
        "SELECT app_id FROM app_db_objects WHERE object_name = $1 AND object_type = $2 ORDER BY created_at")
        .bind(name).bind(DbObjectType::Table.as_str()).fetch_all(&mut *conn).await)?;
    if let Some(first) = owners.into_iter().next() {
        return Ok(Some(first));
    }
    if tx.table_exists(name).await? {
        return Err(MergeError::NotYours(format!(
            "table {name:?} already exists in the database but no dc-host app created it; a plugin may not take it over: choose another table name"
        )));
    }
    Ok(None)
}

/// The path (`group/parent/app`) of app `app_id`, or the id itself for an app
/// that no longer exists.
async fn app_path(tx: &mut WriteTx, app_id: &AppId) -> Result<String, MergeError> {
    let path: Option<String> = crate::on_tx!(tx, conn => sqlx::query_scalar(
        "SELECT group_name || '/' || parent_name || '/' || app_name FROM apps WHERE app_id = $1")
        .bind(app_id).fetch_optional(&mut *conn).await)?;
    Ok(path.unwrap_or_else(|| app_id.to_string()))
}

/// The other existing apps that write into table `name` (recorded in
/// `app_db_objects`), as `(app_id, path)`, oldest first.
pub async fn table_sharers(tx: &mut WriteTx, name: &str, except: &AppId) -> Result<Vec<(AppId, String)>, MergeError> {
    let rows: Vec<(AppId, String)> = crate::on_tx!(tx, conn => sqlx::query_as(
        "SELECT o.app_id, MIN(a.group_name || '/' || a.parent_name || '/' || a.app_name) FROM app_db_objects o \
         JOIN apps a ON a.app_id = o.app_id \
         WHERE o.object_name = $1 AND o.object_type = $2 AND o.app_id <> $3 \
         GROUP BY o.app_id ORDER BY MIN(o.created_at)")
        .bind(name).bind(DbObjectType::Table.as_str()).bind(except).fetch_all(&mut *conn).await)?;
    Ok(rows)
}

/// Refuses a table declaration `app_id` may not use: a reserved name; a
/// table another app owns (its full snapshots would delete that app's rows)
/// unless both declare it shared; or a declaration that would change a table
/// other apps share with `app_id` (each app hashes and compares rows by its
/// own declaration, so sharers must declare the same columns and key).
pub async fn check_table_ownership(tx: &mut WriteTx, app_id: &AppId, decl: &TableDecl) -> Result<(), MergeError> {
    if let Some(why) = reserved_table_name(&decl.name) {
        return Err(MergeError::NotYours(why));
    }
    let t = &decl.name;
    let Some(owner) = table_owner(tx, t).await? else {
        return Ok(());
    };
    let live = live_declaration(tx, t).await?;
    let live_shared = live.as_ref().is_some_and(|l| l.shared);
    if owner != app_id && !(decl.shared && live_shared) {
        let owner_path = app_path(tx, &owner).await?;
        return Err(MergeError::NotYours(if decl.shared {
            format!(
                "table {t:?} belongs to app {owner_path}, which does not declare it shared; a second app may write into it only when both declare it `.shared()`: share it in {owner_path}'s plugin first, or choose another table name"
            )
        } else if live_shared {
            format!(
                "table {t:?} is shared by app {owner_path}; to write into it, declare it shared too (`TableDecl::new({t:?})…shared()`) with the same columns and key, or choose another table name"
            )
        } else {
            format!(
                "table {t:?} belongs to app {owner_path}; a second app may not declare it (its full snapshots would delete {owner_path}'s rows): choose another table name, or declare it `.shared()` in both plugins"
            )
        }));
    }
    let sharers = table_sharers(tx, t, app_id).await?;
    if sharers.is_empty() {
        return Ok(());
    }
    let names = sharers.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>().join(", ");
    if !decl.shared {
        return Err(MergeError::NotYours(format!(
            "table {t:?} is shared with app {names}; it must stay shared (`.shared()`) while another app declares it: remove it from their plugins (or `dc-host apps rm`) first"
        )));
    }
    if let Some(live) = live {
        let d = crate::evolve::diff(&live, decl);
        if !d.is_empty() {
            let changes = d.breaking.iter().chain(&d.additive).cloned().collect::<Vec<_>>().join("; ");
            return Err(MergeError::NotYours(format!(
                "table {t:?} is shared with app {names}, and every app sharing a table must declare the same columns and key ({changes}): declare it exactly as the table is, or change it while only one app declares it"
            )));
        }
    }
    Ok(())
}

async fn table_columns(tx: &mut WriteTx, table: &str) -> Result<HashSet<String>, MergeError> {
    let names: Vec<String> = match tx {
        WriteTx::Sqlite(t) => {
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1)").bind(table).fetch_all(&mut **t).await?
        }
        WriteTx::Postgres(t) => {
            sqlx::query_scalar(
                "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
            )
            .bind(table)
            .fetch_all(&mut **t)
            .await?
        }
    };
    Ok(names.into_iter().collect())
}

/// Converts one JSON value into a typed cell for a declared column.
fn to_cell(col: &dc_plugin_api::ColumnDecl, is_key: bool, v: Option<&Value>) -> Result<Cell, String> {
    let name = &col.name;
    let v = match v {
        None | Some(Value::Null) => {
            return if is_key {
                Err(format!("key field {name:?} is missing"))
            } else if !col.nullable {
                Err(format!("field {name:?} is missing and the column is not nullable"))
            } else {
                Ok(Cell::Null)
            };
        }
        Some(v) => v,
    };
    let wrong = |expected: &str| {
        format!("field {name:?}: expected {expected}, got {}", dc_plugin_api::manifest::describe_value(v))
    };
    Ok(match col.ty {
        ColumnType::Text => {
            let s = v.as_str().ok_or_else(|| wrong("a string"))?;
            if s.contains('\0') {
                return Err(format!(
                    "field {name:?}: contains a NUL character, which databases cannot store; strip it"
                ));
            }
            let limit = if col.max_len > 0 { col.max_len } else { MAX_TEXT_CHARS };
            // a text has at most as many characters as bytes: count only long ones
            if s.len() > limit {
                let n = s.chars().count();
                if n > limit {
                    return Err(format!("field {name:?}: text of {n} characters exceeds the limit of {limit}"));
                }
            }
            Cell::Text(s.to_string())
        }
        ColumnType::Integer => match v.as_i64() {
            Some(i) => Cell::Int(i),
            None => match v.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Cell::Int(f as i64),
                _ => return Err(wrong("an integer")),
            },
        },
        ColumnType::Real => Cell::Real(v.as_f64().ok_or_else(|| wrong("a number"))?),
        ColumnType::Boolean => Cell::Bool(v.as_bool().ok_or_else(|| wrong("true or false"))?),
        ColumnType::Json => {
            if v.to_string().contains("\\u0000") {
                return Err(format!(
                    "field {name:?}: contains a NUL character, which databases cannot store; strip it"
                ));
            }
            Cell::Json(v.clone())
        }
        ColumnType::Timestamp => {
            let s = v.as_str().ok_or_else(|| wrong("an RFC 3339 timestamp string"))?;
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|_| wrong("an RFC 3339 timestamp like 2026-01-31T12:00:00Z"))?;
            Cell::Timestamp(t.with_timezone(&Utc))
        }
        other => return Err(unsupported(other)),
    })
}

/// The `_row_key` text: the compact JSON array of the key cells, with text
/// normalized like hashes (so "Café" typed two ways is one row). Written
/// straight into one string, byte for byte what serializing the
/// `serde_json::Value` array gives.
fn key_text(cells: &[Cell], key_idx: &[usize], form: UnicodeForm) -> String {
    let mut key = Vec::with_capacity(32);
    key.push(b'[');
    for (n, &i) in key_idx.iter().enumerate() {
        if n > 0 {
            key.push(b',');
        }
        // writing into a Vec cannot fail
        let _ = match &cells[i] {
            Cell::Text(t) => serde_json::to_writer(&mut key, crate::hash::normalize(t, form).as_ref()),
            c => serde_json::to_writer(&mut key, &c.to_json()),
        };
    }
    key.push(b']');
    String::from_utf8(key).unwrap_or_default()
}

/// Records converted to typed cells, with their keys and hashes.
#[derive(Debug)]
pub struct PreparedRows {
    /// One vector of cells per record, in declaration column order.
    pub cells: Vec<Vec<Cell>>,
    /// Canonical key text per record.
    pub keys: Vec<String>,
    /// Row hash per record (the `_row_hash` text, held inline).
    pub hashes: Vec<HexDigest>,
}

/// Converts one chunk of records (starting at `offset` in the batch).
fn prepare_chunk(
    decl: &TableDecl,
    rows: &[Map<String, Value>],
    offset: usize,
    form: UnicodeForm,
) -> Result<PreparedRows, MergeError> {
    let names: Vec<&str> = decl.columns.iter().map(|c| c.name.as_str()).collect();
    let key_idx: Vec<usize> = decl.key.iter().filter_map(|k| decl.columns.iter().position(|c| &c.name == k)).collect();
    let is_key: Vec<bool> = decl.columns.iter().map(|c| decl.key.contains(&c.name)).collect();
    let mut hasher = RowHasher::new(&names, form);
    let mut out = PreparedRows {
        cells: Vec::with_capacity(rows.len()),
        keys: Vec::with_capacity(rows.len()),
        hashes: Vec::with_capacity(rows.len()),
    };
    let mut values: Vec<Option<&Value>> = Vec::with_capacity(decl.columns.len());
    for (i, row) in rows.iter().enumerate() {
        let bad = |problem: String| MergeError::BadRecord { table: decl.name.clone(), index: offset + i, problem };
        values.clear();
        values.extend(decl.columns.iter().map(|c| row.get(&c.name)));
        // every field of the record names a column iff all of them were found
        if values.iter().filter(|v| v.is_some()).count() != row.len()
            && let Some(extra) = row.keys().find(|k| !names.contains(&k.as_str()))
        {
            return Err(bad(format!(
                "field {extra:?} is not a column of the table (declared: {}); declare it in the manifest or drop it",
                names.join(", ")
            )));
        }
        let cells = decl
            .columns
            .iter()
            .zip(&is_key)
            .zip(&values)
            .map(|((c, k), v)| to_cell(c, *k, *v))
            .collect::<Result<Vec<Cell>, String>>()
            .map_err(bad)?;
        let key = key_text(&cells, &key_idx, form);
        out.hashes.push(hasher.hex(&cells));
        out.keys.push(key);
        out.cells.push(cells);
    }
    Ok(out)
}

/// Batches smaller than this are prepared on the calling thread.
const PARALLEL_PREPARE_MIN: usize = 20_000;

/// Validates and converts a batch (large batches on all cores). Fails on the
/// first bad record, naming it.
pub fn prepare_rows(
    decl: &TableDecl,
    rows: &[Map<String, Value>],
    form: UnicodeForm,
) -> Result<PreparedRows, MergeError> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut out = if rows.len() < PARALLEL_PREPARE_MIN || threads == 1 {
        prepare_chunk(decl, rows, 0, form)?
    } else {
        let size = rows.len().div_ceil(threads);
        let parts: Vec<Result<PreparedRows, MergeError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = rows
                .chunks(size)
                .enumerate()
                .map(|(n, chunk)| scope.spawn(move || prepare_chunk(decl, chunk, n * size, form)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Err(MergeError::BadDeclaration("record preparation panicked".into())))
                })
                .collect()
        });
        let mut all = PreparedRows {
            cells: Vec::with_capacity(rows.len()),
            keys: Vec::with_capacity(rows.len()),
            hashes: Vec::with_capacity(rows.len()),
        };
        // chunks are in order, so the first error is the first bad record
        for part in parts {
            let p = part?;
            all.cells.extend(p.cells);
            all.keys.extend(p.keys);
            all.hashes.extend(p.hashes);
        }
        all
    };
    let mut seen = HashSet::with_capacity(out.keys.len());
    if let Some(index) = out.keys.iter().position(|k| !seen.insert(k.as_str())) {
        let key = std::mem::take(&mut out.keys[index]);
        return Err(MergeError::BadRecord {
            table: decl.name.clone(),
            index,
            problem: format!("key {key} appears more than once in the batch"),
        });
    }
    Ok(out)
}

/// Moves the record index of a [`MergeError::BadRecord`] by `offset` (the
/// records of earlier batches of the same merge).
pub fn offset_error(e: MergeError, offset: usize) -> MergeError {
    match e {
        MergeError::BadRecord { table, index, problem } => {
            MergeError::BadRecord { table, index: index + offset, problem }
        }
        e => e,
    }
}

/// One merge call.
#[derive(Debug, Clone, Copy)]
pub struct MergeRequest<'a> {
    /// The app that owns the table.
    pub app_id: &'a AppId,
    /// The run the change feed and counters belong to (None: no feed).
    pub runtime_id: Option<&'a RuntimeId>,
    /// The table declaration.
    pub decl: &'a TableDecl,
    /// Remove rows absent from `rows`.
    pub full_snapshot: bool,
    /// Unicode normalization for hashing.
    pub form: UnicodeForm,
    /// Archive instead of delete, whatever the table declares.
    pub archive_missing: bool,
    /// Where the rows' timestamps come from ([`crate::clock::SYSTEM`] but in tests).
    pub clock: &'a crate::clock::Clock,
}

/// Merges `rows` into the table in one transaction of its own (see the module
/// docs), adding the counts to the run's counters in the same transaction.
pub async fn merge(
    db: &Database,
    req: MergeRequest<'_>,
    rows: &[Map<String, Value>],
) -> Result<MergeSummary, MergeError> {
    let mut tx = db.begin_write().await?;
    let summary = merge_in(&mut tx, req, rows).await?;
    if let Some(rid) = req.runtime_id {
        crate::runs::add_counters_in(&mut tx, rid, &summary).await?;
    }
    tx.commit().await?;
    Ok(summary)
}

/// Merges `rows` inside the caller's transaction: nothing is visible to others
/// until the caller commits, and a rollback undoes it with everything else
/// the transaction wrote (a worker merges all tables of a run, then ends the
/// run, in one transaction). Writes the change feed but not the run's
/// counters: the caller adds those ([`crate::runs::add_counters_in`]).
#[dc_fun_watch::fun_watch]
pub async fn merge_in(
    tx: &mut WriteTx,
    req: MergeRequest<'_>,
    rows: &[Map<String, Value>],
) -> Result<MergeSummary, MergeError> {
    validate_decl(tx.backend(), req.decl)?;
    // a first load into an empty PostgreSQL table prepares its records while
    // the COPY carries them (see `first_load_postgres`); every other merge
    // prepares them all before it takes the table's lock
    let empty_pg = match tx {
        WriteTx::Postgres(t) => table_is_empty(t, &req.decl.name).await?,
        WriteTx::Sqlite(_) => false,
    };
    let prepared = if empty_pg { None } else { Some(prepare_rows(req.decl, rows, req.form)?) };
    if table_hash_version(tx, &req.decl.name).await? != HashVersion::CURRENT {
        let n = upgrade_hashes(tx, req.app_id, req.decl, req.form).await?;
        tracing::info!(table = %req.decl.name, rows = n, version = %HashVersion::CURRENT, "row hashes upgraded");
    }
    let archive = req.archive_missing || req.decl.missing == MissingRows::Archive;
    let summary = match (&mut *tx, prepared) {
        (WriteTx::Postgres(t), p) => merge_postgres(t, &req, rows, p, archive).await?,
        // (SQLite always prepares first: `empty_pg` is false)
        (WriteTx::Sqlite(t), p) => {
            let p = match p {
                Some(p) => p,
                None => prepare_rows(req.decl, rows, req.form)?,
            };
            merge_sqlite(t, &req, &p, archive).await?
        }
    };
    if tx.backend() == Backend::Sqlite {
        bump_generation(tx, &req.decl.name).await?;
    }
    crate::apps::record_db_object_in(tx, req.app_id, &req.decl.name, DbObjectType::Table, "merge").await?;
    Ok(summary)
}

/// Raises a table's generation (`dc_plugin_tables.generation`): its rows
/// changed, so a merge staged against the rows as they were must diff again
/// ([`crate::stage`]). Only SQLite stages merges, so only SQLite merges raise
/// it (on PostgreSQL the row lock would make the app's next run wait for this
/// one in `ensure_table`).
pub(crate) async fn bump_generation(tx: &mut WriteTx, table: &str) -> Result<(), MergeError> {
    crate::on_tx!(tx, conn => sqlx::query("UPDATE dc_plugin_tables SET generation = generation + 1 WHERE table_name = $1")
        .bind(table).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub(crate) fn column_list(decl: &TableDecl) -> String {
    decl.columns.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ")
}

/// A SQLite query under construction.
pub type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds one cell the way the SQLite merge stores it.
pub fn bind_sqlite<'q>(q: SqliteQuery<'q>, cell: &Cell) -> SqliteQuery<'q> {
    match cell {
        Cell::Null => q.bind(None::<String>),
        Cell::Text(s) => q.bind(s.clone()),
        Cell::Int(i) => q.bind(*i),
        Cell::Real(f) => q.bind(*f),
        Cell::Bool(b) => q.bind(*b),
        Cell::Json(v) => q.bind(v.to_string()),
        Cell::Timestamp(t) => q.bind(*t),
    }
}

/// A PostgreSQL query under construction.
pub type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds one cell the way the PostgreSQL merge stores it.
pub fn bind_pg<'q>(q: PgQuery<'q>, cell: &Cell) -> PgQuery<'q> {
    match cell {
        Cell::Null => q.bind(None::<String>),
        Cell::Text(s) => q.bind(s.clone()),
        Cell::Int(i) => q.bind(*i),
        Cell::Real(f) => q.bind(*f),
        Cell::Bool(b) => q.bind(*b),
        Cell::Json(v) => q.bind(sqlx::types::Json(v.clone())),
        Cell::Timestamp(t) => q.bind(*t),
    }
}

/// Rows per multi-row INSERT on SQLite (bounded by SQLite's 32766 variables).
pub(crate) fn sqlite_rows_per_insert(params_per_row: usize) -> usize {
    (30_000 / params_per_row).clamp(1, 200)
}

/// `(?, ..), (?, ..)` for `rows` rows of `width` parameters, bound in order.
/// Anonymous placeholders on purpose: sqlx asks SQLite for every parameter's
/// name, which for `$N` names is a linear search, i.e. quadratic per statement.
pub(crate) fn values_list(rows: usize, width: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    vec![row; rows].join(", ")
}

async fn merge_sqlite(
    tx: &mut sqlx::SqliteConnection,
    req: &MergeRequest<'_>,
    p: &PreparedRows,
    archive: bool,
) -> Result<MergeSummary, MergeError> {
    let t = &req.decl.name;
    let n = req.decl.columns.len();
    // (tests wait for this event to kill a process in the middle of a merge)
    tracing::debug!(table = %t, rows = p.cells.len(), "merge: writing under the write lock");
    let now = req.clock.now();
    let cols = column_list(req.decl);
    let shared = req.decl.shared;
    let (app_col, app_sel) = if shared { (format!(", {APP_COLUMN}"), APP_COLUMN) } else { (String::new(), "NULL") };
    let insert_head = format!(
        "INSERT INTO \"{t}\" ({cols}, _row_key, _row_hash, _runtime_id, _first_seen, _last_seen{app_col}) VALUES "
    );
    let width = n + 5 + usize::from(shared);
    // timestamps are bound as the text sqlx would make of `now`, made once
    let now_text: Arc<str> = now.to_rfc3339_opts(SecondsFormat::AutoSi, false).into();
    let rid_text: Option<Arc<str>> = req.runtime_id.map(|r| Arc::from(r.as_str()));
    // anonymous placeholders, bound in order (see `values_list`)
    let sets: Vec<String> = req.decl.columns.iter().map(|c| format!("\"{}\" = ?", c.name)).collect();
    let update_sql = format!(
        "UPDATE \"{t}\" SET {}, _row_hash = ?, _runtime_id = ?, _last_seen = ?, _archived_at = NULL WHERE _row_key = ?",
        sets.join(", ")
    );
    let remove_sql = if archive {
        format!("UPDATE \"{t}\" SET _archived_at = ?, _runtime_id = ? WHERE _row_key = ?")
    } else {
        format!("DELETE FROM \"{t}\" WHERE _row_key = ?")
    };

    // per key: its hash, whether it is archived, and whether this app may
    // remove it (in a shared table, only the rows it inserted)
    let existing: HashMap<String, (String, bool, bool)> = sqlx::query(AssertSqlSafe(format!(
        "SELECT _row_key, _row_hash, _archived_at IS NOT NULL, {app_sel} FROM \"{t}\""
    )))
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| {
        let mine = !shared || r.try_get::<Option<String>, _>(3)?.as_deref() == Some(req.app_id.as_str());
        Ok((r.try_get::<String, _>(0)?, (r.try_get::<String, _>(1)?, r.try_get::<bool, _>(2)?, mine)))
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let mut s = MergeSummary::default();
    let mut feed = feed::Entries::default();
    let mut inserts: Vec<usize> = Vec::new();
    for i in 0..p.cells.len() {
        let key = p.keys[i].as_str();
        match existing.get(key) {
            None => {
                inserts.push(i);
                feed.push("insert", key);
            }
            Some((hash, archived, _)) if hash != &p.hashes[i] || *archived => {
                let mut q = sqlx::query(AssertSqlSafe(update_sql.clone()));
                for c in &p.cells[i] {
                    q = bind_sqlite(q, c);
                }
                q.bind(p.hashes[i].as_str())
                    .bind(rid_text.clone())
                    .bind(now_text.clone())
                    .bind(key.to_string())
                    .execute(&mut *tx)
                    .await?;
                s.updated += 1;
                feed.push("update", key);
            }
            Some(_) => s.unchanged += 1,
        }
    }
    // new rows go in multi-row INSERTs: one statement per row costs ~50x more
    let per_stmt = sqlite_rows_per_insert(width);
    let app_text: Arc<str> = Arc::from(req.app_id.as_str());
    for chunk in inserts.chunks(per_stmt) {
        let sql = format!("{insert_head}{}", values_list(chunk.len(), width));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for &i in chunk {
            for c in &p.cells[i] {
                q = bind_sqlite(q, c);
            }
            q = q
                .bind(p.keys[i].clone())
                .bind(p.hashes[i].as_str())
                .bind(rid_text.clone())
                .bind(now_text.clone())
                .bind(now_text.clone());
            if shared {
                q = q.bind(Arc::clone(&app_text));
            }
        }
        q.execute(&mut *tx).await?;
    }
    s.inserted = inserts.len() as u64;
    if req.full_snapshot {
        let incoming: HashSet<&str> = p.keys.iter().map(String::as_str).collect();
        for (key, (_, archived, mine)) in &existing {
            let already_archived = archive && *archived;
            if *mine && !incoming.contains(key.as_str()) && !already_archived {
                let q = sqlx::query(AssertSqlSafe(remove_sql.clone()));
                let q = if archive { q.bind(now_text.clone()).bind(rid_text.clone()) } else { q };
                q.bind(key.clone()).execute(&mut *tx).await?;
                s.deleted += 1;
                feed.push("delete", key);
            }
        }
    }
    if let Some(rid) = req.runtime_id {
        feed::write_sqlite(tx, rid.as_str(), t.as_str(), feed).await?;
    }
    Ok(s)
}

/// PostgreSQL binary COPY encoding of one batch (cells, then `_row_key`, `_row_hash`).
pub mod pgcopy {
    use super::Cell;

    /// 2000-01-01T00:00:00Z (PostgreSQL's timestamp epoch) in Unix microseconds.
    pub(super) const EPOCH_2000_MICROS: i64 = 946_684_800_000_000;

    /// The binary COPY file header.
    pub fn header(out: &mut Vec<u8>) {
        out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
    }

    /// The trailer.
    pub fn trailer(out: &mut Vec<u8>) {
        out.extend_from_slice(&(-1i16).to_be_bytes());
    }

    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    /// Starts a tuple of `fields` fields.
    pub fn begin_tuple(out: &mut Vec<u8>, fields: usize) {
        out.extend_from_slice(&(fields as i16).to_be_bytes());
    }

    /// Appends a text field, or NULL.
    pub fn text(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => field(out, s.as_bytes()),
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    /// Appends one typed cell.
    pub fn cell(out: &mut Vec<u8>, c: &Cell) {
        match c {
            Cell::Null => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Cell::Text(s) => field(out, s.as_bytes()),
            Cell::Int(i) => field(out, &i.to_be_bytes()),
            Cell::Real(f) => field(out, &f.to_bits().to_be_bytes()),
            Cell::Bool(b) => field(out, &[u8::from(*b)]),
            Cell::Json(v) => {
                let mut b = vec![1u8];
                b.extend_from_slice(v.to_string().as_bytes());
                field(out, &b)
            }
            Cell::Timestamp(t) => field(out, &(t.timestamp_micros() - EPOCH_2000_MICROS).to_be_bytes()),
        }
    }

    /// Fields of one tuple read back from a binary `COPY … TO STDOUT` (None:
    /// NULL); at most [`MAX_READ_FIELDS`] per tuple.
    pub type Fields<'a> = [Option<&'a [u8]>];

    /// The most fields [`Reader`] takes per tuple.
    pub const MAX_READ_FIELDS: usize = 8;

    /// Parses the binary COPY format as it arrives, in chunks cut anywhere.
    #[derive(Debug, Default)]
    pub struct Reader {
        pending: Vec<u8>,
        header: bool,
        ended: bool,
    }

    fn be_i16(b: &[u8]) -> i16 {
        i16::from_be_bytes([b[0], b[1]])
    }

    fn be_i32(b: &[u8]) -> i32 {
        i32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    impl Reader {
        /// Feeds one chunk, calling `row` with each complete tuple in it.
        pub fn feed<E>(
            &mut self,
            chunk: &[u8],
            row: &mut impl FnMut(&Fields<'_>) -> Result<(), E>,
        ) -> Result<(), ReadError<E>> {
            if self.pending.is_empty() {
                let used = self.parse(chunk, row)?;
                self.pending.extend_from_slice(&chunk[used..]);
            } else {
                let mut data = std::mem::take(&mut self.pending);
                data.extend_from_slice(chunk);
                let used = self.parse(&data, row)?;
                data.drain(..used);
                self.pending = data;
            }
            Ok(())
        }

        /// Checks that the data ended with the trailer and nothing after it.
        pub fn finish<E>(self) -> Result<(), ReadError<E>> {
            if self.ended && self.pending.is_empty() {
                Ok(())
            } else {
                Err(ReadError::Format("the COPY data ended in the middle of a tuple"))
            }
        }

        /// Parses the complete tuples at the start of `data`; returns the
        /// bytes used.
        fn parse<E>(
            &mut self,
            data: &[u8],
            row: &mut impl FnMut(&Fields<'_>) -> Result<(), E>,
        ) -> Result<usize, ReadError<E>> {
            let mut pos = 0;
            if !self.header {
                if data.len() < 19 {
                    return Ok(0);
                }
                if &data[..11] != b"PGCOPY\n\xff\r\n\0" {
                    return Err(ReadError::Format("not binary COPY data (no PGCOPY signature)"));
                }
                let ext = usize::try_from(be_i32(&data[15..19])).map_err(|_| ReadError::Format("bad header"))?;
                if data.len() < 19 + ext {
                    return Ok(0);
                }
                pos = 19 + ext;
                self.header = true;
            }
            let mut fields: [Option<&[u8]>; MAX_READ_FIELDS] = [None; MAX_READ_FIELDS];
            loop {
                if self.ended {
                    return if pos == data.len() { Ok(pos) } else { Err(ReadError::Format("data after the trailer")) };
                }
                if data.len() - pos < 2 {
                    return Ok(pos);
                }
                let n = be_i16(&data[pos..]);
                if n == -1 {
                    self.ended = true;
                    pos += 2;
                    continue;
                }
                let n = usize::try_from(n).map_err(|_| ReadError::Format("negative field count"))?;
                if n > MAX_READ_FIELDS {
                    return Err(ReadError::Format("more fields per tuple than the reader takes"));
                }
                let mut p = pos + 2;
                for f in fields.iter_mut().take(n) {
                    if data.len() - p < 4 {
                        return Ok(pos);
                    }
                    let len = be_i32(&data[p..]);
                    p += 4;
                    *f = match usize::try_from(len) {
                        Err(_) => None,
                        Ok(len) if data.len() - p < len => return Ok(pos),
                        Ok(len) => {
                            p += len;
                            Some(&data[p - len..p])
                        }
                    };
                }
                row(&fields[..n]).map_err(ReadError::Row)?;
                pos = p;
            }
        }
    }

    /// A [`Reader`] failure: the data, or the caller's `row`.
    #[derive(Debug)]
    pub enum ReadError<E> {
        /// The data is not well-formed binary COPY.
        Format(&'static str),
        /// `row` refused a tuple.
        Row(E),
    }

    /// Appends one tuple: the cells, then text fields.
    pub fn tuple(out: &mut Vec<u8>, cells: &[Cell], extra_text: &[&str]) {
        begin_tuple(out, cells.len() + extra_text.len());
        for c in cells {
            cell(out, c);
        }
        for s in extra_text {
            text(out, Some(s));
        }
    }
}

/// Streams `rows` tuples through a binary COPY, `tuple(buf, i)` writing row i.
pub(crate) async fn copy_in(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    rows: usize,
    mut tuple: impl FnMut(&mut Vec<u8>, usize),
) -> Result<(), sqlx::Error> {
    let mut copy = conn.copy_in_raw(statement).await?;
    let mut buf = Vec::with_capacity(1 << 20);
    pgcopy::header(&mut buf);
    for i in 0..rows {
        tuple(&mut buf, i);
        if buf.len() >= 4 << 20 {
            copy.send(std::mem::take(&mut buf)).await?;
        }
    }
    pgcopy::trailer(&mut buf);
    copy.send(buf).await?;
    copy.finish().await?;
    Ok(())
}

/// Gives a PostgreSQL plugin table its unique index on `_row_key` if it has
/// none. A table is created without it and gets it at the end of the first
/// merge that writes rows into it (in the merge's transaction), so a first
/// load is one COPY and one sorted index build, not an index insert per row;
/// `CREATE INDEX` takes a SHARE lock, which readers pass. A table from before
/// (its key a UNIQUE constraint) already has one. A key stored twice fails
/// here with a unique violation (23505).
pub(crate) async fn ensure_key_index(tx: &mut sqlx::PgConnection, t: &str) -> Result<(), sqlx::Error> {
    let has: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
         WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnatts = 1 AND a.attname = '_row_key')",
    )
    .bind(format!("\"{t}\""))
    .fetch_one(&mut *tx)
    .await?;
    if has {
        return Ok(());
    }
    // unnamed: PostgreSQL picks a free name (`<table>__row_key_idx`, cut to fit)
    sqlx::query(AssertSqlSafe(format!("CREATE UNIQUE INDEX ON \"{t}\" (_row_key)")))
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Whether a PostgreSQL table has no rows.
async fn table_is_empty(tx: &mut sqlx::PgConnection, t: &str) -> Result<bool, MergeError> {
    Ok(sqlx::query_scalar(AssertSqlSafe(format!("SELECT NOT EXISTS (SELECT 1 FROM \"{t}\")")))
        .persistent(false)
        .fetch_one(&mut *tx)
        .await?)
}

/// Records prepared per step of a first load: small enough that the server
/// starts on the first step at once, large enough to keep the loop cheap.
const FIRST_LOAD_STEP: usize = 2_048;

/// COPY data sent to the server at a time by a first load.
const FIRST_LOAD_SEND: usize = 256 << 10;

/// Writes one new row's COPY tuple: its cells, key, hash, run, first and last
/// seen, and (shared tables) the app that inserted it.
struct NewRows<'a> {
    width: usize,
    runtime_id: Option<&'a str>,
    now: Cell,
    app: Option<&'a str>,
}

impl NewRows<'_> {
    fn tuple(&self, buf: &mut Vec<u8>, cells: &[Cell], key: &str, hash: &str) {
        pgcopy::begin_tuple(buf, self.width);
        for c in cells {
            pgcopy::cell(buf, c);
        }
        pgcopy::text(buf, Some(key));
        pgcopy::text(buf, Some(hash));
        pgcopy::text(buf, self.runtime_id);
        pgcopy::cell(buf, &self.now);
        pgcopy::cell(buf, &self.now);
        if let Some(app) = self.app {
            pgcopy::text(buf, Some(app));
        }
    }
}

/// The first load of an empty table: the records are prepared a step at a
/// time while the COPY carries the steps before, so the worker's conversion
/// and hashing run beside the server's inserting instead of before it. A bad
/// record aborts the COPY (the caller's transaction then fails as a whole); a
/// key seen twice is found by the table's unique index and named by
/// preparing the records again (an error path only).
async fn first_load_postgres(
    tx: &mut sqlx::PgConnection,
    req: &MergeRequest<'_>,
    rows: &[Map<String, Value>],
    statement: &str,
    new_rows: &NewRows<'_>,
    entries: &mut Option<feed::Entries>,
) -> Result<(), MergeError> {
    async fn send_all(
        copy: &mut sqlx::postgres::PgCopyIn<&mut sqlx::PgConnection>,
        req: &MergeRequest<'_>,
        rows: &[Map<String, Value>],
        new_rows: &NewRows<'_>,
        entries: &mut Option<feed::Entries>,
    ) -> Result<(), MergeError> {
        let mut buf = Vec::with_capacity(FIRST_LOAD_SEND + (64 << 10));
        pgcopy::header(&mut buf);
        for (n, step) in rows.chunks(FIRST_LOAD_STEP).enumerate() {
            let p = prepare_chunk(req.decl, step, n * FIRST_LOAD_STEP, req.form)?;
            for i in 0..p.cells.len() {
                new_rows.tuple(&mut buf, &p.cells[i], &p.keys[i], p.hashes[i].as_str());
                if let Some(e) = entries.as_mut() {
                    e.push("insert", &p.keys[i]);
                }
                if buf.len() >= FIRST_LOAD_SEND {
                    copy.send(buf.as_slice()).await?;
                    buf.clear();
                }
            }
        }
        pgcopy::trailer(&mut buf);
        copy.send(buf.as_slice()).await?;
        Ok(())
    }
    let mut copy = tx.copy_in_raw(statement).await?;
    if let Err(e) = send_all(&mut copy, req, rows, new_rows, entries).await {
        // the server answers the abort with an error: the transaction fails
        // (the record's values stay out of the server's log)
        let _ = copy.abort("dc-host refused a record of the batch").await;
        return Err(e);
    }
    match copy.finish().await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            prepare_rows(req.decl, rows, req.form)?;
            Err(sqlx::Error::Database(e).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs a binary `COPY … TO STDOUT` and calls `row` with each tuple's
/// fields as they arrive.
pub(crate) async fn copy_out(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    mut row: impl FnMut(&pgcopy::Fields<'_>) -> Result<(), &'static str>,
) -> Result<(), MergeError> {
    use futures_util::TryStreamExt;
    let bad = |e: pgcopy::ReadError<&'static str>| {
        let why = match e {
            pgcopy::ReadError::Format(why) | pgcopy::ReadError::Row(why) => why,
        };
        MergeError::Db(DbError::Refused(format!("reading the stored rows back: {why}")))
    };
    let mut stream = conn.copy_out_raw(statement).await?;
    let mut reader = pgcopy::Reader::default();
    while let Some(chunk) = stream.try_next().await? {
        reader.feed(&chunk, &mut row).map_err(bad)?;
    }
    reader.finish().map_err(bad)
}

/// Merges into a PostgreSQL table: records already prepared (`prepared`),
/// or, for a table that is empty under the lock, prepared as they are copied.
async fn merge_postgres(
    tx: &mut sqlx::PgConnection,
    req: &MergeRequest<'_>,
    rows: &[Map<String, Value>],
    prepared: Option<PreparedRows>,
    archive: bool,
) -> Result<MergeSummary, MergeError> {
    let t = &req.decl.name;
    let cols = column_list(req.decl);
    let now = req.clock.now();
    // one merge per table at a time (a snapshot's deletes must not race another's inserts)
    sqlx::query(AssertSqlSafe(format!("LOCK TABLE \"{t}\" IN SHARE ROW EXCLUSIVE MODE")))
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    let empty = table_is_empty(tx, t).await?;
    // new rows are COPYed straight into the table (under the lock their keys stay new)
    let shared = req.decl.shared;
    let (app_col, app_sel) = if shared { (format!(", {APP_COLUMN}"), APP_COLUMN) } else { (String::new(), "NULL") };
    let width = req.decl.columns.len() + 5 + usize::from(shared);
    let copy_new = format!(
        "COPY \"{t}\" ({cols}, _row_key, _row_hash, _runtime_id, _first_seen, _last_seen{app_col}) FROM STDIN (FORMAT binary)"
    );
    let new_rows = NewRows {
        width,
        runtime_id: req.runtime_id.map(RuntimeId::as_str),
        now: Cell::Timestamp(now),
        app: shared.then(|| req.app_id.as_str()),
    };
    // (tests wait for this event to kill a process in the middle of a merge)
    let writing = || tracing::debug!(table = %t, rows = rows.len(), "merge: writing under the table lock");
    // a first load's change feed: the keys as they are copied
    let mut entries = req.runtime_id.map(|_| feed::Entries::default());
    let p = match (prepared, empty) {
        // the table was empty before the lock and still is: stream the first load
        (None, true) => {
            writing();
            first_load_postgres(tx, req, rows, &copy_new, &new_rows, &mut entries).await?;
            None
        }
        // emptied after the records were prepared: every row is new
        (Some(p), true) => {
            writing();
            copy_in(tx, &copy_new, p.cells.len(), |buf, i| {
                new_rows.tuple(buf, &p.cells[i], &p.keys[i], p.hashes[i].as_str())
            })
            .await?;
            if let Some(e) = entries.as_mut() {
                for k in &p.keys {
                    e.push("insert", k);
                }
            }
            None
        }
        // rows arrived between the check and the lock
        (None, false) => Some(prepare_rows(req.decl, rows, req.form)?),
        (Some(p), false) => Some(p),
    };
    let Some(p) = p else {
        // first load: every row is new; the key's index is built now (a key
        // seen twice is named by preparing the records again: an error path)
        match ensure_key_index(tx, t).await {
            Ok(()) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                prepare_rows(req.decl, rows, req.form)?;
                return Err(sqlx::Error::Database(e).into());
            }
            Err(e) => return Err(e.into()),
        }
        let s = MergeSummary::new(rows.len() as u64, 0, 0, 0);
        if let (Some(rid), Some(e)) = (req.runtime_id, entries) {
            feed::write_postgres(tx, rid.as_str(), t.as_str(), e).await?;
        }
        return Ok(s);
    };
    let p = &p;
    // (a table written before by a path that left it without one)
    ensure_key_index(tx, t).await?;

    // Re-merge: the diff is made here, from the (key, hash) pairs of the
    // table, so unchanged rows cost one read and nothing else; only changed
    // rows are staged (one set-based UPDATE), new rows are COPYed straight in
    // and rows missing from a full snapshot are removed by key.
    let index: HashMap<&[u8], usize> = p.keys.iter().enumerate().map(|(i, k)| (k.as_bytes(), i)).collect();
    let mut seen = vec![false; p.cells.len()];
    let mut changed: Vec<usize> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    let app = req.app_id.as_str().as_bytes();
    // the stored (key, hash) pairs come as binary COPY: no row objects
    let diff = |f: &pgcopy::Fields<'_>| -> Result<(), &'static str> {
        let [Some(key), Some(hash), Some(archived), owner] = f else {
            return Err("a stored row without key or hash");
        };
        let archived = archived.first() == Some(&1);
        match index.get(key) {
            Some(&i) => {
                seen[i] = true;
                // an archived row comes back even when unchanged
                if archived || *hash != p.hashes[i].as_str().as_bytes() {
                    changed.push(i);
                }
            }
            // archiving an already archived row changes nothing
            None if archive && archived => {}
            // a shared table's snapshot removes only the rows this app inserted
            None if shared && *owner != Some(app) => {}
            None => missing.push(String::from_utf8_lossy(key).into_owned()),
        }
        Ok(())
    };
    copy_out(
        tx,
        &format!(
            "COPY (SELECT _row_key, _row_hash, _archived_at IS NOT NULL, {app_sel}::text FROM \"{t}\") TO STDOUT (FORMAT binary)"
        ),
        diff,
    )
    .await?;
    let new: Vec<usize> = (0..p.cells.len()).filter(|&i| !seen[i]).collect();

    let feed = req.runtime_id.is_some();
    let wrap = |dml: String, op: &str| feed::wrap_postgres(feed, &dml, op);
    let rid = req.runtime_id.map(RuntimeId::to_string);
    // runs one wrapped statement ($1 run, $2 table, $3 now, $4 keys when given)
    async fn run_wrapped(
        tx: &mut sqlx::PgConnection,
        sql: String,
        rid: &Option<String>,
        table: &str,
        now: DateTime<Utc>,
        keys: Option<Vec<&str>>,
    ) -> Result<u64, MergeError> {
        let q = sqlx::query(AssertSqlSafe(sql)).persistent(false).bind(rid.clone()).bind(table.to_string()).bind(now);
        let q = match keys {
            Some(k) => q.bind(k),
            None => q,
        };
        let n: i64 = q.fetch_one(&mut *tx).await?.try_get(0)?;
        Ok(n as u64)
    }
    // inserted, updated, deleted; the update runs first, as it always did
    let mut counts = [0u64; 3];
    if !changed.is_empty() {
        // dropped at the end of this merge: the caller's transaction may merge more tables
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TEMP TABLE _dc_stage (LIKE \"{t}\" INCLUDING DEFAULTS) ON COMMIT DROP"
        )))
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        writing();
        let stmt = format!("COPY _dc_stage ({cols}, _row_key, _row_hash) FROM STDIN (FORMAT binary)");
        copy_in(tx, &stmt, changed.len(), |buf, j| {
            let i = changed[j];
            pgcopy::tuple(buf, &p.cells[i], &[&p.keys[i], p.hashes[i].as_str()])
        })
        .await?;
        // the joins below match on `_row_key` only: its statistics are all
        // the planner needs (a full ANALYZE of every column cost 150–200 ms
        // for 30,000 staged rows)
        sqlx::query("ANALYZE _dc_stage (_row_key)").execute(&mut *tx).await?;
        let sets =
            req.decl.columns.iter().map(|c| format!("\"{0}\" = s.\"{0}\"", c.name)).collect::<Vec<_>>().join(", ");
        let update = wrap(
            format!(
                "UPDATE \"{t}\" x SET {sets}, _row_hash = s._row_hash, _runtime_id = $1, _last_seen = $3, _archived_at = NULL FROM _dc_stage s WHERE x._row_key = s._row_key AND (x._row_hash <> s._row_hash OR x._archived_at IS NOT NULL)"
            ),
            "update",
        );
        counts[1] = run_wrapped(tx, update, &rid, t, now, None).await?;
        sqlx::query("DROP TABLE _dc_stage").execute(&mut *tx).await?;
    }
    if !new.is_empty() {
        if changed.is_empty() {
            writing();
        }
        copy_in(tx, &copy_new, new.len(), |buf, j| {
            let i = new[j];
            new_rows.tuple(buf, &p.cells[i], &p.keys[i], p.hashes[i].as_str())
        })
        .await?;
        counts[0] = new.len() as u64;
        if let Some(rid) = req.runtime_id {
            let mut entries = feed::Entries::default();
            for &i in &new {
                entries.push("insert", &p.keys[i]);
            }
            feed::write_postgres(tx, rid.as_str(), t.as_str(), entries).await?;
        }
    }
    if req.full_snapshot && !missing.is_empty() {
        if changed.is_empty() && new.is_empty() {
            writing();
        }
        let remove_dml = if archive {
            format!(
                "UPDATE \"{t}\" x SET _archived_at = $3, _runtime_id = $1 WHERE x._archived_at IS NULL AND x._row_key = ANY($4::text[])"
            )
        } else {
            format!("DELETE FROM \"{t}\" x WHERE x._row_key = ANY($4::text[])")
        };
        let keys = missing.iter().map(String::as_str).collect();
        counts[2] = run_wrapped(tx, wrap(remove_dml, "delete"), &rid, t, now, Some(keys)).await?;
    }
    Ok(MergeSummary::new(counts[0], counts[1], counts[2], p.cells.len() as u64 - counts[0] - counts[1]))
}

/// Reads up to `limit` live rows of a declared table as JSON objects (for
/// `dc-host data head` and tests), ordered by key.
pub async fn preview(db: &Database, decl: &TableDecl, limit: i64) -> Result<Vec<Map<String, Value>>, MergeError> {
    validate_decl(db.backend(), decl)?;
    let sql = format!(
        "SELECT {} FROM \"{}\" WHERE _archived_at IS NULL ORDER BY _row_key LIMIT $1",
        column_list(decl),
        decl.name
    );
    let rows = match db {
        Database::Sqlite(pool) => sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| sqlite_cells(r, decl, 0))
            .collect::<Result<Vec<_>, _>>()?,
        Database::Postgres(pool) => sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| pg_cells(r, decl, 0))
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(rows
        .into_iter()
        .map(|cells| decl.columns.iter().map(|c| c.name.clone()).zip(cells.iter().map(Cell::to_json)).collect())
        .collect())
}

/// The declared columns of one SQLite row as cells, starting at column `first`.
pub(crate) fn sqlite_cells(
    r: &sqlx::sqlite::SqliteRow,
    decl: &TableDecl,
    first: usize,
) -> Result<Vec<Cell>, MergeError> {
    let mut out = Vec::with_capacity(decl.columns.len());
    for (n, c) in decl.columns.iter().enumerate() {
        let i = first + n;
        let cell = match c.ty {
            ColumnType::Text => r.try_get::<Option<String>, _>(i)?.map(Cell::Text),
            ColumnType::Timestamp => r.try_get::<Option<DateTime<Utc>>, _>(i)?.map(Cell::Timestamp),
            ColumnType::Integer => r.try_get::<Option<i64>, _>(i)?.map(Cell::Int),
            ColumnType::Real => r.try_get::<Option<f64>, _>(i)?.map(Cell::Real),
            ColumnType::Boolean => r.try_get::<Option<bool>, _>(i)?.map(Cell::Bool),
            ColumnType::Json => r
                .try_get::<Option<String>, _>(i)?
                .map(|s| Cell::Json(serde_json::from_str(&s).unwrap_or(Value::String(s)))),
            other => return Err(MergeError::BadDeclaration(unsupported(other))),
        };
        out.push(cell.unwrap_or(Cell::Null));
    }
    Ok(out)
}

/// The declared columns of one PostgreSQL row as cells, starting at column `first`.
pub(crate) fn pg_cells(r: &sqlx::postgres::PgRow, decl: &TableDecl, first: usize) -> Result<Vec<Cell>, MergeError> {
    let mut out = Vec::with_capacity(decl.columns.len());
    for (n, c) in decl.columns.iter().enumerate() {
        let i = first + n;
        let cell = match c.ty {
            ColumnType::Text => r.try_get::<Option<String>, _>(i)?.map(Cell::Text),
            ColumnType::Timestamp => r.try_get::<Option<DateTime<Utc>>, _>(i)?.map(Cell::Timestamp),
            ColumnType::Integer => r.try_get::<Option<i64>, _>(i)?.map(Cell::Int),
            ColumnType::Real => r.try_get::<Option<f64>, _>(i)?.map(Cell::Real),
            ColumnType::Boolean => r.try_get::<Option<bool>, _>(i)?.map(Cell::Bool),
            ColumnType::Json => r.try_get::<Option<sqlx::types::Json<Value>>, _>(i)?.map(|j| Cell::Json(j.0)),
            other => return Err(MergeError::BadDeclaration(unsupported(other))),
        };
        out.push(cell.unwrap_or(Cell::Null));
    }
    Ok(out)
}

/// The hash version a table's `_row_hash` values were made with: a table
/// without a `dc_plugin_tables` row predates it and has version 1.
pub async fn table_hash_version(tx: &mut WriteTx, table: &str) -> Result<HashVersion, MergeError> {
    let v: Option<i64> = crate::on_tx!(tx, conn => sqlx::query_scalar(
        "SELECT hash_version FROM dc_plugin_tables WHERE table_name = $1").bind(table).fetch_optional(&mut *conn).await)?;
    match v {
        None => Ok(HashVersion::V1),
        Some(n) => HashVersion::from_i64(n).ok_or_else(|| {
            MergeError::BadDeclaration(format!(
                "{table}: its row hashes were made with hash version {n}, which this dc-host does not know (a newer dc-host wrote them); upgrade dc-host"
            ))
        }),
    }
}

/// Records a table's owner, declaration and hash version in `dc_plugin_tables`.
pub(crate) async fn record_table(
    tx: &mut WriteTx,
    app_id: &AppId,
    decl: &TableDecl,
    v: HashVersion,
) -> Result<(), MergeError> {
    let json = serde_json::to_string(decl).map_err(|e| MergeError::BadDeclaration(e.to_string()))?;
    crate::on_tx!(tx, conn => sqlx::query(
        "INSERT INTO dc_plugin_tables (table_name, app_id, hash_version, declaration, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (table_name) DO UPDATE SET app_id = excluded.app_id, hash_version = excluded.hash_version, \
         declaration = excluded.declaration, updated_at = excluded.updated_at, \
         generation = dc_plugin_tables.generation + 1")
        .bind(&decl.name).bind(app_id).bind(v.as_i64()).bind(json).bind(Utc::now()).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Brings a table's stored hashes to the current hash version, inside the
/// caller's transaction: every row's cells are read back, hashed again, and
/// `_row_hash` rewritten where it differs. An unchanged row then still
/// compares equal to its next snapshot, so the upgrade reports no row as
/// updated. Returns the number of rows rehashed.
pub async fn upgrade_hashes(
    tx: &mut WriteTx,
    app_id: &AppId,
    decl: &TableDecl,
    form: UnicodeForm,
) -> Result<u64, MergeError> {
    let t = &decl.name;
    let names: Vec<&str> = decl.columns.iter().map(|c| c.name.as_str()).collect();
    let mut hasher = RowHasher::with_version(&names, form, HashVersion::CURRENT);
    let sql = format!("SELECT _row_key, _row_hash, {} FROM \"{t}\"", column_list(decl));
    let mut changed: Vec<(String, String)> = Vec::new();
    match tx {
        WriteTx::Sqlite(c) => {
            for r in sqlx::query(AssertSqlSafe(sql)).persistent(false).fetch_all(&mut **c).await? {
                let h = hasher.hash_hex(&sqlite_cells(&r, decl, 2)?);
                if h != r.try_get::<String, _>(1)? {
                    changed.push((r.try_get(0)?, h));
                }
            }
            let update = format!("UPDATE \"{t}\" SET _row_hash = $1 WHERE _row_key = $2");
            for (key, hash) in &changed {
                sqlx::query(AssertSqlSafe(update.clone()))
                    .persistent(false)
                    .bind(hash)
                    .bind(key)
                    .execute(&mut **c)
                    .await?;
            }
        }
        WriteTx::Postgres(c) => {
            for r in sqlx::query(AssertSqlSafe(sql)).persistent(false).fetch_all(&mut **c).await? {
                let h = hasher.hash_hex(&pg_cells(&r, decl, 2)?);
                if h != r.try_get::<String, _>(1)? {
                    changed.push((r.try_get(0)?, h));
                }
            }
            let update = format!(
                "UPDATE \"{t}\" x SET _row_hash = v.h FROM UNNEST($1::text[], $2::text[]) AS v(k, h) WHERE x._row_key = v.k"
            );
            for chunk in changed.chunks(10_000) {
                let (keys, hashes): (Vec<&str>, Vec<&str>) =
                    chunk.iter().map(|(k, h)| (k.as_str(), h.as_str())).unzip();
                sqlx::query(AssertSqlSafe(update.clone()))
                    .persistent(false)
                    .bind(keys)
                    .bind(hashes)
                    .execute(&mut **c)
                    .await?;
            }
        }
    }
    record_table(tx, app_id, decl, HashVersion::CURRENT).await?;
    Ok(changed.len() as u64)
}

/// Number of live (not archived) rows in a declared table.
pub async fn count_rows(db: &Database, table: &str) -> Result<i64, MergeError> {
    check_ident(table)?;
    let sql = format!("SELECT COUNT(*) FROM \"{table}\" WHERE _archived_at IS NULL");
    Ok(crate::on_pool!(db, pool => sqlx::query_scalar(AssertSqlSafe(sql)).persistent(false).fetch_one(pool).await)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Binary COPY data of three tuples (one with a NULL), as the server sends it.
    fn copy_data() -> Vec<u8> {
        let mut out = Vec::new();
        pgcopy::header(&mut out);
        pgcopy::tuple(&mut out, &[Cell::Text("k1".into()), Cell::Null], &["h1"]);
        pgcopy::tuple(&mut out, &[Cell::Text(String::new()), Cell::Bool(true)], &["h2"]);
        pgcopy::tuple(&mut out, &[Cell::Text("ключ".into()), Cell::Int(7)], &["h3"]);
        pgcopy::trailer(&mut out);
        out
    }

    #[test]
    fn the_copy_reader_reads_tuples_cut_anywhere() {
        let data = copy_data();
        let read = |cuts: &[usize]| {
            let mut rows: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
            let mut reader = pgcopy::Reader::default();
            let mut from = 0;
            for &to in cuts.iter().chain([data.len()].iter()) {
                reader
                    .feed(&data[from..to], &mut |f: &pgcopy::Fields<'_>| -> Result<(), ()> {
                        rows.push(f.iter().map(|v| v.map(<[u8]>::to_vec)).collect());
                        Ok(())
                    })
                    .map_err(|e| format!("{e:?}"))?;
                from = to;
            }
            reader.finish::<()>().map_err(|e| format!("{e:?}"))?;
            Ok::<_, String>(rows)
        };
        let whole = read(&[]).expect("whole");
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0], vec![Some(b"k1".to_vec()), None, Some(b"h1".to_vec())]);
        assert_eq!(whole[1], vec![Some(Vec::new()), Some(vec![1]), Some(b"h2".to_vec())]);
        assert_eq!(whole[2][0], Some("ключ".as_bytes().to_vec()));
        assert_eq!(whole[2][1], Some(7i64.to_be_bytes().to_vec()));
        for a in 0..data.len() {
            assert_eq!(read(&[a]).expect("one cut"), whole, "cut at {a}");
            for b in (a..data.len()).step_by(5) {
                assert_eq!(read(&[a, b]).expect("two cuts"), whole, "cuts at {a}, {b}");
            }
        }
        // data that stops short, or goes on after the trailer, is refused
        let mut reader = pgcopy::Reader::default();
        reader.feed(&data[..data.len() - 5], &mut |_: &pgcopy::Fields<'_>| Ok::<(), ()>(())).expect("feed");
        assert!(reader.finish::<()>().is_err(), "a truncated COPY must not read as complete");
        let mut longer = data.clone();
        longer.extend_from_slice(&[0, 1]);
        let mut reader = pgcopy::Reader::default();
        assert!(reader.feed(&longer, &mut |_: &pgcopy::Fields<'_>| Ok::<(), ()>(())).is_err());
        let mut reader = pgcopy::Reader::default();
        assert!(reader.feed(b"COPY-NOT-BINARY-DATA-AT-ALL", &mut |_: &pgcopy::Fields<'_>| Ok::<(), ()>(())).is_err());
        // a refusal of the caller's comes back as such
        let mut reader = pgcopy::Reader::default();
        let e = reader.feed(&data, &mut |_: &pgcopy::Fields<'_>| Err("no")).expect_err("refused");
        assert!(matches!(e, pgcopy::ReadError::Row("no")));
    }

    fn decl() -> TableDecl {
        serde_json::from_value(json!({
            "name": "items", "key": ["sku"],
            "columns": [
                {"name": "sku", "type": "text", "nullable": false},
                {"name": "title", "type": "text", "max_len": 10},
                {"name": "price", "type": "real"},
                {"name": "stock", "type": "integer"},
                {"name": "seen", "type": "timestamp"}
            ]
        }))
        .expect("decl parses")
    }

    fn rows(v: Value) -> Vec<Map<String, Value>> {
        serde_json::from_value(v).expect("rows parse")
    }

    /// The plugin SDK's `TestHost` checks records with `TableDecl::check_row`
    /// from the interface crate; the host must refuse exactly those rows, with
    /// the same problem, so a plugin that passes `cargo test` is not refused here.
    #[test]
    fn the_sdk_row_check_agrees_with_the_host() {
        let d = decl();
        let cases = [
            json!({"sku": "a"}),
            json!({"sku": "a", "title": "short", "price": 1.5, "stock": 3, "seen": "2026-01-31T12:00:00Z"}),
            json!({"title": "x"}),
            json!({"sku": null}),
            json!({"sku": "a", "colour": "red"}),
            json!({"sku": "a", "title": "much too long here"}),
            json!({"sku": "a", "title": 5}),
            json!({"sku": "a", "title": "nul\u{0}"}),
            json!({"sku": "a", "price": "12,50"}),
            json!({"sku": "a", "stock": 2.0}),
            json!({"sku": "a", "stock": 2.5}),
            json!({"sku": "a", "stock": 1e16}),
            json!({"sku": "a", "seen": "2026-01-31T12:00:00.123+01:00"}),
            json!({"sku": "a", "seen": "2026-01-31t12:00:00z"}),
            json!({"sku": "a", "seen": "2026-01-31 12:00:00Z"}),
            json!({"sku": "a", "seen": "2024-02-29T00:00:00Z"}),
            json!({"sku": "a", "seen": "2026-02-29T00:00:00Z"}),
            json!({"sku": "a", "seen": "2026-12-31T23:59:60Z"}),
            json!({"sku": "a", "seen": "2026-01-31T24:00:00Z"}),
            json!({"sku": "a", "seen": "2026-01-31T12:00Z"}),
            json!({"sku": "a", "seen": "2026-01-31T12:00:00"}),
            json!({"sku": "a", "seen": "2026-01-31T12:00:00+24:00"}),
            json!({"sku": "a", "seen": "2026-01-31T12:00:00.Z"}),
            json!({"sku": "a", "seen": 1_700_000_000}),
        ];
        for row in cases {
            let map: Map<String, Value> = serde_json::from_value(row.clone()).expect("an object");
            let sdk = d.check_row(&map);
            let host = prepare_rows(&d, std::slice::from_ref(&map), UnicodeForm::Nfc).map(|_| ());
            match (&sdk, &host) {
                (Ok(()), Ok(())) => {}
                (Err(problem), Err(e)) => {
                    assert!(e.to_string().contains(problem.as_str()), "{row}: sdk {problem:?}, host {e}")
                }
                _ => panic!("{row}: the SDK says {sdk:?}, the host says {host:?}"),
            }
        }
    }

    #[test]
    fn bad_records_name_record_and_field() {
        let d = decl();
        let cases = [
            (json!([{"sku": "a"}, {"title": "x"}]), "record 1 for table items: key field \"sku\" is missing"),
            (json!([{"sku": "a", "price": "12,50"}]), "field \"price\": expected a number, got a string \"12,50\""),
            (json!([{"sku": "a", "title": "far too long here"}]), "exceeds the limit of 10"),
            (json!([{"sku": "a", "colour": "red"}]), "field \"colour\" is not a column"),
            (json!([{"sku": "a"}, {"sku": "a"}]), "appears more than once"),
            (json!([{"sku": "a", "stock": 1.5}]), "expected an integer"),
            (json!([{"sku": "a", "seen": "yesterday"}]), "expected an RFC 3339 timestamp"),
        ];
        for (input, expected) in cases {
            let err =
                prepare_rows(&d, &rows(input.clone()), UnicodeForm::Nfc).expect_err("must be refused").to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn keys_are_canonical_json_and_hashes_differ_by_content() {
        let p = prepare_rows(
            &decl(),
            &rows(json!([{"sku": "a", "price": 1}, {"sku": "b", "price": 1.0}, {"sku": "c", "price": 2}])),
            UnicodeForm::Nfc,
        )
        .expect("valid");
        assert_eq!(p.keys, vec!["[\"a\"]", "[\"b\"]", "[\"c\"]"]);
        assert_ne!(p.hashes[0], p.hashes[2]);
        assert_eq!(p.cells[0][2], Cell::Real(1.0));
    }

    #[test]
    fn reserved_names_name_their_rule() {
        for (name, rule) in [
            ("apps", "one of dc-host's own tables"),
            ("dc_plugin_tables", "one of dc-host's own tables"),
            ("dc_future_table", "which dc-host reserves for its own tables"),
            ("_dc_migrate_items", "which dc-host reserves for its own tables"),
            ("sqlite_stat1", "which SQLite reserves for itself"),
            ("pg_anything", "which PostgreSQL reserves for itself"),
        ] {
            let why = reserved_table_name(name).unwrap_or_else(|| panic!("{name} must be reserved"));
            assert!(why.contains(rule), "{name}: {why}");
        }
        for free in ["items", "dcx_rows", "my_dc_rows", "catalogue_items"] {
            assert_eq!(reserved_table_name(free), None, "{free}");
        }
    }

    #[test]
    fn key_text_is_the_serde_json_array() {
        let cells = vec![
            Cell::Text("a\"b\\c\u{1}\u{7f}Cafe\u{301}\u{2028}".into()),
            Cell::Int(-3),
            Cell::Real(1.5),
            Cell::Real(f64::NAN),
            Cell::Bool(true),
            Cell::Timestamp(DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("in range")),
            Cell::Json(json!({"b": 1, "a": [null, "x\ny"]})),
            Cell::Null,
        ];
        for form in [UnicodeForm::Nfc, UnicodeForm::None] {
            for idx in [vec![0], vec![1, 0], (0..cells.len()).collect::<Vec<_>>()] {
                let expected = Value::Array(
                    idx.iter()
                        .map(|&i| match &cells[i] {
                            Cell::Text(t) => Value::String(crate::hash::normalize(t, form).into_owned()),
                            c => c.to_json(),
                        })
                        .collect(),
                )
                .to_string();
                assert_eq!(key_text(&cells, &idx, form), expected);
            }
        }
    }

    #[test]
    fn copy_timestamps_count_from_2000() {
        use chrono::TimeZone;
        let epoch = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().expect("a valid date");
        assert_eq!(pgcopy::EPOCH_2000_MICROS, epoch.timestamp_micros());
        let mut out = Vec::new();
        pgcopy::cell(&mut out, &Cell::Timestamp(epoch + chrono::Duration::microseconds(5)));
        assert_eq!(out, [&8i32.to_be_bytes()[..], &5i64.to_be_bytes()].concat());
    }

    #[test]
    fn copy_tuple_encodes_lengths_and_nulls() {
        let mut out = Vec::new();
        pgcopy::tuple(&mut out, &[Cell::Int(1), Cell::Null], &["k"]);
        assert_eq!(&out[..2], &3i16.to_be_bytes());
        assert_eq!(&out[2..6], &8i32.to_be_bytes());
        assert_eq!(&out[14..18], &(-1i32).to_be_bytes());
        assert_eq!(&out[18..22], &1i32.to_be_bytes());
    }
}
