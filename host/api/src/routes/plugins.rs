//! Plugins: every app with its active plugin version (`dc-host plugins
//! list`), an app's registered versions (`dc-host plugins history`) and
//! rollback to an older registered version (`dc-host plugins rollback`).
//! Upload comes in a later slice.

use axum::extract::{Extension, State};
use chrono::{DateTime, Utc};
use dc_core::access::Principal;
use dc_core::apps;
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use crate::extract::{ApiJson, ApiPath};
use crate::{ApiError, ApiState, ErrorBody};

/// An app with its active plugin.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginApp {
    /// The app.
    pub app_id: String,
    /// `group/parent/name`.
    pub path: String,
    /// Active plugin version.
    pub active_version: Option<String>,
    /// SHA-256 of the active plugin file.
    pub active_hash: Option<String>,
    /// Whether the scheduler may start it.
    pub enabled: bool,
    /// Status of the last run.
    pub run_status: Option<String>,
    /// When the last run started.
    pub last_run: Option<DateTime<Utc>>,
}

/// Every app with its active plugin version, by path. Role: viewer.
#[utoipa::path(get, path = "/plugins", tag = "plugins", security(("bearer" = [])), responses(
    (status = 200, body = Vec<PluginApp>),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
))]
pub async fn list(State(state): State<ApiState>) -> Result<axum::Json<Vec<PluginApp>>, ApiError> {
    let list = apps::list_apps(state.db())
        .await?
        .into_iter()
        .map(|a| PluginApp {
            path: a.path(),
            app_id: a.app_id,
            active_version: a.active_version,
            active_hash: a.active_hash,
            enabled: a.enabled,
            run_status: a.run_status,
            last_run: a.last_run,
        })
        .collect();
    Ok(axum::Json(list))
}

/// A registered plugin version.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginVersion {
    /// Plugin version.
    pub version: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Whether it is the app's active version.
    pub active: bool,
    /// The interface version from the library header (`1.1.0`), or the major
    /// version for versions registered before it was recorded.
    pub interface: String,
    /// Where the file came from.
    pub source_file: String,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
}

/// An app's registered plugin versions, newest registration first. Role: viewer.
#[utoipa::path(get, path = "/plugins/{app_id}/versions", tag = "plugins", security(("bearer" = [])),
    params(("app_id" = String, Path, description = "app id, unique id prefix (6+) or group/parent/name")),
    responses(
        (status = 200, body = Vec<PluginVersion>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn versions(
    State(state): State<ApiState>,
    ApiPath(app_id): ApiPath<String>,
) -> Result<axum::Json<Vec<PluginVersion>>, ApiError> {
    let app = apps::resolve_app(state.db(), &app_id).await?;
    let list = apps::versions(state.db(), &app.app_id)
        .await?
        .into_iter()
        .map(|v| PluginVersion {
            active: app.active_hash.as_deref() == Some(v.sha256.as_str()),
            interface: v.interface_abi.unwrap_or_else(|| v.interface_version.to_string()),
            version: v.version,
            sha256: v.sha256,
            source_file: v.source_file,
            registered_at: v.registered_at,
        })
        .collect();
    Ok(axum::Json(list))
}

/// The body of `POST /plugins/{app_id}/rollback`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The registered version to make active; left out: the newest one below
    /// the active version.
    pub to: Option<String>,
}

/// What a rollback did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollbackAnswer {
    /// `group/parent/name`.
    pub app: String,
    /// The version active before.
    pub from: Option<String>,
    /// The version active now.
    pub to: String,
    /// Table changes applied (additive ones; others need `dc-host data migrate`).
    pub schema_changes: Vec<String>,
}

/// Makes an older registered version active again, with the same checks as
/// `dc-host plugins rollback`. Role: admin.
#[utoipa::path(post, path = "/plugins/{app_id}/rollback", tag = "plugins", security(("bearer" = [])),
    params(("app_id" = String, Path, description = "app id, unique id prefix (6+) or group/parent/name")),
    request_body = RollbackRequest,
    responses(
        (status = 200, body = RollbackAnswer),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the version's tables need a migration first", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn rollback(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> Result<axum::Json<RollbackAnswer>, ApiError> {
    let o = dc_runtime::registry::rollback_with(
        state.env(),
        &app_id,
        req.to.as_deref(),
        dc_runtime::registry::SchemaPolicy::Refuse,
    )
    .await?;
    tracing::info!(subject = %who.subject, app = %o.app, from = ?o.from, to = %o.to, "plugin rolled back");
    Ok(axum::Json(RollbackAnswer { app: o.app, from: o.from, to: o.to, schema_changes: o.schema_changes }))
}
