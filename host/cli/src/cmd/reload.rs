//! `dc-host reload [--watch]`: register new or changed plugin files. With
//! `--watch`, keep watching the plugins directory (notify) and reload after
//! each change settles. A refused file is reported and the active version of
//! its app stays in place.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use dc_runtime::HostEnv;
use dc_runtime::registry::{self, ReloadEntry};
use notify::{RecursiveMode, Watcher};

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
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok() {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    eprintln!("watching {} for plugin files (Ctrl-C to stop)", dir.display());
    while rx.recv().await.is_some() {
        // let a copy in progress finish: wait until events stop for 500 ms
        while let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {}
        let entries = registry::reload(env).await?;
        let changed: Vec<ReloadEntry> = entries
            .into_iter()
            .filter(|e| !matches!(e.result, Ok(registry::RegisterOutcome::AlreadyActive { .. })))
            .collect();
        report(&changed, a.json)?;
    }
    Ok(ExitCode::SUCCESS)
}
