//! The hosts that serve this database (`dc_hosts`): each `dc-host serve`
//! writes a heartbeat row, so operators see which hosts run and when each was
//! last alive (`dc-host hosts list`). All SQL about hosts lives here.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{Database, DbError};
use crate::on_tx;

/// One row of `dc_hosts`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HostRow {
    /// Host name (`general.host_name`).
    pub host_name: String,
    /// Process id of its `dc-host serve`.
    pub pid: i64,
    /// dc-host version.
    pub version: String,
    /// `SERVING`, `STOPPING` or `STOPPED`.
    pub state: String,
    /// When it started serving.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
}

/// Records that `host_name` serves (or stopped serving) now; `started` is
/// written only with `SERVING` from a fresh start.
pub async fn heartbeat(
    db: &Database,
    host_name: &str,
    pid: u32,
    state: &str,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, conn => sqlx::query(
        "INSERT INTO dc_hosts (host_name, pid, version, state, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (host_name) DO UPDATE SET pid = excluded.pid, version = excluded.version, state = excluded.state, \
         started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at")
        .bind(host_name).bind(i64::from(pid)).bind(env!("CARGO_PKG_VERSION")).bind(state).bind(started).bind(now)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await
}

/// Every host, by name.
pub async fn list(db: &Database) -> Result<Vec<HostRow>, DbError> {
    Ok(crate::on_pool!(db, pool => sqlx::query_as::<_, HostRow>("SELECT * FROM dc_hosts ORDER BY host_name")
        .fetch_all(pool).await)?)
}

/// Hosts other than `me` whose last heartbeat is older than `before` and that
/// did not stop cleanly: their runs can no longer be supervised by them.
pub async fn stale(db: &Database, me: &str, before: DateTime<Utc>) -> Result<Vec<HostRow>, DbError> {
    Ok(crate::on_pool!(db, pool => sqlx::query_as::<_, HostRow>(
        "SELECT * FROM dc_hosts WHERE host_name <> $1 AND heartbeat_at < $2 AND state <> 'STOPPED' ORDER BY host_name")
        .bind(me).bind(before).fetch_all(pool).await)?)
}
