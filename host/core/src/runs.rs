//! Runs: the `runtime` table (one row per run, 32-hex id), its progress and
//! outcome, stop requests, the change feed (`run_changes`) merges write, and
//! the request metrics the worker stores (`dc_run_metrics`).
//! All SQL about runs lives here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::{Database, DbError, WriteTx};
use crate::enums::RunStatus;
use crate::ids::{AppId, RuntimeId};
use crate::{on_pool, on_tx};
use dc_plugin_api::MergeSummary;

/// One row of `runtime`.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct RunRow {
    /// Id (uuid4 as 32 hex).
    pub runtime_id: RuntimeId,
    /// App.
    pub app_id: AppId,
    /// Plugin version used.
    pub plugin_version: String,
    /// Plugin file hash used.
    pub plugin_hash: String,
    /// PENDING / RUNNING / SUCCESS / FAILED / STOPPED.
    pub status: String,
    /// Runtime arguments (JSON).
    pub args: String,
    /// Collect threads.
    pub threads: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Worker started.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Worker exit code.
    pub exit_code: Option<i64>,
    /// Signal that killed the worker.
    pub exit_signal: Option<i64>,
    /// Why it failed or stopped.
    pub reason: Option<String>,
    /// Worker process id.
    pub worker_pid: Option<i64>,
    /// Host that ran it.
    pub host_name: String,
    /// An operator asked it to stop.
    pub stop_requested: bool,
    /// Items done.
    pub current_count: i64,
    /// Items in total.
    pub total_count: i64,
    /// Items failed.
    pub error_count: i64,
    /// Rows inserted.
    pub inserted: i64,
    /// Rows updated.
    pub updated: i64,
    /// Rows deleted or archived.
    pub deleted: i64,
    /// Rows unchanged.
    pub unchanged: i64,
    /// Log records of the run dropped because the log buffer was full.
    pub dropped_logs: i64,
    /// The run this run resumes (`dc-host run APP --resume ID`).
    pub resumed_from: Option<RuntimeId>,
}

/// A new run.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// App.
    pub app_id: &'a AppId,
    /// Version.
    pub plugin_version: &'a str,
    /// File hash.
    pub plugin_hash: &'a str,
    /// Arguments JSON.
    pub args: &'a str,
    /// Threads.
    pub threads: i64,
    /// Host.
    pub host_name: &'a str,
}

/// A fresh run id: uuid4 as 32 lowercase hex characters.
pub fn new_runtime_id() -> RuntimeId {
    RuntimeId::from(uuid::Uuid::new_v4().simple().to_string())
}

const CREATE: &str = "INSERT INTO runtime (runtime_id, app_id, plugin_version, plugin_hash, status, args, threads, created_at, host_name) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Binds [`CREATE`]'s parameters.
macro_rules! create_query {
    ($id:expr, $r:expr) => {
        sqlx::query(CREATE)
            .bind($id)
            .bind($r.app_id)
            .bind($r.plugin_version)
            .bind($r.plugin_hash)
            .bind(RunStatus::Pending.as_str())
            .bind($r.args)
            .bind($r.threads)
            .bind(Utc::now())
            .bind($r.host_name)
    };
}

/// Creates a PENDING run and returns its id.
pub async fn create(db: &Database, r: &NewRun<'_>) -> Result<RuntimeId, DbError> {
    let id = new_runtime_id();
    let insert = async { on_pool!(db, pool => create_query!(&id, r).execute(pool).await.map(|r| r.rows_affected())) };
    crate::db::waiting_for_lock("create the run", insert).await?;
    Ok(id)
}

/// [`create`] inside the caller's transaction.
pub async fn create_in(tx: &mut WriteTx, r: &NewRun<'_>) -> Result<RuntimeId, DbError> {
    let id = new_runtime_id();
    on_tx!(tx, conn => create_query!(&id, r).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(id)
}

/// Creates a PENDING run that resumes run `from` and returns its id: in one
/// transaction the run row (with `resumed_from`) is inserted and the persisted
/// work items of `from` move to it. A run is resumed at most once (a unique
/// index on `resumed_from`): of two concurrent resumes of one run, one is
/// refused and changes nothing.
pub async fn create_resumed(db: &Database, r: &NewRun<'_>, from: &RuntimeId) -> Result<RuntimeId, DbError> {
    let id = new_runtime_id();
    let mut tx = db.begin_write().await?;
    let inserted = on_tx!(&mut tx, conn => sqlx::query(
        "INSERT INTO runtime (runtime_id, app_id, plugin_version, plugin_hash, status, args, threads, created_at, host_name, resumed_from) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .bind(&id).bind(r.app_id).bind(r.plugin_version).bind(r.plugin_hash).bind(RunStatus::Pending.as_str())
        .bind(r.args).bind(r.threads).bind(Utc::now()).bind(r.host_name).bind(from)
        .execute(&mut *conn).await.map(|r| r.rows_affected()));
    match inserted {
        Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            return Err(DbError::Refused(format!(
                "run {from} was already resumed by another run; see `dc-host runs show {from}` and resume that run instead"
            )));
        }
        other => other?,
    };
    on_tx!(&mut tx, conn => sqlx::query("UPDATE dc_run_items SET runtime_id = $1 WHERE runtime_id = $2")
        .bind(&id).bind(from).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(id)
}

/// The run that resumed run `runtime_id`, if one did.
pub async fn resumed_by(db: &Database, runtime_id: &RuntimeId) -> Result<Option<RuntimeId>, DbError> {
    Ok(
        on_pool!(db, pool => sqlx::query_scalar::<_, RuntimeId>("SELECT runtime_id FROM runtime WHERE resumed_from = $1")
        .bind(runtime_id).fetch_optional(pool).await)?,
    )
}

/// Marks a run RUNNING with its worker pid.
pub async fn mark_started(db: &Database, runtime_id: &RuntimeId, pid: u32) -> Result<(), DbError> {
    let update = async {
        on_pool!(db, pool => sqlx::query(
        "UPDATE runtime SET status = $1, started_at = $2, worker_pid = $3 WHERE runtime_id = $4 AND status = $5")
        .bind(RunStatus::Running.as_str()).bind(Utc::now()).bind(i64::from(pid)).bind(runtime_id)
        .bind(RunStatus::Pending.as_str()).execute(pool).await.map(|r| r.rows_affected()))
    };
    crate::db::waiting_for_lock("mark the run started", update).await?;
    Ok(())
}

/// Updates progress counters of a run.
pub async fn set_progress(
    db: &Database,
    runtime_id: &RuntimeId,
    current: i64,
    total: i64,
    errors: i64,
) -> Result<(), DbError> {
    on_pool!(db, pool => sqlx::query(
        "UPDATE runtime SET current_count = $1, total_count = $2, error_count = $3 WHERE runtime_id = $4")
        .bind(current).bind(total).bind(errors).bind(runtime_id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

const FINISH: &str =
    "UPDATE runtime SET status = $1, reason = $2, ended_at = $3 WHERE runtime_id = $4 AND status IN ($5, $6)";

/// Binds [`FINISH`]'s parameters (`$q` is `sqlx::query(FINISH)`).
macro_rules! finish_query {
    ($runtime_id:expr, $status:expr, $reason:expr) => {
        sqlx::query(FINISH)
            .bind($status.as_str())
            .bind($reason)
            .bind(Utc::now())
            .bind($runtime_id)
            .bind(RunStatus::Pending.as_str())
            .bind(RunStatus::Running.as_str())
    };
}

/// Ends a run unless it already ended; returns true if this call ended it.
pub async fn finish(
    db: &Database,
    runtime_id: &RuntimeId,
    status: RunStatus,
    reason: Option<&str>,
) -> Result<bool, DbError> {
    let n =
        on_pool!(db, pool => finish_query!(runtime_id, status, reason).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// [`finish`] inside the caller's transaction: a worker ends a successful run
/// in the transaction that merged its rows, so the rows and the status commit
/// together or not at all.
pub async fn finish_in(
    tx: &mut WriteTx,
    runtime_id: &RuntimeId,
    status: RunStatus,
    reason: Option<&str>,
) -> Result<bool, DbError> {
    let n = on_tx!(tx, conn => finish_query!(runtime_id, status, reason).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Adds a merge's counts to its run, inside the merge's transaction.
pub async fn add_counters_in(tx: &mut WriteTx, runtime_id: &RuntimeId, s: &MergeSummary) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "UPDATE runtime SET inserted = inserted + $1, updated = updated + $2, deleted = deleted + $3, unchanged = unchanged + $4 WHERE runtime_id = $5")
        .bind(s.inserted as i64).bind(s.updated as i64).bind(s.deleted as i64).bind(s.unchanged as i64).bind(runtime_id)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Records how the worker process exited.
pub async fn record_exit(
    db: &Database,
    runtime_id: &RuntimeId,
    code: Option<i32>,
    signal: Option<i32>,
) -> Result<(), DbError> {
    on_pool!(db, pool => sqlx::query("UPDATE runtime SET exit_code = $1, exit_signal = $2 WHERE runtime_id = $3")
        .bind(code.map(i64::from)).bind(signal.map(i64::from)).bind(runtime_id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Records how many log records of the run the worker had to drop.
pub async fn set_dropped_logs(db: &Database, runtime_id: &RuntimeId, dropped: u64) -> Result<(), DbError> {
    on_pool!(db, pool => sqlx::query("UPDATE runtime SET dropped_logs = $1 WHERE runtime_id = $2")
        .bind(i64::try_from(dropped).unwrap_or(i64::MAX)).bind(runtime_id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Asks a run to stop (the worker polls this).
pub async fn request_stop(db: &Database, runtime_id: &RuntimeId) -> Result<bool, DbError> {
    let n = on_pool!(db, pool => sqlx::query(
        "UPDATE runtime SET stop_requested = $1 WHERE runtime_id = $2 AND status IN ($3, $4)")
        .bind(true).bind(runtime_id).bind(RunStatus::Pending.as_str()).bind(RunStatus::Running.as_str())
        .execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// True if an operator asked this run to stop.
pub async fn stop_requested(db: &Database, runtime_id: &RuntimeId) -> Result<bool, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_scalar::<_, bool>("SELECT stop_requested FROM runtime WHERE runtime_id = $1")
        .bind(runtime_id).fetch_optional(pool).await)?
    .unwrap_or(false))
}

/// One run by id or unique prefix of 6+ characters (`spec` is what a user
/// typed; a [`RuntimeId`] in hand derefs to it).
pub async fn get(db: &Database, spec: &str) -> Result<RunRow, DbError> {
    let runtime_id = spec;
    let pattern = format!("{runtime_id}%");
    let rows: Vec<RunRow> = on_pool!(db, pool => sqlx::query_as::<_, RunRow>(
        "SELECT * FROM runtime WHERE runtime_id = $1 OR (length($1) >= 6 AND runtime_id LIKE $2) LIMIT 2")
        .bind(runtime_id).bind(&pattern).fetch_all(pool).await)?;
    match rows.len() {
        1 => Ok(rows.into_iter().next().expect("one row")),
        0 => Err(DbError::NotFound(format!("no run {runtime_id:?}; see `dc-host runs list`"))),
        _ => Err(DbError::Refused(format!("{runtime_id:?} matches several runs; give more characters"))),
    }
}

/// Runs marked RUNNING by workers on `host_name`, oldest first.
pub async fn running_on(db: &Database, host_name: &str) -> Result<Vec<RunRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, RunRow>(
        "SELECT * FROM runtime WHERE status = $1 AND host_name = $2 ORDER BY created_at")
        .bind(RunStatus::Running.as_str()).bind(host_name).fetch_all(pool).await)?)
}

/// Recent runs, newest first, optionally of one app.
pub async fn list(db: &Database, app_id: Option<&AppId>, limit: i64) -> Result<Vec<RunRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, RunRow>(
        "SELECT * FROM runtime WHERE ($1 IS NULL OR app_id = $1) ORDER BY created_at DESC LIMIT $2")
        .bind(app_id).bind(limit).fetch_all(pool).await)?)
}

/// A filtered page of runs, newest first ([`page`]).
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Only runs of this app (exact id).
    pub app_id: Option<AppId>,
    /// Only runs with this status.
    pub status: Option<String>,
    /// Continue after this run: its `created_at` and id ([`RunRow::sort_key`]).
    pub before: Option<(DateTime<Utc>, RuntimeId)>,
    /// At most this many.
    pub limit: i64,
}

impl RunRow {
    /// The key [`RunQuery::before`] continues from.
    pub fn sort_key(&self) -> (DateTime<Utc>, RuntimeId) {
        (self.created_at, self.runtime_id.clone())
    }
}

/// A page of runs, newest first, continuing before a key (keyset pagination:
/// a walk sees every run once even while new runs start).
pub async fn page(db: &Database, q: &RunQuery) -> Result<Vec<RunRow>, DbError> {
    let (at, id) = q.before.clone().unzip();
    Ok(on_pool!(db, pool => sqlx::query_as::<_, RunRow>(
        "SELECT * FROM runtime WHERE ($1 IS NULL OR app_id = $1) AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR (created_at, runtime_id) < ($3, $4)) ORDER BY created_at DESC, runtime_id DESC LIMIT $5")
        .bind(&q.app_id).bind(&q.status).bind(at).bind(id).bind(q.limit).fetch_all(pool).await)?)
}

/// How many keys a run inserted, updated or deleted in one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ChangeCount {
    /// Table.
    pub table_name: String,
    /// insert / update / delete.
    pub op: String,
    /// Keys.
    pub count: i64,
}

/// A run's change feed counted by table and operation.
pub async fn change_summary(db: &Database, runtime_id: &RuntimeId) -> Result<Vec<ChangeCount>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, ChangeCount>(
        "SELECT table_name, op, CAST(SUM(key_count) AS BIGINT) AS count FROM run_changes WHERE runtime_id = $1 GROUP BY table_name, op ORDER BY table_name, op")
        .bind(runtime_id).fetch_all(pool).await)?)
}

/// One entry of a run's change feed.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeRow {
    /// Table.
    pub table_name: String,
    /// insert / update / delete.
    pub op: String,
    /// Canonical key (JSON array of key values).
    pub row_key: String,
}

/// The change feed of a run, a row per key, in the order its entries were
/// written (see [`crate::feed`]).
pub async fn changes(db: &Database, runtime_id: &RuntimeId) -> Result<Vec<ChangeRow>, DbError> {
    let entries: Vec<(i64, String, String, String)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT id, table_name, op, row_keys FROM run_changes WHERE runtime_id = $1 ORDER BY id")
        .bind(runtime_id).fetch_all(pool).await)?;
    let mut out = Vec::new();
    for (id, table_name, op, row_keys) in entries {
        let keys = crate::feed::expand(&row_keys).map_err(|e| {
            DbError::Refused(format!(
                "change feed entry {id} of run {runtime_id} ({table_name}, {op}) is not a JSON array of keys: {e}; \
                 it was written outside dc-host: delete it (`DELETE FROM run_changes WHERE id = {id}`)"
            ))
        })?;
        out.extend(keys.into_iter().map(|row_key| ChangeRow {
            table_name: table_name.clone(),
            op: op.clone(),
            row_key,
        }));
    }
    Ok(out)
}

/// The runs of an app that have not ended (PENDING or RUNNING), on any host.
pub async fn active_for_app(db: &Database, app_id: &AppId) -> Result<Vec<RunRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, RunRow>(
        "SELECT * FROM runtime WHERE app_id = $1 AND status IN ($2, $3) ORDER BY created_at")
        .bind(app_id).bind(RunStatus::Pending.as_str()).bind(RunStatus::Running.as_str()).fetch_all(pool).await)?)
}

/// [`active_for_app`] inside the caller's transaction (which, on SQLite,
/// holds the write lock, so no run can be created between this read and the
/// caller's insert).
pub async fn active_for_app_in(tx: &mut WriteTx, app_id: &AppId) -> Result<Vec<RunRow>, DbError> {
    Ok(on_tx!(tx, conn => sqlx::query_as::<_, RunRow>(
        "SELECT * FROM runtime WHERE app_id = $1 AND status IN ($2, $3) ORDER BY created_at")
        .bind(app_id).bind(RunStatus::Pending.as_str()).bind(RunStatus::Running.as_str()).fetch_all(&mut *conn).await)?)
}

/// Replaces the reason of an ended run (its supervisor adds who asked it to stop).
pub async fn set_reason(db: &Database, runtime_id: &RuntimeId, reason: &str) -> Result<(), DbError> {
    on_pool!(db, pool => sqlx::query("UPDATE runtime SET reason = $1 WHERE runtime_id = $2")
        .bind(reason).bind(runtime_id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

const SAVE_METRICS: &str = "INSERT INTO dc_run_metrics (runtime_id, generation, metrics, updated_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (runtime_id) DO UPDATE SET generation = excluded.generation, metrics = excluded.metrics, \
     updated_at = excluded.updated_at WHERE dc_run_metrics.generation < excluded.generation";

/// Binds [`SAVE_METRICS`]'s parameters.
macro_rules! save_metrics_query {
    ($runtime_id:expr, $generation:expr, $doc:expr) => {
        sqlx::query(SAVE_METRICS)
            .bind($runtime_id)
            .bind(i64::try_from($generation).unwrap_or(i64::MAX))
            .bind(sqlx::types::Json($doc))
            .bind(Utc::now())
    };
}

/// Stores a run's request metrics (a JSON document) as of `generation`,
/// unless a later generation is stored already: the worker's periodic
/// writes and its final one may arrive in any order.
pub async fn save_metrics(
    db: &Database,
    runtime_id: &RuntimeId,
    generation: u64,
    doc: &serde_json::Value,
) -> Result<(), DbError> {
    on_pool!(db, pool => save_metrics_query!(runtime_id, generation, doc).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// [`save_metrics`] inside the run's transaction (a successful run stores
/// its final metrics with its rows and status).
pub async fn save_metrics_in(
    tx: &mut WriteTx,
    runtime_id: &RuntimeId,
    generation: u64,
    doc: &serde_json::Value,
) -> Result<(), DbError> {
    on_tx!(tx, conn => save_metrics_query!(runtime_id, generation, doc).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// A run's stored request metrics, if it made any request.
pub async fn metrics(db: &Database, runtime_id: &RuntimeId) -> Result<Option<serde_json::Value>, DbError> {
    let doc: Option<sqlx::types::Json<serde_json::Value>> = on_pool!(db, pool => sqlx::query_scalar(
        "SELECT metrics FROM dc_run_metrics WHERE runtime_id = $1")
        .bind(runtime_id).fetch_optional(pool).await)?;
    Ok(doc.map(|d| d.0))
}
