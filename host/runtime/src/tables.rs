//! The plugin tables in use: the tables declared by the active plugin version
//! of every app, read from the registered manifests. `dc-host data` and any
//! other front end (an API) list and look up tables through here, so a table
//! is shown only while an active plugin declares it.

use dc_core::apps;
use dc_plugin_api::TableDecl;
use serde::Serialize;

use crate::{HostEnv, RuntimeError, supervisor};

/// A table declared by an app's active plugin version.
#[derive(Debug, Clone, Serialize)]
pub struct DeclaredTable {
    /// The app that owns it (`group/parent/name`).
    pub app: String,
    /// Its declaration in the plugin's manifest.
    pub decl: TableDecl,
}

/// The tables of every app's active plugin version, app by app in the order
/// of [`apps::list_apps`]. An app without an active version (or whose active
/// plugin file cannot be read) declares none.
pub async fn declared_tables(env: &HostEnv) -> Result<Vec<DeclaredTable>, RuntimeError> {
    let mut out = Vec::new();
    for app in apps::list_apps(&env.db).await? {
        if let Ok((_, manifest)) = supervisor::active_plugin(env, &app).await {
            out.extend(manifest.tables.into_iter().map(|decl| DeclaredTable { app: app.path(), decl }));
        }
    }
    Ok(out)
}

/// The active declaration of table `name`, if an active plugin declares it.
pub async fn declared_table(env: &HostEnv, name: &str) -> Result<Option<DeclaredTable>, RuntimeError> {
    Ok(declared_tables(env).await?.into_iter().find(|t| t.decl.name == name))
}
