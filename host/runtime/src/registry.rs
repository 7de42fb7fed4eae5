//! Registration, reload and rollback. Registering a file validates it in a
//! child process, refuses anything unusable with a specific reason, copies it
//! into the content-addressed store, creates its declared tables and makes it
//! the app's active version — all or nothing: a refused file changes nothing and
//! the previously active version keeps serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use dc_core::apps::{self, PluginVersionRow};
use dc_core::merge;
use dc_plugin_api::manifest::Version;
use dc_plugin_api::{Manifest, Schedule};
use serde::Serialize;

use crate::probe::{self, ProbeOutput};
use crate::{HostEnv, RuntimeError, store};

/// Extensions the plugins directory is scanned for.
pub const PLUGIN_EXTENSIONS: &[&str] = &["so", "dylib", "dll"];

/// How long a probe may take to load a plugin.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What registration does with a table change that needs its rows migrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaPolicy {
    /// Refuse the version, naming each change and `dc-host data migrate`.
    Refuse,
    /// Migrate the rows and register, then roll everything back: a dry run
    /// that reports what `Apply` would do (and any row that would not fit).
    Plan,
    /// Migrate the rows and register, in one transaction.
    Apply,
}

/// The refusal of a breaking table change, with the commands that migrate it.
fn schema_refusal(what: &str, e: &merge::MergeError, migrate: &str) -> RuntimeError {
    RuntimeError::Conflict(format!(
        "{what}: {e}. The table and its rows are unchanged. To migrate the rows into the new shape, see the plan with `{migrate} --plan`, then apply it with `{migrate} --apply`"
    ))
}

/// What registering a file did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RegisterOutcome {
    /// A new version was registered and is now active.
    Registered {
        /// App id.
        app_id: dc_core::AppId,
        /// `group/parent/name`.
        app: String,
        /// New version.
        version: String,
        /// Version active before, if any.
        previous: Option<String>,
        /// File hash.
        sha256: String,
        /// Table changes applied with the version: additive changes, and the
        /// migrations `dc-host data migrate --apply` performed.
        schema_changes: Vec<String>,
    },
    /// This exact file is already the active version.
    AlreadyActive {
        /// `group/parent/name`.
        app: String,
        /// Version.
        version: String,
    },
    /// This exact file was registered before but another version is active
    /// (a rollback happened); it is not re-activated silently.
    KnownInactive {
        /// `group/parent/name`.
        app: String,
        /// Its version.
        version: String,
        /// The active version.
        active: Option<String>,
    },
}

fn app_path(m: &Manifest) -> String {
    format!("{}/{}/{}", m.group, m.parent, m.name)
}

/// Probes a file without registering it (`dc-host plugins inspect`).
pub async fn inspect(env: &HostEnv, path: &Path) -> Result<ProbeOutput, RuntimeError> {
    let exe = env.exe.clone();
    let path = path.to_path_buf();
    let max = env.settings.max_plugin_file_bytes();
    tokio::task::spawn_blocking(move || probe::probe(&exe, &path, PROBE_TIMEOUT, max))
        .await
        .map_err(|e| RuntimeError::Refused(format!("probe task failed: {e}")))?
}

/// Registers one plugin file (see the module docs).
#[dc_fun_watch::fun_watch]
pub async fn register_file(env: &HostEnv, path: &Path) -> Result<RegisterOutcome, RuntimeError> {
    register_with(env, path, SchemaPolicy::Refuse).await.map(|(o, _)| o)
}

/// Registers a plugin file like [`register_file`], with `policy` deciding
/// what happens to a table change that needs a data migration. Returns the
/// outcome and the table migrations performed (or planned).
pub async fn register_with(
    env: &HostEnv,
    path: &Path,
    policy: SchemaPolicy,
) -> Result<(RegisterOutcome, Vec<dc_core::evolve::TableMigration>), RuntimeError> {
    let db = &env.db;
    // size and file type first: hashing a 3 GB file, a device or a pipe is not an option
    probe::check_entry(path, env.settings.max_plugin_file_bytes()).map_err(RuntimeError::Refused)?;
    let sha256 = store::sha256_file(path)?;
    if let Some(known) = apps::version_by_hash(db, &sha256).await? {
        let app = apps::get_app(db, &known.app_id).await?;
        let path_name = app.as_ref().map(|a| a.path()).unwrap_or_else(|| known.app_id.to_string());
        let active = app.and_then(|a| a.active_hash.map(|h| (h, a.active_version)));
        let outcome = match active {
            Some((h, _)) if h == sha256 => RegisterOutcome::AlreadyActive { app: path_name, version: known.version },
            other => RegisterOutcome::KnownInactive {
                app: path_name,
                version: known.version,
                active: other.and_then(|(_, v)| v),
            },
        };
        return Ok((outcome, Vec::new()));
    }
    let out = inspect(env, path).await?;
    let m = &out.manifest;
    let offered = crate::host_capabilities(&env.settings);
    let missing = dc_plugin_api::capability::missing(&m.requires, &offered);
    if !missing.is_empty() {
        let hint = if missing.contains(&dc_plugin_api::capability::CAPTCHA) {
            " (a host offers captcha once [captcha] provider and key_secret are configured)"
        } else {
            ""
        };
        return Err(RuntimeError::Refused(format!(
            "{}: {} {} requires the capability {} that this host does not implement (it implements {}); run it on a dc-host that does, or remove the requirement{hint}",
            path.display(),
            app_path(m),
            m.version,
            missing.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", "),
            offered.join(", ")
        )));
    }
    let app_id = apps::app_id_for(&m.group, &m.parent, &m.name);
    let new_version = Version::parse(&m.version).ok_or_else(|| {
        RuntimeError::Refused(format!("{}: version {:?} is not MAJOR.MINOR.PATCH", path.display(), m.version))
    })?;
    for v in apps::versions(db, &app_id).await? {
        if v.version == m.version {
            return Err(RuntimeError::Conflict(format!(
                "{}: {} version {} is already registered with different content (sha256 {}…); bump the plugin version to register a new build",
                path.display(),
                app_path(m),
                m.version,
                &v.sha256[..12]
            )));
        }
    }
    let existing = apps::get_app(db, &app_id).await?;
    let previous = existing.as_ref().and_then(|a| a.active_version.clone());
    if let Some(active) = previous.as_deref().and_then(Version::parse)
        && new_version < active
    {
        return Err(RuntimeError::Conflict(format!(
            "{}: registering {} {} would downgrade it from the active version {}; to go back to an older version use `dc-host plugins rollback {} --to VERSION`",
            path.display(),
            app_path(m),
            new_version,
            active,
            app_path(m)
        )));
    }
    // the arguments scheduled and commanded runs use must fit the new schema
    if let Some(app) = &existing
        && let Some(args) = crate::schedule::stored_args(app)?
        && let Err(RuntimeError::BadArgs { problems, .. }) =
            crate::schedule::check_args(&app_path(m), &m.args_schema, &args)
    {
        return Err(RuntimeError::Conflict(format!(
            "{}: {} {}: its args_schema rejects the app's stored arguments ({problems}); change them first with `dc-host apps args {} JSON` (or `--clear`), or fix the schema",
            path.display(),
            app_path(m),
            m.version,
            app_path(m)
        )));
    }
    // every table check before anything is written: a refusal leaves no trace
    let (cron, interval) = match &m.default_schedule {
        Some(Schedule::Cron(c)) => (Some(c.as_str()), None),
        Some(Schedule::IntervalSecs(s)) => (None, Some(*s as i64)),
        None => (None, None),
        Some(other) => {
            return Err(RuntimeError::Refused(format!(
                "{}: default_schedule {other:?} is a kind of schedule this host does not know; upgrade dc-host",
                path.display()
            )));
        }
    };
    // everything below is one transaction, and the store file is removed
    // again if it fails: a refused plugin leaves no table, app row,
    // `app_db_objects` entry or store file behind
    let (stored, created) = store::put(&env.settings.store_dir(), path, &sha256)?;
    let row = PluginVersionRow {
        app_id: app_id.clone(),
        version: m.version.clone(),
        sha256: sha256.clone(),
        interface_version: i64::from(m.interface_version),
        interface_abi: Some(out.interface_version.clone()),
        manifest: serde_json::to_string(m).unwrap_or_default(),
        store_path: stored.display().to_string(),
        source_file: path.display().to_string(),
        registered_at: Utc::now(),
    };
    let what = format!("{}: {} {}", path.display(), app_path(m), m.version);
    let migrate = format!("dc-host data migrate {} --file {}", app_path(m), path.display());
    let mut schema_changes = Vec::new();
    let mut migrations = Vec::new();
    let written = async {
        let mut tx = db.begin_write().await?;
        for t in &m.tables {
            merge::check_table_ownership(&mut tx, &app_id, t)
                .await
                .map_err(|e| RuntimeError::like(&e, format!("{what}: {e}")))?;
        }
        apps::ensure_app_in(&mut tx, &m.group, &m.parent, &m.name, "scraper", &m.description).await?;
        for t in &m.tables {
            match merge::ensure_table_in(&mut tx, &app_id, t).await {
                Ok(applied) => schema_changes.extend(applied.into_iter().map(|c| format!("{}: {c}", t.name))),
                Err(e @ merge::MergeError::SchemaChange { .. }) if policy == SchemaPolicy::Refuse => {
                    return Err(schema_refusal(&what, &e, &migrate));
                }
                Err(merge::MergeError::SchemaChange { live, .. }) => {
                    let done =
                        dc_core::evolve::migrate_table_in(&mut tx, &app_id, &live, t, env.settings.runs.unicode_form)
                            .await
                            .map_err(|e| RuntimeError::like(&e, format!("{what}: migrating table {}: {e}", t.name)))?;
                    schema_changes
                        .extend(done.changes.iter().map(|c| format!("{}: {c} (migrated {} rows)", t.name, done.rows)));
                    migrations.push(done);
                }
                Err(e) => return Err(RuntimeError::like(&e, format!("{what}: table {}: {e}", t.name))),
            }
        }
        apps::register_version_in(&mut tx, &row, &m.description, cron, interval).await?;
        // the bytes too, so every host on this database can run the version
        let bytes = std::fs::read(&stored).map_err(RuntimeError::io("cannot read the stored plugin file", &stored))?;
        apps::store_plugin_file_in(&mut tx, &sha256, &bytes).await?;
        drop(bytes);
        if policy == SchemaPolicy::Plan {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok::<(), RuntimeError>(())
    }
    .await;
    if written.is_err() || policy == SchemaPolicy::Plan {
        if created {
            let still_used = apps::version_by_hash(db, &sha256).await.ok().flatten().is_some();
            if !still_used && let Err(rm) = std::fs::remove_file(&stored) {
                tracing::warn!(file = %stored.display(), error = %rm, "cannot remove the store file of a refused plugin");
            }
        }
        written?;
    }
    if policy != SchemaPolicy::Plan {
        tracing::info!(%app_id, app = %app_path(m), version = %m.version, sha256 = %sha256, "plugin registered");
    }
    let outcome = RegisterOutcome::Registered {
        app_id,
        app: app_path(m),
        version: m.version.clone(),
        previous,
        sha256,
        schema_changes,
    };
    Ok((outcome, migrations))
}

/// One file's result in a reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadEntry {
    /// The file.
    pub file: PathBuf,
    /// What happened, or why it was refused.
    pub result: Result<RegisterOutcome, String>,
}

/// Entries of the plugins directory named like plugin files (`*.so`, …), sorted,
/// whatever they are: a directory, a device, a dangling symlink or a symlink
/// loop named `x.so` is listed too, so registering it reports what it is
/// instead of skipping it in silence. Hidden files (`.name`) are skipped.
pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(RuntimeError::io("cannot create plugins directory", dir))?;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(RuntimeError::io("cannot read plugins directory", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| PLUGIN_EXTENSIONS.contains(&e))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Registers every new or changed file in the plugins directory. A refused
/// file is reported and skipped; it never affects other files or active versions.
pub async fn reload(env: &HostEnv) -> Result<Vec<ReloadEntry>, RuntimeError> {
    let mut out = Vec::new();
    for file in plugin_files(&env.settings.plugins_dir())? {
        let result = register_file(env, &file).await.map_err(|e| e.to_string());
        if let Err(reason) = &result {
            tracing::warn!(file = %file.display(), %reason, "plugin file refused");
        }
        out.push(ReloadEntry { file, result });
    }
    Ok(out)
}

/// Makes an older registered version active again: `to`, or else the highest
/// registered version below the active one. Returns (from, to).
pub async fn rollback(
    env: &HostEnv,
    app_spec: &str,
    to: Option<&str>,
) -> Result<(Option<String>, String), RuntimeError> {
    rollback_with(env, app_spec, to, SchemaPolicy::Refuse).await.map(|r| (r.from, r.to))
}

/// What a rollback did (or, with [`SchemaPolicy::Plan`], would do).
#[derive(Debug, Clone, Serialize)]
pub struct RollbackOutcome {
    /// The app.
    pub app: String,
    /// The version active before.
    pub from: Option<String>,
    /// The version made active.
    pub to: String,
    /// Table changes applied (additive, or migrated).
    pub schema_changes: Vec<String>,
    /// The table migrations performed.
    pub migrations: Vec<dc_core::evolve::TableMigration>,
}

/// Makes an older registered version active again. Its tables follow the same
/// rules as a new version's: additive changes are applied, others need
/// `dc-host data migrate APP --to VERSION` (`policy`).
pub async fn rollback_with(
    env: &HostEnv,
    app_spec: &str,
    to: Option<&str>,
    policy: SchemaPolicy,
) -> Result<RollbackOutcome, RuntimeError> {
    let app = apps::resolve_app(&env.db, app_spec).await?;
    let versions = apps::versions(&env.db, &app.app_id).await?;
    let active = app.active_version.as_deref().and_then(Version::parse);
    let target = match to {
        Some(t) => versions.iter().find(|v| v.version == t).ok_or_else(|| {
            RuntimeError::NotFound(format!(
                "{} has no registered version {t}; registered: {}",
                app.path(),
                versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?,
        None => versions
            .iter()
            .filter(|v| Version::parse(&v.version).is_some_and(|x| active.is_none_or(|a| x < a)))
            .max_by_key(|v| Version::parse(&v.version))
            .ok_or_else(|| {
                RuntimeError::NotFound(format!(
                    "{} has no registered version older than {}; see `dc-host plugins history {}`",
                    app.path(),
                    app.active_version.clone().unwrap_or_default(),
                    app.path()
                ))
            })?,
    };
    if !Path::new(&target.store_path).exists() && apps::plugin_file(&env.db, &target.sha256).await?.is_none() {
        return Err(RuntimeError::NotFound(format!(
            "the stored file of {} {} is missing ({}); register that build again",
            app.path(),
            target.version,
            target.store_path
        )));
    }
    let manifest: Manifest = serde_json::from_str(&target.manifest).map_err(|e| {
        RuntimeError::Refused(format!("the stored manifest of {} {} is unreadable: {e}", app.path(), target.version))
    })?;
    if let Some(args) = crate::schedule::stored_args(&app)?
        && let Err(RuntimeError::BadArgs { problems, .. }) =
            crate::schedule::check_args(&app.path(), &manifest.args_schema, &args)
    {
        return Err(RuntimeError::Conflict(format!(
            "{} {}'s args_schema rejects the app's stored arguments ({problems}); change them first with `dc-host apps args {} JSON` (or `--clear`)",
            app.path(),
            target.version,
            app.path()
        )));
    }
    let what = format!("rolling {} back to {}", app.path(), target.version);
    let migrate = format!("dc-host data migrate {} --to {}", app.path(), target.version);
    let mut out = RollbackOutcome {
        app: app.path(),
        from: app.active_version.clone(),
        to: target.version.clone(),
        schema_changes: Vec::new(),
        migrations: Vec::new(),
    };
    let mut tx = env.db.begin_write().await?;
    for t in &manifest.tables {
        match merge::ensure_table_in(&mut tx, &app.app_id, t).await {
            Ok(applied) => out.schema_changes.extend(applied.into_iter().map(|c| format!("{}: {c}", t.name))),
            Err(e @ merge::MergeError::SchemaChange { .. }) if policy == SchemaPolicy::Refuse => {
                return Err(schema_refusal(&what, &e, &migrate));
            }
            Err(merge::MergeError::SchemaChange { live, .. }) => {
                let done =
                    dc_core::evolve::migrate_table_in(&mut tx, &app.app_id, &live, t, env.settings.runs.unicode_form)
                        .await
                        .map_err(|e| RuntimeError::like(&e, format!("{what}: migrating table {}: {e}", t.name)))?;
                out.schema_changes
                    .extend(done.changes.iter().map(|c| format!("{}: {c} (migrated {} rows)", t.name, done.rows)));
                out.migrations.push(done);
            }
            Err(e) => return Err(RuntimeError::like(&e, format!("{what}: table {}: {e}", t.name))),
        }
    }
    apps::set_active_version_in(&mut tx, &app.app_id, target).await?;
    if policy == SchemaPolicy::Plan {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
        tracing::info!(app_id = %app.app_id, from = ?app.active_version, to = %target.version, "plugin rolled back");
    }
    Ok(out)
}
