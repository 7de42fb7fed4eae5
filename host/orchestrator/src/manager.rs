//! The serve loop: heartbeat, operator commands, due schedules, the runs this
//! host supervises, and graceful shutdown. Every claim goes through the
//! database (`apps::claim_command`, `apps::claim_next_run`), so two hosts that
//! see the same pending command or due app start it once. With a broker
//! configured, a consumer task (`commands_mq`) records command messages in
//! the database and wakes the loop, which then claims them at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dc_core::apps::{self, AppRow};
use dc_core::enums::{AlertSeverity, CmdName, FatalFlag, RunStatus};
use dc_core::{AppId, RuntimeId, hosts, runs};
use dc_runtime::supervisor::{self, Interrupt, RunOptions, SuperviseOptions};
use dc_runtime::{HostEnv, RuntimeError};
use dc_scheduler::{Clock, Jitter, MissedPolicy, Schedule};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// How `serve` behaves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How often it looks at schedules and commands (and writes its heartbeat).
    pub tick: Duration,
    /// How long running runs may go on after a shutdown was asked for, before
    /// they are told to stop (and killed after `runs.stop_grace_secs`).
    pub grace: Duration,
    /// What happens to fire times missed while no host was serving.
    pub missed: MissedPolicy,
    /// Another host whose heartbeat is older than this is taken for dead:
    /// its RUNNING runs are ended as orphaned.
    pub host_timeout: Duration,
    /// Each app's scheduled runs start up to this much after their fire
    /// time, by a delay that depends on the app and the fire time only
    /// (`dc_scheduler::Jitter`), so apps on one schedule do not all start at
    /// once and every host computes the same time.
    pub jitter: Jitter,
    /// Notified when a command was queued in this process (by the REST API
    /// it serves), so the loop claims it at once instead of at the next tick.
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// Counters for Prometheus (served by the REST API's `/metrics`).
    pub metrics: Option<crate::metrics::ServeMetrics>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tick: Duration::from_secs(1),
            grace: Duration::from_secs(30),
            missed: MissedPolicy::Skip,
            host_timeout: Duration::from_secs(60),
            jitter: Jitter::new(Duration::ZERO),
            wake: None,
            metrics: None,
        }
    }
}

/// What the manager did, for the operator's terminal (and tests, which wait on
/// these events instead of on the clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Serving: orphaned runs reaped, heartbeat written, claiming work.
    Serving {
        /// This host.
        host: String,
    },
    /// A run an earlier host left RUNNING ended as orphaned.
    Reaped {
        /// The run.
        runtime_id: RuntimeId,
    },
    /// A command was claimed.
    Command {
        /// `group/parent/name`.
        app: String,
        /// The command.
        command: String,
    },
    /// A run was started.
    Started {
        /// `group/parent/name`.
        app: String,
        /// The run.
        runtime_id: RuntimeId,
        /// `schedule` or `command START` / `command RESTART`.
        cause: String,
    },
    /// A run this host supervised ended.
    Ended {
        /// `group/parent/name`.
        app: String,
        /// The run.
        runtime_id: RuntimeId,
        /// Its status.
        status: String,
        /// Why, if not a plain success.
        reason: Option<String>,
    },
    /// An app was disabled after too many failed runs in a row (and alerts went out).
    Disabled {
        /// `group/parent/name`.
        app: String,
        /// Failed runs in a row.
        failures: i64,
    },
    /// Something due was left unclaimed because this host runs as many runs
    /// as it may (`runs.max_runs_per_host`); it starts when a run ends, or on
    /// another host with room.
    Deferred {
        /// `group/parent/name`.
        app: String,
        /// What waits, and why.
        reason: String,
    },
    /// Something due was not started, and why.
    Skipped {
        /// `group/parent/name`.
        app: String,
        /// Why.
        reason: String,
    },
    /// Old runs, logs and function calls were deleted (`runs.retention_days`).
    Purged {
        /// What was deleted.
        purged: dc_core::retention::Purged,
    },
    /// A failure the loop survived.
    Error {
        /// What failed.
        message: String,
    },
    /// Consuming commands from RabbitMQ (`broker.url`).
    BrokerConnected {
        /// The queue.
        queue: String,
    },
    /// The broker connection failed or dropped; serve reconnects after a
    /// wait (commands still arrive through the database meanwhile).
    BrokerDown {
        /// What happened.
        error: String,
        /// Failed attempts in a row.
        attempt: u32,
        /// The wait before the next attempt.
        retry_in_ms: u64,
    },
    /// A command message was recorded (or, if `recorded`, the CLI had
    /// recorded it) and the manager woken.
    Message {
        /// The message id.
        id: String,
        /// The app as the message named it.
        app: String,
        /// The command.
        command: String,
        /// The sender had queued it in the database already.
        recorded: bool,
    },
    /// A command message was malformed or named no app: rejected to the
    /// dead-letter queue.
    MessageRejected {
        /// Its `message_id` property, if any.
        message_id: Option<String>,
        /// What was wrong.
        reason: String,
    },
    /// A command message could not be recorded (database error): requeued.
    MessageRequeued {
        /// Its id.
        message_id: String,
        /// Why.
        reason: String,
    },
    /// Shutdown asked for: no more claims; waiting for the runs.
    ShuttingDown {
        /// Runs still going.
        running: usize,
    },
    /// Everything ended; the host is recorded as STOPPED.
    Stopped,
}

/// An app whose fire time `from` has come; `to` is its next one.
struct Due {
    app: AppRow,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
}

/// What to do about an app's schedule at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing yet.
    Wait,
    /// Store the first `next_run` (the schedule was just set or the host
    /// started): no run now.
    SetFirst(Option<DateTime<Utc>>),
    /// Move `next_run` from the planned time to the next one; start a run if
    /// `run_now`; `missed` fire times passed without a run.
    Advance {
        /// The stored planned time.
        from: DateTime<Utc>,
        /// The next one.
        to: Option<DateTime<Utc>>,
        /// Start a run now.
        run_now: bool,
        /// Fire times that passed without a run.
        missed: u32,
    },
}

/// The scheduling decision for one app (pure: the caller claims it). `key`
/// (the app id) and `jitter` delay each fire time by the app's jitter: a run
/// planned for `t` is due at `t + delay`, and its lateness (for the missed-run
/// policy) is counted from there.
pub fn plan(
    schedule: &Schedule,
    next_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    policy: MissedPolicy,
    jitter: &Jitter,
    key: &str,
) -> Plan {
    match next_run {
        None => Plan::SetFirst(schedule.next_after(now)),
        Some(planned) => {
            let delay = chrono::TimeDelta::from_std(jitter.delay(schedule, planned, key)).unwrap_or_default();
            if planned + delay > now {
                return Plan::Wait;
            }
            let due = schedule.due(planned, now - delay, policy);
            Plan::Advance { from: planned, to: due.next_run, run_now: due.run_now, missed: due.missed }
        }
    }
}

struct Running {
    app_id: AppId,
    app: String,
    interrupt: watch::Sender<(Interrupt, String)>,
}

struct Manager {
    env: HostEnv,
    clock: Arc<dyn Clock + Send + Sync>,
    opts: ServeOptions,
    events: mpsc::UnboundedSender<Event>,
    host: String,
    started: DateTime<Utc>,
    running: HashMap<RuntimeId, Running>,
    tasks: JoinSet<(RuntimeId, Result<runs::RunRow, RuntimeError>)>,
    /// Apps to start again when their current run ends (RESTART).
    restart: Vec<AppId>,
    notify: crate::notify::Notifications,
    /// Notifications still being sent.
    sending: Vec<tokio::task::JoinHandle<()>>,
    /// When retention last ran.
    purged_at: Option<DateTime<Utc>>,
    /// Work left unclaimed because this host was full: look again when a run ends.
    deferred: bool,
    /// What a `deferred` event was already emitted for (app and fire time or command).
    deferred_seen: std::collections::HashSet<String>,
}

impl Manager {
    fn alert(
        &mut self,
        event: &str,
        severity: dc_core::enums::AlertSeverity,
        title: String,
        body: String,
        data: serde_json::Value,
    ) {
        self.sending.retain(|t| !t.is_finished());
        let notice =
            crate::notify::Notice { event: event.to_string(), severity, title, body, host: self.host.clone(), data };
        self.sending.extend(self.notify.dispatch(notice));
    }

    fn emit(&self, e: Event) {
        match &e {
            Event::Error { message } => tracing::warn!(%message, "serve"),
            other => tracing::info!(event = ?other, "serve"),
        }
        let _ = self.events.send(e);
    }

    async fn heartbeat(&self, state: &str) {
        let now = self.clock.now();
        if let Err(e) = hosts::heartbeat(&self.env.db, &self.host, std::process::id(), state, self.started, now).await {
            self.emit(Event::Error { message: format!("cannot write the heartbeat: {e}") });
        }
    }

    fn is_running(&self, app_id: &AppId) -> bool {
        self.running.values().any(|r| r.app_id == app_id)
    }

    /// Whether this host supervises as many of the app's runs as it may have at once.
    fn app_full(&self, app: &AppRow) -> bool {
        let mine = self.running.values().filter(|r| r.app_id == app.app_id).count();
        mine as i64 >= app.max_concurrent_runs.max(1)
    }

    /// How many more runs this host may start (`runs.max_runs_per_host`).
    fn room(&self) -> usize {
        self.env.settings.runs.runs_per_host().saturating_sub(self.running.len())
    }

    /// Leaves work unclaimed because the host is full, saying so once per `what`.
    fn defer(&mut self, app: &AppRow, what: String) {
        self.deferred = true;
        if self.deferred_seen.insert(format!("{} {what}", app.app_id)) {
            let limit = self.env.settings.runs.runs_per_host();
            self.emit(Event::Deferred {
                app: app.path(),
                reason: format!(
                    "{what}: this host runs {limit} runs at once (runs.max_runs_per_host); it starts when one ends, or on another host with room"
                ),
            });
        }
    }

    async fn start(&mut self, app: &AppRow, cause: &str) {
        if self.app_full(app) {
            self.emit(Event::Skipped {
                app: app.path(),
                reason: format!("{cause}: its previous run is still running"),
            });
            return;
        }
        match runs::active_for_app(&self.env.db, &app.app_id).await {
            Ok(active) if active.len() as i64 >= app.max_concurrent_runs.max(1) => {
                self.emit(Event::Skipped {
                    app: app.path(),
                    reason: format!(
                        "{cause}: run {} is still running (on host {})",
                        active[0].runtime_id, active[0].host_name
                    ),
                });
                return;
            }
            Ok(_) => {}
            Err(e) => {
                self.emit(Event::Error { message: format!("{}: {e}", app.path()) });
                return;
            }
        }
        let opts = RunOptions { args: None, threads: None, time_limit: None };
        let runtime_id = match supervisor::create_run(&self.env, app, &opts).await {
            Ok(id) => id,
            Err(e) => {
                self.emit(Event::Skipped { app: app.path(), reason: format!("{cause}: {e}") });
                return;
            }
        };
        self.launch(app, runtime_id, cause);
    }

    /// Supervises a created run in its own task.
    fn launch(&mut self, app: &AppRow, runtime_id: RuntimeId, cause: &str) {
        let (tx, rx) = watch::channel((Interrupt::None, String::new()));
        let env = self.env.clone();
        let rid = runtime_id.clone();
        self.tasks.spawn(async move {
            let sup = SuperviseOptions { time_limit: None, interrupt: Some(rx) };
            let r = supervisor::supervise_with(&env, &rid, sup).await;
            (rid, r)
        });
        self.running.insert(runtime_id.clone(), Running { app_id: app.app_id.clone(), app: app.path(), interrupt: tx });
        self.deferred_seen.retain(|k| !k.starts_with(&format!("{} ", app.app_id)));
        if let Some(m) = &self.opts.metrics {
            m.started(cause);
        }
        self.emit(Event::Started { app: app.path(), runtime_id, cause: cause.to_string() });
    }

    /// Starts the apps whose fire time has come in this pass. The reads
    /// (active plugin, arguments) come first; then one write transaction
    /// claims every fire time and creates the runs, so on SQLite the apps of
    /// one instant cost one commit instead of two each, and a fire time is
    /// never claimed without its run being created (or the reason recorded).
    async fn start_due(&mut self, due: Vec<Due>) -> Result<(), RuntimeError> {
        if due.is_empty() {
            return Ok(());
        }
        let opts = RunOptions { args: None, threads: None, time_limit: None };
        let mut prepared = Vec::with_capacity(due.len());
        for d in due {
            let run = if self.app_full(&d.app) {
                Err("its previous run is still running".to_string())
            } else {
                supervisor::prepare_run(&self.env, &d.app, &opts).await.map_err(|e| e.to_string())
            };
            prepared.push((d, run));
        }
        enum Decision {
            Start(AppRow, RuntimeId),
            Skip(AppRow, String),
        }
        let mut decided = Vec::with_capacity(prepared.len());
        let mut tx = self.env.db.begin_write().await?;
        for (d, run) in prepared {
            if !apps::claim_next_run_in(&mut tx, &d.app.app_id, Some(d.from), d.to).await? {
                continue; // another host claimed it
            }
            let run = match run {
                Ok(r) => r,
                Err(reason) => {
                    decided.push(Decision::Skip(d.app, format!("schedule: {reason}")));
                    continue;
                }
            };
            let active = runs::active_for_app_in(&mut tx, &d.app.app_id).await?;
            if let Some(a) = active.first().filter(|_| active.len() as i64 >= d.app.max_concurrent_runs.max(1)) {
                let reason = format!("schedule: run {} is still running (on host {})", a.runtime_id, a.host_name);
                decided.push(Decision::Skip(d.app, reason));
                continue;
            }
            let id = runs::create_in(&mut tx, &run.new_run()).await?;
            decided.push(Decision::Start(d.app, id));
        }
        tx.commit().await?;
        for d in decided {
            match d {
                Decision::Start(app, id) => self.launch(&app, id, "schedule"),
                Decision::Skip(app, reason) => self.emit(Event::Skipped { app: app.path(), reason }),
            }
        }
        Ok(())
    }

    async fn stop_app(&mut self, app: &AppRow, why: &str) {
        let mine: Vec<&Running> = self.running.values().filter(|r| r.app_id == app.app_id).collect();
        for r in &mine {
            let _ = r.interrupt.send((Interrupt::Stop, why.to_string()));
        }
        // runs other hosts supervise get the stop through the database
        if let Ok(active) = runs::active_for_app(&self.env.db, &app.app_id).await {
            for run in active.iter().filter(|r| !self.running.contains_key(&r.runtime_id)) {
                if let Err(e) = runs::request_stop(&self.env.db, &run.runtime_id).await {
                    self.emit(Event::Error {
                        message: format!("{}: cannot ask run {} to stop: {e}", app.path(), run.runtime_id),
                    });
                }
            }
        }
    }

    /// Disables an app whose runs failed `runs.max_consecutive_failures`
    /// times in a row, and alerts.
    async fn fatal_check(&mut self, app_id: &AppId, path: &str) {
        let max = i64::from(self.env.settings.runs.max_consecutive_failures);
        let app = match apps::get_app(&self.env.db, app_id).await {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => {
                self.emit(Event::Error { message: format!("{path}: {e}") });
                return;
            }
        };
        if max == 0 || app.fail_count < max || !app.enabled {
            return;
        }
        let msg = format!(
            "disabled after {} failed runs in a row (runs.max_consecutive_failures = {max}); the last: {}",
            app.fail_count,
            app.run_status.as_deref().unwrap_or("FAILED")
        );
        if let Err(e) = apps::set_fatal(&self.env.db, app_id, FatalFlag::RepeatedFailures, Some(&msg)).await {
            self.emit(Event::Error { message: format!("{path}: cannot disable it: {e}") });
            return;
        }
        self.emit(Event::Disabled { app: path.to_string(), failures: app.fail_count });
        let body = format!("{msg}. Fix it, then `dc-host apps enable {path}`.");
        let data = serde_json::json!({"app": path, "failures": app.fail_count});
        self.alert("app_disabled", AlertSeverity::Critical, format!("{path} was disabled"), body, data);
    }

    /// Ends the RUNNING runs of hosts whose heartbeat stopped (they were
    /// killed, or their machine went away) as FAILED, orphaned.
    async fn reap_stale_hosts(&mut self) -> Result<(), RuntimeError> {
        let limit = chrono::TimeDelta::from_std(self.opts.host_timeout).unwrap_or(chrono::TimeDelta::MAX);
        let before = self.clock.now() - limit;
        for h in hosts::stale(&self.env.db, &self.host, before).await? {
            for run in runs::running_on(&self.env.db, &h.host_name).await? {
                let reason = format!(
                    "orphaned: its host {} stopped sending heartbeats (last {}), so nobody supervises the run any more",
                    h.host_name,
                    h.heartbeat_at.to_rfc3339()
                );
                if supervisor::finish_and_count(&self.env, &run.runtime_id, RunStatus::Failed, &reason).await? {
                    self.emit(Event::Reaped { runtime_id: run.runtime_id.clone() });
                }
            }
        }
        Ok(())
    }

    /// Hourly (and at start): deletes what is older than `runs.retention_days`,
    /// and audit-log entries older than `api.audit_retention_days`.
    async fn retention(&mut self) -> Result<(), RuntimeError> {
        let days = self.env.settings.runs.retention_days;
        let audit_days = self.env.settings.api.audit_retention_days;
        let now = self.clock.now();
        if (days == 0 && audit_days == 0) || self.purged_at.is_some_and(|t| now - t < chrono::TimeDelta::hours(1)) {
            return Ok(());
        }
        self.purged_at = Some(now);
        let mut purged = if days == 0 {
            dc_core::retention::Purged::default()
        } else {
            dc_core::retention::purge(&self.env.db, now - chrono::TimeDelta::days(i64::from(days)), 10_000).await?
        };
        if audit_days > 0 {
            let cutoff = now - chrono::TimeDelta::days(i64::from(audit_days));
            purged.audit_entries = dc_core::retention::purge_audit(&self.env.db, cutoff, 10_000).await?;
        }
        if !purged.is_empty() {
            self.emit(Event::Purged { purged });
        }
        Ok(())
    }

    async fn commands(&mut self) -> Result<(), RuntimeError> {
        for (app_id, cmd) in apps::pending_commands(&self.env.db).await? {
            let starts = cmd == CmdName::Start || (cmd == CmdName::Restart && !self.is_running(&app_id));
            if starts && self.room() == 0 {
                // left PENDING: claimed when a run ends here, or by a host with room
                if let Some(app) = apps::get_app(&self.env.db, &app_id).await? {
                    self.defer(&app, format!("command {}", cmd.as_str()));
                }
                continue;
            }
            if !apps::claim_command(&self.env.db, &app_id, cmd).await? {
                continue;
            }
            let Some(app) = apps::get_app(&self.env.db, &app_id).await? else { continue };
            self.emit(Event::Command { app: app.path(), command: cmd.as_str().to_string() });
            match cmd {
                CmdName::Start => self.start(&app, "command START").await,
                CmdName::Stop => self.stop_app(&app, "stopped by the STOP command").await,
                CmdName::Restart => {
                    if self.is_running(&app.app_id) {
                        self.restart.push(app.app_id.clone());
                        self.stop_app(&app, "stopped by the RESTART command").await;
                    } else {
                        self.start(&app, "command RESTART").await;
                    }
                }
                // enabling also clears an automatic disable (`fatal_flag`)
                CmdName::Enable => apps::set_fatal(&self.env.db, &app_id, FatalFlag::None, None).await?,
                CmdName::Disable => apps::set_enabled(&self.env.db, &app_id, false).await?,
            }
        }
        Ok(())
    }

    /// Starts the apps whose (jittered) fire time has come, and returns the
    /// earliest fire time still ahead, so the loop can wake exactly then
    /// instead of at its next tick.
    async fn schedules(&mut self) -> Result<Option<DateTime<Utc>>, RuntimeError> {
        let now = self.clock.now();
        let mut earliest: Option<DateTime<Utc>> = None;
        let mut due = Vec::new();
        for app in apps::list_apps(&self.env.db).await? {
            if !app.enabled || app.active_hash.is_none() {
                continue;
            }
            let schedule = match dc_runtime::schedule::app_schedule(&app) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    self.emit(Event::Error { message: e.to_string() });
                    continue;
                }
            };
            let jitter = self.opts.jitter;
            let due_at = |t: Option<DateTime<Utc>>| {
                t.map(|t| t + chrono::TimeDelta::from_std(jitter.delay(&schedule, t, &app.app_id)).unwrap_or_default())
            };
            let ahead = match plan(&schedule, app.next_run, now, self.opts.missed, &jitter, &app.app_id) {
                Plan::Wait => due_at(app.next_run),
                Plan::SetFirst(next) => {
                    apps::claim_next_run(&self.env.db, &app.app_id, None, next).await?;
                    due_at(next)
                }
                Plan::Advance { from, to, run_now: true, .. } => {
                    if due.len() >= self.room() {
                        // left unclaimed (not counted as the earliest fire time ahead):
                        // looked at again when a run ends
                        self.defer(&app, format!("schedule (fire time {})", from.to_rfc3339()));
                        continue;
                    }
                    let next = due_at(to);
                    due.push(Due { app, from, to });
                    next
                }
                Plan::Advance { from, to, run_now: false, missed } => {
                    if !apps::claim_next_run(&self.env.db, &app.app_id, Some(from), to).await? {
                        continue; // another host claimed it
                    }
                    if missed > 0 {
                        self.emit(Event::Skipped {
                            app: app.path(),
                            reason: format!(
                                "{missed} fire time(s) passed while no host was serving (missed-run policy: skip)"
                            ),
                        });
                    }
                    due_at(to)
                }
            };
            earliest = match (earliest, ahead) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.start_due(due).await?;
        Ok(earliest)
    }

    /// How long the loop may sleep before the next scheduling pass: until the
    /// earliest fire time, at most one tick.
    fn until(&self, next: Option<DateTime<Utc>>) -> Duration {
        let wait = next.map_or(self.opts.tick, |t| (t - self.clock.now()).to_std().unwrap_or(Duration::ZERO));
        wait.min(self.opts.tick)
    }

    async fn ended(&mut self, runtime_id: RuntimeId, result: Result<runs::RunRow, RuntimeError>) {
        let Some(r) = self.running.remove(&runtime_id) else { return };
        let (status, reason, run) = match result {
            Ok(run) => (run.status.clone(), run.reason.clone(), Some(run)),
            Err(e) => (RunStatus::Failed.as_str().to_string(), Some(e.to_string()), None),
        };
        // counted before the event goes out: whoever sees the run end sees it counted
        if let Some(m) = &self.opts.metrics {
            let seconds = run.as_ref().and_then(|x| match (x.started_at, x.ended_at) {
                (Some(a), Some(b)) => Some((b - a).num_milliseconds().max(0) as f64 / 1000.0),
                _ => None,
            });
            let rows = run.as_ref().map_or([0; 4], |x| [x.inserted, x.updated, x.deleted, x.unchanged]);
            let ops = ["inserted", "updated", "deleted", "unchanged"];
            m.ended(&status, seconds, [(ops[0], rows[0]), (ops[1], rows[1]), (ops[2], rows[2]), (ops[3], rows[3])]);
            // the worker stored its final request metrics before it exited
            match runs::metrics(&self.env.db, &runtime_id).await.map(|d| d.map(dc_net::MetricsSnapshot::from_json)) {
                Ok(Some(Ok(snapshot))) => m.requests(&snapshot),
                Ok(None) => {}
                Ok(Some(Err(e))) => tracing::warn!(%runtime_id, error = %e, "request metrics not counted"),
                Err(e) => tracing::warn!(%runtime_id, error = %e, "cannot read the run's request metrics"),
            }
        }
        self.emit(Event::Ended {
            app: r.app.clone(),
            runtime_id: runtime_id.clone(),
            status: status.clone(),
            reason: reason.clone(),
        });
        let counts = run.as_ref().map(|x| {
            serde_json::json!({"inserted": x.inserted, "updated": x.updated, "deleted": x.deleted, "unchanged": x.unchanged})
        });
        let data = serde_json::json!({"app": r.app, "runtime_id": runtime_id, "status": status, "reason": reason, "counts": counts});
        if status == RunStatus::Failed.as_str() {
            let why = reason.clone().unwrap_or_default();
            self.alert("run_failed", AlertSeverity::Error, format!("{}: run failed", r.app), why, data.clone());
            self.fatal_check(&r.app_id, &r.app).await;
        } else if status == RunStatus::Success.as_str() && self.notify.run_finished {
            let body = counts.map(|c| c.to_string()).unwrap_or_default();
            self.alert("run_finished", AlertSeverity::Info, format!("{}: run finished", r.app), body, data);
        }
        if let Some(i) = self.restart.iter().position(|a| *a == r.app_id) {
            self.restart.remove(i);
            if let Ok(Some(app)) = apps::get_app(&self.env.db, &r.app_id).await {
                self.start(&app, "command RESTART").await;
            }
        }
    }
}

/// Serves until `shutdown` turns true: see the module docs. Events go to
/// `events` as they happen; notices to `notify` (None: the channels of
/// `settings.notify`).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    env: HostEnv,
    clock: Arc<dyn Clock + Send + Sync>,
    opts: ServeOptions,
    notify: Option<crate::notify::Notifications>,
    mut shutdown: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(), RuntimeError> {
    let host = env.settings.host_name();
    let started = clock.now();
    let mut m = Manager {
        env,
        clock,
        opts,
        events,
        host: host.clone(),
        started,
        running: HashMap::new(),
        tasks: JoinSet::new(),
        restart: Vec::new(),
        notify: crate::notify::Notifications::default(),
        sending: Vec::new(),
        purged_at: None,
        deferred: false,
        deferred_seen: Default::default(),
    };
    m.notify = match notify {
        Some(n) => n,
        None => crate::notify::Notifications::from_settings(&m.env.settings.notify).map_err(RuntimeError::Refused)?,
    };
    for r in dc_runtime::reap::reap_orphans(&m.env).await? {
        m.emit(Event::Reaped { runtime_id: r.runtime_id });
    }
    m.heartbeat("SERVING").await;
    let data = serde_json::json!({"host": host});
    m.alert("host_started", AlertSeverity::Info, format!("dc-host serve started on {host}"), String::new(), data);
    m.emit(Event::Serving { host: host.clone() });
    // RabbitMQ, when configured: its messages record commands and wake the loop
    let wake = m.opts.wake.clone().unwrap_or_default();
    let consumer = dc_broker::Broker::from_settings(&m.env.settings.broker).map(|b| {
        crate::commands_mq::start(b, m.env.db.clone(), &host, wake.clone(), m.events.clone(), shutdown.clone())
    });
    let mut tick = tokio::time::interval(m.opts.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // wakes the loop at the earliest fire time, between ticks
    let due = tokio::time::sleep(m.opts.tick);
    tokio::pin!(due);
    while !*shutdown.borrow() {
        tokio::select! {
            _ = tick.tick() => {
                m.heartbeat("SERVING").await;
                if let Err(e) = m.retention().await {
                    m.emit(Event::Error { message: format!("retention: {e}") });
                }
                if let Err(e) = m.reap_stale_hosts().await {
                    m.emit(Event::Error { message: format!("reaping runs of stopped hosts: {e}") });
                }
                if let Err(e) = m.commands().await {
                    m.emit(Event::Error { message: format!("commands: {e}") });
                }
                let next = m.schedules().await.unwrap_or_else(|e| {
                    m.emit(Event::Error { message: format!("schedules: {e}") });
                    None
                });
                due.as_mut().reset(tokio::time::Instant::now() + m.until(next));
            }
            () = &mut due => {
                let next = m.schedules().await.unwrap_or_else(|e| {
                    m.emit(Event::Error { message: format!("schedules: {e}") });
                    None
                });
                due.as_mut().reset(tokio::time::Instant::now() + m.until(next));
            }
            // a command message arrived: claim pending commands now, not at the next tick
            () = wake.notified() => {
                if let Err(e) = m.commands().await {
                    m.emit(Event::Error { message: format!("commands: {e}") });
                }
            }
            Some(done) = m.tasks.join_next(), if !m.tasks.is_empty() => {
                match done {
                    Ok((rid, r)) => m.ended(rid, r).await,
                    Err(e) => m.emit(Event::Error { message: format!("a supervising task failed: {e}") }),
                }
                if std::mem::take(&mut m.deferred) {
                    // a run ended, so there is room for what waited
                    if let Err(e) = m.commands().await {
                        m.emit(Event::Error { message: format!("commands: {e}") });
                    }
                    due.as_mut().reset(tokio::time::Instant::now());
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    // graceful shutdown: no more claims; runs may finish within the grace period
    if let Some(mut c) = consumer {
        // it saw the same shutdown and closes its connection (unacked messages
        // go back); one still connecting is dropped
        if tokio::time::timeout(Duration::from_secs(5), &mut c).await.is_err() {
            c.abort();
        }
    }
    m.restart.clear();
    m.heartbeat("STOPPING").await;
    m.emit(Event::ShuttingDown { running: m.running.len() });
    let deadline = tokio::time::Instant::now() + m.opts.grace;
    let mut told = false;
    while !m.tasks.is_empty() {
        tokio::select! {
            Some(done) = m.tasks.join_next() => {
                match done {
                    Ok((rid, r)) => m.ended(rid, r).await,
                    Err(e) => m.emit(Event::Error { message: format!("a supervising task failed: {e}") }),
                }
            }
            () = tokio::time::sleep_until(deadline), if !told => {
                told = true;
                let why = format!(
                    "dc-host serve on {} was shut down and the run did not end within the grace period of {}s",
                    m.host,
                    m.opts.grace.as_secs()
                );
                for r in m.running.values() {
                    let _ = r.interrupt.send((Interrupt::Stop, why.clone()));
                }
            }
        }
    }
    m.heartbeat("STOPPED").await;
    let host = m.host.clone();
    m.alert(
        "host_stopped",
        AlertSeverity::Info,
        format!("dc-host serve stopped on {host}"),
        String::new(),
        serde_json::json!({"host": host}),
    );
    // the last notices go out before the process ends (bounded: retries are)
    for t in std::mem::take(&mut m.sending) {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    m.emit(Event::Stopped);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, h, m, s).single().expect("a time")
    }

    const NONE: Jitter = Jitter::new(Duration::ZERO);

    #[test]
    fn jitter_delays_each_app_by_its_own_stable_amount() {
        let s = Schedule::cron("*/15 * * * *", None).expect("cron");
        let j = Jitter::new(Duration::from_secs(60));
        let planned = at(10, 15, 0);
        let delays: Vec<chrono::TimeDelta> = ["app-a", "app-b", "app-c", "app-d"]
            .iter()
            .map(|k| chrono::TimeDelta::from_std(j.delay(&s, planned, k)).expect("delta"))
            .collect();
        assert!(delays.iter().all(|d| *d <= chrono::TimeDelta::seconds(60)), "{delays:?}");
        assert!(delays.windows(2).any(|w| w[0] != w[1]), "apps get different delays: {delays:?}");
        for (k, d) in ["app-a", "app-b", "app-c", "app-d"].iter().zip(&delays) {
            let due = planned + *d;
            // one millisecond before its jittered time the app waits; at it, it runs on the grid
            assert_eq!(
                plan(&s, Some(planned), due - chrono::TimeDelta::milliseconds(1), MissedPolicy::Skip, &j, k),
                Plan::Wait,
                "{k}"
            );
            assert_eq!(
                plan(&s, Some(planned), due, MissedPolicy::Skip, &j, k),
                Plan::Advance { from: planned, to: Some(at(10, 30, 0)), run_now: true, missed: 0 },
                "{k}"
            );
        }
    }

    #[test]
    fn a_new_schedule_is_planned_before_it_runs() {
        let s = Schedule::cron("*/15 * * * *", None).expect("cron");
        assert_eq!(plan(&s, None, at(10, 7, 0), MissedPolicy::Skip, &NONE, "a"), Plan::SetFirst(Some(at(10, 15, 0))));
        assert_eq!(plan(&s, Some(at(10, 15, 0)), at(10, 14, 59), MissedPolicy::Skip, &NONE, "a"), Plan::Wait);
    }

    #[test]
    fn a_due_time_runs_once_and_plans_the_next_without_drift() {
        let s = Schedule::cron("*/15 * * * *", None).expect("cron");
        // the tick came 3 s late: the next time is still on the grid
        assert_eq!(
            plan(&s, Some(at(10, 15, 0)), at(10, 15, 3), MissedPolicy::Skip, &NONE, "a"),
            Plan::Advance { from: at(10, 15, 0), to: Some(at(10, 30, 0)), run_now: true, missed: 0 }
        );
    }

    #[test]
    fn downtime_skips_or_catches_up_once() {
        let s = Schedule::cron("*/15 * * * *", None).expect("cron");
        match plan(&s, Some(at(8, 0, 0)), at(10, 7, 0), MissedPolicy::Skip, &NONE, "a") {
            Plan::Advance { run_now: false, to: Some(t), missed, .. } => {
                assert_eq!(t, at(10, 15, 0));
                assert!(missed >= 8, "{missed}");
            }
            other => panic!("{other:?}"),
        }
        match plan(&s, Some(at(8, 0, 0)), at(10, 7, 0), MissedPolicy::CatchUpOnce, &NONE, "a") {
            Plan::Advance { run_now: true, to: Some(t), .. } => assert_eq!(t, at(10, 15, 0)),
            other => panic!("{other:?}"),
        }
    }
}
