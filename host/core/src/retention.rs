//! Retention: runs, their change feeds and request metrics, log records and function-call records
//! older than a cut-off are deleted (and, on their own cut-off, audit-log entries) in small batches (each its own short
//! transaction, so a large purge never holds SQLite's write lock for long).
//! Runs that have not ended are never deleted. All SQL about retention lives here.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{Database, DbError};
use crate::enums::RunStatus;
use crate::on_tx;

/// What a purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Ended runs.
    pub runs: u64,
    /// Change-feed entries of those runs (an entry holds up to
    /// [`crate::feed::KEYS_PER_ENTRY`] keys).
    pub changes: u64,
    /// Log records.
    pub logs: u64,
    /// Function-call records.
    pub function_calls: u64,
    /// Saved work items of those runs (`dc_run_items`).
    pub run_items: u64,
    /// Audit-log entries ([`purge_audit`], `api.audit_retention_days`).
    pub audit_entries: u64,
}

impl Purged {
    /// Nothing was deleted.
    pub fn is_empty(&self) -> bool {
        *self == Purged::default()
    }
}

/// Runs `sql` (one batch: `$1` the cut-off, `$2` the batch size and, with
/// `statuses`, `$3`-`$5` the statuses of an ended run) until a batch deletes
/// fewer rows than the batch size; returns the rows deleted.
async fn in_batches(
    db: &Database,
    sql: &str,
    statuses: bool,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> Result<u64, DbError> {
    let mut total = 0u64;
    loop {
        let mut tx = db.begin_write().await?;
        let n = on_tx!(&mut tx, conn => {
            let q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).bind(cutoff).bind(batch);
            let q = if statuses {
                q.bind(RunStatus::Success.as_str()).bind(RunStatus::Failed.as_str()).bind(RunStatus::Stopped.as_str())
            } else {
                q
            };
            q.execute(&mut *conn).await.map(|r| r.rows_affected())
        })?;
        tx.commit().await?;
        total += n;
        if n < batch as u64 {
            return Ok(total);
        }
    }
}

/// Deletes what is older than `cutoff`, `batch` rows at a time: change feeds
/// and runs that ended before it (never a run still going), log records and
/// function-call records written before it.
pub async fn purge(db: &Database, cutoff: DateTime<Utc>, batch: i64) -> Result<Purged, DbError> {
    let batch = batch.max(1);
    let ended = "status IN ($3, $4, $5) AND ended_at < $1";
    let changes = in_batches(
        db,
        &format!(
            "DELETE FROM run_changes WHERE id IN (SELECT c.id FROM run_changes c JOIN runtime r ON r.runtime_id = c.runtime_id \
             WHERE r.{ended} LIMIT $2)"
        ),
        true,
        cutoff,
        batch,
    )
    .await?;
    // a run's request metrics go with it (not counted apart)
    in_batches(
        db,
        &format!(
            "DELETE FROM dc_run_metrics WHERE runtime_id IN (SELECT m.runtime_id FROM dc_run_metrics m \
             JOIN runtime r ON r.runtime_id = m.runtime_id WHERE r.{ended} LIMIT $2)"
        ),
        true,
        cutoff,
        batch,
    )
    .await?;
    // the saved work items of old runs that were never resumed (a resumed
    // run took its items over)
    let run_items = in_batches(
        db,
        &format!(
            "DELETE FROM dc_run_items WHERE (runtime_id, seq) IN (SELECT i.runtime_id, i.seq FROM dc_run_items i \
             JOIN runtime r ON r.runtime_id = i.runtime_id WHERE r.{ended} LIMIT $2)"
        ),
        true,
        cutoff,
        batch,
    )
    .await?;
    let runs = in_batches(
        db,
        &format!(
            "DELETE FROM runtime WHERE runtime_id IN (SELECT runtime_id FROM runtime WHERE {ended} \
             AND NOT EXISTS (SELECT 1 FROM run_changes c WHERE c.runtime_id = runtime.runtime_id) LIMIT $2)"
        ),
        true,
        cutoff,
        batch,
    )
    .await?;
    let logs = in_batches(
        db,
        "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE ts < $1 LIMIT $2)",
        false,
        cutoff,
        batch,
    )
    .await?;
    let function_calls = in_batches(
        db,
        "DELETE FROM function_log WHERE id IN (SELECT id FROM function_log WHERE started_at < $1 LIMIT $2)",
        false,
        cutoff,
        batch,
    )
    .await?;
    Ok(Purged { runs, changes, logs, function_calls, run_items, audit_entries: 0 })
}

/// Deletes audit-log entries (`dc_audit`) written before `cutoff`, `batch`
/// rows at a time; returns how many.
pub async fn purge_audit(db: &Database, cutoff: DateTime<Utc>, batch: i64) -> Result<u64, DbError> {
    in_batches(
        db,
        "DELETE FROM dc_audit WHERE id IN (SELECT id FROM dc_audit WHERE at < $1 LIMIT $2)",
        false,
        cutoff,
        batch.max(1),
    )
    .await
}
