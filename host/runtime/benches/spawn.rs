//! Runtime benchmarks (plain `fn main`, no criterion; run with
//! `cargo bench -p dc-runtime --bench spawn`, or `scripts/bench.sh`).
//!
//! B1 — plugin run start-up: time from spawning the worker of a run of the
//! misbehave fixture (mode `ok`, 1 item, 1 thread) to its first `collect` call,
//! and the whole run, versus a bare process spawn + `dlopen` of the same
//! library + exit (this bench binary re-executes itself with
//! `DC_BENCH_DLOPEN_CHILD=<lib>`). Target: ≤ 3× the bare spawn.
//!
//! B2 — swap latency while runs are going on: the app is registered in two
//! builds (6.1.0 and 6.2.0; each first registration includes the child-process
//! probe), then the active version is swapped 200 times between them (25 ms apart) with
//! `registry::rollback(.., Some(version))` — a swap is done when the call
//! returns: every run created after that uses the new build. Then new builds
//! are registered one after another with `registry::register_file` (the reload
//! path: sha256, probe in a child process, store copy, ensure_table, activate);
//! these are real builds 7.0.1, 7.0.2, ... (`DC_FIXTURE_VERSION=7.0.k cargo
//! build --release -p dc-plugin-misbehave`, made before timing starts). Meanwhile
//! worker runs (mode `ok`) start in a loop; every run must end SUCCESS.
//! Target: p99 ≤ 50 ms, zero failed runs.
//!
//! Needs the release `dc-host` binary (runs start the `dc-worker` next to it;
//! `cargo build --release -p dc-host` builds both) and two builds of the misbehave plugin:
//! `DC_BENCH_HOST_BIN`, `DC_BENCH_PLUGIN_A` (version 6.1.0),
//! `DC_BENCH_PLUGIN_B` (6.2.0), built with `DC_FIXTURE_VERSION=<version> cargo
//! build --release -p dc-plugin-misbehave`; any that is unset is built here, as
//! are the registration builds. Other knobs: `DC_BENCH_SPAWN_REPS` (default 30),
//! `DC_BENCH_SWAPS` (200), `DC_BENCH_REGISTRATIONS` (30),
//! `DC_BENCH_RUN_LOOPS` (2 concurrent run loops), `DC_BENCH_SPAWN_DB`
//! (`sqlite`, `postgres` or `both`, default `both`; PostgreSQL is skipped with
//! the reason if unreachable), `DC_BENCH_PG_ADMIN_URL`.

#![allow(clippy::too_many_arguments, clippy::type_complexity)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use dc_core::{Database, Settings, apps, logs};
use dc_runtime::HostEnv;
use dc_runtime::registry::{self, RegisterOutcome};
use dc_runtime::supervisor::{self, RunOptions};
use serde_json::json;
use sqlx::Connection;
use tokio::sync::Mutex;

const CHILD_ENV: &str = "DC_BENCH_DLOPEN_CHILD";
const APP: &str = "test/fixtures/misbehave";
const VERSION_A: &str = "6.1.0";
const VERSION_B: &str = "6.2.0";

fn log(msg: impl AsRef<str>) {
    eprintln!("[spawn-bench {}] {}", Utc::now().format("%H:%M:%S%.3f"), msg.as_ref());
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of `v` (in place sort).
fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

// ------------------------------------------------------------ artifacts ----

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

fn cargo_build(pkg: &str, version: Option<&str>) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "-p", pkg]).current_dir(workspace());
    match version {
        Some(v) => cmd.env("DC_FIXTURE_VERSION", v),
        None => cmd.env_remove("DC_FIXTURE_VERSION"),
    };
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build --release -p {pkg} failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

fn host_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("DC_BENCH_HOST_BIN") {
        return Ok(PathBuf::from(p));
    }
    log("building the release dc-host (set DC_BENCH_HOST_BIN to skip) ...");
    cargo_build("dc-host", None)?;
    Ok(target_dir().join("release/dc-host"))
}

fn build_version(v: &str) -> Result<PathBuf, String> {
    let dir = target_dir().join("bench-plugins");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    cargo_build("dc-plugin-misbehave", Some(v))?;
    let dest = dir.join(format!("misbehave-{v}.so"));
    std::fs::copy(target_dir().join("release/libdc_plugin_misbehave.so"), &dest).map_err(|e| format!("copy: {e}"))?;
    Ok(dest)
}

/// Builds A and B for the swaps and `count` builds 7.0.1 .. 7.0.count for the
/// registrations (each a real `cargo build` with a bumped version, ~2 s each as
/// only the fixture crate recompiles), then puts the default build back.
fn plugin_builds(count: usize) -> Result<(PathBuf, PathBuf, Vec<(String, PathBuf)>), String> {
    let t0 = Instant::now();
    let a = match std::env::var_os("DC_BENCH_PLUGIN_A") {
        Some(p) => PathBuf::from(p),
        None => build_version(VERSION_A)?,
    };
    let b = match std::env::var_os("DC_BENCH_PLUGIN_B") {
        Some(p) => PathBuf::from(p),
        None => build_version(VERSION_B)?,
    };
    let mut regs = Vec::new();
    for k in 1..=count {
        let v = format!("7.0.{k}");
        regs.push((v.clone(), build_version(&v)?));
    }
    cargo_build("dc-plugin-misbehave", None)?;
    log(format!("plugin builds ready in {:.0} s ({} registration builds)", t0.elapsed().as_secs_f64(), count));
    Ok((a, b, regs))
}

// ----------------------------------------------------------- baselines ----

/// Spawns this binary to dlopen `lib` and exit; returns the wall time.
fn bare_spawn_dlopen(lib: &Path) -> Result<Duration, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let status = Command::new(exe)
        .env(CHILD_ENV, lib)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| e.to_string())?;
    let d = t0.elapsed();
    if !status.success() {
        return Err(format!("dlopen child failed: {status}"));
    }
    Ok(d)
}

/// `dc-host plugin-probe LIB` (spawn, load + ABI check, print the manifest, exit).
fn probe_spawn(host: &Path, lib: &Path) -> Result<Duration, String> {
    let t0 = Instant::now();
    let out = Command::new(host)
        .arg("plugin-probe")
        .arg(lib)
        .env("DC_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let d = t0.elapsed();
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("\"ok\"") {
        return Err(format!("probe failed: {}", String::from_utf8_lossy(&out.stdout)));
    }
    Ok(d)
}

// ---------------------------------------------------------------- host ----

struct Bench {
    env: HostEnv,
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>, // (admin url, scratch db name)
}

async fn make_env(backend: &str, host: &Path) -> Result<Bench, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut settings = Settings::default();
    settings.general.data_dir = dir.path().to_path_buf();
    settings.runs.threads = 1;
    let mut pg = None;
    if backend == "postgres" {
        let admin = std::env::var("DC_BENCH_PG_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        match tokio::time::timeout(Duration::from_secs(5), sqlx::postgres::PgConnection::connect(&admin)).await {
            Ok(Ok(c)) => {
                let _ = c.close().await;
            }
            Ok(Err(e)) => return Err(format!("SKIPPED: cannot connect to PostgreSQL at {admin}: {e}")),
            Err(_) => return Err(format!("SKIPPED: connecting to PostgreSQL at {admin} timed out")),
        }
        let url = dc_core::db::create_scratch_postgres(&admin, "dc_bench").await.map_err(|e| e.to_string())?;
        let name = sqlx::postgres::PgConnectOptions::from_str(&url)
            .ok()
            .and_then(|o| o.get_database().map(str::to_string))
            .unwrap_or_default();
        settings.database.url = Some(url);
        pg = Some((admin, name));
    }
    let db = Database::connect(&settings).await.map_err(|e| e.to_string())?;
    db.migrate().await.map_err(|e| e.to_string())?;
    Ok(Bench { env: HostEnv { settings, db, exe: host.to_path_buf() }, _dir: dir, pg })
}

async fn drop_env(b: Bench) {
    b.env.db.close().await;
    if let Some((admin, name)) = b.pg
        && let Ok(mut c) = sqlx::postgres::PgConnection::connect(&admin).await
    {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await {
            log(format!("cannot drop scratch database {name}: {e}"));
        }
        let _ = c.close().await;
    }
}

fn run_opts(items: u64) -> RunOptions {
    RunOptions {
        args: Some(json!({"mode": "ok", "items": items})),
        threads: Some(1),
        time_limit: Some(Duration::from_secs(60)),
    }
}

struct RunTiming {
    total: Duration,
    /// spawn → the supervisor marked the run RUNNING (runtime.started_at)
    started: Option<f64>,
    /// spawn → "work list prepared" (logged right before the collect threads start)
    first_collect: Option<f64>,
}

async fn timed_run(env: &HostEnv, app_id: &dc_core::AppId) -> Result<RunTiming, String> {
    let app = apps::get_app(&env.db, app_id).await.map_err(|e| e.to_string())?.ok_or("app vanished")?;
    let opts = run_opts(1);
    let id = supervisor::create_run(env, &app, &opts).await.map_err(|e| e.to_string())?;
    let wall0 = Utc::now();
    let t0 = Instant::now();
    let run = supervisor::supervise(env, &id, opts.time_limit).await.map_err(|e| e.to_string())?;
    let total = t0.elapsed();
    if run.status != "SUCCESS" {
        return Err(format!("run {id} ended {}: {}", run.status, run.reason.unwrap_or_default()));
    }
    let since = |t: chrono::DateTime<Utc>| (t - wall0).num_microseconds().map(|u| u as f64 / 1000.0);
    let logs = logs::for_run(&env.db, &id, 200).await.map_err(|e| e.to_string())?;
    let first_collect = logs.iter().find(|l| l.message == "work list prepared").and_then(|l| since(l.ts));
    Ok(RunTiming { total, started: run.started_at.and_then(since), first_collect })
}

fn registered(o: &RegisterOutcome) -> bool {
    matches!(o, RegisterOutcome::Registered { .. })
}

struct Report {
    lines: Vec<String>,
    notes: Vec<String>,
}

fn line(
    r: &mut Report,
    bench: &str,
    what: &str,
    value: String,
    baseline: String,
    ratio: String,
    target: &str,
    met: Option<bool>,
) {
    let met = match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "(info)",
    };
    r.lines.push(format!("| {bench} | {what} | {value} | {baseline} | {ratio} | {target} | {met} |"));
}

async fn bench_backend(
    backend: &str,
    host: &Path,
    a: &Path,
    b: &Path,
    reg_builds: &[(String, PathBuf)],
    r: &mut Report,
) -> Result<(), String> {
    let reps = env_usize("DC_BENCH_SPAWN_REPS", 30).max(1);
    let swaps = env_usize("DC_BENCH_SWAPS", 200);
    let loops = env_usize("DC_BENCH_RUN_LOOPS", 2);
    let bench = make_env(backend, host).await?;
    let result = bench_inner(backend, &bench.env, a, b, reg_builds, reps, swaps, loops, r).await;
    drop_env(bench).await;
    result
}

async fn bench_inner(
    backend: &str,
    env: &HostEnv,
    a: &Path,
    b: &Path,
    patched: &[(String, PathBuf)],
    reps: usize,
    swaps: usize,
    loops: usize,
    r: &mut Report,
) -> Result<(), String> {
    let tag = |s: &str| format!("{s} [{backend}]");
    // ---- first registration of A (probe included)
    let t0 = Instant::now();
    let out = registry::register_file(env, a).await.map_err(|e| e.to_string())?;
    let reg_a = t0.elapsed();
    if !registered(&out) {
        return Err(format!("registering {} did not register: {out:?}", a.display()));
    }
    let app = apps::resolve_app(&env.db, APP).await.map_err(|e| e.to_string())?;
    let app_id = app.app_id.clone();
    let store_path = supervisor::active_plugin(env, &app).await.map_err(|e| e.to_string())?.0.store_path;

    // ---- B1: run start-up vs bare spawn + dlopen
    timed_run(env, &app_id).await?; // warm-up: creates the table, warms the page cache
    let _ = bare_spawn_dlopen(Path::new(&store_path))?;
    let (mut total, mut started, mut first, mut bare, mut probe) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let t = timed_run(env, &app_id).await?;
        total.push(ms(t.total));
        if let Some(s) = t.started {
            started.push(s);
        }
        if let Some(f) = t.first_collect {
            first.push(f);
        }
        bare.push(ms(bare_spawn_dlopen(Path::new(&store_path))?));
        probe.push(ms(probe_spawn(&env.exe, Path::new(&store_path))?));
    }
    let bare_m = median(&bare);
    let base = format!("spawn + dlopen + exit: {bare_m:.1} ms");
    let first_m = median(&first);
    log(format!(
        "[{backend}] B1: bare {bare_m:.1} ms, worker up {:.1} ms, first collect {first_m:.1} ms, whole run {:.1} ms",
        median(&started),
        median(&total)
    ));
    // The targets: ≤ 3× a bare spawn + dlopen on SQLite, ≤ 5× on PostgreSQL.
    let limit = if backend == "postgres" { 5.0 } else { 3.0 };
    if first.is_empty() {
        r.notes.push(format!(
            "[{backend}] no \"work list prepared\" log record was found, so time to first collect could not be measured"
        ));
    } else {
        line(
            r,
            &tag("B1 run start-up"),
            "spawn worker → first `collect` (log ts of \"work list prepared\")",
            format!("{first_m:.1} ms (p90 {:.1})", pct(&mut first.clone(), 90.0)),
            base.clone(),
            format!("{:.1}×", first_m / bare_m),
            if limit == 3.0 { "≤ 3×" } else { "≤ 5×" },
            Some(first_m / bare_m <= limit),
        );
    }
    let started_m = median(&started);
    line(
        r,
        &tag("B1 run start-up"),
        "spawn worker → run marked RUNNING (by the supervisor, right after the spawn)",
        format!("{started_m:.1} ms"),
        base.clone(),
        format!("{:.1}×", started_m / bare_m),
        "–",
        None,
    );
    let total_m = median(&total);
    line(
        r,
        &tag("B1 run start-up"),
        "whole run, `supervise` wall time (1 item: collect, store/merge, finish, exit)",
        format!("{total_m:.1} ms (p90 {:.1})", pct(&mut total.clone(), 90.0)),
        base.clone(),
        format!("{:.1}×", total_m / bare_m),
        "–",
        None,
    );
    let probe_m = median(&probe);
    line(
        r,
        &tag("B1 run start-up"),
        "`dc-host plugin-probe` (spawn, load + ABI check, manifest, exit)",
        format!("{probe_m:.1} ms"),
        base,
        format!("{:.1}×", probe_m / bare_m),
        "–",
        None,
    );
    r.notes.push(format!(
        "[{backend}] B1 samples (ms, {reps} reps): bare {:?}; first collect {:?}; whole run {:?}",
        round(&bare),
        round(&first),
        round(&total)
    ));

    // ---- B2: swaps and registrations while runs go on
    let t0 = Instant::now();
    let out = registry::register_file(env, b).await.map_err(|e| e.to_string())?;
    let reg_b = t0.elapsed();
    if !registered(&out) {
        return Err(format!("registering {} did not register: {out:?}", b.display()));
    }

    // ---- side check: two runs of the app started together whose merges both
    // insert the same NEW keys (5 pairs). Not a target of this bench; it is
    // reported because the run loops below would otherwise hit it on their
    // first runs and blur the swap measurement.
    let mut race_runs = 0;
    let mut race_failed: Vec<String> = Vec::new();
    for k in 1..=5u64 {
        let items = 3 + 20 * k;
        let app = apps::get_app(&env.db, &app_id).await.map_err(|e| e.to_string())?.ok_or("app vanished")?;
        let opts = run_opts(items);
        let (x, y) = tokio::join!(supervisor::run_app(env, &app, &opts), supervisor::run_app(env, &app, &opts));
        for res in [x, y] {
            race_runs += 1;
            match res {
                Ok(run) if run.status == "SUCCESS" => {}
                Ok(run) => race_failed.push(run.reason.unwrap_or(run.status)),
                Err(e) => race_failed.push(e.to_string()),
            }
        }
    }
    line(
        r,
        &tag("B2 side check"),
        "pairs of simultaneous runs whose merges insert the same new keys (same table)",
        format!("{} of {race_runs} runs failed", race_failed.len()),
        "–".into(),
        "–".into(),
        "–",
        None,
    );
    if let Some(first) = race_failed.first() {
        r.notes.push(format!("[{backend}] side check failure, e.g.: {first}"));
    }
    // the loops' 3 keys exist before they start, so their merges only compare
    let app = apps::get_app(&env.db, &app_id).await.map_err(|e| e.to_string())?.ok_or("app vanished")?;
    let warm = supervisor::run_app(env, &app, &run_opts(3)).await.map_err(|e| e.to_string())?;
    if warm.status != "SUCCESS" {
        return Err(format!("warm-up run ended {}: {:?}", warm.status, warm.reason));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<(String, String, Option<String>)>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..loops {
        let (env, stop, outcomes, app_id) = (env.clone(), stop.clone(), outcomes.clone(), app_id.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let res = async {
                    let app =
                        apps::get_app(&env.db, &app_id).await.map_err(|e| e.to_string())?.ok_or("app vanished")?;
                    supervisor::run_app(&env, &app, &run_opts(3)).await.map_err(|e| e.to_string())
                }
                .await;
                let o = match res {
                    Ok(run) => (run.status, run.plugin_version, run.reason),
                    Err(e) => ("ERROR".into(), String::new(), Some(e)),
                };
                outcomes.lock().await.push(o);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // let the first workers start

    let mut swap_ms = Vec::new();
    let mut swap_err = Vec::new();
    for i in 0..swaps {
        let to = if i % 2 == 0 { VERSION_A } else { VERSION_B };
        let t0 = Instant::now();
        match registry::rollback(env, APP, Some(to)).await {
            Ok((_, now)) if now == to => swap_ms.push(ms(t0.elapsed())),
            Ok((_, now)) => swap_err.push(format!("swap to {to} activated {now}")),
            Err(e) => swap_err.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let runs_during_swaps = outcomes.lock().await.len();
    let mut reg_ms = Vec::new();
    let mut reg_err = Vec::new();
    for (v, p) in patched {
        let t0 = Instant::now();
        match registry::register_file(env, p).await {
            Ok(o) if registered(&o) => reg_ms.push(ms(t0.elapsed())),
            Ok(o) => reg_err.push(format!("{v}: {o:?}")),
            Err(e) => reg_err.push(format!("{v}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let outcomes = outcomes.lock().await.clone();
    let failed: Vec<&(String, String, Option<String>)> = outcomes.iter().filter(|o| o.0 != "SUCCESS").collect();
    let mut versions_used: Vec<&str> = outcomes.iter().map(|o| o.1.as_str()).collect();
    versions_used.sort_unstable();
    versions_used.dedup();

    let (p50, p99, max) =
        (pct(&mut swap_ms.clone(), 50.0), pct(&mut swap_ms.clone(), 99.0), pct(&mut swap_ms.clone(), 100.0));
    line(
        r,
        &tag("B2 swap"),
        &format!("`registry::rollback` between 2 registered builds, {} swaps", swap_ms.len()),
        format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"),
        "–".into(),
        "–".into(),
        "p99 ≤ 50 ms",
        Some(p99 <= 50.0 && swap_err.is_empty()),
    );
    if !reg_ms.is_empty() {
        let (p50, p99, max) =
            (pct(&mut reg_ms.clone(), 50.0), pct(&mut reg_ms.clone(), 99.0), pct(&mut reg_ms.clone(), 100.0));
        line(
            r,
            &tag("B2 registration"),
            &format!("`registry::register_file` of a new build (probe in child), {} builds", reg_ms.len()),
            format!("p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"),
            format!("bare spawn + dlopen {bare_m:.1} ms; probe alone {probe_m:.1} ms"),
            "–".into(),
            "p99 ≤ 50 ms",
            Some(p99 <= 50.0 && reg_err.is_empty()),
        );
    }
    line(
        r,
        &tag("B2 concurrent runs"),
        &format!("worker runs (mode ok, 3 items) in {loops} loops during swaps + registrations"),
        format!("{} runs ({} during the swaps), {} failed", outcomes.len(), runs_during_swaps, failed.len()),
        "–".into(),
        "–".into(),
        "0 failed",
        Some(failed.is_empty() && !outcomes.is_empty()),
    );
    r.notes.push(format!(
        "[{backend}] first registrations (probe included): {VERSION_A} {:.1} ms, {VERSION_B} {:.1} ms; versions used by the concurrent runs: {}",
        ms(reg_a),
        ms(reg_b),
        versions_used.join(", ")
    ));
    if !swap_err.is_empty() || !reg_err.is_empty() {
        r.notes.push(format!("[{backend}] swap/registration errors: {:?} {:?}", swap_err, reg_err));
    }
    for f in failed.iter().take(5) {
        r.notes.push(format!("[{backend}] failed run: status {} version {} reason {:?}", f.0, f.1, f.2));
    }
    Ok(())
}

fn round(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 10.0).round() / 10.0).collect()
}

fn main() {
    if let Some(lib) = std::env::var_os(CHILD_ENV) {
        // baseline child: dlopen the library (libloading::Library::new via
        // abi_stable's RawLibrary) and exit without unloading
        match abi_stable::library::RawLibrary::load_at(Path::new(&lib)) {
            Ok(l) => {
                std::mem::forget(l);
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("dlopen failed: {e}");
                std::process::exit(1);
            }
        }
    }
    let started = Instant::now();
    let load_start = loadavg();
    let regs = env_usize("DC_BENCH_REGISTRATIONS", 30);
    let (host, a, b, reg_builds) = match host_bin().and_then(|h| plugin_builds(regs).map(|(a, b, r)| (h, a, b, r))) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("cannot prepare the binaries: {e}");
            std::process::exit(2);
        }
    };
    log(format!("dc-host {}, plugin builds {} / {}", host.display(), a.display(), b.display()));
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(2);
        }
    };
    let backends: Vec<&str> = match std::env::var("DC_BENCH_SPAWN_DB").as_deref() {
        Ok("sqlite") => vec!["sqlite"],
        Ok("postgres") => vec!["postgres"],
        _ => vec!["sqlite", "postgres"],
    };
    let mut report = Report { lines: vec![], notes: vec![] };
    for be in backends {
        if let Err(e) = rt.block_on(bench_backend(be, &host, &a, &b, &reg_builds, &mut report)) {
            log(format!("[{be}] {e}"));
            report.notes.push(format!("[{be}] {e}"));
        }
    }
    println!("\n## dc-runtime spawn / swap benchmarks");
    println!();
    println!("| Bench | Measured | Median / percentiles | Baseline (same run) | Ratio | Target | Met |");
    println!("|---|---|---|---|---:|---|---|");
    for l in &report.lines {
        println!("{l}");
    }
    println!();
    for n in &report.notes {
        println!("- {n}");
    }
    println!(
        "- total bench wall time: {:.0} s; load average (1/5/15 min) at start {load_start}, at end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}

/// The machine's load average (the box may be shared: report it with the numbers).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
