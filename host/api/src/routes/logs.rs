//! `GET /logs`: the `logs` table queried by app, run, level and time, oldest
//! first, one bounded page at a time (`dc_core::logs::query`).

use axum::extract::State;
use chrono::{DateTime, Utc};
use dc_core::logs::{self, LogEntry, LogQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::extract::ApiQuery;
use crate::page::{self, Page};
use crate::{ApiError, ApiState, ErrorBody};

/// A log record.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogRecord {
    /// Id, increasing in the order records were written.
    pub id: i64,
    /// When.
    pub ts: DateTime<Utc>,
    /// `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR`.
    pub level: String,
    /// Module or plugin that logged it.
    pub target: String,
    /// Message.
    pub message: String,
    /// App, if logged inside a run.
    #[schema(value_type = Option<String>)]
    pub app_id: Option<dc_core::AppId>,
    /// Run, if logged inside a run.
    #[schema(value_type = Option<String>)]
    pub runtime_id: Option<dc_core::RuntimeId>,
    /// Structured fields.
    #[schema(value_type = Object)]
    pub context: serde_json::Value,
}

impl From<LogEntry> for LogRecord {
    fn from(e: LogEntry) -> LogRecord {
        LogRecord {
            id: e.id,
            ts: e.row.ts,
            level: e.row.level,
            target: e.row.target,
            message: e.row.message,
            app_id: e.row.app_id,
            runtime_id: e.row.runtime_id,
            context: e.row.context.0,
        }
    }
}

/// The least severe level a query returns.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LevelParam {
    /// Everything.
    Trace,
    /// Debug and more severe.
    Debug,
    /// Info and more severe.
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors.
    Error,
}

impl LevelParam {
    pub(crate) fn level(self) -> tracing::Level {
        match self {
            LevelParam::Trace => tracing::Level::TRACE,
            LevelParam::Debug => tracing::Level::DEBUG,
            LevelParam::Info => tracing::Level::INFO,
            LevelParam::Warn => tracing::Level::WARN,
            LevelParam::Error => tracing::Level::ERROR,
        }
    }
}

/// Filters and page of `GET /logs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Only records of this app (id, unique id prefix or group/parent/name).
    pub app: Option<String>,
    /// Only records of this run (id or unique prefix of 6+ characters).
    pub run: Option<String>,
    /// Only records at this level or more severe.
    pub level: Option<LevelParam>,
    /// Only records at or after this time (RFC 3339, e.g. `2026-11-26T08:00:00Z`).
    pub since: Option<DateTime<Utc>>,
    /// Only records before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page: 1 to 500, default 50.
    pub limit: Option<u32>,
}

const LOGS: &str = "logs";

/// Log records, oldest first, one page at a time. Role: viewer.
#[utoipa::path(get, path = "/api/v1/logs", operation_id = "listLogs", tag = "logs", params(LogParams), security(("bearer" = [])), responses(
    (status = 200, body = Page<LogRecord>),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 422, description = "a bad filter, cursor or page size", body = ErrorBody),
))]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(p): ApiQuery<LogParams>,
) -> Result<axum::Json<Page<LogRecord>>, ApiError> {
    let limit = page::limit(p.limit)?;
    if let (Some(since), Some(until)) = (p.since, p.until)
        && since >= until
    {
        return Err(ApiError::invalid("since must be before until"));
    }
    let after_id = p.cursor.as_deref().map(|c| page::decode::<i64>(LOGS, c)).transpose()?;
    let db = state.db();
    let app_id = match &p.app {
        Some(spec) => Some(dc_core::apps::resolve_app(db, spec).await?.app_id),
        None => None,
    };
    let runtime_id = match &p.run {
        Some(id) => Some(dc_core::runs::get(db, id).await?.runtime_id),
        None => None,
    };
    let q = LogQuery {
        app_id,
        runtime_id,
        min_level: p.level.map(LevelParam::level),
        since: p.since,
        until: p.until,
        after_id,
        limit: limit + 1,
    };
    let rows = logs::query(db, &q).await?;
    Ok(axum::Json(page::paged(rows, limit, LOGS, |e| e.id, |e| Ok(LogRecord::from(e)))?))
}
