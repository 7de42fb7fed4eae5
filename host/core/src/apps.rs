//! The app registry: groups, parents, apps, registered plugin versions and the
//! database objects each app depends on (`app_db_objects`). All SQL about apps
//! lives here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::{Database, DbError, WriteTx};
use crate::enums::{DbObjectType, RunStatus};
use crate::ids::AppId;
use crate::{on_pool, on_tx};

/// The app id of `group/parent/name`: SHA-256 hex of `group|parent|name` (as the
/// roadmap's `get_app_info` derives it), so every host computes the same id.
pub fn app_id_for(group: &str, parent: &str, name: &str) -> AppId {
    AppId::from(hex::encode(Sha256::digest(format!("{group}|{parent}|{name}").as_bytes())))
}

/// One row of `apps`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AppRow {
    /// Id (64 hex).
    pub app_id: AppId,
    /// Group.
    pub group_name: String,
    /// Parent.
    pub parent_name: String,
    /// Name.
    pub app_name: String,
    /// Kind.
    pub kind: String,
    /// Description.
    pub description: String,
    /// Whether the scheduler may start it.
    pub enabled: bool,
    /// Cron schedule.
    pub schedule_cron: Option<String>,
    /// Interval schedule.
    pub interval_secs: Option<i64>,
    /// Next due time.
    pub next_run: Option<DateTime<Utc>>,
    /// Last run start.
    pub last_run: Option<DateTime<Utc>>,
    /// Status of the last run.
    pub run_status: Option<String>,
    /// Pending command.
    pub cmd_name: Option<String>,
    /// Command state.
    pub cmd_flag: String,
    /// Fatal flag.
    pub fatal_flag: String,
    /// Why it is flagged.
    pub fatal_msg: Option<String>,
    /// Consecutive failed runs.
    pub fail_count: i64,
    /// Progress: items done.
    pub current_count: i64,
    /// Progress: items in total.
    pub total_count: i64,
    /// Progress: failed items.
    pub error_count: i64,
    /// Active plugin version.
    pub active_version: Option<String>,
    /// Active plugin file hash.
    pub active_hash: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
    /// Time zone of a cron schedule (IANA name; None = UTC).
    pub schedule_tz: Option<String>,
    /// What an interval schedule counts from (next = anchor + k × interval).
    pub schedule_anchor: Option<DateTime<Utc>>,
    /// Who set the schedule: `manifest` (the plugin's default) or `operator`.
    pub schedule_origin: String,
    /// Runtime arguments for scheduled and commanded runs (JSON object).
    pub run_args: Option<String>,
    /// How many runs of the app may go on at once (default 1).
    pub max_concurrent_runs: i64,
}

/// A schedule an operator sets (`dc-host apps schedule`); all None: off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSchedule {
    /// Cron expression.
    pub cron: Option<String>,
    /// Its time zone.
    pub tz: Option<String>,
    /// Interval in seconds.
    pub interval_secs: Option<i64>,
    /// What the interval counts from.
    pub anchor: Option<DateTime<Utc>>,
}

/// Sets an app's schedule as the operator's (kept across plugin versions) and
/// its next run.
pub async fn set_schedule(
    db: &Database,
    app_id: &AppId,
    schedule: &AppSchedule,
    next_run: Option<DateTime<Utc>>,
) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, conn => sqlx::query(
        "UPDATE apps SET schedule_cron = $1, schedule_tz = $2, interval_secs = $3, schedule_anchor = $4, \
         schedule_origin = 'operator', next_run = $5, updated_at = $6 WHERE app_id = $7")
        .bind(&schedule.cron).bind(&schedule.tz).bind(schedule.interval_secs).bind(schedule.anchor)
        .bind(next_run).bind(Utc::now()).bind(app_id)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await
}

/// Stores the runtime arguments scheduled and commanded runs use (None: none).
pub async fn set_run_args(db: &Database, app_id: &AppId, args_json: Option<&str>) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, conn => sqlx::query("UPDATE apps SET run_args = $1, updated_at = $2 WHERE app_id = $3")
        .bind(args_json).bind(Utc::now()).bind(app_id)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await
}

/// Records that a registered file now lives at `to` (it was registered from
/// `from`, e.g. an upload's temporary file renamed into the plugins dir).
pub async fn rename_source_file(db: &Database, sha256: &str, from: &str, to: &str) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, conn => sqlx::query("UPDATE plugin_versions SET source_file = $1 WHERE sha256 = $2 AND source_file = $3")
        .bind(to).bind(sha256).bind(from)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await
}

impl AppRow {
    /// `group/parent/name`.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.group_name, self.parent_name, self.app_name)
    }
}

/// One registered plugin version.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PluginVersionRow {
    /// App.
    pub app_id: AppId,
    /// Plugin version.
    pub version: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Major interface version (from the manifest).
    pub interface_version: i64,
    /// Full interface version from the library header (`1.1.0`); `None` for
    /// versions registered before it was recorded.
    pub interface_abi: Option<String>,
    /// Manifest JSON.
    pub manifest: String,
    /// Path in the plugin store.
    pub store_path: String,
    /// Where the file came from.
    pub source_file: String,
    /// When.
    pub registered_at: DateTime<Utc>,
}

/// Ensures group, parent and app rows exist (scaffold and registration call it).
/// Returns true if the app was created.
pub async fn ensure_app(
    db: &Database,
    group: &str,
    parent: &str,
    name: &str,
    kind: &str,
    description: &str,
) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let created = ensure_app_in(&mut tx, group, parent, name, kind, description).await?;
    tx.commit().await?;
    Ok(created)
}

/// [`ensure_app`] inside the caller's transaction.
pub async fn ensure_app_in(
    tx: &mut WriteTx,
    group: &str,
    parent: &str,
    name: &str,
    kind: &str,
    description: &str,
) -> Result<bool, DbError> {
    let now = Utc::now();
    let app_id = app_id_for(group, parent, name);
    on_tx!(tx, conn => {
        sqlx::query("INSERT INTO app_groups (group_name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(group).bind(now).execute(&mut *conn).await?;
        sqlx::query("INSERT INTO app_parents (group_name, parent_name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(group).bind(parent).bind(now).execute(&mut *conn).await?;
        let created = sqlx::query(
            "INSERT INTO apps (app_id, group_name, parent_name, app_name, kind, description, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING")
            .bind(&app_id).bind(group).bind(parent).bind(name).bind(kind).bind(description).bind(now)
            .execute(&mut *conn).await?.rows_affected() == 1;
        Ok(created)
    })
}

/// Records a new plugin version and makes it active, in one transaction. The
/// manifest's default schedule replaces the previous version's, unless an
/// operator set the app's schedule (`schedule_origin = 'operator'`).
pub async fn register_version(
    db: &Database,
    v: &PluginVersionRow,
    description: &str,
    schedule_cron: Option<&str>,
    interval_secs: Option<i64>,
) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    register_version_in(&mut tx, v, description, schedule_cron, interval_secs).await?;
    tx.commit().await
}

/// [`register_version`] inside the caller's transaction.
pub async fn register_version_in(
    tx: &mut WriteTx,
    v: &PluginVersionRow,
    description: &str,
    schedule_cron: Option<&str>,
    interval_secs: Option<i64>,
) -> Result<(), DbError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO plugin_versions (app_id, version, sha256, interface_version, interface_abi, manifest, store_path, source_file, registered_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&v.app_id).bind(&v.version).bind(&v.sha256).bind(v.interface_version).bind(&v.interface_abi).bind(&v.manifest)
            .bind(&v.store_path).bind(&v.source_file).bind(v.registered_at)
            .execute(&mut *conn).await?;
        sqlx::query(
            "UPDATE apps SET active_version = $1, active_hash = $2, description = $3, \
             schedule_cron = CASE WHEN schedule_origin = 'operator' THEN schedule_cron ELSE $4 END, \
             interval_secs = CASE WHEN schedule_origin = 'operator' THEN interval_secs ELSE $5 END, \
             schedule_tz = CASE WHEN schedule_origin = 'operator' THEN schedule_tz ELSE NULL END, \
             schedule_anchor = CASE WHEN schedule_origin = 'operator' THEN schedule_anchor ELSE $6 END, \
             next_run = CASE WHEN schedule_origin = 'operator' THEN next_run ELSE NULL END, \
             updated_at = $6 WHERE app_id = $7")
            .bind(&v.version).bind(&v.sha256).bind(description).bind(schedule_cron).bind(interval_secs)
            .bind(v.registered_at).bind(&v.app_id)
            .execute(&mut *conn).await?;
        Ok(())
    })
}

/// Makes an already registered version active (rollback).
pub async fn set_active_version(db: &Database, app_id: &AppId, version: &PluginVersionRow) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    set_active_version_in(&mut tx, app_id, version).await?;
    tx.commit().await
}

/// [`set_active_version`] inside the caller's transaction.
pub async fn set_active_version_in(
    tx: &mut WriteTx,
    app_id: &AppId,
    version: &PluginVersionRow,
) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query("UPDATE apps SET active_version = $1, active_hash = $2, updated_at = $3 WHERE app_id = $4")
        .bind(&version.version).bind(&version.sha256).bind(Utc::now()).bind(app_id)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// All apps, by path.
pub async fn list_apps(db: &Database) -> Result<Vec<AppRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, AppRow>(
        "SELECT * FROM apps ORDER BY group_name, parent_name, app_name").fetch_all(pool).await)?)
}

/// How a page of apps is ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AppSort {
    /// By `group/parent/name`.
    #[default]
    Name,
    /// By `group/parent/name`, descending.
    NameDesc,
    /// By the last run's status (none first), then by name.
    Status,
    /// By the last run's status, descending, then by name descending.
    StatusDesc,
}

/// Where a page of apps continues: the sort key of the last app of the
/// previous page ([`AppRow::sort_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AppKey {
    /// The last run's status (`""` for none).
    pub status: String,
    /// Group.
    pub group: String,
    /// Parent.
    pub parent: String,
    /// Name.
    pub name: String,
}

/// A filtered, ordered page of apps ([`page`]).
#[derive(Debug, Clone, Default)]
pub struct AppQuery {
    /// Only enabled (true) or disabled (false) apps.
    pub enabled: Option<bool>,
    /// Only apps whose last run has this status (`SUCCESS`, `FAILED`, …).
    pub status: Option<String>,
    /// Only apps whose `group/parent/name` contains this text (case-insensitive).
    pub name: Option<String>,
    /// Order.
    pub sort: AppSort,
    /// Continue after this app.
    pub after: Option<AppKey>,
    /// At most this many.
    pub limit: i64,
}

impl AppRow {
    /// The key [`AppQuery::after`] continues from.
    pub fn sort_key(&self) -> AppKey {
        AppKey {
            status: self.run_status.clone().unwrap_or_default(),
            group: self.group_name.clone(),
            parent: self.parent_name.clone(),
            name: self.app_name.clone(),
        }
    }
}

/// `text` as a LIKE pattern matching it anywhere, with `\`, `%` and `_` taken literally.
fn contains_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A page of apps: filtered, ordered, continuing after a key (keyset
/// pagination, so a walk sees every app once even while apps are added).
pub async fn page(db: &Database, q: &AppQuery) -> Result<Vec<AppRow>, DbError> {
    const FILTER: &str = "SELECT * FROM apps WHERE ($1 IS NULL OR enabled = $1) AND ($2 IS NULL OR run_status = $2) \
        AND ($3 IS NULL OR LOWER(group_name || '/' || parent_name || '/' || app_name) LIKE $3 ESCAPE '\\') AND ";
    // each order with its matching keyset condition; no input reaches the SQL text
    let (keyset, order) = match q.sort {
        AppSort::Name => {
            ("($4 IS NULL OR (group_name, parent_name, app_name) > ($5, $6, $7))", "group_name, parent_name, app_name")
        }
        AppSort::NameDesc => (
            "($4 IS NULL OR (group_name, parent_name, app_name) < ($5, $6, $7))",
            "group_name DESC, parent_name DESC, app_name DESC",
        ),
        AppSort::Status => (
            "($4 IS NULL OR (COALESCE(run_status, ''), group_name, parent_name, app_name) > ($4, $5, $6, $7))",
            "COALESCE(run_status, ''), group_name, parent_name, app_name",
        ),
        AppSort::StatusDesc => (
            "($4 IS NULL OR (COALESCE(run_status, ''), group_name, parent_name, app_name) < ($4, $5, $6, $7))",
            "COALESCE(run_status, '') DESC, group_name DESC, parent_name DESC, app_name DESC",
        ),
    };
    let sql = format!("{FILTER}{keyset} ORDER BY {order} LIMIT $8");
    let pattern = q.name.as_deref().map(contains_pattern);
    let after = q.after.as_ref();
    Ok(on_pool!(db, pool => sqlx::query_as::<_, AppRow>(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(q.enabled).bind(&q.status).bind(&pattern)
        .bind(after.map(|k| &k.status)).bind(after.map(|k| &k.group)).bind(after.map(|k| &k.parent)).bind(after.map(|k| &k.name))
        .bind(q.limit).fetch_all(pool).await)?)
}

/// One app by exact id.
pub async fn get_app(db: &Database, app_id: &AppId) -> Result<Option<AppRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, AppRow>("SELECT * FROM apps WHERE app_id = $1")
        .bind(app_id).fetch_optional(pool).await)?)
}

/// Finds an app by id, unique id prefix (6+ characters) or `group/parent/name`.
pub async fn resolve_app(db: &Database, spec: &str) -> Result<AppRow, DbError> {
    let apps = list_apps(db).await?;
    let matches: Vec<&AppRow> = apps
        .iter()
        .filter(|a| a.app_id == spec || a.path() == spec || (spec.len() >= 6 && a.app_id.starts_with(spec)))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(DbError::NotFound(format!(
            "no app matches {spec:?}; use an app id, a prefix of 6+ characters or group/parent/name (see `dc-host plugins list`)"
        ))),
        many => Err(DbError::Refused(format!(
            "{spec:?} matches {} apps ({}); give more characters",
            many.len(),
            many.iter().map(|a| a.path()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Registered versions of an app, newest registration first.
pub async fn versions(db: &Database, app_id: &AppId) -> Result<Vec<PluginVersionRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, PluginVersionRow>(
        "SELECT * FROM plugin_versions WHERE app_id = $1 ORDER BY registered_at DESC").bind(app_id).fetch_all(pool).await)?)
}

/// The registered version with this file hash, if any.
pub async fn version_by_hash(db: &Database, sha256: &str) -> Result<Option<PluginVersionRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, PluginVersionRow>(
        "SELECT * FROM plugin_versions WHERE sha256 = $1").bind(sha256).fetch_optional(pool).await)?)
}

/// Updates live progress counters of an app.
pub async fn set_progress(db: &Database, app_id: &AppId, current: i64, total: i64, errors: i64) -> Result<(), DbError> {
    on_pool!(db, pool => sqlx::query(
        "UPDATE apps SET current_count = $1, total_count = $2, error_count = $3 WHERE app_id = $4")
        .bind(current).bind(total).bind(errors).bind(app_id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Records the outcome of a run on its app (status, last run, consecutive failures).
pub async fn record_run_outcome(
    db: &Database,
    app_id: &AppId,
    status: RunStatus,
    started: DateTime<Utc>,
) -> Result<i64, DbError> {
    let mut tx = db.begin_write().await?;
    let n = record_run_outcome_in(&mut tx, app_id, status, started).await?;
    tx.commit().await?;
    Ok(n)
}

/// [`record_run_outcome`] inside the caller's transaction.
pub async fn record_run_outcome_in(
    tx: &mut WriteTx,
    app_id: &AppId,
    status: RunStatus,
    started: DateTime<Utc>,
) -> Result<i64, DbError> {
    // a failure counts, a success resets the count, a stop is neither
    let failed = status == RunStatus::Failed;
    let succeeded = status == RunStatus::Success;
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE apps SET run_status = $1, last_run = $2, \
             fail_count = CASE WHEN $3 THEN fail_count + 1 WHEN $4 THEN 0 ELSE fail_count END, updated_at = $5 WHERE app_id = $6")
            .bind(status.as_str()).bind(started).bind(failed).bind(succeeded).bind(Utc::now()).bind(app_id)
            .execute(&mut *conn).await?;
        Ok(sqlx::query_scalar("SELECT fail_count FROM apps WHERE app_id = $1").bind(app_id).fetch_one(&mut *conn).await?)
    })
}

/// Records (or refreshes) a database object an app created or wrote.
pub async fn record_db_object(
    db: &Database,
    app_id: &AppId,
    name: &str,
    ty: DbObjectType,
    action: &str,
) -> Result<(), DbError> {
    on_pool!(db, pool => sqlx::query(RECORD_DB_OBJECT)
        .bind(app_id).bind(name).bind(ty.as_str()).bind(action).bind(Utc::now()).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// [`record_db_object`] inside the caller's transaction.
pub async fn record_db_object_in(
    tx: &mut WriteTx,
    app_id: &AppId,
    name: &str,
    ty: DbObjectType,
    action: &str,
) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(RECORD_DB_OBJECT)
        .bind(app_id).bind(name).bind(ty.as_str()).bind(action).bind(Utc::now()).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

const RECORD_DB_OBJECT: &str = "INSERT INTO app_db_objects (app_id, object_name, object_type, last_action, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
     ON CONFLICT (app_id, object_name, object_type) DO UPDATE SET last_action = excluded.last_action, updated_at = excluded.updated_at";

/// One row of `app_db_objects`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DbObjectRow {
    /// Owner app (or `dc-host`).
    pub app_id: AppId,
    /// Object name.
    pub object_name: String,
    /// Object type.
    pub object_type: String,
    /// Last action (create, verify, merge, deploy).
    pub last_action: String,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

/// Database objects recorded for an app (or all, if `app_id` is None).
pub async fn db_objects(db: &Database, app_id: Option<&AppId>) -> Result<Vec<DbObjectRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, DbObjectRow>(
        "SELECT app_id, object_name, object_type, last_action, updated_at FROM app_db_objects WHERE $1 IS NULL OR app_id = $1 ORDER BY app_id, object_name")
        .bind(app_id).fetch_all(pool).await)?)
}

/// Queues an operator command for an app (`cmd_name`, `cmd_flag = PENDING`);
/// a running `dc-host serve` claims it, one that starts later finds it.
pub async fn queue_command(db: &Database, app_id: &AppId, cmd: crate::enums::CmdName) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, conn => sqlx::query("UPDATE apps SET cmd_name = $1, cmd_flag = $2, updated_at = $3 WHERE app_id = $4")
        .bind(cmd.as_str()).bind(crate::enums::CmdFlag::Pending.as_str()).bind(Utc::now()).bind(app_id)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await
}

/// Apps with a pending command, oldest update first.
pub async fn pending_commands(db: &Database) -> Result<Vec<(AppId, crate::enums::CmdName)>, DbError> {
    let rows: Vec<(AppId, Option<String>)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT app_id, cmd_name FROM apps WHERE cmd_flag = $1 ORDER BY updated_at")
        .bind(crate::enums::CmdFlag::Pending.as_str()).fetch_all(pool).await)?;
    Ok(rows.into_iter().filter_map(|(id, name)| name.and_then(|n| n.parse().ok()).map(|n| (id, n))).collect())
}

/// Claims a pending command (PENDING → DONE); true for exactly one claimer
/// when several hosts see it.
pub async fn claim_command(db: &Database, app_id: &AppId, cmd: crate::enums::CmdName) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query(
        "UPDATE apps SET cmd_flag = $1, updated_at = $2 WHERE app_id = $3 AND cmd_flag = $4 AND cmd_name = $5")
        .bind(crate::enums::CmdFlag::Done.as_str()).bind(Utc::now()).bind(app_id)
        .bind(crate::enums::CmdFlag::Pending.as_str()).bind(cmd.as_str())
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Enables or disables an app (a disabled app is not scheduled).
pub async fn set_enabled(db: &Database, app_id: &AppId, enabled: bool) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, conn => sqlx::query("UPDATE apps SET enabled = $1, updated_at = $2 WHERE app_id = $3")
        .bind(enabled).bind(Utc::now()).bind(app_id)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await
}

/// Sets how many runs of an app may go on at once (at least 1).
pub async fn set_max_concurrent_runs(db: &Database, app_id: &AppId, n: i64) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, conn => sqlx::query("UPDATE apps SET max_concurrent_runs = $1, updated_at = $2 WHERE app_id = $3")
        .bind(n.max(1)).bind(Utc::now()).bind(app_id)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await
}

/// Moves an app's `next_run` from `expected` to `next` if nobody else has:
/// true for exactly one claimer when several hosts share the database, so a
/// due run is started once.
pub async fn claim_next_run(
    db: &Database,
    app_id: &AppId,
    expected: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let claimed = claim_next_run_in(&mut tx, app_id, expected, next).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// [`claim_next_run`] inside the caller's transaction: `serve` claims the
/// fire times of one instant and creates their runs in one transaction, so a
/// claimed fire time always has its run (or none was claimed).
pub async fn claim_next_run_in(
    tx: &mut WriteTx,
    app_id: &AppId,
    expected: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
) -> Result<bool, DbError> {
    let n = match tx {
        WriteTx::Sqlite(c) => sqlx::query("UPDATE apps SET next_run = $1 WHERE app_id = $2 AND next_run IS $3")
            .bind(next)
            .bind(app_id)
            .bind(expected)
            .execute(&mut **c)
            .await?
            .rows_affected(),
        WriteTx::Postgres(c) => {
            sqlx::query("UPDATE apps SET next_run = $1 WHERE app_id = $2 AND next_run IS NOT DISTINCT FROM $3")
                .bind(next)
                .bind(app_id)
                .bind(expected)
                .execute(&mut **c)
                .await?
                .rows_affected()
        }
    };
    Ok(n == 1)
}

/// Disables an app and records why (`fatal_flag`, `fatal_msg`); `dc-host apps
/// enable` clears both.
pub async fn set_fatal(
    db: &Database,
    app_id: &AppId,
    flag: crate::enums::FatalFlag,
    message: Option<&str>,
) -> Result<(), DbError> {
    let enabled = flag == crate::enums::FatalFlag::None;
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, conn => sqlx::query(
        "UPDATE apps SET enabled = $1, fatal_flag = $2, fatal_msg = $3, updated_at = $4 WHERE app_id = $5")
        .bind(enabled).bind(flag.as_str()).bind(message).bind(Utc::now()).bind(app_id)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await
}

/// Stores a plugin file's bytes under its hash (once), in the caller's
/// registration transaction.
pub async fn store_plugin_file_in(tx: &mut WriteTx, sha256: &str, bytes: &[u8]) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO dc_plugin_files (sha256, bytes, size, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING")
        .bind(sha256).bind(bytes).bind(bytes.len() as i64).bind(Utc::now())
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The bytes of a registered plugin file, if the database holds them.
pub async fn plugin_file(db: &Database, sha256: &str) -> Result<Option<Vec<u8>>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_scalar("SELECT bytes FROM dc_plugin_files WHERE sha256 = $1")
        .bind(sha256).fetch_optional(pool).await)?)
}

/// What [`delete_app`] removed and kept.
#[derive(Debug, Clone, Serialize)]
pub struct DeletedApp {
    /// The app's id.
    pub app_id: AppId,
    /// `group/parent/name`.
    pub path: String,
    /// Registered versions removed (their files stay in the plugin store).
    pub versions: u64,
    /// Finished runs removed, with their change feeds, request metrics and
    /// work items.
    pub runs: u64,
    /// Data tables dropped (`drop_data`).
    pub dropped_tables: Vec<String>,
    /// Data tables kept: still owned by the app's id, so no other app may
    /// declare them, and registering the same `group/parent/name` again takes
    /// them back.
    pub kept_tables: Vec<String>,
    /// Shared tables other apps still write into (`drop_data`): only the rows
    /// this app inserted were deleted, the tables stay.
    pub left_shared_tables: Vec<String>,
}

/// Deletes an app in ONE write transaction: its row (schedule, arguments,
/// pending command), its registered versions (and their stored bytes no other
/// version shares; store files on disk stay), its finished runs with their
/// change feeds, request metrics and work items, and with `drop_data` its
/// data tables and their ownership rows. Refused with [`DbError::Conflict`]
/// while a run of the app is PENDING or RUNNING. Log records stay (they age
/// out with `retention`). Without `drop_data` the tables and their ownership
/// stay (see [`DeletedApp::kept_tables`]).
pub async fn delete_app(db: &Database, app_id: &AppId, drop_data: bool) -> Result<DeletedApp, DbError> {
    let mut tx = db.begin_write().await?;
    // PostgreSQL: lock the app row, which a run's insert must share-lock for
    // its foreign key, so no run of the app starts until this commits (and
    // then its insert fails); SQLite: the transaction holds the write lock
    let sql = match tx.backend() {
        crate::Backend::Postgres => {
            "SELECT group_name || '/' || parent_name || '/' || app_name FROM apps WHERE app_id = $1 FOR UPDATE"
        }
        crate::Backend::Sqlite => {
            "SELECT group_name || '/' || parent_name || '/' || app_name FROM apps WHERE app_id = $1"
        }
    };
    let path: Option<String> =
        on_tx!(&mut tx, conn => sqlx::query_scalar(sql).bind(app_id).fetch_optional(&mut *conn).await)?;
    let Some(path) = path else {
        return Err(DbError::NotFound(format!("no app {app_id:?}: list the apps with `dc-host apps list`")));
    };
    if let Some(run) = crate::runs::active_for_app_in(&mut tx, app_id).await?.first() {
        return Err(DbError::Conflict(format!(
            "app {path} has an active run {} ({}): stop it first (`dc-host runs stop {}`) or wait for it to end, then delete the app",
            run.runtime_id, run.status, run.runtime_id
        )));
    }
    let tables: Vec<String> = on_tx!(&mut tx, conn => sqlx::query_scalar(
        "SELECT table_name FROM dc_plugin_tables WHERE app_id = $1 \
         UNION SELECT object_name FROM app_db_objects WHERE app_id = $1 AND object_type = $2 ORDER BY 1")
        .bind(app_id).bind(DbObjectType::Table.as_str()).fetch_all(&mut *conn).await)?;
    let of_runs = "(SELECT runtime_id FROM runtime WHERE app_id = $1)";
    for table in ["run_changes", "dc_run_metrics", "dc_run_items"] {
        let sql = format!("DELETE FROM {table} WHERE runtime_id IN {of_runs}");
        on_tx!(&mut tx, conn => sqlx::query(sqlx::AssertSqlSafe(sql)).bind(app_id).execute(&mut *conn).await.map(|_| ()))?;
    }
    let runs = on_tx!(&mut tx, conn => sqlx::query("DELETE FROM runtime WHERE app_id = $1")
        .bind(app_id).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    on_tx!(&mut tx, conn => sqlx::query(
        "DELETE FROM dc_plugin_files WHERE sha256 IN (SELECT sha256 FROM plugin_versions WHERE app_id = $1) \
         AND sha256 NOT IN (SELECT sha256 FROM plugin_versions WHERE app_id <> $1)")
        .bind(app_id).execute(&mut *conn).await.map(|_| ()))?;
    let versions = on_tx!(&mut tx, conn => sqlx::query("DELETE FROM plugin_versions WHERE app_id = $1")
        .bind(app_id).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    let (mut dropped_tables, mut kept_tables, mut left_shared_tables) = (Vec::new(), Vec::new(), Vec::new());
    if drop_data {
        for t in tables {
            crate::merge::check_ident(&t).map_err(|e| DbError::Refused(e.to_string()))?;
            // a table shared with apps that still exist stays theirs: only the
            // rows this app inserted go
            let others: Vec<String> = on_tx!(&mut tx, conn => sqlx::query_scalar(
                "SELECT o.app_id FROM app_db_objects o JOIN apps a ON a.app_id = o.app_id \
                 WHERE o.object_name = $1 AND o.object_type = $2 AND o.app_id <> $3 ORDER BY o.created_at")
                .bind(&t).bind(DbObjectType::Table.as_str()).bind(app_id).fetch_all(&mut *conn).await)?;
            if let Some(heir) = others.first() {
                let sql = format!("DELETE FROM \"{t}\" WHERE {} = $1", crate::merge::APP_COLUMN);
                on_tx!(&mut tx, conn => sqlx::query(sqlx::AssertSqlSafe(sql)).bind(app_id).execute(&mut *conn).await.map(|_| ()))?;
                on_tx!(&mut tx, conn => sqlx::query("UPDATE dc_plugin_tables SET app_id = $1 WHERE table_name = $2 AND app_id = $3")
                    .bind(heir).bind(&t).bind(app_id).execute(&mut *conn).await.map(|_| ()))?;
                left_shared_tables.push(t);
                continue;
            }
            let sql = format!("DROP TABLE IF EXISTS \"{t}\"");
            on_tx!(&mut tx, conn => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await.map(|_| ()))?;
            dropped_tables.push(t);
        }
        on_tx!(&mut tx, conn => sqlx::query("DELETE FROM dc_plugin_tables WHERE app_id = $1")
            .bind(app_id).execute(&mut *conn).await.map(|_| ()))?;
        on_tx!(&mut tx, conn => sqlx::query("DELETE FROM app_db_objects WHERE app_id = $1")
            .bind(app_id).execute(&mut *conn).await.map(|_| ()))?;
    } else {
        kept_tables = tables;
    }
    on_tx!(&mut tx, conn => sqlx::query("DELETE FROM apps WHERE app_id = $1")
        .bind(app_id).execute(&mut *conn).await.map(|_| ()))?;
    tx.commit().await?;
    Ok(DeletedApp { app_id: app_id.clone(), path, versions, runs, dropped_tables, kept_tables, left_shared_tables })
}
