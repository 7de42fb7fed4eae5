//! `dc-host hosts`: the hosts that serve this database, with their heartbeats.

use std::process::ExitCode;

use clap::Subcommand;
use dc_core::hosts;
use dc_runtime::HostEnv;

use crate::output;

/// Host commands.
#[derive(Subcommand)]
pub enum HostsCommand {
    /// Every host that ran `dc-host serve` against this database.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

pub async fn exec(c: HostsCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    match c {
        HostsCommand::List { json } => {
            let list = hosts::list(&env.db).await?;
            if json {
                output::json(&list)?;
            } else if list.is_empty() {
                println!("no host has served this database yet: start one with `dc-host serve`");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|h| {
                        vec![
                            h.host_name.clone(),
                            h.state.clone(),
                            h.pid.to_string(),
                            h.version.clone(),
                            output::ts(Some(h.started_at)),
                            output::ts(Some(h.heartbeat_at)),
                        ]
                    })
                    .collect();
                output::table(&["HOST", "STATE", "PID", "VERSION", "STARTED", "HEARTBEAT"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
