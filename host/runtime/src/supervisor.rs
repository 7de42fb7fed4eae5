//! The supervisor: starts a run of an app in its own worker process
//! (`dc-host worker`), enforces the time limit and optional rlimits, and records
//! how the worker ended — exit code or signal — so a plugin that panics,
//! aborts, segfaults or hangs only ever takes down its own worker.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use dc_core::apps::{self, AppRow};
use dc_core::enums::RunStatus;
use dc_core::runs::{self, NewRun, RunRow};
use dc_plugin_api::Manifest;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::{HostEnv, RuntimeError};

/// Per-run options from the command line or API.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Runtime arguments (validated against the plugin's schema).
    pub args: Option<Value>,
    /// Collect threads (default: settings).
    pub threads: Option<usize>,
    /// Time limit (default: settings).
    pub time_limit: Option<Duration>,
}

/// Describes how a process ended, naming the signal and its usual meaning.
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(sig) => {
            let what = match sig {
                libc::SIGSEGV => "SIGSEGV, the plugin crashed with a segmentation fault",
                libc::SIGABRT => "SIGABRT, the plugin aborted",
                libc::SIGBUS => "SIGBUS, the plugin crashed with a bus error",
                libc::SIGILL => "SIGILL, illegal instruction in the plugin",
                libc::SIGFPE => "SIGFPE, arithmetic fault in the plugin",
                libc::SIGKILL => "SIGKILL, killed",
                libc::SIGTERM => "SIGTERM, terminated",
                libc::SIGXCPU => "SIGXCPU, the CPU time limit was reached",
                _ => "signal",
            };
            format!("signal {sig} ({what})")
        }
        None => "unknown exit".into(),
    }
}

/// The manifest of the app's active plugin version, with that version's row.
pub async fn active_plugin(env: &HostEnv, app: &AppRow) -> Result<(apps::PluginVersionRow, Manifest), RuntimeError> {
    let hash = app.active_hash.as_deref().ok_or_else(|| {
        RuntimeError::Refused(format!(
            "{} has no plugin registered yet; put its .so file into {} and run `dc-host reload`",
            app.path(),
            env.settings.plugins_dir().display()
        ))
    })?;
    let version = apps::version_by_hash(&env.db, hash)
        .await?
        .ok_or_else(|| RuntimeError::Refused(format!("{}: active plugin {hash} is not in the registry", app.path())))?;
    let manifest: Manifest = serde_json::from_str(&version.manifest)
        .map_err(|e| RuntimeError::Refused(format!("{}: stored manifest is unreadable: {e}", app.path())))?;
    Ok((version, manifest))
}

/// Validates arguments and creates the PENDING run; returns its id.
pub async fn create_run(env: &HostEnv, app: &AppRow, opts: &RunOptions) -> Result<String, RuntimeError> {
    let (version, manifest) = active_plugin(env, app).await?;
    let args = opts.args.clone().unwrap_or_else(|| Value::Object(Default::default()));
    crate::args::validate(&manifest.args_schema, &args)
        .map_err(|p| RuntimeError::BadArgs { app: app.path(), problems: p.join("; ") })?;
    let threads = opts.threads.unwrap_or(env.settings.runs.threads).max(1);
    let args_text = args.to_string();
    let host = env.settings.host_name();
    let id = runs::create(
        &env.db,
        &NewRun {
            app_id: &app.app_id,
            plugin_version: &version.version,
            plugin_hash: &version.sha256,
            args: &args_text,
            threads: threads as i64,
            host_name: &host,
        },
    )
    .await?;
    Ok(id)
}

/// Runs an app to its end in a worker process and returns the finished run.
pub async fn run_app(env: &HostEnv, app: &AppRow, opts: &RunOptions) -> Result<RunRow, RuntimeError> {
    let runtime_id = create_run(env, app, opts).await?;
    supervise(env, &runtime_id, opts.time_limit).await
}

#[allow(unsafe_code)]
fn apply_limits(cmd: &mut tokio::process::Command, memory_mb: Option<u64>, cpu_secs: Option<u64>) {
    if memory_mb.is_none() && cpu_secs.is_none() {
        return;
    }
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setrlimit, which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(mb) = memory_mb {
                let bytes = mb.saturating_mul(1024 * 1024) as libc::rlim_t;
                let lim = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(s) = cpu_secs {
                let lim = libc::rlimit { rlim_cur: s as libc::rlim_t, rlim_max: s.saturating_add(5) as libc::rlim_t };
                if libc::setrlimit(libc::RLIMIT_CPU, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Spawns the worker for an existing PENDING run and waits for it.
pub async fn supervise(env: &HostEnv, runtime_id: &str, time_limit: Option<Duration>) -> Result<RunRow, RuntimeError> {
    let limit = time_limit.unwrap_or(Duration::from_secs(env.settings.runs.time_limit_secs));
    let settings_json = serde_json::to_string(&env.settings).unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&env.exe);
    cmd.arg("worker")
        .arg("--runtime-id")
        .arg(runtime_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    apply_limits(&mut cmd, env.settings.runs.memory_limit_mb, env.settings.runs.cpu_limit_secs);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("cannot start worker process {}: {e}", env.exe.display());
            runs::finish(&env.db, runtime_id, RunStatus::Failed, Some(&reason)).await?;
            return Err(RuntimeError::Refused(reason));
        }
    };
    // the settings travel on stdin, so secrets never show up in `ps`
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(settings_json.as_bytes()).await;
        let _ = stdin.shutdown().await;
    }
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            tracing::error!(runtime_id, error = %e, "cannot wait for worker");
            None
        }
        Err(_) => {
            let _ = child.kill().await;
            let status = child.wait().await.ok();
            let reason = format!(
                "exceeded the time limit of {}s and was killed; raise runs.time_limit_secs (or --time-limit) if the app needs longer",
                limit.as_secs()
            );
            runs::finish(&env.db, runtime_id, RunStatus::Failed, Some(&reason)).await?;
            status
        }
    };
    if let Some(status) = status {
        use std::os::unix::process::ExitStatusExt;
        runs::record_exit(&env.db, runtime_id, status.code(), status.signal()).await?;
        let reason = format!("worker ended before finishing the run: {}", describe_exit(&status));
        if runs::finish(&env.db, runtime_id, RunStatus::Failed, Some(&reason)).await? {
            tracing::error!(runtime_id, %reason, "run failed");
            let run = runs::get(&env.db, runtime_id).await?;
            apps::record_run_outcome(&env.db, &run.app_id, RunStatus::Failed, run.started_at.unwrap_or(run.created_at))
                .await?;
        }
    }
    Ok(runs::get(&env.db, runtime_id).await?)
}
