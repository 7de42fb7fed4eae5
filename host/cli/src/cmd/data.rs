//! `dc-host data`: the plugin tables and their rows.

use std::process::ExitCode;

use clap::Subcommand;
use dc_core::{apps, merge};
use dc_runtime::registry::{self, RegisterOutcome, SchemaPolicy};
use dc_runtime::{HostEnv, tables};
use serde::Serialize;

use crate::output;

/// Data commands.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Plugin tables with their owner and live row count.
    Tables {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// The first rows of a plugin table (ordered by key).
    Head {
        /// Table name.
        table: String,
        /// How many rows.
        #[arg(long, default_value_t = 5)]
        limit: i64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Migrates an app's tables to the shape of a new plugin file (`--file`) or
    /// of an older registered version (`--to`), for the changes `reload` and
    /// `plugins rollback` refuse (changed types, dropped columns, a new key…):
    /// every row is copied into the new shape in one transaction, keeping its
    /// first-seen history, and the version becomes active.
    Migrate {
        /// App id, id prefix or group/parent/name.
        app: String,
        /// The new plugin file whose tables to migrate to.
        #[arg(long, conflicts_with = "to", required_unless_present = "to")]
        file: Option<std::path::PathBuf>,
        /// A registered (older) version to migrate back to.
        #[arg(long)]
        to: Option<String>,
        /// Show what would happen (migrating in a transaction that is rolled back).
        #[arg(long, conflicts_with = "apply", required_unless_present = "apply")]
        plan: bool,
        /// Migrate and activate the version.
        #[arg(long)]
        apply: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct MigrateReport<'a> {
    app: String,
    version: String,
    applied: bool,
    schema_changes: &'a [String],
    migrations: &'a [dc_core::evolve::TableMigration],
}

#[derive(Serialize)]
struct TableInfo {
    table: String,
    app: String,
    rows: i64,
}

pub async fn exec(c: DataCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    match c {
        DataCommand::Tables { json } => {
            let mut infos = Vec::new();
            for tables::DeclaredTable { app, decl } in tables::declared_tables(env).await? {
                let rows = merge::count_rows(&env.db, &decl.name).await.unwrap_or(0);
                infos.push(TableInfo { table: decl.name, app, rows });
            }
            if json {
                output::json(&infos)?;
            } else {
                let rows: Vec<Vec<String>> =
                    infos.iter().map(|i| vec![i.table.clone(), i.app.clone(), i.rows.to_string()]).collect();
                output::table(&["TABLE", "APP", "ROWS"], &rows);
            }
        }
        DataCommand::Head { table, limit, json } => {
            let decl = tables::declared_table(env, &table)
                .await?
                .ok_or_else(|| {
                    anyhow::anyhow!("no active plugin declares a table {table:?}; see `dc-host data tables`")
                })?
                .decl;
            let total = merge::count_rows(&env.db, &table).await?;
            let rows = merge::preview(&env.db, &decl, limit).await?;
            if json {
                output::json(&rows)?;
            } else {
                println!("{table}: {total} rows (showing {})", rows.len());
                let headers: Vec<&str> = decl.columns.iter().map(|c| c.name.as_str()).collect();
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        headers
                            .iter()
                            .map(|h| {
                                let v = match r.get(*h) {
                                    Some(serde_json::Value::String(s)) => s.clone(),
                                    Some(v) => v.to_string(),
                                    None => String::new(),
                                };
                                if v.chars().count() > 40 {
                                    format!("{}…", v.chars().take(39).collect::<String>())
                                } else {
                                    v
                                }
                            })
                            .collect()
                    })
                    .collect();
                output::table(&headers, &cells);
            }
        }
        DataCommand::Migrate { app, file, to, plan: _, apply, json } => {
            let policy = if apply { SchemaPolicy::Apply } else { SchemaPolicy::Plan };
            let (version, changes, migrations) = match (&file, &to) {
                (Some(file), _) => {
                    // a dry run first: it names the file's app, which must be the one named
                    let named = apps::resolve_app(&env.db, &app).await?.path();
                    let (mut o, mut migrations) = registry::register_with(env, file, SchemaPolicy::Plan).await?;
                    match &o {
                        RegisterOutcome::Registered { app: found, .. } if *found != named => anyhow::bail!(
                            "{} is a plugin of {found}, not of {named}; name its app or pick the right file",
                            file.display()
                        ),
                        RegisterOutcome::Registered { .. } => {}
                        other => anyhow::bail!(
                            "{}: nothing to migrate: {}",
                            file.display(),
                            super::plugins::describe_outcome(other)
                        ),
                    }
                    if policy == SchemaPolicy::Apply {
                        (o, migrations) = registry::register_with(env, file, policy).await?;
                    }
                    match o {
                        RegisterOutcome::Registered { version, schema_changes, .. } => {
                            (version, schema_changes, migrations)
                        }
                        other => anyhow::bail!("{}: {}", file.display(), super::plugins::describe_outcome(&other)),
                    }
                }
                (None, Some(to)) => {
                    let r = registry::rollback_with(env, &app, Some(to), policy).await?;
                    (r.to, r.schema_changes, r.migrations)
                }
                (None, None) => anyhow::bail!("name the target: --file PLUGIN_FILE or --to VERSION"),
            };
            let app_path = apps::resolve_app(&env.db, &app).await.map(|a| a.path()).unwrap_or(app);
            if json {
                output::json(&MigrateReport {
                    app: app_path,
                    version,
                    applied: apply,
                    schema_changes: &changes,
                    migrations: &migrations,
                })?;
            } else {
                let verb = if apply { "migrated" } else { "plan: would migrate" };
                if migrations.is_empty() {
                    println!("{app_path} {version}: no table needs a migration");
                }
                for m in &migrations {
                    println!(
                        "{verb} table {} ({} rows, {} values converted, {} values of dropped columns discarded):",
                        m.table, m.rows, m.converted, m.values_dropped
                    );
                    for c in &m.changes {
                        println!("    {c}");
                    }
                }
                if apply {
                    println!("{app_path} {version} is active");
                } else {
                    println!("nothing was changed; run again with --apply to migrate and activate {version}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
