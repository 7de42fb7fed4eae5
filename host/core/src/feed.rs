//! The change feed (`run_changes`): which keys each run inserted, updated or
//! deleted in each table.
//!
//! An entry holds up to [`KEYS_PER_ENTRY`] keys of one run, table and
//! operation: `row_keys` is a JSON array of the canonical keys (each itself a
//! JSON array, made by `merge::key_text`), `key_count` how many it holds. One
//! database row per changed row cost a PostgreSQL first load more than the
//! load itself (a heap tuple and two index entries per key); an entry of a
//! thousand keys is one tuple, compressed by the server.
//!
//! Entries are written in the merge's transaction, so the feed commits or
//! rolls back with the rows it describes. Readers expand them
//! ([`expand`]); counts come from `key_count` without expanding.

use serde_json::value::RawValue;
use sqlx::AssertSqlSafe;

use crate::merge::{sqlite_rows_per_insert, values_list};

/// Keys per feed entry, at most.
pub const KEYS_PER_ENTRY: usize = 1000;

/// One feed entry built on the client.
#[derive(Debug)]
pub struct Entry {
    /// insert / update / delete.
    pub op: &'static str,
    /// JSON array of the keys (closed by [`Entries::finish`]).
    pub keys: String,
    /// How many keys `keys` holds.
    pub count: i32,
}

/// Feed entries of one table, built on the client as keys are written: each
/// operation fills its own entry until it holds [`KEYS_PER_ENTRY`] keys.
#[derive(Debug, Default)]
pub struct Entries {
    entries: Vec<Entry>,
    /// per operation, the entry it is filling
    open: Vec<(&'static str, usize)>,
}

impl Entries {
    /// Adds `key` (a canonical key: a JSON array) under `op`.
    pub fn push(&mut self, op: &'static str, key: &str) {
        let slot = self.open.iter().position(|(o, _)| *o == op);
        if let Some(s) = slot {
            let e = &mut self.entries[self.open[s].1];
            if (e.count as usize) < KEYS_PER_ENTRY {
                e.keys.push(',');
                e.keys.push_str(key);
                e.count += 1;
                return;
            }
        }
        let mut keys = String::with_capacity(key.len() * KEYS_PER_ENTRY.min(64) + 2);
        keys.push('[');
        keys.push_str(key);
        self.entries.push(Entry { op, keys, count: 1 });
        let at = self.entries.len() - 1;
        match slot {
            Some(s) => self.open[s].1 = at,
            None => self.open.push((op, at)),
        }
    }

    /// No key was pushed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in the order they were opened, each a closed JSON array.
    pub fn finish(self) -> Vec<Entry> {
        let mut v = self.entries;
        for e in &mut v {
            e.keys.push(']');
        }
        v
    }
}

/// The keys of one entry's `row_keys`, exactly as they were stored.
pub fn expand(row_keys: &str) -> Result<Vec<String>, serde_json::Error> {
    let keys: Vec<&RawValue> = serde_json::from_str(row_keys)?;
    Ok(keys.into_iter().map(|k| k.get().to_string()).collect())
}

/// Writes client-built entries of `table` for run `rid` (PostgreSQL).
pub(crate) async fn write_postgres(
    conn: &mut sqlx::PgConnection,
    rid: &str,
    table: &str,
    entries: Entries,
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let v = entries.finish();
    let ops: Vec<&str> = v.iter().map(|e| e.op).collect();
    let counts: Vec<i32> = v.iter().map(|e| e.count).collect();
    let keys: Vec<String> = v.into_iter().map(|e| e.keys).collect();
    sqlx::query(
        "INSERT INTO run_changes (runtime_id, table_name, op, row_keys, key_count) \
         SELECT $1, $2, o, k, c FROM UNNEST($3::text[], $4::text[], $5::int4[]) WITH ORDINALITY AS u(o, k, c, n) ORDER BY n",
    )
    .persistent(false)
    .bind(rid)
    .bind(table)
    .bind(ops)
    .bind(keys)
    .bind(counts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes client-built entries of `table` for run `rid` (SQLite).
pub(crate) async fn write_sqlite(
    conn: &mut sqlx::SqliteConnection,
    rid: &str,
    table: &str,
    entries: Entries,
) -> Result<(), sqlx::Error> {
    let v = entries.finish();
    for chunk in v.chunks(sqlite_rows_per_insert(5)) {
        let sql = format!(
            "INSERT INTO run_changes (runtime_id, table_name, op, row_keys, key_count) VALUES {}",
            values_list(chunk.len(), 5)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for e in chunk {
            q = q.bind(rid).bind(table).bind(e.op).bind(e.keys.as_str()).bind(e.count);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Wraps a PostgreSQL `UPDATE`/`INSERT`/`DELETE` aliased `x` so that the keys
/// it changed go into the change feed as `op` ($1 run, $2 table), grouped
/// into entries on the server, or, without a feed, are only counted. Either
/// way the statement answers one row: how many rows the DML changed.
pub(crate) fn wrap_postgres(feed: bool, dml: &str, op: &str) -> String {
    if feed {
        format!(
            "WITH changed AS ({dml} RETURNING x._row_key), \
             numbered AS (SELECT _row_key, (row_number() OVER () - 1) / {KEYS_PER_ENTRY} AS n FROM changed), \
             written AS (INSERT INTO run_changes (runtime_id, table_name, op, row_keys, key_count) \
               SELECT $1, $2, '{op}', '[' || string_agg(_row_key, ',') || ']', COUNT(*) FROM numbered GROUP BY n ORDER BY n \
               RETURNING key_count) \
             SELECT COALESCE(SUM(key_count), 0)::BIGINT FROM written"
        )
    } else {
        format!("WITH changed AS ({dml} RETURNING x._row_key) SELECT COUNT(*) FROM changed")
    }
}

/// The statement that writes the feed of an SQLite staged merge from its
/// table of operations `ops` (`op`, `_row_key`, in rowid order), grouped
/// into entries per operation ($1 run, $2 table).
pub(crate) fn from_ops_sqlite(ops: &str) -> String {
    format!(
        "INSERT INTO main.run_changes (runtime_id, table_name, op, row_keys, key_count) \
         SELECT $1, $2, op, '[' || group_concat(_row_key, ',') || ']', COUNT(*) FROM \
         (SELECT op, _row_key, (row_number() OVER (PARTITION BY op ORDER BY rowid) - 1) / {KEYS_PER_ENTRY} AS n, rowid AS r \
          FROM temp.{ops} ORDER BY rowid) \
         GROUP BY op, n ORDER BY MIN(r)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_group_keys_per_operation_and_hold_at_most_keys_per_entry() {
        let mut e = Entries::default();
        for i in 0..KEYS_PER_ENTRY + 1 {
            e.push("insert", &format!("[{i}]"));
            if i % 2 == 0 {
                e.push("update", &format!("[\"u{i}\"]"));
            }
        }
        e.push("delete", "[\"a,]\\\"b\"]");
        let v = e.finish();
        let shape: Vec<(&str, i32)> = v.iter().map(|e| (e.op, e.count)).collect();
        assert_eq!(shape, vec![("insert", 1000), ("update", 501), ("insert", 1), ("delete", 1)]);
        let first = expand(&v[0].keys).expect("a JSON array");
        assert_eq!(first.len(), KEYS_PER_ENTRY);
        assert_eq!((first[0].as_str(), first[999].as_str()), ("[0]", "[999]"));
        assert_eq!(expand(&v[2].keys).expect("array"), vec!["[1000]".to_string()]);
        // a key whose text holds the separator and brackets comes back whole
        assert_eq!(expand(&v[3].keys).expect("array"), vec!["[\"a,]\\\"b\"]".to_string()]);
    }

    #[test]
    fn an_entry_that_is_not_a_json_array_is_an_error() {
        assert!(expand("[\"a\"").is_err());
        assert!(expand("{\"a\":1}").is_err());
    }
}
