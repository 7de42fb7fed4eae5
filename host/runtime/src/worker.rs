//! The worker: the body of `dc-worker`, one process per run. It loads the
//! plugin from the store, runs `prepare_list → collect (N threads) → store →
//! cleanup`, keeps progress counters live on `runtime` and `apps` and the
//! request metrics on `dc_run_metrics`, watches for a stop request, and ends
//! the run as SUCCESS, FAILED (with reason) or STOPPED.
//! If the plugin crashes the process, the supervisor records why.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr, RString};
use dc_core::enums::RunStatus;
use dc_core::{apps, runs};
use dc_plugin_api::Manifest;
use dc_plugin_api::abi::HostCallbacks_TO;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::runtime::Handle;

use crate::HostEnv;
use crate::callbacks::{RunShared, RunWrites, WorkerCallbacks};

/// Exit code of a worker whose run succeeded.
pub const EXIT_SUCCESS: i32 = 0;
/// Exit code of a worker whose run failed (reason recorded by the worker).
pub const EXIT_FAILED: i32 = 1;
/// Exit code of a worker whose run was stopped.
pub const EXIT_STOPPED: i32 = 3;

fn ffi<T>(r: RResult<T, RString>) -> Result<T, String> {
    r.into_result().map_err(RString::into_string)
}

struct Outcome {
    status: RunStatus,
    reason: Option<String>,
}

impl Outcome {
    fn failed(reason: impl Into<String>) -> Outcome {
        Outcome { status: RunStatus::Failed, reason: Some(reason.into()) }
    }
}

/// How long after its time limit a worker ends its run itself. The supervisor
/// normally kills the worker at the limit; this only acts when the supervisor
/// is gone (killed, or its machine's clock stalled it), so the run still ends.
pub const SELF_LIMIT_GRACE: Duration = Duration::from_secs(5);

/// Ends the run when the supervisor did not: at `limit` + [`SELF_LIMIT_GRACE`]
/// the worker records the run FAILED (counting it on the app) and kills its
/// own process group — itself and everything the plugin spawned.
fn self_limit(rt: Handle, env: HostEnv, runtime_id: dc_core::RuntimeId, limit: Duration) {
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + limit + SELF_LIMIT_GRACE;
        loop {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(deadline - now);
        }
        let reason = format!(
            "exceeded the time limit of {}s; the worker ended the run itself because its supervisor did not (was the dc-host that started it killed?)",
            limit.as_secs()
        );
        // bounded: on SQLite this process's own run transaction may hold the
        // write lock (applying its staged merges at the limit); the kill below rolls it back,
        // and a run left RUNNING is reaped as orphaned
        // (the timer is made inside `block_on`: a tokio timer needs the runtime's context)
        let ended = rt.block_on(async {
            tokio::time::timeout(
                SELF_LIMIT_GRACE,
                crate::supervisor::finish_and_count(&env, &runtime_id, RunStatus::Failed, &reason),
            )
            .await
        });
        match ended {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(%runtime_id, error = %e, "cannot record the time-limit end of the run"),
            Err(_) => tracing::error!(
                %runtime_id,
                "cannot record the time-limit end of the run: the database did not answer in time; `dc-host runs reap` will end it as orphaned"
            ),
        }
        let me = std::process::id();
        // the worker leads its own process group (the supervisor spawns it so)
        if let Err(e) = crate::supervisor::signal_group(me, libc::SIGKILL) {
            tracing::error!(error = %e, "cannot kill the worker's process group");
        }
        std::process::exit(EXIT_FAILED);
    });
}

/// What a worker is started with, written by its supervisor on the worker's
/// stdin (so the secrets in the settings never show up in `ps`): everything
/// it needs up to its plugin's first `collect`, so it reads nothing from the
/// database before that. Its supervisor has marked the run RUNNING with the
/// worker's pid, made sure the run's tables exist and the plugin file is in
/// this host's store, and checked the schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStart {
    /// The effective settings.
    pub settings: dc_core::Settings,
    /// The run.
    pub run: runs::RunRow,
    /// The stored manifest (JSON) of the run's plugin version.
    pub manifest: String,
    /// The run's plugin file in this host's store.
    pub module_path: PathBuf,
}

/// The line a worker writes on stderr once it has read its [`WorkerStart`];
/// the supervisor takes it out of the stream. A worker that ends without
/// writing it "could not start".
pub const STARTED_LINE: &str = "dc-worker: started";

/// Runs one run to its end. Must be called outside the tokio runtime (plugin
/// code blocks); `rt` drives the database and HTTP. `time_limit` is enforced
/// here too (see [`SELF_LIMIT_GRACE`]). The database may still be connecting
/// (see [`dc_core::Database::connect_lazy`]): loading the plugin, `new` and
/// `prepare_list` go on meanwhile; the first `collect` waits for it.
pub fn run(
    rt: &Handle,
    env: &HostEnv,
    run: &runs::RunRow,
    manifest: &str,
    module_path: &Path,
    time_limit: Option<Duration>,
) -> i32 {
    let db = &env.db;
    // the database connection opens while the plugin loads and prepares its
    // work list; the first `collect` waits for it
    let connected = {
        let (db, settings) = (db.clone(), env.settings.clone());
        rt.spawn(async move { db.warm_up(&settings).await })
    };
    // watched host functions (merges) record their calls for this run
    if let Err(e) =
        dc_core::fun_watch::install(db.clone(), rt.clone(), Some(run.app_id.clone()), Some(run.runtime_id.clone()))
    {
        tracing::warn!(error = %e, "function-call recording is off for this run");
    }
    if let Some(limit) = time_limit {
        self_limit(rt.clone(), env.clone(), run.runtime_id.clone(), limit);
    }
    let span = tracing::info_span!("run", app_id = %run.app_id, runtime_id = %run.runtime_id);
    let _entered = span.enter();
    let started = chrono::Utc::now();
    // the file a run commits into must be the one it started with
    let identity = match db.sqlite_file_identity() {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot identify the database file");
            None
        }
    };
    let (mut outcome, writes, metrics, monitoring) = match prepare(rt, env, run, manifest, module_path, span.clone()) {
        Ok(Prepared { module_path, shared, restored, journal }) => {
            let done = Arc::new(AtomicBool::new(false));
            let watcher = monitor(shared.clone(), done.clone());
            let mut outcome = execute(&module_path, shared.clone(), run.threads.max(1) as usize, restored, connected);
            if let Some(p) = &shared.proxies {
                p.log_summary();
            }
            // the journal writes nothing after this (it may write into the run's transaction)
            if let Some(j) = &shared.journal {
                j.finish();
            }
            if let Some(writer) = journal {
                let _ = writer.join();
            }
            let writes = std::mem::take(&mut *shared.writes.lock().unwrap_or_else(|p| p.into_inner()));
            // no request is made any more: these are the run's final metrics
            let metrics = final_metrics(&shared.metrics);
            if let Some(note) = metrics.as_ref().and_then(|m| circuit_note(&m.2, &run.runtime_id)) {
                outcome.reason = Some(match outcome.reason.take() {
                    Some(r) => format!("{r}; {note}"),
                    None => note,
                });
            }
            (outcome, writes, metrics, Some((done, watcher)))
        }
        Err(reason) => (Outcome::failed(reason), RunWrites::default(), None, None),
    };
    let metrics = metrics.map(|(generation, doc, _)| (generation, doc));
    let ended = rt.block_on(end_run(env, run, &mut outcome, writes, metrics.as_ref(), identity.as_ref(), started));
    // the monitor is stopped only now: on SQLite its last progress write
    // waits for the run's transaction, which `end_run` has just ended
    if let Some((done, watcher)) = monitoring {
        done.store(true, Ordering::Relaxed);
        watcher.thread().unpark();
        let _ = watcher.join();
    }
    match &outcome.reason {
        Some(r) => tracing::warn!(status = %outcome.status, reason = %r, "run ended"),
        None => tracing::info!(status = %outcome.status, "run ended"),
    }
    if let Err(e) = ended {
        tracing::error!(error = %e, "cannot record the end of the run");
        // a plain line (not a log record): the supervisor takes the last one
        // as what the worker said when it records the run's end instead
        eprintln!(
            "the run ended {}{} but the worker could not record it: {e}",
            outcome.status,
            outcome.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    if let Err(e) = dc_core::fun_watch::uninstall() {
        tracing::warn!(error = %e, "function-call records may be incomplete");
    }
    match outcome.status {
        RunStatus::Success => EXIT_SUCCESS,
        RunStatus::Stopped => EXIT_STOPPED,
        _ => EXIT_FAILED,
    }
}

/// Ends the run. A successful run commits its merges, counts and status in one
/// transaction; any other outcome (or a failed merge, or a database file
/// replaced under the run) rolls the merges back and records the run's end
/// on its own, so the tables are as they were before the run.
#[allow(clippy::too_many_arguments)]
async fn end_run(
    env: &HostEnv,
    run: &runs::RunRow,
    outcome: &mut Outcome,
    writes: RunWrites,
    metrics: Option<&(u64, Value)>,
    identity: Option<&dc_core::db::FileIdentity>,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<(), dc_core::DbError> {
    let RunWrites { tx, staged, totals, failed, .. } = writes;
    if let Some(why) = failed
        && outcome.status == RunStatus::Success
    {
        *outcome = Outcome::failed(format!("a merge failed ({why}); nothing of this run was stored"));
    }
    let mut db = env.db.clone();
    if let Some(i) = identity
        && let Err(e) = i.check()
    {
        *outcome = Outcome::failed(e.to_string());
        // record the failure in the file that is there now, if there is one
        // (never create an empty database where the old one was deleted)
        if i.path().exists() {
            match dc_core::Database::connect_trusted(&env.settings).await {
                Ok(fresh) => db = fresh,
                Err(e) => tracing::error!(error = %e, "cannot open the replaced database file"),
            }
        }
    }
    // SQLite: the staged merges are applied now, under the write lock, in the
    // transaction that ends the run; PostgreSQL's merges are in `tx` already
    let pending = match (tx, staged) {
        (Some(tx), staged) => {
            if let Some(s) = staged {
                s.discard().await;
            }
            Some(Pending::Open(tx, totals))
        }
        (None, Some(s)) => Some(Pending::Staged(s)),
        (None, None) => None,
    };
    if let Some(pending) = pending {
        if outcome.status == RunStatus::Success {
            let committed = async {
                let (mut tx, totals) = match pending {
                    Pending::Open(tx, totals) => (tx, totals),
                    Pending::Staged(s) => s.apply().await.map_err(|e| dc_core::DbError::Refused(e.to_string()))?,
                };
                if let Some((generation, doc)) = metrics {
                    runs::save_metrics_in(&mut tx, &run.runtime_id, *generation, doc).await?;
                }
                // a successful run has nothing to resume
                dc_core::run_items::delete_in(&mut tx, &run.runtime_id).await?;
                runs::add_counters_in(&mut tx, &run.runtime_id, &totals).await?;
                if !runs::finish_in(&mut tx, &run.runtime_id, outcome.status, outcome.reason.as_deref()).await? {
                    // the run was ended meanwhile (reaped as orphaned by another host
                    // that took this one for dead, or stopped): its rows must not land
                    tx.rollback().await?;
                    return Ok(false);
                }
                apps::record_run_outcome_in(&mut tx, &run.app_id, outcome.status, started).await?;
                tx.commit().await.map(|()| true)
            }
            .await;
            match committed {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    tracing::error!(
                        "the run had already been ended by someone else (reaped as orphaned?) when it came to commit; its rows were rolled back and nothing of it was stored"
                    );
                    return Ok(());
                }
                Err(e) => {
                    *outcome = Outcome::failed(format!(
                        "storing the run's rows failed ({e}); the transaction was rolled back and nothing of this run was stored"
                    ))
                }
            }
        } else {
            match pending {
                Pending::Open(tx, _) => {
                    if let Err(e) = tx.rollback().await {
                        tracing::warn!(error = %e, "rolling back the run's merges failed; the database discards them");
                    }
                }
                Pending::Staged(s) => s.discard().await,
            }
            let reason = outcome.reason.take().unwrap_or_default();
            outcome.reason = Some(format!("{reason}; the run's merges were rolled back, nothing was stored"));
        }
    }
    // stored whatever the outcome: a failed or stopped run's requests count too
    if let Some((generation, doc)) = metrics
        && let Err(e) = runs::save_metrics(&db, &run.runtime_id, *generation, doc).await
    {
        tracing::warn!(error = %e, "cannot store the run's request metrics");
    }
    if outcome.status == RunStatus::Success {
        dc_core::run_items::delete(&db, &run.runtime_id).await?;
    }
    runs::finish(&db, &run.runtime_id, outcome.status, outcome.reason.as_deref()).await?;
    apps::record_run_outcome(&db, &run.app_id, outcome.status, started).await?;
    Ok(())
}

/// The merges a run has made, not yet stored.
enum Pending {
    /// In the run's open transaction (PostgreSQL), with their counts.
    Open(dc_core::WriteTx, dc_plugin_api::MergeSummary),
    /// Staged, to be applied under the write lock (SQLite).
    Staged(dc_core::stage::StagedRun),
}

/// The run's request metrics for storing: generation, JSON document and
/// snapshot; None when it made no request.
fn final_metrics(m: &dc_net::RequestMetrics) -> Option<(u64, Value, dc_net::MetricsSnapshot)> {
    let generation = m.generation();
    if generation == 0 {
        return None;
    }
    let snapshot = m.snapshot();
    serde_json::to_value(&snapshot).ok().map(|doc| (generation, doc, snapshot))
}

/// What the run's reason says about domains whose circuit opened, in the
/// run or host-wide (the permit server's, opened by another run's failures:
/// requests refused although the run's own circuit never opened).
fn circuit_note(m: &dc_net::MetricsSnapshot, runtime_id: &str) -> Option<String> {
    let refused =
        |d: &dc_net::metrics::StatsSnapshot| d.errors.get(&dc_net::ErrorClass::CircuitOpen).copied().unwrap_or(0);
    let opened: Vec<String> = m
        .domains
        .iter()
        .filter(|(_, d)| d.circuit_opened > 0)
        .map(|(host, d)| format!("{host} ({} requests refused)", refused(d)))
        .collect();
    let elsewhere: Vec<String> = m
        .domains
        .iter()
        .filter(|(_, d)| d.circuit_opened == 0 && refused(d) > 0)
        .map(|(host, d)| format!("{host} ({} requests refused)", refused(d)))
        .collect();
    let mut notes = vec![];
    if !opened.is_empty() {
        notes.push(format!(
            "the circuit breaker opened for {} after consecutive failures (runs.breaker_failures)",
            opened.join(", ")
        ));
    }
    if !elsewhere.is_empty() {
        notes.push(format!(
            "requests were refused for {} by the host-wide circuit breaker, open after failures of another run",
            elsewhere.join(", ")
        ));
    }
    (!notes.is_empty()).then(|| format!("{}; see `dc-host runs show {runtime_id} --metrics`", notes.join("; ")))
}

/// What [`prepare`] hands to the run.
struct Prepared {
    module_path: String,
    shared: Arc<RunShared>,
    /// The persisted items of the run this run resumes (moved to this run).
    restored: Vec<dc_core::run_items::ItemRow>,
    /// The journal's writer thread, when the frontier is persisted.
    journal: Option<std::thread::JoinHandle<()>>,
}

fn prepare(
    rt: &Handle,
    env: &HostEnv,
    run: &runs::RunRow,
    manifest: &str,
    module_path: &Path,
    span: tracing::Span,
) -> Result<Prepared, String> {
    let db = &env.db;
    // the supervisor made sure the tables exist before it started this worker
    let manifest: Manifest =
        serde_json::from_str(manifest).map_err(|e| format!("stored manifest is unreadable: {e}"))?;
    let manifest_crawl = manifest.crawl;
    let s = &env.settings;
    let proxies = start_proxies(rt, env, run)?;
    let app_path = format!("{}/{}/{}", manifest.group, manifest.parent, manifest.name);
    // a resumed run carries on with the items of the run it resumes (they
    // were moved to this run when it was created)
    let restored = match &run.resumed_from {
        Some(from) => {
            let items = rt
                .block_on(dc_core::run_items::load(db, &run.runtime_id))
                .map_err(|e| format!("cannot load the work items of run {from} to resume it: {e}"))?;
            tracing::info!(resumed_from = %from, items = items.len(), "resuming");
            items
        }
        None => Vec::new(),
    };
    let (journal, receiver) = if s.runs.persist_frontier || run.resumed_from.is_some() {
        let (tx, rx) = crate::journal::channel_pair();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let mut frontier = dc_frontier::Frontier::new(manifest_crawl, s.runs.max_items);
    if let Some(j) = &journal {
        frontier = frontier.with_journal(Box::new(j.clone()));
    }
    let shared = Arc::new(RunShared {
        rt: rt.clone(),
        db: db.clone(),
        app_id: run.app_id.clone(),
        runtime_id: run.runtime_id.clone(),
        manifest,
        args_json: run.args.clone(),
        stop: AtomicBool::new(false),
        current: Default::default(),
        total: Default::default(),
        errors: Default::default(),
        form: s.runs.unicode_form,
        archive_missing: s.runs.archive_missing,
        http_timeout: Duration::from_secs(s.runs.http_timeout_secs),
        retry: dc_net::RetryPolicy {
            retries: s.runs.http_retries,
            max_delay: Duration::from_secs(s.runs.http_retry_max_delay_secs),
            ..Default::default()
        },
        // its permit connections stay on this runtime: requests come from
        // the collecting threads' own runtimes too
        limiter: crate::limits::worker_limiter(s, &app_path).homed(rt.clone()),
        metrics: dc_net::RequestMetrics::new(),
        breakers: dc_net::Breakers::new(
            dc_net::BreakerPolicy {
                failures: s.runs.breaker_failures,
                cooldown: Duration::from_secs(s.runs.breaker_cooldown_secs),
            },
            Arc::new(dc_net::SystemClock),
        ),
        span,
        writes: Default::default(),
        frontier,
        proxies,
        host_calls: crate::host_call::HostCalls::new(s),
        journal,
    });
    let writer = match receiver {
        Some(rx) => Some(
            crate::journal::start(shared.clone(), rx)
                .map_err(|e| format!("cannot start the thread that saves the run's work items: {e}"))?,
        ),
        None => None,
    };
    // the supervisor fetched the file into this host's store if it registered elsewhere
    Ok(Prepared { module_path: module_path.display().to_string(), shared, restored, journal: writer })
}

/// The run's proxy manager when `proxy.apps` names its app: the proxies are
/// verified and their exits reserved now, before any merge opens the run's
/// write transaction (the reservations end with the run, in
/// `supervisor::finish_and_count`).
fn start_proxies(
    rt: &Handle,
    env: &HostEnv,
    run: &runs::RunRow,
) -> Result<Option<Arc<dc_proxy::ProxyManager>>, String> {
    let s = &env.settings;
    if s.proxy.apps.is_empty() {
        return Ok(None);
    }
    let app = rt
        .block_on(apps::get_app(&env.db, &run.app_id))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("app {} is not registered any more", run.app_id))?;
    let path = app.path();
    if !s.proxy.applies_to(&path) {
        return Ok(None);
    }
    let provider = dc_proxy::provider_from_settings(&s.proxy).map_err(|e| format!("proxies: {e}"))?;
    let opts = dc_proxy::ManagerOptions::from_settings(s, &path, &run.runtime_id, chrono::Utc::now());
    rt.block_on(dc_proxy::ProxyManager::start(provider, &env.db, opts)).map(Some).map_err(|e| format!("proxies: {e}"))
}

/// Gives the C allocator's free pages back to the system. glibc keeps what a
/// thread frees in that thread's arena, and the run's threads (collecting,
/// staging, SQLite's connection threads) each have one: without this a long
/// run's resident memory kept growing with its rows though what it holds does
/// not (docs/benchmarks.md, issue #7 item 7). A no-op elsewhere.
#[allow(unsafe_code)]
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers; it only walks glibc's own arenas
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Writes progress and polls the stop flag until `done` is set; while the
/// run moves, hands freed memory back to the system ([`release_free_memory`]).
fn monitor(shared: Arc<RunShared>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = (u64::MAX, u64::MAX, u64::MAX);
        let mut last_metrics = 0;
        let mut last_trimmed = (0, 0, 0);
        loop {
            let finished = done.load(Ordering::Relaxed);
            let now = (
                shared.current.load(Ordering::Relaxed),
                shared.total.load(Ordering::Relaxed),
                shared.errors.load(Ordering::Relaxed),
            );
            // the request metrics, when they moved (the stored generation
            // only grows, so this never replaces the final write)
            let metrics =
                (shared.metrics.generation() != last_metrics).then(|| final_metrics(&shared.metrics)).flatten();
            let write = async {
                if now != last {
                    let (c, t, e) = (now.0 as i64, now.1 as i64, now.2 as i64);
                    runs::set_progress(&shared.db, &shared.runtime_id, c, t, e).await?;
                    apps::set_progress(&shared.db, &shared.app_id, c, t, e).await?;
                }
                if let Some((generation, doc, _)) = &metrics {
                    runs::save_metrics(&shared.db, &shared.runtime_id, *generation, doc).await?;
                }
                runs::stop_requested(&shared.db, &shared.runtime_id).await
            };
            match shared.rt.block_on(write) {
                Ok(stop) => {
                    last = now;
                    if let Some((generation, ..)) = metrics {
                        last_metrics = generation;
                    }
                    if stop && !shared.stop.swap(true, Ordering::Relaxed) {
                        let _g = shared.span.enter();
                        tracing::warn!("stop requested; asking the plugin to stop");
                        // collecting threads waiting for work return at once
                        shared.frontier.stop();
                    }
                }
                Err(e) => {
                    let _g = shared.span.enter();
                    tracing::warn!(error = %e, "cannot update progress");
                }
            }
            if finished {
                return;
            }
            if now != last_trimmed {
                last_trimmed = now;
                release_free_memory();
            }
            // woken early by `unpark` when the run is done
            std::thread::park_timeout(Duration::from_millis(250));
        }
    })
}

fn execute(
    module_path: &str,
    shared: Arc<RunShared>,
    threads: usize,
    restored: Vec<dc_core::run_items::ItemRow>,
    connected: Connecting,
) -> Outcome {
    let module = match crate::probe::load_module(std::path::Path::new(module_path)) {
        Ok((m, _)) => m,
        Err(e) => return Outcome::failed(format!("cannot load plugin: {e}")),
    };
    let host = HostCallbacks_TO::from_value(WorkerCallbacks(shared.clone()), TD_Opaque);
    match ffi((module.new())(RStr::from_str(&shared.args_json), host)) {
        Err(e) => Outcome::failed(format!("plugin failed to start: {e}")),
        Ok(mut scraper) => {
            let main = lifecycle(&mut scraper, &shared, threads, restored, connected);
            let cleaned = ffi(scraper.cleanup());
            match (main, cleaned) {
                (o, Ok(())) => o,
                (o, Err(e)) if o.status == RunStatus::Success => Outcome::failed(format!("cleanup failed: {e}")),
                (mut o, Err(e)) => {
                    o.reason = Some(format!("{}; cleanup failed too: {e}", o.reason.unwrap_or_default()));
                    o
                }
            }
        }
    }
}

/// Splits the persisted items of a resumed run into the records of its done
/// items, their numbers and keys, and the items still to collect.
type Restored = (Vec<Value>, Vec<(u64, dc_frontier::Fingerprint)>, Vec<dc_frontier::Work>);

fn restore(rows: Vec<dc_core::run_items::ItemRow>) -> Result<Restored, String> {
    use dc_core::run_items::ItemState;
    let (mut records, mut done, mut pending) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let bad = |what: &str| format!("saved work item {} of the resumed run has {what}", r.seq);
        let mut key = [0u8; 16];
        hex::decode_to_slice(&r.key_hash, &mut key).map_err(|_| bad("an unreadable key"))?;
        let seq = u64::try_from(r.seq).map_err(|_| bad("a negative number"))?;
        if ItemState::parse(&r.state) == Some(ItemState::Done) {
            let recs: Vec<Value> = serde_json::from_str(r.records.as_deref().unwrap_or("[]"))
                .map_err(|e| bad(&format!("unreadable records ({e})")))?;
            records.extend(recs);
            done.push((seq, key));
        } else {
            let item: Value = serde_json::from_str(&r.item).map_err(|e| bad(&format!("an unreadable item ({e})")))?;
            let depth = u32::try_from(r.depth).map_err(|_| bad("an invalid depth"))?;
            pending.push(dc_frontier::Work { item, depth, seq, key });
        }
    }
    Ok((records, done, pending))
}

/// The worker's first database connection, opening in the background.
type Connecting = tokio::task::JoinHandle<Result<(), dc_core::DbError>>;

fn lifecycle(
    scraper: &mut dc_plugin_api::abi::ScraperBox,
    shared: &Arc<RunShared>,
    threads: usize,
    restored: Vec<dc_core::run_items::ItemRow>,
    connected: Connecting,
) -> Outcome {
    let frontier = &shared.frontier;
    let resumed = !restored.is_empty();
    let (old_records, done, pending) = match restore(restored) {
        Ok(r) => r,
        Err(e) => return Outcome::failed(e),
    };
    let (done_count, pending_count) = (done.len(), pending.len());
    // before prepare_list: what it enqueues is deduplicated against these too
    if resumed {
        frontier.restore(done, pending);
    }
    shared.current.store(done_count as u64, Ordering::Relaxed);
    let items: Vec<Value> =
        match ffi(scraper.prepare_list()).and_then(|j| serde_json::from_str(&j).map_err(|e| e.to_string())) {
            Ok(items) => items,
            Err(e) => return Outcome::failed(format!("prepare_list failed: {e}")),
        };
    // a run whose database cannot be reached collects nothing (it could store nothing)
    match shared.rt.block_on(connected) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Outcome::failed(format!("the worker cannot reach the database: {e}")),
        Err(e) => return Outcome::failed(format!("the worker's database connection failed: {e}")),
    }
    let known = frontier.seed(items);
    shared.total.store(frontier.total(), Ordering::Relaxed);
    if resumed {
        tracing::info!(
            done = done_count,
            to_collect = pending_count,
            known_prepared = known,
            items = frontier.total(),
            threads,
            "resumed: done items are not collected again"
        );
    } else {
        tracing::info!(items = frontier.total(), threads, "work list prepared");
    }
    // a plugin that keeps the SDK's default `store` has its records merged
    // as `collect` returns them (bounded memory); one that overrides `store`
    // gets every record of the run there, held in memory until then
    let streamed = shared.manifest.stream_records;
    let records: Mutex<Vec<Value>> = Mutex::new(Vec::new());
    if streamed {
        // a resumed run's done items: their records are staged again
        if let Err(e) = shared.stream_records(old_records) {
            return Outcome::failed(format!("the records of the resumed run's done items cannot be stored: {e}"));
        }
    } else {
        *records.lock().unwrap_or_else(|p| p.into_inner()) = old_records;
    }
    let journal = shared.journal.as_ref();
    let shared_scraper = &*scraper;
    std::thread::scope(|scope| {
        for t in 0..threads.max(1) {
            let records = &records;
            let span = shared.span.clone();
            std::thread::Builder::new()
                .name(format!("collect-{t}"))
                .spawn_scoped(scope, move || crate::callbacks::with_own_runtime(|| {
                    let _g = span.enter();
                    // `next` waits while other threads may still enqueue work
                    while let Some(work) = frontier.next() {
                        if shared.stop.load(Ordering::Relaxed) {
                            frontier.done();
                            frontier.stop();
                            return;
                        }
                        let item = work.item.to_string();
                        let result = crate::callbacks::collecting(work.depth, || {
                            ffi(shared_scraper.collect(RStr::from_str(&item)))
                        })
                        .and_then(|j| {
                            serde_json::from_str::<Vec<Value>>(&j)
                                .map(|recs| (recs, j))
                                .map_err(|e| format!("collect returned invalid JSON: {e}"))
                        });
                        match result {
                            Ok((recs, text)) => {
                                if let Some(j) = journal {
                                    j.done(&work, &item, &text);
                                }
                                if !streamed {
                                    records.lock().unwrap_or_else(|p| p.into_inner()).extend(recs)
                                } else if let Err(e) = shared.stream_records(recs) {
                                    // nothing of the run will be stored: collecting more is pointless
                                    tracing::error!(error = %e, "the run's records cannot be stored; stopping collect");
                                    frontier.stop();
                                }
                            }
                            Err(e) => {
                                if let Some(j) = journal {
                                    j.failed(&work, &item);
                                }
                                shared.errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(item = %item, depth = work.depth, error = %e, "collect failed");
                            }
                        }
                        shared.current.fetch_add(1, Ordering::Relaxed);
                        frontier.done();
                    }
                }))
                .map(|_| ())
                .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start collect thread"));
        }
    });
    // nothing collects any more: enqueue from store or cleanup is refused
    frontier.close();
    // every finished item is saved before `store` (a run stopped or killed
    // from here on resumes without collecting anything again)
    if let Some(j) = journal {
        j.flush();
    }
    let total = frontier.total() as usize;
    shared.total.store(total as u64, Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed) as usize;
    let dropped = frontier.dropped();
    if dropped.duplicates + dropped.over_depth + dropped.over_limit > 0 {
        tracing::info!(
            duplicates = dropped.duplicates,
            over_depth = dropped.over_depth,
            over_limit = dropped.over_limit,
            "the crawl frontier dropped enqueued items"
        );
    }
    if shared.stop.load(Ordering::Relaxed) {
        let resume = if journal.is_some() {
            format!("; its work items are saved: continue it with `dc-host run APP --resume {}`", shared.runtime_id)
        } else {
            String::new()
        };
        return Outcome {
            status: RunStatus::Stopped,
            reason: Some(format!(
                "stopped on request after {} of {total} items; nothing was stored, so a partial snapshot never removes rows{resume}",
                shared.current.load(Ordering::Relaxed)
            )),
        };
    }
    if total > 0 && errors == total {
        return Outcome::failed(format!("all {total} items failed in collect; see the run's logs"));
    }
    let mut note = Vec::new();
    if errors > 0 {
        tracing::warn!(errors, total, "some items failed in collect");
        note.push(format!("{errors} of {total} items failed in collect"));
    }
    if dropped.over_limit > 0 {
        note.push(format!(
            "{} enqueued items were dropped over the item limit (max_items in the manifest, runs.max_items on the host)",
            dropped.over_limit
        ));
    }
    if streamed {
        // the records were staged as they came: close each table's merge
        if let Err(e) = shared.finish_streams() {
            return Outcome::failed(format!("storing the run's records failed: {e}"));
        }
        tracing::info!("collect done; its records were staged as they came (the plugin keeps the default store)");
        return Outcome { status: RunStatus::Success, reason: (!note.is_empty()).then(|| note.join("; ")) };
    }
    let records = records.into_inner().unwrap_or_else(|p| p.into_inner());
    tracing::info!(records = records.len(), "collect done; storing");
    if let Err(e) = ffi(scraper.store(RStr::from_str(&Value::Array(records).to_string()))) {
        return Outcome::failed(format!("store failed: {e}"));
    }
    Outcome { status: RunStatus::Success, reason: (!note.is_empty()).then(|| note.join("; ")) }
}
