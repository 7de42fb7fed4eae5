//! Runs: list (filters, newest first, cursor pages), get (timings, exit,
//! counters, change-feed summary, request metrics) and stop (as `dc-host runs stop`:
//! `dc_runtime::stop`). `{runtime_id}` is a run id or a unique prefix of 6+
//! characters.

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use dc_core::access::Principal;
use dc_core::enums::RunStatus;
use dc_core::runs::{self, RunQuery, RunRow};
use dc_runtime::stop::StopOutcome;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiPath, ApiQuery};
use crate::page::{self, Page};
use crate::{ApiError, ApiState, ErrorBody};

/// The status of a run.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatusParam {
    /// Created, worker not started yet.
    Pending,
    /// Worker running.
    Running,
    /// Finished without error.
    Success,
    /// Ended with an error, a crash or a time-out.
    Failed,
    /// Stopped on an operator's request.
    Stopped,
}

impl RunStatusParam {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatusParam::Pending => RunStatus::Pending.as_str(),
            RunStatusParam::Running => RunStatus::Running.as_str(),
            RunStatusParam::Success => RunStatus::Success.as_str(),
            RunStatusParam::Failed => RunStatus::Failed.as_str(),
            RunStatusParam::Stopped => RunStatus::Stopped.as_str(),
        }
    }
}

/// A run.
#[derive(Debug, Serialize, ToSchema)]
pub struct Run {
    /// Id (32 hex).
    #[schema(value_type = String)]
    pub runtime_id: dc_core::RuntimeId,
    /// The app.
    #[schema(value_type = String)]
    pub app_id: dc_core::AppId,
    /// Plugin version used.
    pub plugin_version: String,
    /// SHA-256 of the plugin file used.
    pub plugin_hash: String,
    /// `PENDING`, `RUNNING`, `SUCCESS`, `FAILED` or `STOPPED`.
    pub status: String,
    /// Why it failed or stopped.
    pub reason: Option<String>,
    /// Runtime arguments.
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
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
    /// Worker process id.
    pub worker_pid: Option<i64>,
    /// Host that ran it.
    pub host_name: String,
    /// An operator asked it to stop.
    pub stop_requested: bool,
    /// Items done, in total and failed.
    pub items: Items,
    /// Rows inserted, updated, deleted and unchanged.
    pub rows: Rows,
    /// Log records dropped because the log buffer was full.
    pub dropped_logs: i64,
    /// The run this run resumes (`dc-host run APP --resume ID`).
    #[schema(value_type = Option<String>)]
    pub resumed_from: Option<dc_core::RuntimeId>,
}

/// Items a run collected.
#[derive(Debug, Serialize, ToSchema)]
pub struct Items {
    /// Done.
    pub current: i64,
    /// In total.
    pub total: i64,
    /// Failed.
    pub errors: i64,
}

/// Rows a run merged.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rows {
    /// Inserted.
    pub inserted: i64,
    /// Updated.
    pub updated: i64,
    /// Deleted or archived.
    pub deleted: i64,
    /// Unchanged.
    pub unchanged: i64,
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Run {
        Run {
            args: serde_json::from_str(&r.args).unwrap_or(serde_json::Value::String(r.args.clone())),
            runtime_id: r.runtime_id,
            app_id: r.app_id,
            plugin_version: r.plugin_version,
            plugin_hash: r.plugin_hash,
            status: r.status,
            reason: r.reason,
            threads: r.threads,
            created_at: r.created_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            exit_code: r.exit_code,
            exit_signal: r.exit_signal,
            worker_pid: r.worker_pid,
            host_name: r.host_name,
            stop_requested: r.stop_requested,
            items: Items { current: r.current_count, total: r.total_count, errors: r.error_count },
            rows: Rows { inserted: r.inserted, updated: r.updated, deleted: r.deleted, unchanged: r.unchanged },
            dropped_logs: r.dropped_logs,
            resumed_from: r.resumed_from,
        }
    }
}

/// Filters and page of `GET /runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunListParams {
    /// Only runs of this app (id, unique id prefix or group/parent/name).
    pub app: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatusParam>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page: 1 to 500, default 50.
    pub limit: Option<u32>,
}

const RUNS: &str = "runs";

/// Runs, newest first, one page at a time. Role: viewer.
#[utoipa::path(get, path = "/api/v1/runs", operation_id = "listRuns", tag = "runs", params(RunListParams), security(("bearer" = [])), responses(
    (status = 200, body = Page<Run>, links(
        ("getRun" = (operation_id = "getRun", parameters(("runtime_id" = "$response.body#/items/0/runtime_id")))),
        ("stopRun" = (operation_id = "stopRun", parameters(("runtime_id" = "$response.body#/items/0/runtime_id")))),
    )),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 422, description = "a bad filter, cursor or page size", body = ErrorBody),
))]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(p): ApiQuery<RunListParams>,
) -> Result<axum::Json<Page<Run>>, ApiError> {
    let limit = page::limit(p.limit)?;
    let before =
        p.cursor.as_deref().map(|c| page::decode::<(DateTime<Utc>, dc_core::RuntimeId)>(RUNS, c)).transpose()?;
    let app_id = match &p.app {
        Some(spec) => Some(dc_core::apps::resolve_app(state.db(), spec).await?.app_id),
        None => None,
    };
    let q = RunQuery { app_id, status: p.status.map(|s| s.as_str().to_string()), before, limit: limit + 1 };
    let rows = runs::page(state.db(), &q).await?;
    Ok(axum::Json(page::paged(rows, limit, RUNS, RunRow::sort_key, |r| Ok(Run::from(r)))?))
}

/// A run with the summary of its change feed and its request metrics.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// `group/parent/name` of its app.
    pub app_path: Option<String>,
    /// Keys inserted, updated and deleted, by table and operation.
    pub changes: Vec<ChangeCount>,
    /// The run's HTTP request metrics (null when it made no request): as
    /// stored by its worker while it runs and at its end.
    pub request_metrics: Option<dc_net::MetricsSnapshot>,
}

/// Keys a run changed in one table with one operation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeCount {
    /// Table.
    pub table_name: String,
    /// `insert`, `update` or `delete`.
    pub op: String,
    /// Keys.
    pub count: i64,
}

/// One run: status, timings, exit, counters, its change-feed summary and its
/// request metrics. Role: viewer.
#[utoipa::path(get, path = "/api/v1/runs/{runtime_id}", operation_id = "getRun", tag = "runs", security(("bearer" = [])),
    params(("runtime_id" = String, Path, description = "run id or a unique prefix of 6+ characters")),
    responses(
        (status = 200, body = RunDetail, links(
            ("stopRun" = (operation_id = "stopRun", parameters(("runtime_id" = "$response.body#/runtime_id")))),
        )),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    ApiPath(runtime_id): ApiPath<String>,
) -> Result<axum::Json<RunDetail>, ApiError> {
    let db = state.db();
    let r = runs::get(db, &runtime_id).await?;
    let changes = runs::change_summary(db, &r.runtime_id)
        .await?
        .into_iter()
        .map(|c| ChangeCount { table_name: c.table_name, op: c.op, count: c.count })
        .collect();
    let app_path = dc_core::apps::get_app(db, &r.app_id).await?.map(|a| a.path());
    let request_metrics = match runs::metrics(db, &r.runtime_id).await? {
        Some(doc) => dc_net::MetricsSnapshot::from_json(doc)
            .inspect_err(|e| tracing::warn!(runtime_id = %r.runtime_id, error = %e, "request metrics not shown"))
            .ok(),
        None => None,
    };
    Ok(axum::Json(RunDetail { run: Run::from(r), app_path, changes, request_metrics }))
}

/// What a stop request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct StopAnswer {
    /// `requested` (the worker stops at the next item), `stopped_before_start`
    /// (it had not started; it is STOPPED) or `orphaned` (its worker was gone;
    /// it was ended FAILED).
    pub outcome: &'static str,
    /// The host the worker runs on, when it is not the one answering.
    pub remote_host: Option<String>,
    /// The run as it is now.
    pub run: Run,
}

/// Asks a run to stop, as `dc-host runs stop` does. Role: operator.
#[utoipa::path(post, path = "/api/v1/runs/{runtime_id}/stop", operation_id = "stopRun", tag = "runs", security(("bearer" = [])),
    params(("runtime_id" = String, Path, description = "run id or a unique prefix of 6+ characters")),
    responses(
        (status = 202, description = "stop requested; the worker stops at the next item", body = StopAnswer),
        (status = 200, description = "the run ended now: it had not started, or its worker was gone", body = StopAnswer),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the run has already ended", body = ErrorBody),
    ))]
pub async fn stop(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiPath(runtime_id): ApiPath<String>,
) -> Result<(StatusCode, axum::Json<StopAnswer>), ApiError> {
    let outcome = dc_runtime::stop::stop_run(state.env(), &runtime_id).await?;
    let (status, answer) = match outcome {
        StopOutcome::Requested { run, remote } => {
            (StatusCode::ACCEPTED, StopAnswer { outcome: "requested", remote_host: remote, run: Run::from(run) })
        }
        StopOutcome::StoppedBeforeStart(run) => {
            (StatusCode::OK, StopAnswer { outcome: "stopped_before_start", remote_host: None, run: Run::from(run) })
        }
        StopOutcome::Orphaned(run) => {
            (StatusCode::OK, StopAnswer { outcome: "orphaned", remote_host: None, run: Run::from(run) })
        }
        StopOutcome::NotRunning(run) => {
            return Err(ApiError::conflict(format!(
                "run {} is not running (status {}); nothing to stop",
                run.runtime_id, run.status
            )));
        }
    };
    tracing::info!(subject = %who.subject, runtime_id = %answer.run.runtime_id, outcome = answer.outcome, "stop");
    Ok((status, axum::Json(answer)))
}
