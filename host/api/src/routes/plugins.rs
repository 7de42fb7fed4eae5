//! Plugins: every app with its active plugin version (`dc-host plugins
//! list`), an app's registered versions (`dc-host plugins history`) and
//! rollback to an older registered version (`dc-host plugins rollback`), and
//! upload (multipart; registered with the checks of `dc-host reload`, then
//! written into the plugins directory).

use axum::extract::{Extension, State};
use axum::http::StatusCode;
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
    #[schema(value_type = String)]
    pub app_id: dc_core::AppId,
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
#[utoipa::path(get, path = "/api/v1/plugins", operation_id = "listPlugins", tag = "plugins", security(("bearer" = [])), responses(
    (status = 200, body = Vec<PluginApp>, links(
        ("listPluginVersions" = (operation_id = "listPluginVersions", parameters(("app_id" = "$response.body#/0/app_id")))),
        ("rollbackPlugin" = (operation_id = "rollbackPlugin", parameters(("app_id" = "$response.body#/0/app_id")))),
    )),
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
#[utoipa::path(get, path = "/api/v1/plugins/{app_id}/versions", operation_id = "listPluginVersions", tag = "plugins", security(("bearer" = [])),
    params(("app_id" = String, Path, description = "app id, unique id prefix (6+) or group/parent/name")),
    responses(
        (status = 200, body = Vec<PluginVersion>, links(
            ("rollbackPlugin" = (operation_id = "rollbackPlugin", parameters(("app_id" = "$request.path.app_id")))),
        )),
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
#[utoipa::path(post, path = "/api/v1/plugins/{app_id}/rollback", operation_id = "rollbackPlugin", tag = "plugins", security(("bearer" = [])),
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

/// The form of `POST /plugins`: one file field (other fields are refused).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // describes the multipart body; the handler reads it as a stream
pub struct PluginUpload {
    /// The plugin library (`NAME.so`, `.dylib` or `.dll`; the name it gets in
    /// the plugins directory).
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub file: Vec<u8>,
}

/// What an upload did.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadAnswer {
    /// The file's name in the plugins directory.
    pub file: String,
    /// `registered` (a new active version), `already_active` (this exact file
    /// is the active version) or `known_inactive` (registered before, another
    /// version is active: roll back to it instead).
    pub outcome: String,
    /// `group/parent/name`.
    pub app: String,
    /// The file's plugin version.
    pub version: String,
    /// The version active before (`registered`), or the active one (`known_inactive`).
    pub previous: Option<String>,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Table changes applied with the version (additive ones).
    pub schema_changes: Vec<String>,
}

/// A plugin file name: a plain name ending in a plugin extension.
fn upload_name(name: Option<&str>) -> Result<String, ApiError> {
    let name = name.unwrap_or_default();
    let exts = dc_runtime::registry::PLUGIN_EXTENSIONS;
    let plain = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let ext_ok = name.rsplit_once('.').is_some_and(|(stem, ext)| !stem.is_empty() && exts.contains(&ext));
    if plain && ext_ok {
        Ok(name.to_string())
    } else {
        Err(ApiError::invalid(format!(
            "the file name {:?} is not a plugin file name: send the file with a plain name (letters, digits, \
             '.', '_', '-'; at most 100) ending in .{}",
            name.chars().take(100).collect::<String>(),
            exts.join(", .")
        )))
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "invalid_body" };
    ApiError::new(status, code, format!("the multipart body could not be read: {}", e.body_text()))
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> ApiError + '_ {
    move |e| ApiError::of_kind(dc_core::ErrorKind::Internal, format!("{what}: {e}"))
}

/// Uploads a plugin file (multipart, one field `file`) and registers it with
/// the same checks and refusals as `dc-host reload` (size limit, probe in a
/// child process, manifest validation, table ownership, capabilities). Only
/// a file that passed is written into the plugins directory, atomically
/// (temporary file, then rename), under its uploaded name; a refused one
/// leaves nothing behind. The body may be as large as `api.max_upload_mb`
/// (default `general.max_plugin_file_mb`). Role: admin.
#[utoipa::path(post, path = "/api/v1/plugins", operation_id = "uploadPlugin", tag = "plugins", security(("bearer" = [])),
    request_body(content = PluginUpload, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "registered: the new active version", body = UploadAnswer),
        (status = 200, description = "already registered (the outcome says how)", body = UploadAnswer),
        (status = 400, description = "not a multipart body", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "the version's tables need a migration first", body = ErrorBody),
        (status = 413, description = "larger than api.max_upload_mb", body = ErrorBody),
        (status = 415, description = "not multipart/form-data", body = ErrorBody),
        (status = 422, description = "refused, with the reason `dc-host reload` gives; nothing was written", body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    multipart: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, axum::Json<UploadAnswer>), ApiError> {
    use std::io::Write as _;
    let mut multipart = multipart.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE { "unsupported_media_type" } else { "invalid_body" };
        ApiError::new(
            status,
            code,
            format!("send multipart/form-data with one file field named \"file\" ({})", e.body_text()),
        )
    })?;
    let env = state.env();
    let dir = env.settings.plugins_dir();
    let mut upload: Option<(String, tempfile::NamedTempFile)> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            return Err(ApiError::invalid(format!(
                "unexpected form field {:?}: send one file field named \"file\"",
                field.name().unwrap_or_default().chars().take(100).collect::<String>()
            )));
        }
        if upload.is_some() {
            return Err(ApiError::invalid("send one file field named \"file\", not several"));
        }
        let name = upload_name(field.file_name())?;
        std::fs::create_dir_all(&dir).map_err(io_error("cannot create the plugins directory"))?;
        // a hidden name: reload and the directory watcher skip it
        let mut tmp = tempfile::Builder::new()
            .prefix(".upload-")
            .suffix(&format!(".{}", name.rsplit_once('.').map(|(_, e)| e).unwrap_or("so")))
            .tempfile_in(&dir)
            .map_err(io_error("cannot create a temporary file in the plugins directory"))?;
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            tmp.write_all(&chunk).map_err(io_error("cannot write the uploaded file"))?;
        }
        tmp.as_file().sync_all().map_err(io_error("cannot write the uploaded file"))?;
        upload = Some((name, tmp));
    }
    let Some((name, tmp)) = upload else {
        return Err(ApiError::invalid("no file: send one file field named \"file\""));
    };
    let sha256 = dc_runtime::store::sha256_file(tmp.path())?;
    // the same checks as `dc-host reload`; refused: the temporary file goes with
    // `tmp`, and the reason names the file as it was uploaded
    let outcome = dc_runtime::registry::register_file(env, tmp.path())
        .await
        .map_err(|e| ApiError::of_kind(e.kind(), e.to_string().replace(&tmp.path().display().to_string(), &name)))?;
    let target = dir.join(&name);
    let registered_from = tmp.path().display().to_string();
    tmp.persist(&target).map_err(|e| io_error("cannot move the uploaded file into the plugins directory")(e.error))?;
    // the version was registered from the temporary file: record where it lives now
    dc_core::apps::rename_source_file(&env.db, &sha256, &registered_from, &target.display().to_string()).await?;
    use dc_runtime::registry::RegisterOutcome as O;
    let (status, answer) = match outcome {
        O::Registered { app, version, previous, schema_changes, .. } => (
            StatusCode::CREATED,
            UploadAnswer { file: name, outcome: "registered".into(), app, version, previous, sha256, schema_changes },
        ),
        O::AlreadyActive { app, version } => (
            StatusCode::OK,
            UploadAnswer {
                file: name,
                outcome: "already_active".into(),
                app,
                version,
                previous: None,
                sha256,
                schema_changes: Vec::new(),
            },
        ),
        O::KnownInactive { app, version, active } => (
            StatusCode::OK,
            UploadAnswer {
                file: name,
                outcome: "known_inactive".into(),
                app,
                version,
                previous: active,
                sha256,
                schema_changes: Vec::new(),
            },
        ),
    };
    tracing::info!(subject = %who.subject, file = %answer.file, app = %answer.app, version = %answer.version,
        outcome = %answer.outcome, "plugin uploaded");
    Ok((status, axum::Json(answer)))
}
