//! `dc-host run APP`: validate arguments, start the run in a worker process, show
//! live progress, and print the outcome with merge counts. Ctrl-C (or SIGTERM)
//! asks the plugin to stop and kills the worker's process group after
//! `runs.stop_grace_secs`; a second Ctrl-C kills it at once. Either way the run
//! ends STOPPED with the reason, never left RUNNING. `--resume RUNTIME_ID`
//! continues a run of the app that was stopped, failed or killed, from the
//! work items it saved: what it finished is not collected again.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use dc_core::{apps, runs};
use dc_runtime::HostEnv;
use dc_runtime::supervisor::{self, Interrupt, RunOptions, SuperviseOptions};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output;

/// Arguments of `run`.
#[derive(Args)]
pub struct RunArgs {
    /// App id, id prefix or group/parent/name.
    app: String,
    /// Runtime arguments as a JSON object (checked against the plugin's schema).
    #[arg(long, value_name = "JSON")]
    args: Option<String>,
    /// Threads calling `collect` (default: runs.threads).
    #[arg(long)]
    threads: Option<usize>,
    /// Kill the run after this many seconds (default: runs.time_limit_secs).
    #[arg(long, value_name = "SECS")]
    time_limit: Option<u64>,
    /// Continue this run of the app (ended FAILED or STOPPED, or killed and
    /// reaped) from the work items it saved: its finished items are not
    /// collected again and their records are stored with the new ones. Uses
    /// the run's arguments; the app's active plugin must be the version that
    /// run used.
    #[arg(long, value_name = "RUNTIME_ID")]
    resume: Option<String>,
    /// Print the finished run as JSON.
    #[arg(long)]
    json: bool,
}

impl RunArgs {
    /// The `--time-limit` given, if any.
    pub fn time_limit(&self) -> Option<u64> {
        self.time_limit
    }
}

/// Turns Ctrl-C and SIGTERM into interrupt requests: the first asks the run to
/// stop, the next kills it.
fn watch_signals() -> anyhow::Result<tokio::sync::watch::Receiver<(Interrupt, String)>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::watch::channel((Interrupt::None, String::new()));
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = int.recv() => "Ctrl-C (SIGINT)",
                Some(()) = term.recv() => "SIGTERM",
                else => return,
            };
            let level = if tx.borrow().0 == Interrupt::None { Interrupt::Stop } else { Interrupt::Kill };
            match level {
                Interrupt::Stop => eprintln!("\n{name}: asking the run to stop (again to kill it now)"),
                _ => eprintln!("\n{name}: killing the run"),
            }
            if tx.send((level, format!("interrupted by the operator ({name})"))).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

pub async fn exec(a: RunArgs, env: &HostEnv) -> anyhow::Result<ExitCode> {
    // runs an earlier dc-host left behind (killed with its worker) end first
    for r in dc_runtime::reap::reap_orphans(env).await? {
        eprintln!("note: run {} was orphaned and is now FAILED", r.runtime_id);
    }
    let app = apps::resolve_app(&env.db, &a.app).await?;
    let args = match &a.args {
        Some(text) => Some(serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!("--args is not valid JSON: {e}; pass an object like '{{\"base_url\": \"http://...\"}}'")
        })?),
        None => None,
    };
    let opts = RunOptions { args, threads: a.threads, time_limit: a.time_limit.map(Duration::from_secs) };
    let runtime_id = match &a.resume {
        Some(from) => supervisor::create_resumed_run(env, &app, from, &opts).await?,
        None => supervisor::create_run(env, &app, &opts).await?,
    };
    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} items {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} {}", app.path(), output::short(&runtime_id)));
    let env2 = env.clone();
    let rid = runtime_id.clone();
    let sup = SuperviseOptions { time_limit: opts.time_limit, interrupt: Some(watch_signals()?) };
    let mut task = tokio::spawn(async move { supervisor::supervise_with(&env2, &rid, sup).await });
    let run = loop {
        tokio::select! {
            done = &mut task => break done??,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if let Ok(r) = runs::get(&env.db, &runtime_id).await {
                    bar.set_length(r.total_count.max(0) as u64);
                    bar.set_position(r.current_count.max(0) as u64);
                    bar.set_message(format!("{} errors", r.error_count));
                }
            }
        }
    };
    bar.finish_and_clear();
    if a.json {
        output::json(&run)?;
    } else {
        super::runs::print_run(&run, &app.path());
    }
    Ok(if run.status == dc_core::enums::RunStatus::Success.as_str() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
