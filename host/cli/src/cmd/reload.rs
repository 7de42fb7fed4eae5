//! `dc-host reload [--watch]`: register new or changed plugin files. With
//! `--watch`, keep watching the plugins directory and reload after each change
//! settles (`dc_runtime::watch`); this module only prints the reports. A
//! refused file is reported and the active version of its app stays in place.

use std::ops::ControlFlow;
use std::process::ExitCode;

use clap::Args;
use dc_runtime::HostEnv;
use dc_runtime::registry::{self, ReloadEntry};
use dc_runtime::watch::{self, WatchEvent};

use crate::output;

/// Arguments of `reload`.
#[derive(Args)]
pub struct ReloadArgs {
    /// Keep running and reload whenever the plugins directory changes.
    #[arg(long)]
    watch: bool,
    /// JSON output (one JSON array per reload).
    #[arg(long)]
    json: bool,
}

fn report(entries: &[ReloadEntry], json: bool) -> anyhow::Result<usize> {
    let refused = entries.iter().filter(|e| e.result.is_err()).count();
    if json {
        output::json(&entries)?;
        return Ok(refused);
    }
    for e in entries {
        match &e.result {
            Ok(o) => println!("{}: {}", e.file.display(), super::plugins::describe_outcome(o)),
            Err(reason) => println!("{}: REFUSED: {reason}", e.file.display()),
        }
    }
    Ok(refused)
}

pub async fn exec(a: ReloadArgs, env: &HostEnv) -> anyhow::Result<ExitCode> {
    let dir = env.settings.plugins_dir();
    let entries = registry::reload(env).await?;
    if entries.is_empty() && !a.json {
        println!("no plugin files in {}", dir.display());
    }
    let refused = report(&entries, a.json)?;
    if !a.watch {
        return Ok(if refused > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    let stopped = watch::watch_plugins(env, |event| match event {
        WatchEvent::Watching { dir } => {
            eprintln!("watching {} for plugin files (Ctrl-C to stop)", dir.display());
            ControlFlow::Continue(())
        }
        WatchEvent::Reloaded(changed) => match report(&changed, a.json) {
            Ok(_) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        },
    })
    .await?;
    match stopped {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
