//! `dc-host db`: migrations, status, deploy (create + seed core and plugin
//! tables), seed, and a guarded drop.

use std::process::ExitCode;

use clap::Subcommand;
use dc_core::{Database, Settings, apps, merge};
use dc_runtime::HostEnv;

use crate::output;

/// Database commands.
#[derive(Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations.
    Migrate,
    /// Show which migrations are applied.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Migrate, seed the core tables into app_db_objects and create every active plugin's tables.
    Deploy,
    /// Record the core tables in app_db_objects (on a migrated database).
    Seed,
    /// Drop every plugin table and core table (all collected data!).
    Drop {
        /// Confirm that everything may be deleted.
        #[arg(long)]
        yes_drop_everything: bool,
    },
}

impl DbCommand {
    /// Commands that must not migrate before they run.
    pub fn skips_auto_migrate(&self) -> bool {
        matches!(self, DbCommand::Status { .. } | DbCommand::Drop { .. } | DbCommand::Migrate)
    }
}

/// Commands that run on a database as it is.
pub async fn exec_raw(c: &DbCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let db = Database::connect(settings).await?;
    let url = dc_core::settings::redact_url(&settings.database_url());
    match c {
        DbCommand::Migrate => {
            let n = db.migrate().await?;
            println!("applied {n} migration(s) to {url}");
        }
        DbCommand::Status { json } => {
            let st = db.status().await?;
            if *json {
                output::json(&st)?;
            } else {
                println!("database {url}");
                let rows: Vec<Vec<String>> = st
                    .iter()
                    .map(|m| {
                        vec![
                            m.version.to_string(),
                            m.description.clone(),
                            if m.applied { "applied" } else { "pending" }.into(),
                        ]
                    })
                    .collect();
                output::table(&["VERSION", "DESCRIPTION", "STATE"], &rows);
            }
        }
        DbCommand::Drop { yes_drop_everything } => {
            let dropped = db.drop_all(*yes_drop_everything).await?;
            println!("dropped {} table(s) from {url}: {}", dropped.len(), dropped.join(", "));
        }
        _ => unreachable!("only raw commands come here"),
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Commands that run on a migrated database.
pub async fn exec(c: DbCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    match c {
        DbCommand::Seed => {
            env.db.seed().await?;
            println!("seeded {} core tables into app_db_objects", dc_core::db::CORE_TABLES.len());
        }
        DbCommand::Deploy => {
            env.db.seed().await?;
            let mut tables = 0;
            for app in apps::list_apps(&env.db).await? {
                if let Ok((_, manifest)) = dc_runtime::supervisor::active_plugin(env, &app).await {
                    for t in &manifest.tables {
                        merge::ensure_table(&env.db, &app.app_id, t).await?;
                        tables += 1;
                    }
                }
            }
            println!("deployed: core tables migrated and seeded, {tables} plugin table(s) created or verified");
        }
        _ => unreachable!("raw commands are handled by exec_raw"),
    }
    Ok(ExitCode::SUCCESS)
}
