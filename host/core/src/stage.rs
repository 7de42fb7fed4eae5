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
use crate::ids::{AppId, RuntimeId};
use crate::merge::{self, MergeError, MergeRequest};

/// One staged merge: its declaration and options, and the generation of the
/// table its diff was made against.
#[derive(Debug)]
struct Staged {
    n: usize,
    app_id: AppId,
    runtime_id: Option<RuntimeId>,
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
        let n = self.open_stream(req).await?;
        if let Err(e) = self.append(n, rows).await {
            self.drop_last().await;
            return Err(e);
        }
        self.close_stream(n, req.full_snapshot).await
    }

    /// Opens a streamed merge into `req.decl`: its rows arrive in batches
    /// ([`StagedRun::append`]) while the run collects them, and
    /// [`StagedRun::close_stream`] diffs them once all are in. Returns its
    /// number. `req.full_snapshot` is decided at the close.
    pub async fn open_stream(&mut self, req: MergeRequest<'_>) -> Result<usize, MergeError> {
        let decl = req.decl;
        merge::validate_decl(Backend::Sqlite, decl)?;
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
        let archive = req.archive_missing || decl.missing == MissingRows::Archive;
        self.merges.push(Staged {
            n,
            app_id: req.app_id.clone(),
            runtime_id: req.runtime_id.cloned(),
            decl: decl.clone(),
            full_snapshot: req.full_snapshot,
            archive,
            form: req.form,
            rows: 0,
            expected: MergeSummary::default(),
            generation: None,
            clock: req.clock.clone(),
        });
        Ok(n)
    }

    /// Validates a batch of streamed merge `n` and adds it to its staged rows
    /// (a `TEMP` table: nothing of it stays in memory). A bad record, or a
    /// key already staged by an earlier batch, refuses the batch, naming the
    /// record by its position among all the rows of the merge.
    pub async fn append(&mut self, n: usize, rows: &[Map<String, Value>]) -> Result<(), MergeError> {
        let m = self.merges.get(n).ok_or_else(|| MergeError::BadDeclaration(format!("no staged merge {n}")))?;
        let offset = m.rows as usize;
        let p = merge::prepare_rows(&m.decl, rows, m.form).map_err(|e| merge::offset_error(e, offset))?;
        let decl = &m.decl;
        let stage = stage_table(n);
        let conn = &mut *self.conn;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let width = decl.columns.len() + 2;
        let head = format!("INSERT INTO temp.{stage} ({}, _row_key, _row_hash) VALUES ", merge::column_list(decl));
        let per_stmt = merge::sqlite_rows_per_insert(width);
        let all: Vec<usize> = (0..p.cells.len()).collect();
        for chunk in all.chunks(per_stmt) {
            let sql = format!("{head}{} ON CONFLICT (_row_key) DO NOTHING", merge::values_list(chunk.len(), width));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for &i in chunk {
                for c in &p.cells[i] {
                    q = merge::bind_sqlite(q, c);
                }
                q = q.bind(p.keys[i].clone()).bind(p.hashes[i].as_str());
            }
            let added = q.execute(&mut *tx).await?.rows_affected();
            if added != chunk.len() as u64 {
                drop(tx);
                // a key of this chunk was staged by an earlier batch: name the first
                for &i in chunk {
                    let known: Option<i64> =
                        sqlx::query_scalar(AssertSqlSafe(format!("SELECT 1 FROM temp.{stage} WHERE _row_key = $1")))
                            .persistent(false)
                            .bind(&p.keys[i])
                            .fetch_optional(&mut *conn)
                            .await?;
                    if known.is_some() {
                        return Err(MergeError::BadRecord {
                            table: decl.name.clone(),
                            index: offset + i,
                            problem: format!("key {} appears more than once among the run's records", p.keys[i]),
                        });
                    }
                }
                return Err(MergeError::BadRecord {
                    table: decl.name.clone(),
                    index: offset,
                    problem: "a key appears more than once among the run's records".into(),
                });
            }
        }
        tx.commit().await?;
        if let Some(m) = self.merges.get_mut(n) {
            m.rows += rows.len() as u64;
        }
        Ok(())
    }

    /// Closes streamed merge `n`: diffs its staged rows against the live
    /// table in one read (no write lock), removing rows it lacks when
    /// `full_snapshot`, and returns the counts the merge would have if
    /// applied now.
    pub async fn close_stream(&mut self, n: usize, full_snapshot: bool) -> Result<MergeSummary, MergeError> {
        let conn = &mut *self.conn;
        let m = self.merges.get_mut(n).ok_or_else(|| MergeError::BadDeclaration(format!("no staged merge {n}")))?;
        m.full_snapshot = full_snapshot;
        // the diff and the generation come from one snapshot of the database
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let known: Option<(i64, i64)> =
            sqlx::query("SELECT generation, hash_version FROM main.dc_plugin_tables WHERE table_name = $1")
                .bind(&m.decl.name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()?;
        m.generation = known.filter(|&(_, v)| v == HashVersion::CURRENT.as_i64()).map(|(g, _)| g);
        let summary = diff(&mut tx, m).await?;
        tx.commit().await?;
        m.expected = summary.clone();
        Ok(summary)
    }

    /// Forgets the newest staged merge (its batch was refused).
    async fn drop_last(&mut self) {
        if let Some(m) = self.merges.pop() {
            for sql in [
                format!("DROP TABLE IF EXISTS temp.{}", stage_table(m.n)),
                format!("DROP TABLE IF EXISTS temp.{}", ops_table(m.n)),
            ] {
                let _ = sqlx::query(AssertSqlSafe(sql)).persistent(false).execute(&mut *self.conn).await;
            }
        }
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
        sqlx::query(AssertSqlSafe(crate::feed::from_ops_sqlite(&ops)))
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

/// A streamed merge on PostgreSQL: the run's rows of one table are `COPY`ed
/// in batches, as the run collects them, into a `TEMP` table of the run's
/// transaction (`_dc_stream_N`, keyed by `_row_key`, so a key seen twice is
/// refused), and [`PgStream::finish`] merges them into the table with
/// set-based statements once all are in (update changed, insert new, remove
/// or archive missing for a full snapshot, change feed). Nothing of the rows
/// stays in the worker's memory; the table is locked only for the finish.
#[derive(Debug)]
pub struct PgStream {
    n: usize,
    app_id: AppId,
    runtime_id: Option<RuntimeId>,
    decl: TableDecl,
    form: UnicodeForm,
    archive: bool,
    rows: u64,
    clock: crate::clock::Clock,
}

fn pg_stream_table(n: usize) -> String {
    format!("_dc_stream_{n}")
}

impl PgStream {
    /// Creates the stream's `TEMP` table (number `n`, unique in the run) in
    /// the run's transaction.
    pub async fn open(tx: &mut WriteTx, n: usize, req: MergeRequest<'_>) -> Result<PgStream, MergeError> {
        merge::validate_decl(Backend::Postgres, req.decl)?;
        let WriteTx::Postgres(conn) = tx else {
            return Err(MergeError::Db(DbError::Refused("streamed COPY merges are for PostgreSQL only".into())));
        };
        let (s, t) = (pg_stream_table(n), &req.decl.name);
        for sql in [
            format!("CREATE TEMP TABLE {s} (LIKE \"{t}\" INCLUDING DEFAULTS) ON COMMIT DROP"),
            format!("ALTER TABLE {s} ADD PRIMARY KEY (_row_key)"),
        ] {
            sqlx::query(AssertSqlSafe(sql)).persistent(false).execute(&mut **conn).await?;
        }
        Ok(PgStream {
            n,
            app_id: req.app_id.clone(),
            runtime_id: req.runtime_id.cloned(),
            decl: req.decl.clone(),
            form: req.form,
            archive: req.archive_missing || req.decl.missing == MissingRows::Archive,
            rows: 0,
            clock: req.clock.clone(),
        })
    }

    /// Validates a batch and `COPY`s it into the stream's table. A bad
    /// record is named by its position among all the rows of the stream; a
    /// key sent by an earlier batch is refused too.
    pub async fn append(&mut self, tx: &mut WriteTx, rows: &[Map<String, Value>]) -> Result<(), MergeError> {
        let offset = self.rows as usize;
        let p = merge::prepare_rows(&self.decl, rows, self.form).map_err(|e| merge::offset_error(e, offset))?;
        let WriteTx::Postgres(conn) = tx else {
            return Err(MergeError::Db(DbError::Refused("streamed COPY merges are for PostgreSQL only".into())));
        };
        let stmt = format!(
            "COPY {} ({}, _row_key, _row_hash) FROM STDIN (FORMAT binary)",
            pg_stream_table(self.n),
            merge::column_list(&self.decl)
        );
        let copied = merge::copy_in(conn, &stmt, p.cells.len(), |buf, i| {
            merge::pgcopy::tuple(buf, &p.cells[i], &[&p.keys[i], p.hashes[i].as_str()])
        })
        .await;
        match copied {
            Ok(()) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                return Err(MergeError::BadRecord {
                    table: self.decl.name.clone(),
                    index: offset,
                    problem: format!(
                        "a key of records {offset}..{} appears more than once among the run's records ({})",
                        offset + rows.len(),
                        e.message()
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.rows += rows.len() as u64;
        Ok(())
    }

    /// Merges the streamed rows into the table inside the run's transaction
    /// (removing rows they lack when `full_snapshot`), writes the change
    /// feed, and returns the counts.
    pub async fn finish(self, tx: &mut WriteTx, full_snapshot: bool) -> Result<MergeSummary, MergeError> {
        let t = self.decl.name.clone();
        if merge::table_hash_version(tx, &t).await? != HashVersion::CURRENT {
            let n = merge::upgrade_hashes(tx, &self.app_id, &self.decl, self.form).await?;
            tracing::info!(table = %t, rows = n, version = %HashVersion::CURRENT, "row hashes upgraded");
        }
        let WriteTx::Postgres(conn) = tx else {
            return Err(MergeError::Db(DbError::Refused("streamed COPY merges are for PostgreSQL only".into())));
        };
        let conn: &mut sqlx::PgConnection = conn;
        let s = pg_stream_table(self.n);
        let now = self.clock.now();
        // one merge per table at a time (a snapshot's deletes must not race another's inserts)
        // the joins below match on `_row_key` only: the planner needs its
        // statistics, not a sample of every column
        for sql in [format!("LOCK TABLE \"{t}\" IN SHARE ROW EXCLUSIVE MODE"), format!("ANALYZE {s} (_row_key)")] {
            sqlx::query(AssertSqlSafe(sql)).persistent(false).execute(&mut *conn).await?;
        }
        let feed = self.runtime_id.is_some();
        let wrap = |dml: String, op: &str| crate::feed::wrap_postgres(feed, &dml, op);
        let cols = merge::column_list(&self.decl);
        let scols = self.decl.columns.iter().map(|c| format!("s.\"{}\"", c.name)).collect::<Vec<_>>().join(", ");
        let sets =
            self.decl.columns.iter().map(|c| format!("\"{0}\" = s.\"{0}\"", c.name)).collect::<Vec<_>>().join(", ");
        // a shared table's rows remember the app that inserted them, and its
        // snapshot removes only those (the app id is `$4`, bound only to the
        // statements that name it)
        let (app_col, app_val, mine) = if self.decl.shared {
            (format!(", {}", merge::APP_COLUMN), ", $4".to_string(), format!(" AND x.{} = $4", merge::APP_COLUMN))
        } else {
            (String::new(), String::new(), String::new())
        };
        let mut statements = vec![
            // an archived row comes back even when unchanged
            wrap(
                format!(
                    "UPDATE \"{t}\" x SET {sets}, _row_hash = s._row_hash, _runtime_id = $1, _last_seen = $3, _archived_at = NULL \
                     FROM {s} s WHERE x._row_key = s._row_key AND (x._row_hash <> s._row_hash OR x._archived_at IS NOT NULL)"
                ),
                "update",
            ),
            wrap(
                format!(
                    "INSERT INTO \"{t}\" AS x ({cols}, _row_key, _row_hash, _runtime_id, _first_seen, _last_seen{app_col}) \
                     SELECT {scols}, s._row_key, s._row_hash, $1, $3, $3{app_val} FROM {s} s \
                     WHERE NOT EXISTS (SELECT 1 FROM \"{t}\" y WHERE y._row_key = s._row_key) ORDER BY s._row_key"
                ),
                "insert",
            ),
        ];
        if full_snapshot {
            let missing = format!("NOT EXISTS (SELECT 1 FROM {s} s WHERE s._row_key = x._row_key){mine}");
            statements.push(wrap(
                if self.archive {
                    // archiving an already archived row changes nothing
                    format!(
                        "UPDATE \"{t}\" x SET _archived_at = $3, _runtime_id = $1 WHERE x._archived_at IS NULL AND {missing}"
                    )
                } else {
                    format!("DELETE FROM \"{t}\" x WHERE {missing}")
                },
                "delete",
            ));
        }
        // updated, inserted, deleted
        let mut counts = [0u64; 3];
        for (i, sql) in statements.into_iter().enumerate() {
            let names_app = sql.contains("$4");
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .persistent(false)
                .bind(self.runtime_id.clone())
                .bind(t.clone())
                .bind(now);
            if names_app {
                q = q.bind(self.app_id.clone());
            }
            let n: i64 = q.fetch_one(&mut *conn).await?.try_get(0)?;
            counts[i] = n as u64;
        }
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {s}"))).persistent(false).execute(&mut *conn).await?;
        // a first load inserted without the key's index: it is built now
        // (the stream's own primary key kept the keys unique)
        merge::ensure_key_index(conn, &t).await?;
        crate::apps::record_db_object_in(tx, &self.app_id, &t, DbObjectType::Table, "merge").await?;
        let [updated, inserted, deleted] = counts;
        Ok(MergeSummary::new(inserted, updated, deleted, self.rows.saturating_sub(inserted + updated)))
    }

    /// Rows streamed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}
