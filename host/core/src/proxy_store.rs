//! Proxy exit reservations (`dc_proxy_reservations`): the SQL of `dc-proxy`.
//!
//! A run reserves every proxy exit it will use before it sends a request. An
//! exit is named by its key: `ip:<address>` when a proxy judge told its exit
//! IP, else `proxy:<endpoint>`. Reserving is ONE `INSERT … ON CONFLICT DO
//! NOTHING` against the unique partial index on `exit_key` among rows not yet
//! released, so of any number of concurrent reservations of one exit exactly
//! one wins, on every backend and across hosts sharing the database; a loser
//! tries its next candidate ([`reserve_first`]).
//!
//! A reservation ends when its run ends (the supervisor, the worker's own
//! time limit and the reaper all end runs through one function that calls
//! [`release_run`]) or when it expires: an expired reservation of an exit is
//! released by the next attempt to reserve that exit, in the same
//! transaction, and [`expire`] releases all of them at once.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{Database, DbError};
use crate::ids::RuntimeId;
use crate::on_tx;

/// One row of `dc_proxy_reservations`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReservationRow {
    /// Row id.
    pub id: i64,
    /// The exit: `ip:<address>` or `proxy:<endpoint>`.
    pub exit_key: String,
    /// The proxy endpoint, without its password.
    pub proxy: String,
    /// The run holding it.
    pub runtime_id: RuntimeId,
    /// The host that runs the run.
    pub host_name: String,
    /// When it was reserved.
    pub reserved_at: DateTime<Utc>,
    /// When it expires if nothing releases it before.
    pub expires_at: DateTime<Utc>,
    /// When it was released (none: active).
    pub released_at: Option<DateTime<Utc>>,
    /// `run ended`, `expired`, ….
    pub release_reason: Option<String>,
}

/// What a run asks to reserve.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The exit key.
    pub exit_key: String,
    /// The proxy endpoint, without its password.
    pub proxy: String,
}

/// Who reserves, and until when.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    /// The run.
    pub runtime_id: &'a RuntimeId,
    /// Its host.
    pub host_name: &'a str,
    /// Now (injected, so expiry is testable without waiting).
    pub now: DateTime<Utc>,
    /// When the reservation expires.
    pub expires_at: DateTime<Utc>,
}

/// Reserves one exit for `holder`: true if this call got it, false if an
/// active, unexpired reservation holds it. An expired reservation of the exit
/// is released first, in the same transaction.
pub async fn reserve(db: &Database, c: &Candidate, holder: Holder<'_>) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, conn => sqlx::query(
        "UPDATE dc_proxy_reservations SET released_at = $1, release_reason = 'expired' \
         WHERE exit_key = $2 AND released_at IS NULL AND expires_at <= $1")
        .bind(holder.now).bind(&c.exit_key)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    let inserted = on_tx!(&mut tx, conn => sqlx::query(
        "INSERT INTO dc_proxy_reservations (exit_key, proxy, runtime_id, host_name, reserved_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING")
        .bind(&c.exit_key).bind(&c.proxy).bind(holder.runtime_id).bind(holder.host_name)
        .bind(holder.now).bind(holder.expires_at)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(inserted == 1)
}

/// Reserves the first free exit of `candidates` (in order); its index, or
/// none when every one is held.
pub async fn reserve_first(
    db: &Database,
    candidates: &[Candidate],
    holder: Holder<'_>,
) -> Result<Option<usize>, DbError> {
    for (i, c) in candidates.iter().enumerate() {
        if reserve(db, c, holder).await? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Releases every active reservation of a run (its end, or the reaper's);
/// returns how many.
pub async fn release_run(
    db: &Database,
    runtime_id: &RuntimeId,
    now: DateTime<Utc>,
    reason: &str,
) -> Result<u64, DbError> {
    let mut tx = db.begin_write().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query(
        "UPDATE dc_proxy_reservations SET released_at = $1, release_reason = $2 \
         WHERE runtime_id = $3 AND released_at IS NULL")
        .bind(now).bind(reason).bind(runtime_id)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n)
}

/// Releases every reservation expired at `now`; returns how many.
pub async fn expire(db: &Database, now: DateTime<Utc>) -> Result<u64, DbError> {
    let mut tx = db.begin_write().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query(
        "UPDATE dc_proxy_reservations SET released_at = $1, release_reason = 'expired' \
         WHERE released_at IS NULL AND expires_at <= $1")
        .bind(now)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n)
}

/// The active (not released) reservations, oldest first.
pub async fn active(db: &Database) -> Result<Vec<ReservationRow>, DbError> {
    Ok(crate::on_pool!(db, pool => sqlx::query_as::<_, ReservationRow>(
        "SELECT * FROM dc_proxy_reservations WHERE released_at IS NULL ORDER BY id")
        .fetch_all(pool).await)?)
}

/// Every reservation of a run, oldest first.
pub async fn of_run(db: &Database, runtime_id: &RuntimeId) -> Result<Vec<ReservationRow>, DbError> {
    Ok(crate::on_pool!(db, pool => sqlx::query_as::<_, ReservationRow>(
        "SELECT * FROM dc_proxy_reservations WHERE runtime_id = $1 ORDER BY id")
        .bind(runtime_id).fetch_all(pool).await)?)
}
