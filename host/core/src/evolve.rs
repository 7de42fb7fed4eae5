//! Schema evolution of plugin tables, explicit and never silent. When a new
//! plugin version (or a rollback) declares a table differently from the live
//! declaration, [`diff`] classifies each change:
//!
//! - **additive** — a new nullable column, a wider `max_len`, a relaxed limit:
//!   applied in place at registration and reported in the `reload` output;
//! - **breaking** — a changed type, a dropped or renamed column, a new NOT NULL
//!   column, a tightened nullability or `max_len`, a different key: refused,
//!   naming each column with its old and new declaration and the command that
//!   migrates the data, `dc-host data migrate APP --plan | --apply`.
//!
//! [`migrate_table_in`] performs a breaking change inside the caller's
//! transaction: every row is read back, mapped onto the new columns (values
//! converted where the type changed), validated and keyed exactly like a merge
//! ([`crate::merge::prepare_rows`]), and copied into a table of the new shape
//! that then replaces the old one. Each row keeps its `_first_seen`,
//! `_last_seen`, `_runtime_id` and `_archived_at`, so first-seen history
//! survives where the key maps; a value that does not fit the new declaration
//! fails the whole migration naming the row and the field, and nothing changes.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use dc_plugin_api::{ColumnDecl, ColumnType, TableDecl};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Row};

use crate::db::WriteTx;
use crate::enums::{DbObjectType, UnicodeForm};
use crate::hash::{Cell, HashVersion};
use crate::ids::AppId;
use crate::merge::{self, MergeError};

/// How a new declaration changes a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableDiff {
    /// The table.
    pub table: String,
    /// Changes applied in place, described for the operator.
    pub additive: Vec<String>,
    /// Changes that need `dc-host data migrate`, described with the old and
    /// new declaration.
    pub breaking: Vec<String>,
    /// The columns the additive changes add.
    #[serde(skip)]
    pub add_columns: Vec<ColumnDecl>,
}

impl TableDiff {
    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.additive.is_empty() && self.breaking.is_empty()
    }
}

fn nullable(decl: &TableDecl, c: &ColumnDecl) -> bool {
    c.nullable && !decl.key.contains(&c.name)
}

/// A column's declaration as the operator wrote it: `text, nullable, max_len 80`.
pub fn describe_column(decl: &TableDecl, c: &ColumnDecl) -> String {
    let mut s = type_name(c.ty);
    s.push_str(if nullable(decl, c) { ", nullable" } else { ", NOT NULL" });
    if c.max_len > 0 {
        s.push_str(&format!(", max_len {}", c.max_len));
    }
    s
}

fn type_name(ty: ColumnType) -> String {
    format!("{ty:?}").to_lowercase()
}

fn text_limit(c: &ColumnDecl) -> usize {
    if c.max_len > 0 { c.max_len } else { merge::MAX_TEXT_CHARS }
}

/// Classifies every difference between the live declaration `old` and `new`.
/// Snapshot and missing-row modes are behaviour, not shape: they never count.
pub fn diff(old: &TableDecl, new: &TableDecl) -> TableDiff {
    let mut d = TableDiff { table: new.name.clone(), ..TableDiff::default() };
    for c in &new.columns {
        match old.columns.iter().find(|o| o.name == c.name) {
            None if nullable(new, c) => {
                d.additive.push(format!("column {:?} added ({})", c.name, describe_column(new, c)));
                d.add_columns.push(c.clone());
            }
            None => d.breaking.push(format!(
                "column {:?} added as {}: the existing rows have no value for it (declare it nullable, or migrate)",
                c.name,
                describe_column(new, c)
            )),
            Some(o) => {
                let (was, now) = (describe_column(old, o), describe_column(new, c));
                if o.ty != c.ty {
                    d.breaking.push(format!("column {:?} changes type: {was} → {now}", c.name));
                } else if nullable(old, o) && !nullable(new, c) {
                    d.breaking.push(format!(
                        "column {:?} becomes NOT NULL: {was} → {now} (existing rows may hold NULL)",
                        c.name
                    ));
                } else if !nullable(old, o) && nullable(new, c) {
                    d.breaking.push(format!("column {:?} becomes nullable: {was} → {now}", c.name));
                } else if c.ty == ColumnType::Text && text_limit(c) < text_limit(o) {
                    d.breaking.push(format!(
                        "column {:?} gets a lower max_len: {was} → {now} (existing values may be longer)",
                        c.name
                    ));
                } else if c.ty == ColumnType::Text && text_limit(c) > text_limit(o) {
                    d.additive.push(format!("column {:?} accepts longer text: {was} → {now}", c.name));
                }
            }
        }
    }
    for o in &old.columns {
        if !new.columns.iter().any(|c| c.name == o.name) {
            d.breaking.push(format!(
                "column {:?} ({}) is dropped (or renamed): its values would be lost",
                o.name,
                describe_column(old, o)
            ));
        }
    }
    if old.key != new.key {
        d.breaking.push(format!("the key changes: [{}] → [{}]", old.key.join(", "), new.key.join(", ")));
    }
    d
}

/// What a table migration did (or, in a plan, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableMigration {
    /// The table.
    pub table: String,
    /// The breaking changes it applies.
    pub changes: Vec<String>,
    /// Rows copied into the new shape.
    pub rows: u64,
    /// Values converted to a new type.
    pub converted: u64,
    /// Values of dropped columns left behind (not NULL).
    pub values_dropped: u64,
}

/// Converts a value to what a column of type `to` accepts, where that is
/// lossless and obvious (numbers to text, numeric text to numbers, …); other
/// values are left for [`merge::prepare_rows`] to refuse, naming the field.
fn convert(v: Value, to: ColumnType) -> (Value, bool) {
    let out = match (&v, to) {
        (Value::Null, _) => None,
        (Value::String(_), ColumnType::Text | ColumnType::Timestamp) => None,
        (Value::Number(_) | Value::Bool(_), ColumnType::Text) => Some(Value::String(v.to_string())),
        (Value::Array(_) | Value::Object(_), ColumnType::Text) => Some(Value::String(v.to_string())),
        (Value::String(s), ColumnType::Integer) => s.trim().parse::<i64>().ok().map(Value::from),
        (Value::String(s), ColumnType::Real) => {
            s.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number)
        }
        (Value::String(s), ColumnType::Boolean) => match s.trim() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        (Value::Bool(b), ColumnType::Integer) => Some(Value::from(i64::from(*b))),
        (Value::Number(n), ColumnType::Boolean) => match n.as_i64() {
            Some(0) => Some(Value::Bool(false)),
            Some(1) => Some(Value::Bool(true)),
            _ => None,
        },
        _ => None,
    };
    match out {
        Some(o) => (o, true),
        None => (v, false),
    }
}

/// Bookkeeping columns of a stored row, carried over by a migration.
struct Meta {
    runtime_id: Option<String>,
    first_seen: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
    archived_at: Option<DateTime<Utc>>,
}

const META_COLS: &str = "_row_key, _runtime_id, _first_seen, _last_seen, _archived_at";

/// Migrates `old`'s table to the shape `new` declares, inside the caller's
/// transaction (see the module docs). Fails, naming the row (by its key) and
/// the field, if a stored value does not fit `new`; the caller's rollback then
/// leaves the table as it was.
pub async fn migrate_table_in(
    tx: &mut WriteTx,
    app_id: &AppId,
    old: &TableDecl,
    new: &TableDecl,
    form: UnicodeForm,
) -> Result<TableMigration, MergeError> {
    let t = &new.name;
    let sharers = merge::table_sharers(tx, t, app_id).await?;
    if !sharers.is_empty() {
        let names = sharers.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>().join(", ");
        return Err(MergeError::NotYours(format!(
            "table {t:?} is shared with app {names}: a shared table changes shape only while one app declares it; remove it from the other apps' plugins (or `dc-host apps rm` them) first"
        )));
    }
    let d = diff(old, new);
    let mut report = TableMigration { table: t.clone(), changes: d.breaking.clone(), ..Default::default() };
    report.changes.extend(d.additive.iter().cloned());
    // 1. read every row (archived ones too) in the old shape
    let sql = format!("SELECT {META_COLS}, {} FROM \"{t}\" ORDER BY _row_key", merge::column_list(old));
    let mut rows: Vec<(String, Meta, Vec<Cell>)> = Vec::new();
    match tx {
        WriteTx::Sqlite(c) => {
            for r in sqlx::query(AssertSqlSafe(sql)).persistent(false).fetch_all(&mut **c).await? {
                let meta = Meta {
                    runtime_id: r.try_get(1)?,
                    first_seen: r.try_get(2)?,
                    last_seen: r.try_get(3)?,
                    archived_at: r.try_get(4)?,
                };
                rows.push((r.try_get(0)?, meta, merge::sqlite_cells(&r, old, 5)?));
            }
        }
        WriteTx::Postgres(c) => {
            for r in sqlx::query(AssertSqlSafe(sql)).persistent(false).fetch_all(&mut **c).await? {
                let meta = Meta {
                    runtime_id: r.try_get(1)?,
                    first_seen: r.try_get(2)?,
                    last_seen: r.try_get(3)?,
                    archived_at: r.try_get(4)?,
                };
                rows.push((r.try_get(0)?, meta, merge::pg_cells(&r, old, 5)?));
            }
        }
    }
    // 2. map each row onto the new columns, converting where the type changed
    let kept: HashSet<&str> = new.columns.iter().map(|c| c.name.as_str()).collect();
    let mut maps: Vec<Map<String, Value>> = Vec::with_capacity(rows.len());
    for (_, _, cells) in &rows {
        let mut m = Map::new();
        for (o, cell) in old.columns.iter().zip(cells) {
            if *cell == Cell::Null {
                continue;
            }
            if !kept.contains(o.name.as_str()) {
                report.values_dropped += 1;
                continue;
            }
            let to = new.columns.iter().find(|c| c.name == o.name).map(|c| c.ty).unwrap_or(o.ty);
            let (v, converted) = if to == o.ty { (cell.to_json(), false) } else { convert(cell.to_json(), to) };
            report.converted += u64::from(converted);
            m.insert(o.name.clone(), v);
        }
        maps.push(m);
    }
    // 3. validate and key them exactly as a merge would
    let prepared = merge::prepare_rows(new, &maps, form).map_err(|e| match e {
        MergeError::BadRecord { problem, index, .. } => MergeError::BadRecord {
            table: t.clone(),
            index,
            problem: format!(
                "the stored row with key {} does not fit the new declaration: {problem}; fix or delete that row, or change the declaration",
                rows.get(index).map(|r| r.0.as_str()).unwrap_or("?")
            ),
        },
        other => other,
    })?;
    // 4. copy into a table of the new shape, which replaces the old one
    let tmp = format!("_dc_migrate_{t}");
    let create = merge::create_table_sql(tx.backend(), &tmp, new)?;
    crate::on_tx!(tx, conn => sqlx::query(AssertSqlSafe(create)).persistent(false).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    let width = new.columns.len() + 6;
    let insert = format!(
        "INSERT INTO \"{tmp}\" ({}, _row_key, _row_hash, _runtime_id, _first_seen, _last_seen, _archived_at) VALUES ({})",
        merge::column_list(new),
        (1..=width).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
    );
    for (i, (_, meta, _)) in rows.iter().enumerate() {
        match tx {
            WriteTx::Sqlite(c) => {
                let mut q = sqlx::query(AssertSqlSafe(insert.clone())).persistent(false);
                for cell in &prepared.cells[i] {
                    q = merge::bind_sqlite(q, cell);
                }
                q.bind(&prepared.keys[i])
                    .bind(prepared.hashes[i].as_str())
                    .bind(&meta.runtime_id)
                    .bind(meta.first_seen)
                    .bind(meta.last_seen)
                    .bind(meta.archived_at)
                    .execute(&mut **c)
                    .await?;
            }
            WriteTx::Postgres(c) => {
                let mut q = sqlx::query(AssertSqlSafe(insert.clone())).persistent(false);
                for cell in &prepared.cells[i] {
                    q = merge::bind_pg(q, cell);
                }
                q.bind(&prepared.keys[i])
                    .bind(prepared.hashes[i].as_str())
                    .bind(&meta.runtime_id)
                    .bind(meta.first_seen)
                    .bind(meta.last_seen)
                    .bind(meta.archived_at)
                    .execute(&mut **c)
                    .await?;
            }
        }
    }
    let swap = [format!("DROP TABLE \"{t}\""), format!("ALTER TABLE \"{tmp}\" RENAME TO \"{t}\"")];
    for sql in swap {
        crate::on_tx!(tx, conn => sqlx::query(AssertSqlSafe(sql)).persistent(false).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    }
    if let WriteTx::Postgres(conn) = tx
        && !rows.is_empty()
    {
        merge::ensure_key_index(conn, t).await?;
    }
    merge::record_table(tx, app_id, new, HashVersion::CURRENT).await?;
    crate::apps::record_db_object_in(tx, app_id, t, DbObjectType::Table, "migrate").await?;
    if new.shared {
        // no other app shares it (checked above): every row is the owner's
        merge::share_table(tx, t, &HashSet::from([merge::APP_COLUMN.to_string()])).await?;
    }
    report.rows = rows.len() as u64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(v: Value) -> TableDecl {
        serde_json::from_value(v).expect("declaration parses")
    }

    fn base() -> TableDecl {
        decl(json!({"name": "t", "key": ["id"], "columns": [
            {"name": "id", "type": "integer", "nullable": false},
            {"name": "title", "type": "text", "max_len": 20},
            {"name": "price", "type": "real"}
        ]}))
    }

    fn with(f: impl FnOnce(&mut Value)) -> TableDecl {
        let mut v = serde_json::to_value(base()).expect("to json");
        f(&mut v);
        decl(v)
    }

    #[test]
    fn same_declaration_is_no_change() {
        assert!(diff(&base(), &base()).is_empty());
        let modes = with(|v| v["snapshot"] = json!("incremental"));
        assert!(diff(&base(), &modes).is_empty(), "snapshot mode is behaviour, not shape");
    }

    #[test]
    fn additive_changes() {
        let new = with(|v| {
            v["columns"].as_array_mut().expect("columns").push(json!({"name": "colour", "type": "text"}));
            v["columns"][1]["max_len"] = json!(200);
        });
        let d = diff(&base(), &new);
        assert!(d.breaking.is_empty(), "{d:?}");
        assert_eq!(
            d.additive,
            vec![
                "column \"title\" accepts longer text: text, nullable, max_len 20 → text, nullable, max_len 200",
                "column \"colour\" added (text, nullable)"
            ]
        );
        assert_eq!(d.add_columns.len(), 1);
    }

    #[test]
    fn breaking_changes_name_column_old_and_new() {
        let cases: Vec<(TableDecl, &str)> = vec![
            (
                with(|v| v["columns"][2]["type"] = json!("text")),
                "column \"price\" changes type: real, nullable → text, nullable",
            ),
            (
                with(|v| {
                    v["columns"].as_array_mut().expect("columns").remove(2);
                }),
                "column \"price\" (real, nullable) is dropped (or renamed)",
            ),
            (with(|v| v["columns"][1]["nullable"] = json!(false)), "column \"title\" becomes NOT NULL"),
            (with(|v| v["columns"][1]["max_len"] = json!(5)), "column \"title\" gets a lower max_len"),
            (
                with(|v| {
                    v["columns"]
                        .as_array_mut()
                        .expect("columns")
                        .push(json!({"name": "shop", "type": "text", "nullable": false}));
                }),
                "column \"shop\" added as text, NOT NULL",
            ),
            (with(|v| v["key"] = json!(["id", "title"])), "the key changes: [id] → [id, title]"),
        ];
        for (new, expected) in cases {
            let d = diff(&base(), &new);
            assert!(d.breaking.iter().any(|b| b.contains(expected)), "{expected}: {d:?}");
        }
    }

    #[test]
    fn conversions_are_lossless_or_left_to_validation() {
        assert_eq!(convert(json!(5), ColumnType::Text), (json!("5"), true));
        assert_eq!(convert(json!(" 42 "), ColumnType::Integer), (json!(42), true));
        assert_eq!(convert(json!("4.5"), ColumnType::Real), (json!(4.5), true));
        assert_eq!(convert(json!("abc"), ColumnType::Integer), (json!("abc"), false));
        assert_eq!(convert(json!(true), ColumnType::Integer), (json!(1), true));
        assert_eq!(convert(json!(2), ColumnType::Boolean), (json!(2), false));
    }
}
