//! `dc-host data`: the plugin tables and their rows.

use std::process::ExitCode;

use clap::Subcommand;
use dc_core::{apps, merge};
use dc_runtime::HostEnv;
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
}

#[derive(Serialize)]
struct TableInfo {
    table: String,
    app: String,
    rows: i64,
}

async fn declared_tables(env: &HostEnv) -> anyhow::Result<Vec<(String, dc_plugin_api::TableDecl)>> {
    let mut out = Vec::new();
    for app in apps::list_apps(&env.db).await? {
        if let Ok((_, m)) = dc_runtime::supervisor::active_plugin(env, &app).await {
            out.extend(m.tables.into_iter().map(|t| (app.path(), t)));
        }
    }
    Ok(out)
}

pub async fn exec(c: DataCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    match c {
        DataCommand::Tables { json } => {
            let mut infos = Vec::new();
            for (app, t) in declared_tables(env).await? {
                let rows = merge::count_rows(&env.db, &t.name).await.unwrap_or(0);
                infos.push(TableInfo { table: t.name, app, rows });
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
            let decl =
                declared_tables(env).await?.into_iter().map(|(_, t)| t).find(|t| t.name == table).ok_or_else(|| {
                    anyhow::anyhow!("no active plugin declares a table {table:?}; see `dc-host data tables`")
                })?;
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
    }
    Ok(ExitCode::SUCCESS)
}
