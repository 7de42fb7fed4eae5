//! The supervisor: starts a run of an app in its own worker process
//! (`dc-worker`, next to `dc-host`) in its own process group, enforces the time limit and
//! optional rlimits, passes the worker's stderr through (capped), stops or
//! kills the group on request, and records how the worker ended — exit code or
//! signal, with a reason that says what happened — so a plugin that panics,
//! aborts, segfaults or hangs only ever takes down its own worker, and every
//! run ends with a true status.
//!
//! The worker's process group holds every process the plugin spawns, so
//! killing the group (time limit, stop, interrupt, end of the run) leaves
//! nothing behind. The worker enforces the time limit too, so a run whose
//! supervisor died still ends (see `worker`); `reap` ends runs whose worker
//! is gone.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use dc_core::apps::{self, AppRow};
use dc_core::enums::RunStatus;
use dc_core::runs::{self, NewRun, RunRow};
use dc_core::{AppId, RuntimeId};
use dc_plugin_api::Manifest;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::worker::{STARTED_LINE, WorkerStart};
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
        RuntimeError::NotFound(format!(
            "{} has no plugin registered yet; put its .so file into {} and run `dc-host reload`",
            app.path(),
            env.settings.plugins_dir().display()
        ))
    })?;
    let version = apps::version_by_hash(&env.db, hash).await?.ok_or_else(|| {
        RuntimeError::NotFound(format!("{}: active plugin {hash} is not in the registry", app.path()))
    })?;
    let manifest: Manifest = serde_json::from_str(&version.manifest).map_err(|e| RuntimeError::Io {
        action: "cannot read the stored manifest of",
        path: app.path().into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok((version, manifest))
}

/// What a run of an app is created with, checked before any write: the
/// active plugin version, validated arguments, threads and this host.
#[derive(Debug, Clone)]
pub struct PreparedRun {
    app_id: AppId,
    plugin_version: String,
    plugin_hash: String,
    args: String,
    threads: i64,
    host_name: String,
}

impl PreparedRun {
    /// The row to insert.
    pub fn new_run(&self) -> NewRun<'_> {
        NewRun {
            app_id: &self.app_id,
            plugin_version: &self.plugin_version,
            plugin_hash: &self.plugin_hash,
            args: &self.args,
            threads: self.threads,
            host_name: &self.host_name,
        }
    }
}

/// Reads the app's active plugin and validates the run's arguments (explicit,
/// else the app's stored ones from `dc-host apps args`, else none).
pub async fn prepare_run(env: &HostEnv, app: &AppRow, opts: &RunOptions) -> Result<PreparedRun, RuntimeError> {
    let (version, manifest) = active_plugin(env, app).await?;
    let args = match &opts.args {
        Some(a) => a.clone(),
        None => crate::schedule::stored_args(app)?.unwrap_or_else(|| Value::Object(Default::default())),
    };
    crate::args::validate(&manifest.args_schema, &args)
        .map_err(|p| RuntimeError::BadArgs { app: app.path(), problems: p.join("; ") })?;
    let threads = opts.threads.unwrap_or(env.settings.runs.threads).max(1);
    Ok(PreparedRun {
        app_id: app.app_id.clone(),
        plugin_version: version.version,
        plugin_hash: version.sha256,
        args: args.to_string(),
        threads: threads as i64,
        host_name: env.settings.host_name(),
    })
}

/// Validates arguments and creates the PENDING run; returns its id.
pub async fn create_run(env: &HostEnv, app: &AppRow, opts: &RunOptions) -> Result<RuntimeId, RuntimeError> {
    let prepared = prepare_run(env, app, opts).await?;
    Ok(runs::create(&env.db, &prepared.new_run()).await?)
}

/// Creates a run of `app` that resumes run `from` (`dc-host run APP --resume
/// ID`) and returns its id. Refused, changing nothing, unless `from` is a run
/// of this app that ended FAILED or STOPPED (a reaped orphan is FAILED), was
/// not resumed already, ran the app's active plugin file and saved work items.
/// The new run keeps `from`'s arguments and takes over its saved items (see
/// `worker`): done items are not collected again, their records are stored
/// with the new ones.
pub async fn create_resumed_run(
    env: &HostEnv,
    app: &AppRow,
    from: &str,
    opts: &RunOptions,
) -> Result<RuntimeId, RuntimeError> {
    let db = &env.db;
    let old = runs::get(db, from).await?;
    let id = &old.runtime_id;
    let path = app.path();
    if old.app_id != app.app_id {
        let owner = apps::get_app(db, &old.app_id).await?.map(|a| a.path()).unwrap_or_else(|| old.app_id.to_string());
        return Err(RuntimeError::Refused(format!(
            "run {id} is a run of {owner}, not of {path}; resume it with `dc-host run {owner} --resume {id}`"
        )));
    }
    match old.status.parse::<RunStatus>().ok() {
        Some(RunStatus::Failed | RunStatus::Stopped) => {}
        Some(RunStatus::Success) => {
            return Err(RuntimeError::Refused(format!(
                "run {id} ended SUCCESS: there is nothing to resume; start a new run with `dc-host run {path}`"
            )));
        }
        _ => {
            return Err(RuntimeError::Conflict(format!(
                "run {id} has not ended (it is {}); stop it first with `dc-host runs stop {id}` (a run whose worker is gone is ended by `dc-host runs reap`)",
                old.status
            )));
        }
    }
    if let Some(by) = runs::resumed_by(db, id).await? {
        return Err(RuntimeError::Conflict(format!(
            "run {id} was already resumed by run {by}; resume that one instead: `dc-host run {path} --resume {by}`"
        )));
    }
    let (version, manifest) = active_plugin(env, app).await?;
    if version.sha256 != old.plugin_hash {
        return Err(RuntimeError::Conflict(format!(
            "run {id} ran {path} {} (plugin file {}), but the active version is {} ({}); a run resumes only with the plugin it started with: activate {} again with `dc-host plugins rollback {path} --to {}`, or start a new run",
            old.plugin_version,
            short(&old.plugin_hash),
            version.version,
            short(&version.sha256),
            old.plugin_version,
            old.plugin_version
        )));
    }
    let saved = dc_core::run_items::counts(db, id).await?;
    if saved.total() == 0 {
        return Err(RuntimeError::Refused(format!(
            "run {id} saved no work items to resume from (it ended before its work list was prepared, or runs.persist_frontier was off); start a new run with `dc-host run {path}`"
        )));
    }
    if opts.args.is_some() {
        return Err(RuntimeError::Refused(format!(
            "a resumed run continues with the arguments of run {id}; leave out --args"
        )));
    }
    let args: Value = serde_json::from_str(&old.args).map_err(|e| {
        RuntimeError::Refused(format!("the arguments of run {id} are unreadable ({e}); start a new run instead"))
    })?;
    crate::args::validate(&manifest.args_schema, &args)
        .map_err(|p| RuntimeError::BadArgs { app: path.clone(), problems: p.join("; ") })?;
    let threads = opts.threads.map_or(old.threads, |t| t.max(1) as i64);
    let host = env.settings.host_name();
    let new = runs::create_resumed(
        db,
        &NewRun {
            app_id: &app.app_id,
            plugin_version: &version.version,
            plugin_hash: &version.sha256,
            args: &old.args,
            threads,
            host_name: &host,
        },
        id,
    )
    .await?;
    Ok(new)
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
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

/// Sends `signal` to every process of the process group `pgid` (a worker and
/// whatever its plugin spawned). A group that no longer exists is not an error.
#[allow(unsafe_code)]
pub fn signal_group(pgid: u32, signal: i32) -> std::io::Result<()> {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return Err(std::io::Error::other(format!("process group {pgid} is out of range")));
    };
    if pgid <= 1 {
        return Err(std::io::Error::other(format!("refusing to signal process group {pgid}")));
    }
    // SAFETY: kill(2) with a negative pid signals a process group; it touches
    // no memory of ours.
    if unsafe { libc::kill(-pgid, signal) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) { Ok(()) } else { Err(e) }
}

/// How a supervised run is being interrupted from outside (Ctrl-C on
/// `dc-host run`, a shutting-down host). Levels only go up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Interrupt {
    /// Carry on.
    None,
    /// Ask the plugin to stop (`should_stop()`); kill the group after the grace period.
    Stop,
    /// Kill the worker's process group now.
    Kill,
}

/// Options of [`supervise_with`].
#[derive(Debug, Clone)]
pub struct SuperviseOptions {
    /// Time limit (default: `runs.time_limit_secs`).
    pub time_limit: Option<Duration>,
    /// Interrupt requests, with a description of their cause for the run's reason.
    pub interrupt: Option<watch::Receiver<(Interrupt, String)>>,
}

/// Bytes of worker stderr passed through to ours before the rest is dropped.
pub const STDERR_PASS_LIMIT: usize = 256 * 1024;
/// Lines of worker stderr kept to explain how it ended.
const STDERR_TAIL_LINES: usize = 20;

/// What the worker wrote on stderr: the last lines and how much was dropped.
#[derive(Debug, Default)]
struct StderrSummary {
    tail: std::collections::VecDeque<String>,
    dropped_bytes: u64,
    /// The last sign of running out of address space, kept apart from the
    /// tail (a backtrace after it would push it out).
    out_of_memory: Option<String>,
    /// The message of the last panic, likewise.
    panic_message: Option<String>,
    /// The worker said it started (read its [`WorkerStart`]).
    started: bool,
    after_panic_header: bool,
}

impl StderrSummary {
    /// Notes one line: the tail, and the lines worth keeping beyond it.
    fn note(&mut self, line: String) {
        let t = line.trim();
        if let Some(at) = t.rfind("memory allocation of") {
            self.out_of_memory = Some(t[at..].to_string());
        } else if t.starts_with("failed to spawn thread") && t.contains("Resource temporarily unavailable") {
            self.out_of_memory = Some(t.to_string());
        }
        if self.after_panic_header && !t.is_empty() {
            self.panic_message = Some(t.to_string());
        }
        self.after_panic_header = t.starts_with("thread '") && t.contains("panicked at");
        if self.tail.len() == STDERR_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

impl StderrSummary {
    /// What the worker said last: the message of its last panic (the line
    /// after `thread '…' panicked at …`), else the last line that is neither a
    /// log line of ours (those start with a timestamp) nor backtrace noise.
    fn last_message(&self) -> Option<&str> {
        if let Some(msg) = &self.panic_message {
            return Some(msg);
        }
        let lines: Vec<&str> = self.tail.iter().map(|l| l.trim()).collect();
        let noise = |l: &str| {
            l.is_empty()
                || l.starts_with("20")
                || l.starts_with("note:")
                || l.starts_with("stack backtrace")
                || l.starts_with("at ")
                || l.split(':').next().is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        };
        lines.iter().rev().copied().find(|l| !noise(l))
    }

    /// A sign that the worker ran out of address space: an allocation that
    /// failed, or a thread that could not get its stack. (Threads failing at
    /// once may interleave their messages on one line; the last complete one
    /// is taken.)
    fn allocation_failure(&self) -> Option<&str> {
        self.out_of_memory.as_deref()
    }
}

/// Forwards the worker's stderr to ours, at most [`STDERR_PASS_LIMIT`] bytes,
/// then says how much more it dropped; keeps the last lines.
async fn pump_stderr(stderr: tokio::process::ChildStderr, runtime_id: String) -> StderrSummary {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut sum = StderrSummary::default();
    let mut passed = 0usize;
    let mut said_cut = false;
    while let Ok(Some(line)) = lines.next_line().await {
        if !sum.started && line == STARTED_LINE {
            sum.started = true;
            continue;
        }
        if passed + line.len() < STDERR_PASS_LIMIT {
            passed += line.len() + 1;
            eprintln!("{line}");
        } else {
            if !said_cut {
                said_cut = true;
                eprintln!(
                    "dc-host: run {runtime_id}: the worker's stderr passed {} KiB; further output is dropped (the run's logs are in the database: dc-host runs show {runtime_id} --logs)",
                    STDERR_PASS_LIMIT / 1024
                );
            }
            sum.dropped_bytes += line.len() as u64 + 1;
        }
        sum.note(line);
    }
    if sum.dropped_bytes > 0 {
        eprintln!("dc-host: run {runtime_id}: dropped {} bytes of worker stderr", sum.dropped_bytes);
    }
    sum
}

/// Spawns the worker for an existing PENDING run and waits for it.
pub async fn supervise(
    env: &HostEnv,
    runtime_id: &RuntimeId,
    time_limit: Option<Duration>,
) -> Result<RunRow, RuntimeError> {
    supervise_with(env, runtime_id, SuperviseOptions { time_limit, interrupt: None }).await
}

/// Why the supervisor ended the worker, if it did.
enum Ended {
    /// The worker exited on its own.
    Exited,
    /// Killed at the time limit.
    TimeLimit,
    /// Stopped or killed on an interrupt: (cause, killed after the grace period or at once).
    Interrupted(String, bool),
}

/// Spawns the worker for an existing PENDING run and waits for it, honouring
/// the time limit and interrupts.
pub async fn supervise_with(
    env: &HostEnv,
    runtime_id: &RuntimeId,
    opts: SuperviseOptions,
) -> Result<RunRow, RuntimeError> {
    let limit = opts.time_limit.unwrap_or(Duration::from_secs(env.settings.runs.time_limit_secs));
    let grace = Duration::from_secs(env.settings.runs.stop_grace_secs);
    // the worker gets a database ready for it: its tables exist (and are this
    // app's), and what it needs comes with it (it reads nothing first)
    let (run, manifest, module_path) = match prepare_tables(env, runtime_id).await {
        Ok(p) => p,
        Err(reason) => {
            finish_and_count(env, runtime_id, RunStatus::Failed, &reason).await?;
            return Ok(runs::get(&env.db, runtime_id).await?);
        }
    };
    let worker = env.worker_exe();
    // never a silent fallback to another program: a missing worker fails the run, saying how to fix it
    if !worker.is_file() {
        let reason = format!(
            "cannot start the worker: {} does not exist; install {} next to {} (`cargo build -p dc-host` builds both)",
            worker.display(),
            crate::WORKER_PROGRAM,
            env.exe.display()
        );
        finish_and_count(env, runtime_id, RunStatus::Failed, &reason).await?;
        return Err(RuntimeError::Refused(reason));
    }
    let mut cmd = tokio::process::Command::new(&worker);
    cmd.arg("--runtime-id")
        .arg(runtime_id.as_str())
        .arg("--time-limit-ms")
        .arg(limit.as_millis().to_string())
        .process_group(0)
        // the worker runs plugin code: it gets what it needs on stdin, never the secrets key
        .env_remove("DC_SECRETS_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    apply_limits(&mut cmd, env.settings.runs.memory_limit_mb, env.settings.runs.cpu_limit_secs);
    // one politeness limiter per machine: the worker asks the permit server
    if let Some(socket) = crate::limits::permit_socket(&env.settings) {
        cmd.env(crate::limits::SOCKET_ENV, socket);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("cannot start worker process {}: {e}", worker.display());
            finish_and_count(env, runtime_id, RunStatus::Failed, &reason).await?;
            return Err(RuntimeError::Refused(reason));
        }
    };
    let pgid = child.id().unwrap_or(0);
    let pump = child.stderr.take().map(|e| tokio::spawn(pump_stderr(e, runtime_id.to_string())));
    // RUNNING with the worker's pid before the worker gets its start (it waits
    // for it on stdin meanwhile, starting its process): so the run has its
    // worker recorded before it does anything, and `reap` can tell when it is gone
    if let Err(e) = runs::mark_started(&env.db, runtime_id, pgid).await {
        tracing::error!(%runtime_id, error = %e, "cannot mark the run started");
    }
    let start = WorkerStart { settings: env.settings.clone(), run, manifest, module_path };
    let start_json = serde_json::to_string(&start).unwrap_or_default();
    // the settings travel on stdin, so secrets never show up in `ps`
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(start_json.as_bytes()).await;
        let _ = stdin.shutdown().await;
    }
    let deadline = tokio::time::Instant::now() + limit;
    let mut interrupt = opts.interrupt;
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    let mut cause = String::new();
    let mut ended = Ended::Exited;
    let kill = |why: &str| {
        if let Err(e) = signal_group(pgid, libc::SIGKILL) {
            tracing::error!(%runtime_id, pgid, error = %e, "cannot kill the worker's process group ({why})");
        }
    };
    let status = loop {
        let wait_interrupt = async {
            match interrupt.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        // the sender is gone: no more interrupts can come
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let grace_over = async {
            match grace_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            s = child.wait() => break s.ok(),
            _ = tokio::time::sleep_until(deadline) => {
                kill("time limit");
                ended = Ended::TimeLimit;
                break child.wait().await.ok();
            }
            _ = grace_over => {
                kill("stop grace period over");
                ended = Ended::Interrupted(cause.clone(), true);
                break child.wait().await.ok();
            }
            _ = wait_interrupt => {
                let (level, why) = interrupt.as_ref().map(|rx| rx.borrow().clone()).unwrap_or((Interrupt::None, String::new()));
                cause = why;
                match level {
                    Interrupt::None => {}
                    Interrupt::Stop => {
                        if grace_deadline.is_none() {
                            // if the request cannot be written, the grace period still ends in a kill
                            if let Err(e) = runs::request_stop(&env.db, runtime_id).await {
                                tracing::error!(%runtime_id, error = %e, "cannot ask the plugin to stop; killing it after the grace period");
                            }
                            grace_deadline = Some(tokio::time::Instant::now() + grace);
                        }
                    }
                    Interrupt::Kill => {
                        kill("interrupt");
                        ended = Ended::Interrupted(cause.clone(), false);
                        break child.wait().await.ok();
                    }
                }
            }
        }
    };
    // nothing the plugin started outlives its run
    kill("end of run");
    let stderr = match pump {
        Some(p) => tokio::time::timeout(Duration::from_secs(5), p).await.ok().and_then(Result::ok).unwrap_or_default(),
        None => StderrSummary::default(),
    };
    if let Some(status) = status {
        use std::os::unix::process::ExitStatusExt;
        runs::record_exit(&env.db, runtime_id, status.code(), status.signal()).await?;
    }
    let before = runs::get(&env.db, runtime_id).await?;
    let (status_to_record, reason) = match ended {
        Ended::TimeLimit => (
            RunStatus::Failed,
            format!(
                "exceeded the time limit of {}s and was killed; raise runs.time_limit_secs (or --time-limit) if the app needs longer",
                limit.as_secs()
            ),
        ),
        Ended::Interrupted(cause, after_grace) => (
            RunStatus::Stopped,
            if after_grace {
                format!(
                    "{cause}: the plugin did not stop within {}s and its process group was killed; nothing of the unfinished merge was stored",
                    grace.as_secs()
                )
            } else {
                format!("{cause}: the worker's process group was killed; nothing of the unfinished merge was stored")
            },
        ),
        Ended::Exited => (RunStatus::Failed, explain_exit(env, status.as_ref(), &stderr)),
    };
    if finish_and_count(env, runtime_id, status_to_record, &reason).await? {
        tracing::error!(%runtime_id, %reason, "run ended by its supervisor");
    } else if !cause.is_empty() && before.status == RunStatus::Stopped.as_str() {
        // the plugin stopped by itself when asked: say who asked
        let reason = format!("{cause}: {}", before.reason.as_deref().unwrap_or("stopped on request"));
        runs::set_reason(&env.db, runtime_id, &reason).await?;
    }
    Ok(runs::get(&env.db, runtime_id).await?)
}

/// Creates or verifies the tables of the run's plugin version, and puts its
/// file in this host's store if it is not there, before its worker starts;
/// returns the run, its plugin version's stored manifest and the file's path
/// in this host's store. The error is the run's failure reason.
async fn prepare_tables(env: &HostEnv, runtime_id: &RuntimeId) -> Result<(RunRow, String, std::path::PathBuf), String> {
    let run = runs::get(&env.db, runtime_id).await.map_err(|e| e.to_string())?;
    let version = apps::version_by_hash(&env.db, &run.plugin_hash)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("plugin file {} is not registered any more", run.plugin_hash))?;
    let manifest: Manifest =
        serde_json::from_str(&version.manifest).map_err(|e| format!("stored manifest is unreadable: {e}"))?;
    for t in &manifest.tables {
        dc_core::merge::ensure_table(&env.db, &run.app_id, t).await.map_err(|e| e.to_string())?;
    }
    // a version registered on another host: its file comes from the database
    let path =
        crate::store::ensure_local(&env.db, &env.settings.store_dir(), &version).await.map_err(|e| e.to_string())?;
    Ok((run, version.manifest, path))
}

/// The reason for a worker that exited without ending its run itself.
fn explain_exit(env: &HostEnv, status: Option<&ExitStatus>, stderr: &StderrSummary) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = status.map(describe_exit).unwrap_or_else(|| "an unknown exit".into());
    if let (Some(mb), Some(alloc)) = (env.settings.runs.memory_limit_mb, stderr.allocation_failure()) {
        let sig = status
            .and_then(|s| s.signal())
            .map(|s| format!("; the worker aborted with signal {s}"))
            .unwrap_or_default();
        return format!(
            "memory limit of {mb} MB reached ({alloc}{sig}); raise runs.memory_limit_mb if the app needs more"
        );
    }
    if status.and_then(|s| s.signal()) == Some(libc::SIGXCPU)
        && let Some(secs) = env.settings.runs.cpu_limit_secs
    {
        return format!("CPU time limit of {secs}s reached ({how}); raise runs.cpu_limit_secs if the app needs more");
    }
    let said = stderr.last_message().map(|l| format!(": {l}")).unwrap_or_default();
    if !stderr.started {
        return format!("the worker could not start ({how}){said}");
    }
    format!("worker ended before finishing the run: {how}{said}")
}

/// Ends a run that is still PENDING or RUNNING and counts the outcome on its
/// app (a failure raises the failure count); true if this call ended it.
/// Either way the run's proxy reservations are released: every end of a run
/// passes here (the supervisor after its worker, the worker's own time
/// limit, the reaper of orphaned runs).
pub async fn finish_and_count(
    env: &HostEnv,
    runtime_id: &RuntimeId,
    status: RunStatus,
    reason: &str,
) -> Result<bool, RuntimeError> {
    // a reservation left behind by a failed release ends at its expiry
    match dc_core::proxy_store::release_run(&env.db, runtime_id, chrono::Utc::now(), "run ended").await {
        Ok(0) => {}
        Ok(released) => tracing::debug!(%runtime_id, released, "proxy reservations released"),
        Err(e) => tracing::warn!(%runtime_id, error = %e, "cannot release the run's proxy reservations; they expire"),
    }
    if !runs::finish(&env.db, runtime_id, status, Some(reason)).await? {
        return Ok(false);
    }
    let run = runs::get(&env.db, runtime_id).await?;
    apps::record_run_outcome(&env.db, &run.app_id, status, run.started_at.unwrap_or(run.created_at)).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(lines: &[&str]) -> StderrSummary {
        let mut s = StderrSummary::default();
        for l in lines {
            s.note((*l).to_string());
        }
        s
    }

    #[test]
    fn what_the_worker_said_survives_a_long_backtrace() {
        let mut lines = vec!["memory allocation of memory allocation of 8589934592 bytes failed", "stack backtrace:"];
        let frames: Vec<String> = (0..60).map(|i| format!("  {i}: frame")).collect();
        lines.extend(frames.iter().map(String::as_str));
        let s = summary(&lines);
        assert_eq!(s.allocation_failure(), Some("memory allocation of 8589934592 bytes failed"), "interleaved threads");
        assert_eq!(s.tail.len(), STDERR_TAIL_LINES);

        let mut lines =
            vec!["thread 'main' (7) panicked at src/lib.rs:3:5:", "misbehave: deliberate panic", "stack backtrace:"];
        lines.extend(frames.iter().map(String::as_str));
        lines.push("note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.");
        let s = summary(&lines);
        assert_eq!(s.last_message(), Some("misbehave: deliberate panic"));
        assert_eq!(s.allocation_failure(), None);

        let s = summary(&["2026-11-26T10:00:00Z  WARN something we logged", "plain last words", "note: noise"]);
        assert_eq!(s.last_message(), Some("plain last words"));
    }
}
