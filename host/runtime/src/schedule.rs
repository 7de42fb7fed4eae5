//! An app's schedule and stored arguments, as operators set them (`dc-host apps
//! schedule` / `apps args`) and as the scheduler reads them: the schedule is
//! built from the app's columns (a cron expression with its zone, or an
//! interval with the anchor it counts from), validated with `dc-scheduler`
//! before it is stored, and the next run is always computed from the schedule
//! (never "now + interval after the work", so runs do not drift). Stored
//! arguments are checked against the active plugin's `args_schema` when set,
//! and registration checks them against every new version's schema.

use chrono::{DateTime, Utc};
use dc_core::apps::{self, AppRow, AppSchedule};
use dc_scheduler::Schedule;
use serde_json::Value;

use crate::{HostEnv, RuntimeError};

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleSpec {
    /// A cron expression, in a time zone (IANA name; None = UTC).
    Cron {
        /// The expression.
        expr: String,
        /// The zone.
        tz: Option<String>,
    },
    /// Every DURATION (`30s`, `5m`, `1h`, `2h30m`, `1d`).
    Every(String),
    /// No schedule: the app runs only when started.
    Off,
}

/// The app's schedule, None when it has none. A stored schedule that does not
/// parse (written by another dc-host version) is an error naming the app.
pub fn app_schedule(app: &AppRow) -> Result<Option<Schedule>, RuntimeError> {
    let bad = |e: String| RuntimeError::Refused(format!("{}: the stored schedule is unusable: {e}", app.path()));
    if let Some(expr) = &app.schedule_cron {
        return Schedule::cron(expr, app.schedule_tz.as_deref()).map(Some).map_err(|e| bad(e.to_string()));
    }
    if let Some(secs) = app.interval_secs {
        let anchor = app.schedule_anchor.unwrap_or(app.created_at);
        return Schedule::every(&format!("{secs}s"), anchor).map(Some).map_err(|e| bad(e.to_string()));
    }
    Ok(None)
}

/// The app's next run after `now`, from its schedule (None: unscheduled).
pub fn next_run(app: &AppRow, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, RuntimeError> {
    Ok(app_schedule(app)?.and_then(|s| s.next_after(now)))
}

/// Validates and stores an operator's schedule for the app; returns the app as
/// stored and its next run. The schedule is kept across plugin versions.
pub async fn set_schedule(
    env: &HostEnv,
    app_spec: &str,
    spec: &ScheduleSpec,
    now: DateTime<Utc>,
) -> Result<(AppRow, Option<DateTime<Utc>>), RuntimeError> {
    let app = apps::resolve_app(&env.db, app_spec).await?;
    let (stored, schedule) = plan(spec, now)?;
    let next = schedule.and_then(|s| s.next_after(now));
    apps::set_schedule(&env.db, &app.app_id, &stored, next).await?;
    let app = apps::resolve_app(&env.db, &app.app_id).await?;
    Ok((app, next))
}

/// Checks a schedule an operator asks for without storing it (a request that
/// changes several things checks all of them before it writes any).
pub fn check_spec(spec: &ScheduleSpec, now: DateTime<Utc>) -> Result<(), RuntimeError> {
    plan(spec, now).map(|_| ())
}

/// The columns to store for `spec` and the schedule they make.
fn plan(spec: &ScheduleSpec, now: DateTime<Utc>) -> Result<(AppSchedule, Option<Schedule>), RuntimeError> {
    Ok(match spec {
        ScheduleSpec::Cron { expr, tz } => {
            let s = Schedule::cron(expr, tz.as_deref()).map_err(|e| RuntimeError::Refused(e.to_string()))?;
            (AppSchedule { cron: Some(expr.trim().to_string()), tz: tz.clone(), ..Default::default() }, Some(s))
        }
        ScheduleSpec::Every(period) => {
            let s = Schedule::every(period, now).map_err(|e| RuntimeError::Refused(e.to_string()))?;
            let secs = dc_scheduler::Period::parse(period).map_err(|e| RuntimeError::Refused(e.to_string()))?.as_secs();
            (AppSchedule { interval_secs: Some(secs as i64), anchor: Some(now), ..Default::default() }, Some(s))
        }
        ScheduleSpec::Off => (AppSchedule::default(), None),
    })
}

/// Checks `args` against the app's active plugin's `args_schema` and stores
/// them for scheduled and commanded runs. `None` clears them.
pub async fn set_args(env: &HostEnv, app_spec: &str, args: Option<&Value>) -> Result<AppRow, RuntimeError> {
    let app = apps::resolve_app(&env.db, app_spec).await?;
    if let Some(args) = args {
        check_app_args(env, &app, args).await?;
    }
    let text = args.map(Value::to_string);
    apps::set_run_args(&env.db, &app.app_id, text.as_deref()).await?;
    Ok(apps::resolve_app(&env.db, &app.app_id).await?)
}

/// Checks `args` against the app's active plugin's `args_schema` without
/// storing them.
pub async fn check_app_args(env: &HostEnv, app: &AppRow, args: &Value) -> Result<(), RuntimeError> {
    let (_, manifest) = crate::supervisor::active_plugin(env, app).await?;
    check_args(&app.path(), &manifest.args_schema, args)
}

/// Validates stored arguments against a schema, naming each field.
pub fn check_args(app: &str, schema: &Value, args: &Value) -> Result<(), RuntimeError> {
    crate::args::validate(schema, args)
        .map_err(|p| RuntimeError::BadArgs { app: app.to_string(), problems: p.join("; ") })
}

/// The stored arguments of an app, parsed (None when it has none).
pub fn stored_args(app: &AppRow) -> Result<Option<Value>, RuntimeError> {
    app.run_args
        .as_deref()
        .map(|t| {
            serde_json::from_str(t).map_err(|e| {
                RuntimeError::Refused(format!(
                    "{}: the stored arguments are not JSON ({e}); set them again with `dc-host apps args`",
                    app.path()
                ))
            })
        })
        .transpose()
}
