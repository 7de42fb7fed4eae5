//! Staged merges (SQLite): a run's merges are prepared without SQLite's write
//! lock, which the run then takes only for the final apply, so a long merge no
//! longer makes every other writer (other apps' runs, `serve`'s claims and
//! heartbeats) wait for the whole of its decoding, hashing and comparing.
//!
//! A [`StagedRun`] holds one pooled connection for the run. [`StagedRun::stage`]
//! validates and hashes the records, writes them into a `TEMP` table of that
//! connection (`_dc_stage_N`: the declared columns, `_row_key`, `_row_hash`)
//! and diffs them against the live table in one read transaction, writing the
//! operations into `_dc_ops_N` (`insert`/`update`/`delete`, by key). `TEMP`
//! tables live in the connection's own temporary database (a file SQLite
//! deletes itself), so writing them takes no lock on the database file and
//! the rows are not held in memory. The read sees one snapshot (WAL) and
//! takes the table's `generation` (`dc_plugin_tables`) from it.
//!
//! [`StagedRun::apply`] then starts the write transaction on the same
//! connection (`BEGIN IMMEDIATE`, waiting visibly with
//! [`crate::db::waiting_for_lock`]) and, for each staged merge in order,
//! applies the operations with set-based statements (insert, update, delete or
//! archive, change feed). If the table's generation moved since the diff
//! (another run of the app, a second merge of the same table in this run, a
//! migration) or its hashes are of an older version, the diff is made again
//! under the lock first, so the result is always that of merging into the
//! table as it is. The caller commits the returned transaction together with
//! the run's status ([`crate::runs::finish_in`]): all tables of a run or none.

use dc_plugin_api::{MergeSummary, MissingRows, TableDecl};
use serde_json::{Map, Value};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Row, Sqlite, SqlitePool};

use crate::db::{Backend, DbError, WriteTx, waiting_for_lock};
use crate::enums::{DbObjectType, UnicodeForm};
use crate::hash::HashVersion;
use crate::merge::{self, MergeError, MergeRequest};

/// One staged merge: its declaration and options, and the generation of the
/// table its diff was made against.
#[derive(Debug)]
struct Staged {
    n: usize,
    app_id: String,
    runtime_id: Option<String>,
    decl: TableDecl,
    full_snapshot: bool,
    archive: bool,
    form: UnicodeForm,
    rows: u64,
    /// The counts of its diff: what applying it must do.
    expected: MergeSummary,
    /// None: the diff must be made again under the lock (older hash version,
    /// or a table without a `dc_plugin_tables` row).
    generation: Option<i64>,
    /// Where the applied rows' timestamps come from.
    clock: crate::clock::Clock,
}

/// The merges of one run, staged in the `TEMP` schema of the run's own
/// connection until [`StagedRun::apply`].
#[derive(Debug)]
pub struct StagedRun {
    conn: PoolConnection<Sqlite>,
    merges: Vec<Staged>,
}

fn stage_table(n: usize) -> String {
    format!("_dc_stage_{n}")
}

fn ops_table(n: usize) -> String {
    format!("_dc_ops_{n}")
}

impl StagedRun {
    /// Takes a connection of the pool for the run's staging.
    pub async fn open(pool: &SqlitePool) -> Result<StagedRun, DbError> {
        Ok(StagedRun { conn: pool.acquire().await?, merges: Vec::new() })
    }

    /// How many merges are staged.
    pub fn len(&self) -> usize {
        self.merges.len()
    }

    /// True when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.merges.is_empty()
    }

    /// Validates `rows`, stages them and diffs them against the live table,
    /// all without the write lock; returns the counts the merge would have
    /// if applied now (the applied counts are [`StagedRun::apply`]'s). A bad
    /// record refuses the batch, naming it, and stages nothing.
    #[dc_fun_watch::fun_watch]
    pub async fn stage(
        &mut self,
        req: MergeRequest<'_>,
        rows: &[Map<String, Value>],
    ) -> Result<MergeSummary, MergeError> {
        let decl = req.decl;
        merge::validate_decl(Backend::Sqlite, decl)?;
        let p = merge::prepare_rows(decl, rows, req.form)?;
        let n = self.merges.len();
        let (stage, ops) = (stage_table(n), ops_table(n));
        let conn = &mut *self.conn;
        let mut cols = Vec::with_capacity(decl.columns.len() + 2);
        for c in &decl.columns {
            cols.push(format!("\"{}\" {}", c.name, merge::sql_type(Backend::Sqlite, c.ty)?));
        }
        cols.push("_row_key TEXT NOT NULL PRIMARY KEY".into());
        cols.push("_row_hash TEXT NOT NULL".into());
        for sql in [
            format!("DROP TABLE IF EXISTS temp.{stage}"),
            format!("DROP TABLE IF EXISTS temp.{ops}"),
            format!("CREATE TEMP TABLE {stage} ({})", cols.join(", ")),
            format!("CREATE TEMP TABLE {ops} (op TEXT NOT NULL, _row_key TEXT NOT NULL PRIMARY KEY)"),
        ] {
            sqlx::query(AssertSqlSafe(sql)).persistent(false).execute(&mut *conn).await?;
        }
        // one transaction: the staged rows go in at once, and the diff and the
        // generation come from one snapshot of the database (a read: no write lock)
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let width = decl.columns.len() + 2;
        let head = format!("INSERT INTO temp.{stage} ({}, _row_key, _row_hash) VALUES ", merge::column_list(decl));
        let per_stmt = merge::sqlite_rows_per_insert(width);
        let all: Vec<usize> = (0..p.cells.len()).collect();
        for chunk in all.chunks(per_stmt) {
            let sql = format!("{head}{}", merge::values_list(chunk.len(), width));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for &i in chunk {
                for c in &p.cells[i] {
                    q = merge::bind_sqlite(q, c);
                }
                q = q.bind(p.keys[i].clone()).bind(p.hashes[i].clone());
            }
            q.execute(&mut *tx).await?;
        }
        drop(p);
        let known: Option<(i64, i64)> =
            sqlx::query("SELECT generation, hash_version FROM main.dc_plugin_tables WHERE table_name = $1")
                .bind(&decl.name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()?;
        let archive = req.archive_missing || decl.missing == MissingRows::Archive;
        let mut staged = Staged {
            n,
            app_id: req.app_id.to_string(),
            runtime_id: req.runtime_id.map(str::to_string),
            decl: decl.clone(),
            full_snapshot: req.full_snapshot,
            archive,
            form: req.form,
            rows: rows.len() as u64,
            expected: MergeSummary::default(),
            generation: known.filter(|&(_, v)| v == HashVersion::CURRENT.as_i64()).map(|(g, _)| g),
            clock: req.clock.clone(),
        };
        let summary = diff(&mut tx, &staged).await?;
        tx.commit().await?;
        staged.expected = summary.clone();
        self.merges.push(staged);
        Ok(summary)
    }

    /// Takes the write lock (saying so while it waits) and applies every
    /// staged merge in order, diffing again where the table changed since
    /// it was staged. Returns the open transaction, for the caller to add the
    /// run's end and commit, and the applied counts. On error the transaction
    /// is rolled back: no table changed.
    pub async fn apply(self) -> Result<(WriteTx, MergeSummary), MergeError> {
        let StagedRun { conn, merges } = self;
        let begin = sqlx::Transaction::begin(conn, Some(sqlx::SqlSafeStr::into_sql_str("BEGIN IMMEDIATE")));
        let mut tx = WriteTx::Sqlite(waiting_for_lock("store the run's rows", begin).await?);
        let mut total = MergeSummary::default();
        for m in &merges {
            let s = apply_one(&mut tx, m).await?;
            total = MergeSummary::new(
                total.inserted + s.inserted,
                total.updated + s.updated,
                total.deleted + s.deleted,
                total.unchanged + s.unchanged,
            );
        }
        Ok((tx, total))
    }

    /// Drops what was staged (a run that does not store) and closes the
    /// connection, which discards its `TEMP` schema.
    pub async fn discard(self) {
        if let Err(e) = self.conn.close().await {
            tracing::debug!(error = %e, "closing the staging connection failed");
        }
    }
}

/// Writes the operations of merge `m` into its `_dc_ops_N` table (replacing
/// what was there) from its staged rows and the live table, and returns the
/// counts.
async fn diff(conn: &mut sqlx::SqliteConnection, m: &Staged) -> Result<MergeSummary, MergeError> {
    let (stage, ops, t) = (stage_table(m.n), ops_table(m.n), &m.decl.name);
    let statements = [
        format!("DELETE FROM temp.{ops}"),
        // an archived row comes back even when unchanged
        format!(
            "INSERT INTO temp.{ops} (op, _row_key) \
             SELECT CASE WHEN x._row_key IS NULL THEN 'insert' ELSE 'update' END, s._row_key \
             FROM temp.{stage} s LEFT JOIN main.\"{t}\" x ON x._row_key = s._row_key \
             WHERE x._row_key IS NULL OR x._row_hash <> s._row_hash OR x._archived_at IS NOT NULL \
             ORDER BY s.rowid"
        ),
    ];
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql)).persistent(false).execute(&mut *conn).await?;
    }
    if m.full_snapshot {
        // archiving an already archived row changes nothing
        let live = if m.archive { " AND x._archived_at IS NULL" } else { "" };
        // a shared table's snapshot removes only the rows this app inserted
        let mine = if m.decl.shared { format!(" AND x.{} = $1", merge::APP_COLUMN) } else { String::new() };
        let sql = format!(
            "INSERT INTO temp.{ops} (op, _row_key) SELECT 'delete', x._row_key FROM main.\"{t}\" x \
             WHERE NOT EXISTS (SELECT 1 FROM temp.{stage} s WHERE s._row_key = x._row_key){live}{mine} ORDER BY x._row_key"
        );
        let q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        let q = if m.decl.shared { q.bind(&m.app_id) } else { q };
        q.execute(&mut *conn).await?;
    }
    let counts = sqlx::query(AssertSqlSafe(format!(
        "SELECT COALESCE(SUM(op = 'insert'), 0), COALESCE(SUM(op = 'update'), 0), COALESCE(SUM(op = 'delete'), 0) FROM temp.{ops}"
    )))
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    let (ins, upd, del): (i64, i64, i64) = (counts.try_get(0)?, counts.try_get(1)?, counts.try_get(2)?);
    let (ins, upd, del) = (ins as u64, upd as u64, del as u64);
    Ok(MergeSummary::new(ins, upd, del, m.rows.saturating_sub(ins + upd)))
}

/// Applies one staged merge inside the run's write transaction.
async fn apply_one(tx: &mut WriteTx, m: &Staged) -> Result<MergeSummary, MergeError> {
    let t = &m.decl.name;
    let mut rediff = m.generation.is_none();
    if merge::table_hash_version(tx, t).await? != HashVersion::CURRENT {
        let n = merge::upgrade_hashes(tx, &m.app_id, &m.decl, m.form).await?;
        tracing::info!(table = %t, rows = n, version = %HashVersion::CURRENT, "row hashes upgraded");
        rediff = true;
    }
    let WriteTx::Sqlite(conn) = tx else {
        return Err(MergeError::Db(DbError::Refused("staged merges are applied on SQLite only".into())));
    };
    let conn: &mut sqlx::SqliteConnection = conn;
    let now: Option<i64> = sqlx::query_scalar("SELECT generation FROM main.dc_plugin_tables WHERE table_name = $1")
        .bind(t)
        .fetch_optional(&mut *conn)
        .await?;
    if now != m.generation {
        rediff = true;
    }
    let expected = if rediff {
        tracing::info!(table = %t, "the table changed since the merge was staged; comparing again under the lock");
        diff(conn, m).await?
    } else {
        m.expected.clone()
    };
    let (stage, ops) = (stage_table(m.n), ops_table(m.n));
    let cols = merge::column_list(&m.decl);
    let scols = m.decl.columns.iter().map(|c| format!("s.\"{}\"", c.name)).collect::<Vec<_>>().join(", ");
    let sets = m.decl.columns.iter().map(|c| format!("\"{0}\" = s.\"{0}\"", c.name)).collect::<Vec<_>>().join(", ");
    let now_ts = m.clock.now();
    let rid = m.runtime_id.as_deref();
    // a shared table's rows remember the app that inserted them
    let (app_col, app_val) =
        if m.decl.shared { (format!(", {}", merge::APP_COLUMN), ", $3") } else { (String::new(), "") };
    let inserted = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO main.\"{t}\" ({cols}, _row_key, _row_hash, _runtime_id, _first_seen, _last_seen{app_col}) \
         SELECT {scols}, s._row_key, s._row_hash, $1, $2, $2{app_val} FROM temp.{ops} o JOIN temp.{stage} s ON s._row_key = o._row_key \
         WHERE o.op = 'insert' ORDER BY o.rowid"
    )))
    .persistent(false)
    .bind(rid)
    .bind(now_ts);
    let inserted = if m.decl.shared { inserted.bind(&m.app_id) } else { inserted };
    let inserted = inserted.execute(&mut *conn).await?.rows_affected();
    let updated = sqlx::query(AssertSqlSafe(format!(
        "UPDATE main.\"{t}\" AS x SET {sets}, _row_hash = s._row_hash, _runtime_id = $1, _last_seen = $2, _archived_at = NULL \
         FROM temp.{ops} o JOIN temp.{stage} s ON s._row_key = o._row_key WHERE o.op = 'update' AND x._row_key = o._row_key"
    )))
    .persistent(false)
    .bind(rid)
    .bind(now_ts)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let removed = if m.archive {
        format!(
            "UPDATE main.\"{t}\" SET _archived_at = $1, _runtime_id = $2 WHERE _row_key IN (SELECT _row_key FROM temp.{ops} WHERE op = 'delete')"
        )
    } else {
        format!("DELETE FROM main.\"{t}\" WHERE _row_key IN (SELECT _row_key FROM temp.{ops} WHERE op = 'delete')")
    };
    let q = sqlx::query(AssertSqlSafe(removed)).persistent(false);
    let q = if m.archive { q.bind(now_ts).bind(rid) } else { q };
    let deleted = q.execute(&mut *conn).await?.rows_affected();
    if let Some(rid) = rid {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO main.run_changes (runtime_id, table_name, op, row_key) SELECT $1, $2, op, _row_key FROM temp.{ops} ORDER BY rowid"
        )))
        .persistent(false)
        .bind(rid)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    }
    for sql in [format!("DROP TABLE temp.{stage}"), format!("DROP TABLE temp.{ops}")] {
        sqlx::query(AssertSqlSafe(sql)).persistent(false).execute(&mut *conn).await?;
    }
    let s = MergeSummary::new(inserted, updated, deleted, m.rows.saturating_sub(inserted + updated));
    // the generation says the table is as it was when the diff was made;
    // a table written behind dc-host's back breaks that promise: store nothing
    let c = expected;
    if (c.inserted, c.updated, c.deleted) != (s.inserted, s.updated, s.deleted) {
        return Err(MergeError::Db(DbError::Refused(format!(
            "table {t} was changed outside dc-host while this run staged its merge ({} inserts, {} updates, {} deletes applied where {}, {} and {} were expected); nothing was stored: run again",
            s.inserted, s.updated, s.deleted, c.inserted, c.updated, c.deleted
        ))));
    }
    merge::bump_generation(tx, t).await?;
    crate::apps::record_db_object_in(tx, &m.app_id, t, DbObjectType::Table, "merge").await?;
    Ok(s)
}
