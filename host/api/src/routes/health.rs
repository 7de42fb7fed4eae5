//! Liveness (`/health`: the process answers), readiness (`/ready`: the
//! database answers and its schema is this build's), and the JSON answers for
//! unknown routes and methods.

use axum::http::{Method, StatusCode, Uri};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{ApiError, ApiState, ErrorBody};

/// A health or readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// The process is up. No token needed.
#[utoipa::path(get, path = "/api/v1/health", operation_id = "health", tag = "health", responses((status = 200, body = Health)))]
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// The database answers and has this build's schema. No token needed.
#[utoipa::path(get, path = "/api/v1/ready", operation_id = "ready", tag = "health", responses(
    (status = 200, body = Health),
    (status = 503, description = "the database is unreachable or its schema is not this build's", body = ErrorBody),
))]
pub async fn ready(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> Result<axum::Json<Health>, ApiError> {
    match state.db().schema_state().await? {
        dc_core::db::SchemaState::Current => Ok(axum::Json(Health { status: "ok" })),
        other => {
            tracing::warn!(state = ?other, "not ready: the database schema is not this build's");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database schema is not this build's; run `dc-host db migrate`",
            ))
        }
    }
}

/// 404 for a path no route serves.
pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {method} {}; the routes are listed in /api/v1/openapi.json", uri.path()),
    )
}

/// 405 for a method a route does not serve.
pub async fn no_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not accept {method}; see /api/v1/openapi.json", uri.path()),
    )
}
