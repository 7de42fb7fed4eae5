//! Apps: list (filters, sort, cursor pages), get, update (enabled, schedule,
//! args: the same checks as `dc-host apps enable|disable|schedule|args`) and
//! commands (queued for `dc-host serve` exactly as `dc-host apps start|stop|…`
//! queues them). `{app_id}` is an app id, a unique id prefix of 6+
//! characters, or `group/parent/name` with the slashes percent-encoded.
//!
//! Deleting an app (admin) is `dc_core::apps::delete_app`, as `dc-host apps
//! rm`: one transaction, refused with 409 while a run of the app is active.

use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use dc_core::access::Principal;
use dc_core::apps::{self, AppKey, AppQuery, AppRow, AppSort};
use dc_core::enums::{CmdFlag, CmdName};
use dc_runtime::schedule::{self, ScheduleSpec};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::page::{self, Page};
use crate::reads;
use crate::routes::runs::RunStatusParam;
use crate::{ApiError, ApiState, ErrorBody};

/// An app: identity, schedule, stored arguments, state.
#[derive(Debug, Serialize, ToSchema)]
pub struct App {
    /// Id (64 hex).
    #[schema(value_type = String)]
    pub app_id: dc_core::AppId,
    /// `group/parent/name`.
    pub path: String,
    /// Group.
    pub group: String,
    /// Parent.
    pub parent: String,
    /// Name.
    pub name: String,
    /// Description from the active plugin.
    pub description: String,
    /// Whether the scheduler may start it.
    pub enabled: bool,
    /// When it runs by itself.
    pub schedule: AppScheduleView,
    /// Its next scheduled run.
    pub next_run: Option<DateTime<Utc>>,
    /// Stored runtime arguments for scheduled and commanded runs.
    pub args: Option<Value>,
    /// Active plugin version.
    pub active_version: Option<String>,
    /// SHA-256 of the active plugin file.
    pub active_hash: Option<String>,
    /// When the last run started.
    pub last_run: Option<DateTime<Utc>>,
    /// Status of the last run.
    pub run_status: Option<String>,
    /// Failed runs in a row.
    pub fail_count: i64,
    /// How many of its runs may go on at once (`dc-host apps concurrency`).
    pub max_concurrent_runs: i64,
    /// Why `dc-host serve` disabled it (`NONE` when it did not).
    pub fatal_flag: String,
    /// The reason of the automatic disable.
    pub fatal_msg: Option<String>,
    /// A command queued for `dc-host serve` and not yet picked up.
    pub pending_command: Option<String>,
    /// Progress of the current or last run.
    pub progress: Progress,
}

/// An app's schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppScheduleView {
    /// `cron`, `every` or `off`.
    pub kind: &'static str,
    /// The cron expression.
    pub cron: Option<String>,
    /// The cron expression's time zone (IANA name; null: UTC).
    pub tz: Option<String>,
    /// The interval in seconds.
    pub every_secs: Option<i64>,
    /// Who set it: `manifest` (the plugin's default) or `operator`.
    pub origin: String,
}

/// Items collected of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    /// Items done.
    pub current: i64,
    /// Items in total.
    pub total: i64,
    /// Items failed.
    pub errors: i64,
}

impl App {
    pub(crate) fn from_row(a: AppRow) -> Result<App, ApiError> {
        // the stored next run, or (for a plugin's default schedule nobody has
        // planned yet) the next fire time from now, as `dc-host apps show`
        let next_run = match a.next_run {
            Some(t) => Some(t),
            None => schedule::next_run(&a, Utc::now())?,
        };
        let args = schedule::stored_args(&a)?;
        let kind = match (&a.schedule_cron, a.interval_secs) {
            (Some(_), _) => "cron",
            (None, Some(_)) => "every",
            (None, None) => "off",
        };
        let pending_command = if a.cmd_flag == CmdFlag::Pending.as_str() { a.cmd_name.clone() } else { None };
        Ok(App {
            path: a.path(),
            app_id: a.app_id,
            group: a.group_name,
            parent: a.parent_name,
            name: a.app_name,
            description: a.description,
            enabled: a.enabled,
            schedule: AppScheduleView {
                kind,
                cron: a.schedule_cron,
                tz: a.schedule_tz,
                every_secs: a.interval_secs,
                origin: a.schedule_origin,
            },
            next_run,
            args,
            active_version: a.active_version,
            active_hash: a.active_hash,
            last_run: a.last_run,
            run_status: a.run_status,
            fail_count: a.fail_count,
            max_concurrent_runs: a.max_concurrent_runs,
            fatal_flag: a.fatal_flag,
            fatal_msg: a.fatal_msg,
            pending_command,
            progress: Progress { current: a.current_count, total: a.total_count, errors: a.error_count },
        })
    }
}

/// How a list of apps is ordered.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
pub enum AppSortParam {
    /// By `group/parent/name`.
    #[default]
    #[serde(rename = "name")]
    Name,
    /// By `group/parent/name`, descending.
    #[serde(rename = "-name")]
    NameDesc,
    /// By the last run's status, then name.
    #[serde(rename = "status")]
    Status,
    /// By the last run's status, descending.
    #[serde(rename = "-status")]
    StatusDesc,
}

impl AppSortParam {
    fn sort(self) -> (AppSort, &'static str) {
        match self {
            AppSortParam::Name => (AppSort::Name, "apps:name"),
            AppSortParam::NameDesc => (AppSort::NameDesc, "apps:-name"),
            AppSortParam::Status => (AppSort::Status, "apps:status"),
            AppSortParam::StatusDesc => (AppSort::StatusDesc, "apps:-status"),
        }
    }
}

/// Filters, order and page of `GET /apps`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AppListParams {
    /// Only enabled (`true`) or disabled (`false`) apps.
    pub enabled: Option<bool>,
    /// Only apps whose last run has this status.
    pub status: Option<RunStatusParam>,
    /// Only apps whose `group/parent/name` contains this text (case-insensitive).
    pub name: Option<String>,
    /// `name` (default), `-name`, `status` or `-status`.
    pub sort: Option<AppSortParam>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page: 1 to 500, default 50.
    pub limit: Option<u32>,
}

/// Apps, filtered and ordered, one page at a time. Role: viewer. An answer
/// may be up to `api.apps_cache_ms` old (default 1 s) for changes not made
/// through this API; a change made through it shows at once.
#[utoipa::path(get, path = "/api/v1/apps", operation_id = "listApps", tag = "apps", params(AppListParams), security(("bearer" = [])), responses(
    (status = 200, body = Page<App>, links(
        ("getApp" = (operation_id = "getApp", parameters(("app_id" = "$response.body#/items/0/app_id")))),
        ("listRuns" = (operation_id = "listRuns", parameters(("app" = "$response.body#/items/0/app_id")))),
        ("rollbackPlugin" = (operation_id = "rollbackPlugin", parameters(("app_id" = "$response.body#/items/0/app_id")))),
    )),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 422, description = "a bad filter, cursor or page size", body = ErrorBody),
))]
pub async fn list(State(state): State<ApiState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    // a kept answer is to a query that parsed before: it is not parsed again
    let ticket = match state.reads().get(&query) {
        Ok(body) => return Ok(reads::json(body)),
        Err(ticket) => ticket,
    };
    let p: AppListParams = crate::extract::query(&query)?;
    let limit = page::limit(p.limit)?;
    let (sort, of) = p.sort.unwrap_or_default().sort();
    if p.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::invalid("name is longer than 200 characters"));
    }
    let after: Option<AppKey> = p.cursor.as_deref().map(|c| page::decode(of, c)).transpose()?;
    let q = AppQuery {
        enabled: p.enabled,
        status: p.status.map(|s| s.as_str().to_string()),
        name: p.name,
        sort,
        after,
        limit: limit + 1,
    };
    let rows = apps::page(state.db(), &q).await?;
    let page = page::paged(rows, limit, of, AppRow::sort_key, App::from_row)?;
    let body =
        Bytes::from(serde_json::to_vec(&page).map_err(|e| {
            ApiError::of_kind(dc_core::ErrorKind::Internal, format!("cannot encode the apps page: {e}"))
        })?);
    state.reads().put(&query, ticket, body.clone());
    Ok(reads::json(body))
}

/// One app. Role: viewer.
#[utoipa::path(get, path = "/api/v1/apps/{app_id}", operation_id = "getApp", tag = "apps", security(("bearer" = [])),
    params(("app_id" = String, Path, description = "app id, unique id prefix (6+) or group/parent/name")),
    responses(
        (status = 200, body = App, links(
            ("listRuns" = (operation_id = "listRuns", parameters(("app" = "$response.body#/app_id")))),
            ("rollbackPlugin" = (operation_id = "rollbackPlugin", parameters(("app_id" = "$response.body#/app_id")))),
        )),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn get(State(state): State<ApiState>, ApiPath(app_id): ApiPath<String>) -> Result<axum::Json<App>, ApiError> {
    Ok(axum::Json(App::from_row(apps::resolve_app(state.db(), &app_id).await?)?))
}

/// A schedule to set: `{"cron": EXPR, "tz": ZONE}`, `{"every": DURATION}` or
/// `{"off": true}`. Its OpenAPI schema ([`schedule_schema`]) is written by
/// hand: the three shapes as `oneOf`, with the forms the server takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    /// A cron expression: 5 fields (or 6 with leading seconds), names, ranges, steps, `@daily`…
    pub cron: Option<String>,
    /// The cron expression's time zone (IANA name, e.g. `Europe/Berlin`; default UTC).
    pub tz: Option<String>,
    /// A fixed interval: `30s`, `5m`, `1h`, `2h30m`, `1d` (counted from now, without drift).
    pub every: Option<String>,
    /// `true`: no schedule, the app runs only when started.
    pub off: Option<bool>,
}

impl utoipa::ToSchema for SchedulePatch {}

impl utoipa::PartialSchema for SchedulePatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schedule_schema().into()
    }
}

/// A cron expression as the schema states it: a macro, or 5 fields (6 with
/// leading seconds) of `*`, values, ranges and lists, each with an optional
/// `/step`, every value in its field's range. The server also takes month
/// and weekday names and surrounding blanks.
pub(crate) fn cron_pattern() -> String {
    let field = |v: &str| {
        let item = format!("(\\*|({v})(-({v}))?)(/[1-9][0-9]?)?");
        format!("{item}(,{item})*")
    };
    let sec = field("[1-5]?[0-9]");
    let hour = field("1?[0-9]|2[0-3]");
    let dom = field("[1-9]|[12][0-9]|3[01]");
    let month = field("[1-9]|1[0-2]");
    let dow = field("[0-7]");
    format!("^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|({sec} )?{sec} {hour} {dom} {month} {dow})$")
}

/// An interval as the schema states it: numbers with units `d`, `h`, `m`,
/// `s`, each unit once, largest first, at most 300 days in the day part
/// (the server takes up to 366 days in all, and upper-case units).
pub(crate) const EVERY_PATTERN: &str = "^(([1-9][0-9]?|[12][0-9]{2}|300)d([1-9][0-9]{0,2}h)?([1-9][0-9]{0,2}m)?([1-9][0-9]{0,2}s)?\
     |[1-9][0-9]{0,2}h([1-9][0-9]{0,2}m)?([1-9][0-9]{0,2}s)?|[1-9][0-9]{0,2}m([1-9][0-9]{0,2}s)?|[1-9][0-9]{0,2}s)$";

/// The schema of [`SchedulePatch`]: one of three closed objects.
fn schedule_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
    let closed = || {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
    };
    let cron = closed()
        .property(
            "cron",
            ObjectBuilder::new().schema_type(Type::String).pattern(Some(cron_pattern())).description(Some(
                "A cron expression: 5 fields (or 6 with leading seconds), ranges, lists, steps, `@daily`…",
            )),
        )
        .required("cron")
        .property(
            "tz",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|z| z.name())))
                .description(Some("The cron expression's time zone (IANA name, e.g. `Europe/Berlin`; default UTC)")),
        );
    let every = closed()
        .property(
            "every",
            ObjectBuilder::new().schema_type(Type::String).pattern(Some(EVERY_PATTERN)).description(Some(
                "A fixed interval: `30s`, `5m`, `1h`, `2h30m`, `1d` (counted from now, without drift)",
            )),
        )
        .required("every");
    let off = closed()
        .property(
            "off",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([true]))
                .description(Some("No schedule: the app runs only when started")),
        )
        .required("off");
    OneOfBuilder::new()
        .item(cron)
        .item(every)
        .item(off)
        .description(Some(
            "A schedule to set: `{\"cron\": EXPR, \"tz\": ZONE}`, `{\"every\": DURATION}` or `{\"off\": true}`",
        ))
        .into()
}

impl SchedulePatch {
    fn spec(self) -> Result<ScheduleSpec, ApiError> {
        match (self.cron, self.tz, self.every, self.off) {
            (Some(expr), tz, None, None | Some(false)) => Ok(ScheduleSpec::Cron { expr, tz }),
            (None, None, Some(period), None | Some(false)) => Ok(ScheduleSpec::Every(period)),
            (None, None, None, Some(true)) => Ok(ScheduleSpec::Off),
            (None, Some(_), _, _) => Err(ApiError::invalid("schedule.tz needs schedule.cron")),
            _ => Err(ApiError::invalid(
                "schedule must be one of {\"cron\": EXPR, \"tz\": ZONE}, {\"every\": DURATION} or {\"off\": true}",
            )),
        }
    }
}

/// What `PATCH /apps/{app_id}` changes (at least one field); fields left
/// out stay as they are. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    /// Let the app run on its schedule (`true`; also clears an automatic
    /// disable) or not (`false`). Queued for `dc-host serve` as an `ENABLE` /
    /// `DISABLE` command, like `dc-host apps enable|disable`.
    #[schema(value_type = bool, required = false)]
    pub enabled: Option<bool>,
    /// When the app runs by itself.
    #[schema(value_type = SchedulePatch, required = false)]
    pub schedule: Option<SchedulePatch>,
    /// Runtime arguments for scheduled and commanded runs, checked against the
    /// plugin's `args_schema`; `null` removes them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
    /// How many of its runs may go on at once, 1 to 1000 (like `dc-host apps concurrency`).
    #[schema(value_type = i64, required = false, minimum = 1, maximum = 1000)]
    pub max_concurrent_runs: Option<i64>,
}

/// `Some(value)` for a present field, also when it is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Changes an app's enabled flag, schedule and/or stored arguments. Every
/// change is checked before any is stored. Role: operator.
#[utoipa::path(patch, path = "/api/v1/apps/{app_id}", operation_id = "updateApp", tag = "apps", security(("bearer" = [])),
    params(("app_id" = String, Path, description = "app id, unique id prefix (6+) or group/parent/name")),
    request_body = AppPatch,
    responses(
        (status = 200, description = "the app as stored", body = App),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "a bad schedule or arguments; nothing was changed", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(patch): ApiJson<AppPatch>,
) -> Result<axum::Json<App>, ApiError> {
    if patch.enabled.is_none()
        && patch.schedule.is_none()
        && patch.args.is_none()
        && patch.max_concurrent_runs.is_none()
    {
        return Err(ApiError::invalid("nothing to change: give enabled, schedule, args or max_concurrent_runs"));
    }
    if let Some(n) = patch.max_concurrent_runs
        && !(1..=1000).contains(&n)
    {
        return Err(ApiError::invalid(format!("max_concurrent_runs must be 1 to 1000, not {n}")));
    }
    let env = state.env();
    let app = apps::resolve_app(&env.db, &app_id).await?;
    let now = Utc::now();
    // check everything first, so a refused request changes nothing
    let spec = patch.schedule.map(SchedulePatch::spec).transpose()?;
    if let Some(spec) = &spec {
        schedule::check_spec(spec, now)?;
    }
    let args = patch.args.map(|v| if v.is_null() { None } else { Some(v) });
    if let Some(Some(args)) = &args {
        schedule::check_app_args(env, &app, args).await?;
    }
    if let Some(args) = &args {
        schedule::set_args(env, &app.app_id, args.as_ref()).await?;
    }
    if let Some(spec) = &spec {
        schedule::set_schedule(env, &app.app_id, spec, now).await?;
    }
    if let Some(n) = patch.max_concurrent_runs {
        apps::set_max_concurrent_runs(&env.db, &app.app_id, n).await?;
    }
    if let Some(enabled) = patch.enabled {
        let cmd = if enabled { CmdName::Enable } else { CmdName::Disable };
        apps::queue_command(&env.db, &app.app_id, cmd).await?;
        state.command_queued();
    }
    tracing::info!(subject = %who.subject, app_id = %app.app_id, "app updated");
    Ok(axum::Json(App::from_row(apps::resolve_app(&env.db, &app.app_id).await?)?))
}

/// A command for `dc-host serve`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CommandName {
    /// Start a run now.
    Start,
    /// Stop the app's running runs.
    Stop,
    /// Stop the app's run, then start it again.
    Restart,
    /// Let the app run on its schedule again (clears an automatic disable).
    Enable,
    /// Keep the app from running on its schedule.
    Disable,
}

impl CommandName {
    fn cmd(self) -> CmdName {
        match self {
            CommandName::Start => CmdName::Start,
            CommandName::Stop => CmdName::Stop,
            CommandName::Restart => CmdName::Restart,
            CommandName::Enable => CmdName::Enable,
            CommandName::Disable => CmdName::Disable,
        }
    }
}

/// The body of `POST /apps/{app_id}/commands`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// The command.
    pub command: CommandName,
}

/// A queued command.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedCommand {
    /// The app.
    #[schema(value_type = String)]
    pub app_id: dc_core::AppId,
    /// `group/parent/name`.
    pub path: String,
    /// The command.
    pub command: CommandName,
    /// `PENDING`: a serving host picks it up.
    pub state: String,
    /// Hosts serving the database now (0: it waits for `dc-host serve`).
    pub serving_hosts: usize,
}

/// Queues a command for the hosts that serve the database (it waits for one
/// when none serves), as `dc-host apps start|stop|restart|enable|disable`
/// does. Role: operator.
#[utoipa::path(post, path = "/api/v1/apps/{app_id}/commands", operation_id = "commandApp", tag = "apps", security(("bearer" = [])),
    params(("app_id" = String, Path, description = "app id, unique id prefix (6+) or group/parent/name")),
    request_body = CommandRequest,
    responses(
        (status = 202, description = "queued", body = QueuedCommand),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "an unknown command", body = ErrorBody),
    ))]
pub async fn command(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(req): ApiJson<CommandRequest>,
) -> Result<(StatusCode, axum::Json<QueuedCommand>), ApiError> {
    let db = state.db();
    let app = apps::resolve_app(db, &app_id).await?;
    apps::queue_command(db, &app.app_id, req.command.cmd()).await?;
    state.command_queued();
    let serving = dc_core::hosts::list(db).await?.into_iter().filter(|h| h.state == "SERVING").count();
    tracing::info!(subject = %who.subject, app_id = %app.app_id, command = req.command.cmd().as_str(), "command queued");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(QueuedCommand {
            path: app.path(),
            app_id: app.app_id,
            command: req.command,
            state: CmdFlag::Pending.as_str().to_string(),
            serving_hosts: serving,
        }),
    ))
}

/// Options of `DELETE /apps/{app_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Also drop the app's data tables (the collected rows are lost); default false: they are kept.
    pub drop_data: Option<bool>,
}

/// What deleting an app removed and kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedApp {
    /// The app's id.
    #[schema(value_type = String)]
    pub app_id: dc_core::AppId,
    /// `group/parent/name`.
    pub path: String,
    /// Registered versions removed (their files stay in the plugin store).
    pub versions: u64,
    /// Finished runs removed, with their change feeds, request metrics and work items.
    pub runs: u64,
    /// Data tables dropped (`drop_data=true`).
    pub dropped_tables: Vec<String>,
    /// Data tables kept, still reserved for the app's `group/parent/name`.
    pub kept_tables: Vec<String>,
    /// Shared tables other apps still write into (`drop_data=true`): only the
    /// rows this app inserted were deleted.
    pub left_shared_tables: Vec<String>,
}

/// Deletes an app: its schedule, arguments, pending command, registered
/// versions and finished runs, in one transaction, as `dc-host apps rm`.
/// Its data tables are kept unless `drop_data=true`; plugin store files stay.
/// Remove its file from the plugins directory too, or the next reload
/// registers it again. Role: admin.
#[utoipa::path(delete, path = "/api/v1/apps/{app_id}", operation_id = "deleteApp", tag = "apps", security(("bearer" = [])),
    params(("app_id" = String, Path, description = "app id, unique id prefix (6+) or group/parent/name"), DeleteParams),
    responses(
        (status = 200, description = "deleted", body = DeletedApp),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "a run of the app is active; nothing was deleted", body = ErrorBody),
        (status = 422, description = "a bad option", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiPath(app_id): ApiPath<String>,
    ApiQuery(p): ApiQuery<DeleteParams>,
) -> Result<axum::Json<DeletedApp>, ApiError> {
    let db = state.db();
    let app = apps::resolve_app(db, &app_id).await?;
    let gone = apps::delete_app(db, &app.app_id, p.drop_data.unwrap_or(false)).await?;
    tracing::info!(subject = %who.subject, app_id = %gone.app_id, dropped = gone.dropped_tables.len(), "app deleted");
    Ok(axum::Json(DeletedApp {
        app_id: gone.app_id,
        path: gone.path,
        versions: gone.versions,
        runs: gone.runs,
        dropped_tables: gone.dropped_tables,
        kept_tables: gone.kept_tables,
        left_shared_tables: gone.left_shared_tables,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        let v = jsonschema::validator_for(&serde_json::json!({"type": "string", "pattern": pattern}))
            .expect("a usable pattern");
        v.is_valid(&Value::from(text))
    }

    /// What the schema's cron and interval patterns allow, the scheduler
    /// parses; what they refuse that is malformed, it refuses too.
    #[test]
    fn the_schedule_patterns_allow_only_what_the_scheduler_parses() {
        let cron = cron_pattern();
        for ok in [
            "30 6 * * 1-5",
            "*/15 * * * *",
            "0 0 1 1 *",
            "0 30 6 * * 1-5",
            "5,10 0-23/2 1,15 1-12 0,7",
            "59 23 31 12 7",
            "@daily",
            "@hourly",
            "@annually",
        ] {
            assert!(matches(&cron, ok), "the pattern allows {ok:?}");
            assert!(dc_scheduler::CronExpr::parse(ok).is_ok(), "the scheduler parses {ok:?}");
        }
        for bad in ["61 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "* * *", "@reboot", ""] {
            assert!(!matches(&cron, bad), "the pattern refuses {bad:?}");
            assert!(dc_scheduler::CronExpr::parse(bad).is_err(), "the scheduler refuses {bad:?}");
        }
        for ok in ["30s", "5m", "1h", "2h30m", "1d", "300d23h59m59s", "999h", "1d1s"] {
            assert!(matches(EVERY_PATTERN, ok), "the pattern allows {ok:?}");
            assert!(dc_scheduler::Period::parse(ok).is_ok(), "the scheduler parses {ok:?}");
        }
        for bad in ["0s", "5", "1m1h", "5m5m", "", "367d"] {
            assert!(!matches(EVERY_PATTERN, bad), "the pattern refuses {bad:?}");
            assert!(dc_scheduler::Period::parse(bad).is_err(), "the scheduler refuses {bad:?}");
        }
    }

    #[test]
    fn every_time_zone_the_schema_names_is_one_the_scheduler_knows() {
        let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect();
        assert!(names.len() > 400 && names.contains(&"Europe/Berlin") && names.contains(&"UTC"));
        for name in names {
            assert!(dc_scheduler::parse_zone(name).is_ok(), "{name}");
        }
    }
}
