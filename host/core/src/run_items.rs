//! The persisted crawl frontier of runs (`dc_run_items`, migration 9): the
//! work items a run added, numbered in order, each pending, done (with the
//! records its `collect` returned) or failed. The worker's journal writes them
//! in batches as the run goes; a resumed run takes over the items of the run it
//! resumes (`runs::create_resumed`) and a successful run deletes its items
//! when it commits. All SQL about run items lives here.

use serde::Serialize;

use crate::db::{Database, DbError, WriteTx};
use crate::ids::RuntimeId;
use crate::{on_pool, on_tx};

/// Where a work item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    /// Added, not yet collected (or being collected).
    Pending,
    /// Collected; its records are kept with it.
    Done,
    /// `collect` failed for it; a resumed run tries it again.
    Failed,
}

impl ItemState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Done => "done",
            ItemState::Failed => "failed",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<ItemState> {
        match s {
            "pending" => Some(ItemState::Pending),
            "done" => Some(ItemState::Done),
            "failed" => Some(ItemState::Failed),
            _ => None,
        }
    }
}

/// One work item of a run.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ItemRow {
    /// Its number in the run (the order it was added).
    pub seq: i64,
    /// Its deduplication key's fingerprint, hex.
    pub key_hash: String,
    /// The item (JSON), as `collect` receives it.
    pub item: String,
    /// 0 for `prepare_list` items, parent + 1 for enqueued ones.
    pub depth: i64,
    /// `pending`, `done` or `failed` ([`ItemState`]).
    pub state: String,
    /// A done item's records (the JSON array its `collect` returned).
    pub records: Option<String>,
}

/// Rows per statement: 7 parameters each stays far below SQLite's 32766.
const CHUNK: usize = 500;

/// Writes items of a run in the caller's transaction: new items are inserted,
/// known ones take the new state and records — except that a `pending` row
/// never overwrites a finished one (an item may finish before the row that
/// announced it is written).
pub async fn save_in(tx: &mut WriteTx, runtime_id: &RuntimeId, rows: &[ItemRow]) -> Result<(), DbError> {
    for chunk in rows.chunks(CHUNK) {
        on_tx!(tx, conn => {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO dc_run_items (runtime_id, seq, key_hash, item, depth, state, records) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(runtime_id)
                    .push_bind(r.seq)
                    .push_bind(&r.key_hash)
                    .push_bind(&r.item)
                    .push_bind(r.depth)
                    .push_bind(&r.state)
                    .push_bind(&r.records);
            });
            q.push(
                " ON CONFLICT (runtime_id, seq) DO UPDATE SET state = excluded.state, records = excluded.records \
                 WHERE excluded.state <> 'pending'",
            );
            // not kept prepared: every batch size is another statement, and a
            // connection's cache of them held megabytes for a long run
            q.build().persistent(false).execute(&mut *conn).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// The items of a run, in the order they were added.
pub async fn load(db: &Database, runtime_id: &RuntimeId) -> Result<Vec<ItemRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, ItemRow>(
        "SELECT seq, key_hash, item, depth, state, records FROM dc_run_items WHERE runtime_id = $1 ORDER BY seq")
        .bind(runtime_id).fetch_all(pool).await)?)
}

/// How many items of a run are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ItemCounts {
    /// Not collected yet.
    pub pending: i64,
    /// Collected, records kept.
    pub done: i64,
    /// Failed in `collect`.
    pub failed: i64,
}

impl ItemCounts {
    /// All items.
    pub fn total(&self) -> i64 {
        self.pending + self.done + self.failed
    }
}

/// The items of a run counted by state.
pub async fn counts(db: &Database, runtime_id: &RuntimeId) -> Result<ItemCounts, DbError> {
    let rows: Vec<(String, i64)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT state, COUNT(*) FROM dc_run_items WHERE runtime_id = $1 GROUP BY state")
        .bind(runtime_id).fetch_all(pool).await)?;
    let mut c = ItemCounts::default();
    for (state, n) in rows {
        match ItemState::parse(&state) {
            Some(ItemState::Pending) => c.pending = n,
            Some(ItemState::Done) => c.done = n,
            Some(ItemState::Failed) => c.failed = n,
            None => {}
        }
    }
    Ok(c)
}

/// Deletes the items of a run in the caller's transaction (a successful run
/// has nothing to resume).
pub async fn delete_in(tx: &mut WriteTx, runtime_id: &RuntimeId) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query("DELETE FROM dc_run_items WHERE runtime_id = $1")
        .bind(runtime_id).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Deletes the items of a run.
pub async fn delete(db: &Database, runtime_id: &RuntimeId) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    delete_in(&mut tx, runtime_id).await?;
    tx.commit().await
}
