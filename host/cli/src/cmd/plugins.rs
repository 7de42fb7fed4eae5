//! `dc-host plugins`: list apps and their active plugin, inspect a file without
//! registering it, register one file, show an app's version history, roll back.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use dc_core::apps;
use dc_runtime::HostEnv;
use dc_runtime::registry::{self, RegisterOutcome};

use crate::output;

/// Plugin commands.
#[derive(Subcommand)]
pub enum PluginsCommand {
    /// List apps with their active plugin version.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Load a plugin file in a child process and show its manifest (registers nothing).
    Inspect {
        /// The plugin file (.so).
        file: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Register one plugin file (from anywhere) and make it the active version.
    Register {
        /// The plugin file (.so).
        file: PathBuf,
    },
    /// Registered versions of an app.
    History {
        /// App id, id prefix or group/parent/name.
        app: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Make an older registered version active again.
    Rollback {
        /// App id, id prefix or group/parent/name.
        app: String,
        /// The version to activate (default: the newest one below the active version).
        #[arg(long)]
        to: Option<String>,
    },
}

/// Prints what registering did, one line.
pub fn describe_outcome(o: &RegisterOutcome) -> String {
    let mut text = describe(o);
    if let RegisterOutcome::Registered { schema_changes, .. } = o {
        for c in schema_changes {
            text.push_str(&format!("\n    table change applied: {c}"));
        }
    }
    text
}

fn describe(o: &RegisterOutcome) -> String {
    match o {
        RegisterOutcome::Registered { app, version, previous: Some(p), .. } => {
            format!("registered {app} {version} (was {p})")
        }
        RegisterOutcome::Registered { app, version, app_id, .. } => {
            format!("registered {app} {version} (new app {})", output::short(app_id))
        }
        RegisterOutcome::AlreadyActive { app, version } => format!("unchanged: {app} {version} is already active"),
        RegisterOutcome::KnownInactive { app, version, active } => format!(
            "skipped: {app} {version} was registered before but {} is active (use `dc-host plugins rollback {app} --to {version}` to activate it)",
            active.clone().unwrap_or_else(|| "another version".into())
        ),
    }
}

pub async fn exec(c: PluginsCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    match c {
        PluginsCommand::List { json } => {
            let list = apps::list_apps(&env.db).await?;
            if json {
                output::json(&list)?;
            } else if list.is_empty() {
                println!(
                    "no apps yet: put plugin files into {} and run `dc-host reload`, or create one with `dc-host scaffold-plugin`",
                    env.settings.plugins_dir().display()
                );
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|a| {
                        vec![
                            output::short(&a.app_id),
                            a.path(),
                            a.active_version.clone().unwrap_or_else(|| "-".into()),
                            a.active_hash.as_deref().map(output::short).unwrap_or_else(|| "-".into()),
                            if a.enabled { "yes".into() } else { "no".into() },
                            a.run_status.clone().unwrap_or_else(|| "-".into()),
                            output::ts(a.last_run),
                        ]
                    })
                    .collect();
                output::table(&["APP ID", "APP", "VERSION", "SHA256", "ENABLED", "LAST STATUS", "LAST RUN"], &rows);
            }
        }
        PluginsCommand::Inspect { file, json } => {
            let out = registry::inspect(env, &file).await?;
            let offered = dc_runtime::host_capabilities(&env.settings);
            let missing: Vec<String> =
                dc_plugin_api::capability::missing(&out.requires, &offered).into_iter().map(str::to_string).collect();
            if json {
                #[derive(serde::Serialize)]
                struct Inspected<'a> {
                    file: String,
                    app_id: dc_core::AppId,
                    #[serde(flatten)]
                    probe: &'a dc_runtime::probe::ProbeOutput,
                    /// Required capabilities this host lacks (registration would refuse the plugin).
                    missing_capabilities: Vec<String>,
                }
                let m = &out.manifest;
                output::json(&Inspected {
                    file: file.display().to_string(),
                    app_id: apps::app_id_for(&m.group, &m.parent, &m.name),
                    probe: &out,
                    missing_capabilities: missing,
                })?;
            } else {
                let m = &out.manifest;
                println!("file:        {}", file.display());
                println!("app:         {}/{}/{}", m.group, m.parent, m.name);
                println!("app id:      {}", apps::app_id_for(&m.group, &m.parent, &m.name));
                println!("version:     {}", m.version);
                println!(
                    "interface:   dc-plugin-api {} (this host: {})",
                    out.interface_version,
                    dc_plugin_api::ABI_VERSION
                );
                println!("sdk:         {}", out.sdk_version.as_deref().unwrap_or("none (built before dc-plugin-sdk)"));
                let requires: Vec<String> = out
                    .requires
                    .iter()
                    .map(|c| if missing.contains(c) { format!("{c} (NOT offered by this host)") } else { c.clone() })
                    .collect();
                println!(
                    "requires:    {}",
                    if requires.is_empty() { "nothing beyond the basics".into() } else { requires.join(", ") }
                );
                println!("description: {}", m.description);
                println!(
                    "schedule:    {}",
                    m.default_schedule.as_ref().map(|s| format!("{s:?}")).unwrap_or_else(|| "none".into())
                );
                for t in &m.tables {
                    let cols: Vec<String> = t.columns.iter().map(|c| format!("{} {}", c.name, c.ty.as_str())).collect();
                    println!("table:       {} (key {}): {}", t.name, t.key.join(", "), cols.join(", "));
                }
                println!("args schema: {}", m.args_schema);
            }
        }
        PluginsCommand::Register { file } => {
            let o = registry::register_file(env, &file).await?;
            println!("{}", describe_outcome(&o));
        }
        PluginsCommand::History { app, json } => {
            let app = apps::resolve_app(&env.db, &app).await?;
            let versions = apps::versions(&env.db, &app.app_id).await?;
            if json {
                output::json(&versions)?;
            } else {
                println!("{} ({})", app.path(), app.app_id);
                let rows: Vec<Vec<String>> = versions
                    .iter()
                    .map(|v| {
                        let active = app.active_hash.as_deref() == Some(v.sha256.as_str());
                        vec![
                            if active { "*".into() } else { String::new() },
                            v.version.clone(),
                            output::short(&v.sha256),
                            v.interface_abi.clone().unwrap_or_else(|| v.interface_version.to_string()),
                            output::ts(Some(v.registered_at)),
                            v.source_file.clone(),
                        ]
                    })
                    .collect();
                output::table(&["", "VERSION", "SHA256", "INTERFACE", "REGISTERED", "SOURCE"], &rows);
            }
        }
        PluginsCommand::Rollback { app, to } => {
            let (from, to) = registry::rollback(env, &app, to.as_deref()).await?;
            println!("rolled back {app} from {} to {to}", from.unwrap_or_else(|| "-".into()));
        }
    }
    Ok(ExitCode::SUCCESS)
}
