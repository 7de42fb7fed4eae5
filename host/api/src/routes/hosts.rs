//! `GET /hosts`: the hosts that serve this database, with their heartbeats.

use axum::extract::State;
use chrono::{DateTime, Utc};
use dc_core::hosts;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{ApiError, ApiState, ErrorBody};

/// A host that ran `dc-host serve` against this database.
#[derive(Debug, Serialize, ToSchema)]
pub struct Host {
    /// Host name (`general.host_name`).
    pub host_name: String,
    /// `SERVING`, `STOPPING` or `STOPPED`.
    pub state: String,
    /// Process id of its `dc-host serve`.
    pub pid: i64,
    /// dc-host version.
    pub version: String,
    /// When it started serving.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Seconds since the last heartbeat.
    pub heartbeat_age_secs: i64,
}

/// Every host, by name, with its heartbeat. Role: viewer.
#[utoipa::path(get, path = "/api/v1/hosts", operation_id = "listHosts", tag = "hosts", security(("bearer" = [])), responses(
    (status = 200, body = Vec<Host>),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
))]
pub async fn list(State(state): State<ApiState>) -> Result<axum::Json<Vec<Host>>, ApiError> {
    let now = Utc::now();
    let list = hosts::list(state.db())
        .await?
        .into_iter()
        .map(|h| Host {
            heartbeat_age_secs: (now - h.heartbeat_at).num_seconds().max(0),
            host_name: h.host_name,
            state: h.state,
            pid: h.pid,
            version: h.version,
            started_at: h.started_at,
            heartbeat_at: h.heartbeat_at,
        })
        .collect();
    Ok(axum::Json(list))
}
