//! Asking a run to stop (`dc-host runs stop`, `POST /api/v1/runs/{id}/stop`):
//! a run whose worker is gone is ended as orphaned (nothing could ever see the
//! request), a run that has not started is ended STOPPED at once, and a
//! running run gets `stop_requested`, which its worker polls (on this host or
//! another one that shares the database).

use dc_core::enums::RunStatus;
use dc_core::runs::{self, RunRow};

use crate::{HostEnv, RuntimeError};

/// What asking a run to stop did.
#[derive(Debug, Clone)]
pub enum StopOutcome {
    /// The run's worker was gone, so nothing could stop it; it was ended
    /// FAILED as orphaned (the row as it is now).
    Orphaned(RunRow),
    /// The run had not started; it is STOPPED now.
    StoppedBeforeStart(RunRow),
    /// Stop requested; the worker stops at the next item. `remote` names the
    /// other host its worker runs on.
    Requested {
        /// The run.
        run: RunRow,
        /// The host the worker runs on when it is not this one.
        remote: Option<String>,
    },
    /// The run had already ended (the row as it is now).
    NotRunning(RunRow),
}

/// Asks the run `spec` (its id or a unique prefix of 6+ characters, as a user
/// typed it) to stop.
pub async fn stop_run(env: &HostEnv, spec: &str) -> Result<StopOutcome, RuntimeError> {
    let r = runs::get(&env.db, spec).await?;
    // a run whose worker is gone would never see the request
    if crate::reap::reap_run(env, &r).await? {
        return Ok(StopOutcome::Orphaned(runs::get(&env.db, &r.runtime_id).await?));
    }
    if r.status == RunStatus::Pending.as_str() {
        if crate::supervisor::finish_and_count(env, &r.runtime_id, RunStatus::Stopped, "stopped before it started")
            .await?
        {
            return Ok(StopOutcome::StoppedBeforeStart(runs::get(&env.db, &r.runtime_id).await?));
        }
    } else if r.status == RunStatus::Running.as_str() && r.host_name != env.settings.host_name() {
        runs::request_stop(&env.db, &r.runtime_id).await?;
        let remote = Some(r.host_name.clone());
        return Ok(StopOutcome::Requested { run: r, remote });
    }
    if runs::request_stop(&env.db, &r.runtime_id).await? {
        Ok(StopOutcome::Requested { run: r, remote: None })
    } else {
        Ok(StopOutcome::NotRunning(runs::get(&env.db, &r.runtime_id).await?))
    }
}
