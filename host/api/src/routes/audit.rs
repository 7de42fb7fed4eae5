//! `GET /audit`: the audit log of state-changing requests (`dc_core::audit`),
//! newest first, filtered by subject and time, one bounded page at a time.

use axum::extract::State;
use chrono::{DateTime, Utc};
use dc_core::audit::{self, AuditQuery, AuditRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::extract::ApiQuery;
use crate::page::{self, Page};
use crate::{ApiError, ApiState, ErrorBody};

/// One audited request.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Id, increasing in the order entries were written.
    pub id: i64,
    /// When the answer was sent.
    pub at: DateTime<Utc>,
    /// The user name or client id (null: not authenticated; for the token
    /// endpoint, the name a login claimed).
    pub subject: Option<String>,
    /// Its role (null: not authenticated).
    pub role: Option<String>,
    /// The HTTP method.
    pub method: String,
    /// The route template, e.g. `/api/v1/apps/{app_id}/commands`.
    pub route: String,
    /// The id the route names (app, run), as the caller gave it.
    pub target: Option<String>,
    /// The status answered.
    pub status: i32,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> AuditEntry {
        AuditEntry {
            id: r.id,
            at: r.at,
            subject: r.subject,
            role: r.role,
            method: r.method,
            route: r.route,
            target: r.target,
            status: r.status,
            client_addr: r.client_addr,
            request_id: r.request_id,
        }
    }
}

/// Filters and page of `GET /audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only entries of this user name or client id.
    pub subject: Option<String>,
    /// Only entries at or after this time (RFC 3339, e.g. `2026-11-26T08:00:00Z`).
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page: 1 to 500, default 50.
    pub limit: Option<u32>,
}

const AUDIT: &str = "audit";

/// The audit log, newest first, one page at a time. Role: admin.
#[utoipa::path(get, path = "/api/v1/audit", operation_id = "listAudit", tag = "audit", params(AuditParams), security(("bearer" = [])), responses(
    (status = 200, body = Page<AuditEntry>),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 422, description = "a bad filter, cursor or page size", body = ErrorBody),
))]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<axum::Json<Page<AuditEntry>>, ApiError> {
    let limit = page::limit(p.limit)?;
    if let (Some(since), Some(until)) = (p.since, p.until)
        && since >= until
    {
        return Err(ApiError::invalid("since must be before until"));
    }
    if p.subject.as_ref().is_some_and(|s| s.chars().count() > audit::MAX_TEXT) {
        return Err(ApiError::invalid(format!("subject is longer than {} characters", audit::MAX_TEXT)));
    }
    let before_id = p.cursor.as_deref().map(|c| page::decode::<i64>(AUDIT, c)).transpose()?;
    let q = AuditQuery { subject: p.subject, since: p.since, until: p.until, before_id, limit: limit + 1 };
    let rows = audit::page(state.db(), &q).await?;
    Ok(axum::Json(page::paged(rows, limit, AUDIT, |r| r.id, |r| Ok(AuditEntry::from(r)))?))
}
