//! Ending runs whose worker is gone. A run stays RUNNING when the process that
//! would have recorded its end died with it (the supervisor and the worker
//! killed together, a machine reboot). `reap_orphans` finds RUNNING runs of
//! this host whose worker process no longer exists and ends them FAILED with
//! reason `orphaned`, counting the failure on the app. `dc-host runs reap`
//! calls it, and so does every long-running command when it starts. Ending a
//! run releases its proxy reservations; reaping also releases expired ones.
//!
//! A worker is identified by its pid *and* its command line (which carries the
//! run id), so a recycled pid belonging to another process does not keep a
//! dead run alive.

use dc_core::RuntimeId;
use dc_core::enums::RunStatus;
use dc_core::runs::{self, RunRow};

use crate::{HostEnv, RuntimeError};

/// What `/proc` says about a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Running this run.
    Alive,
    /// Exited, not yet collected by its parent, a dc-host supervisor that is
    /// about to record how it ended.
    Zombie,
    /// No process with that pid runs this run.
    Gone,
}

/// The first word of a process's command line (its program), if it runs.
fn program_of(pid: &str) -> Option<String> {
    let cmdline = std::fs::read(std::path::Path::new("/proc").join(pid).join("cmdline")).ok()?;
    let first = cmdline.split(|b| *b == 0).next()?;
    let path = String::from_utf8_lossy(first).into_owned();
    Some(path.rsplit('/').next().unwrap_or_default().to_string())
}

/// The state of the worker process `pid` of run `runtime_id` on this machine.
pub fn worker_state(pid: i64, runtime_id: &RuntimeId) -> WorkerState {
    let Ok(pid) = u32::try_from(pid) else { return WorkerState::Gone };
    let proc_dir = std::path::Path::new("/proc").join(pid.to_string());
    // state and parent pid follow the parenthesised command name in /proc/PID/stat
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok();
    let fields: Vec<String> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().take(2).map(str::to_string).collect())
        .unwrap_or_default();
    match fields.first().map(String::as_str) {
        None => WorkerState::Gone,
        Some("Z") | Some("X") => {
            // a zombie still held by its dc-host supervisor is about to be recorded;
            // one adopted by init (its supervisor died) will never be
            let parent = fields.get(1).and_then(|ppid| program_of(ppid));
            if parent.as_deref() == Some("dc-host") { WorkerState::Zombie } else { WorkerState::Gone }
        }
        Some(_) => {
            let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
            let runs_it = cmdline.split(|b| *b == 0).any(|arg| arg == runtime_id.as_bytes());
            if runs_it { WorkerState::Alive } else { WorkerState::Gone }
        }
    }
}

/// The reason recorded for an orphaned run.
pub fn orphan_reason(run: &RunRow) -> String {
    format!(
        "orphaned: its worker (pid {} on {}) is gone without recording how the run ended (was the dc-host that ran it killed?)",
        run.worker_pid.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into()),
        run.host_name
    )
}

/// Ends one RUNNING run of this host as orphaned if its worker is gone;
/// returns true if it did.
pub async fn reap_run(env: &HostEnv, run: &RunRow) -> Result<bool, RuntimeError> {
    if run.status != RunStatus::Running.as_str() || run.host_name != env.settings.host_name() {
        return Ok(false);
    }
    let state = run.worker_pid.map(|pid| worker_state(pid, &run.runtime_id)).unwrap_or(WorkerState::Gone);
    if state != WorkerState::Gone {
        return Ok(false);
    }
    let reason = orphan_reason(run);
    let ended = crate::supervisor::finish_and_count(env, &run.runtime_id, RunStatus::Failed, &reason).await?;
    if ended {
        tracing::warn!(runtime_id = %run.runtime_id, app_id = %run.app_id, "{reason}");
    }
    Ok(ended)
}

/// Ends every orphaned run of this host (releasing its proxy reservations,
/// see `supervisor::finish_and_count`) and releases expired reservations of
/// any host; returns the runs it ended.
pub async fn reap_orphans(env: &HostEnv) -> Result<Vec<RunRow>, RuntimeError> {
    let expired = dc_core::proxy_store::expire(&env.db, chrono::Utc::now()).await?;
    if expired > 0 {
        tracing::info!(expired, "expired proxy reservations released");
    }
    let mut reaped = Vec::new();
    for run in runs::running_on(&env.db, &env.settings.host_name()).await? {
        if reap_run(env, &run).await? {
            reaped.push(runs::get(&env.db, &run.runtime_id).await?);
        }
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_recognised_by_pid_and_command_line() {
        let me = i64::from(std::process::id());
        // this test binary's command line holds its own path, not a run id
        let exe = RuntimeId::from(std::env::args().next().expect("argv[0]"));
        assert_eq!(worker_state(me, &exe), WorkerState::Alive);
        assert_eq!(
            worker_state(me, &RuntimeId::from("0123456789abcdef0123456789abcdef")),
            WorkerState::Gone,
            "pid reused by another process"
        );
        assert_eq!(worker_state(-1, &exe), WorkerState::Gone);
    }

    /// Blocks until `pid` (our child) has exited, without collecting it.
    #[allow(unsafe_code)]
    fn wait_exit_keep_zombie(pid: u32) {
        // SAFETY: waitid writes only into the siginfo we own; WNOWAIT leaves the
        // child collectable.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        assert_eq!(rc, 0, "waitid: {}", std::io::Error::last_os_error());
    }

    #[test]
    fn an_exited_child_not_held_by_a_dc_host_supervisor_is_gone() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        wait_exit_keep_zombie(child.id());
        let pid = i64::from(child.id());
        // its parent is this test binary, not dc-host: nobody will record the run
        let argv0 = RuntimeId::from("true");
        assert_eq!(worker_state(pid, &argv0), WorkerState::Gone);
        child.wait().expect("collect");
        assert_eq!(worker_state(pid, &argv0), WorkerState::Gone);
    }
}
