//! How supervised runs end (`supervisor`): each run of the misbehave fixture
//! goes through `create_run` / `run_app` / `supervise_with` in a real
//! `dc-worker` process, and the finished run row must say what happened
//! — SUCCESS with its counts; FAILED with the reason for a panic, an abort
//! (the signal), a time-limit kill; STOPPED for an interrupt (a stop the
//! plugin honours, or a kill) sent once the plugin announced itself on its
//! ready fifo — and the app counts failures, not stops.

use std::time::Duration;

use dc_core::runs::{self, RunRow};
use dc_e2e::Fifo;
use dc_runtime::RuntimeError;
use dc_runtime::supervisor::{self, Interrupt, RunOptions, SuperviseOptions};
use serde_json::json;
use tokio::sync::watch;

use crate::common::{LIMIT, TestEnv};

both_backends!(
    an_ok_run_succeeds_with_its_counts,
    a_panic_fails_the_run_with_its_message,
    an_abort_fails_the_run_naming_the_signal,
    a_hanging_plugin_is_killed_at_the_time_limit,
    a_stop_interrupt_ends_a_cooperative_run_as_stopped,
    a_kill_interrupt_ends_the_run_as_stopped_at_once,
    arguments_against_the_schema_create_no_run,
);

async fn an_ok_run_succeeds_with_its_counts(t: &TestEnv) {
    t.with_misbehave().await;
    let r = t.run(json!({"mode": "ok", "items": 4}), None).await;
    assert_eq!(r.status, "SUCCESS", "{r:?}");
    assert_eq!(r.reason, None, "{r:?}");
    assert_eq!((r.exit_code, r.exit_signal), (Some(0), None), "{r:?}");
    assert_eq!((r.current_count, r.total_count, r.error_count), (4, 4, 0), "{r:?}");
    assert_eq!((r.inserted, r.updated, r.deleted, r.unchanged), (4, 0, 0, 0), "{r:?}");
    assert_eq!((r.plugin_version.as_str(), r.threads), ("1.0.0", 1), "{r:?}");
    assert!(r.worker_pid.is_some() && r.started_at.is_some() && r.ended_at.is_some(), "{r:?}");
    let app = t.app().await;
    assert_eq!((app.run_status.as_deref(), app.fail_count), (Some("SUCCESS"), 0), "{app:?}");
}

async fn a_panic_fails_the_run_with_its_message(t: &TestEnv) {
    t.with_misbehave().await;
    // the worker catches the panic at the interface and ends the run itself
    let r = t.run(json!({"mode": "panic", "at": "prepare"}), None).await;
    assert_failed(&r, "prepare_list failed: plugin panicked: misbehave: deliberate panic");
    assert_eq!((r.exit_code, r.exit_signal), (Some(1), None), "{r:?}");
    // a panic in every collect call fails every item
    let r = t.run(json!({"mode": "panic", "items": 3}), None).await;
    assert_failed(&r, "all 3 items failed in collect");
    assert_eq!(r.error_count, 3, "{r:?}");
    assert_eq!(t.app().await.fail_count, 2, "each failed run counts on the app");
}

async fn an_abort_fails_the_run_naming_the_signal(t: &TestEnv) {
    t.with_misbehave().await;
    let r = t.run(json!({"mode": "abort"}), None).await;
    assert_failed(&r, "worker ended before finishing the run: signal 6 (SIGABRT, the plugin aborted)");
    assert_eq!((r.exit_code, r.exit_signal), (None, Some(6)), "{r:?}");
    assert_eq!(r.inserted, 0, "{r:?}");
    assert_eq!(t.app().await.fail_count, 1);
    // the host is fine: the next run succeeds and resets the failure count
    let ok = t.run(json!({"mode": "ok", "items": 1}), None).await;
    assert_eq!(ok.status, "SUCCESS", "{ok:?}");
    assert_eq!(t.app().await.fail_count, 0, "a success resets the failure count");
}

async fn a_hanging_plugin_is_killed_at_the_time_limit(t: &TestEnv) {
    t.with_misbehave().await;
    let r = t.run(json!({"mode": "hang", "items": 1}), Some(Duration::from_secs(2))).await;
    assert_failed(&r, "exceeded the time limit of 2s and was killed; raise runs.time_limit_secs");
    assert_eq!(r.exit_signal, Some(9), "SIGKILL: {r:?}");
    assert_eq!(t.app().await.fail_count, 1, "a time-limit kill counts as a failure");
}

async fn a_stop_interrupt_ends_a_cooperative_run_as_stopped(t: &TestEnv) {
    let app = t.with_misbehave().await;
    // a grace period no test reaches: the plugin must stop on its own
    let mut env = t.env.clone();
    env.settings.runs.stop_grace_secs = LIMIT.as_secs();
    let fifo = Fifo::new();
    let args = json!({"mode": "slow", "items": 20, "ready_fifo": fifo.as_str()});
    let opts = RunOptions { args: Some(args), threads: Some(1), time_limit: Some(LIMIT) };
    let id = supervisor::create_run(&env, &app, &opts).await.expect("create run");
    assert_eq!(runs::get(t.db(), &id).await.expect("run").status, "PENDING");
    let (tx, rx) = watch::channel((Interrupt::None, String::new()));
    let task = {
        let (env, id) = (env.clone(), id.clone());
        tokio::spawn(async move {
            supervisor::supervise_with(&env, &id, SuperviseOptions { time_limit: Some(LIMIT), interrupt: Some(rx) })
                .await
        })
    };
    // the plugin announces itself from inside collect: the run is RUNNING
    let ready = tokio::task::block_in_place(|| fifo.read_line(LIMIT));
    assert!(ready.starts_with("ready "), "{ready}");
    assert_eq!(runs::get(t.db(), &id).await.expect("run").status, "RUNNING");
    tx.send((Interrupt::Stop, "stopped by the test".into())).expect("the supervisor listens");
    let r = finished(task).await;
    assert_eq!(r.status, "STOPPED", "{r:?}");
    let reason = r.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("stopped on request after") && reason.contains("nothing was stored"), "{reason}");
    assert!(r.stop_requested, "{r:?}");
    assert_eq!((r.exit_code, r.exit_signal), (Some(3), None), "the worker ended the run itself: {r:?}");
    assert!(r.current_count < 20, "{r:?}");
    assert_eq!((r.inserted, r.updated, r.deleted), (0, 0, 0), "a stopped run stores nothing: {r:?}");
    assert!(runs::changes(t.db(), &id).await.expect("changes").is_empty());
    assert_eq!(t.app().await.fail_count, 0, "a stop is not a failure");
    drop(tx);
}

async fn a_kill_interrupt_ends_the_run_as_stopped_at_once(t: &TestEnv) {
    let app = t.with_misbehave().await;
    let fifo = Fifo::new();
    let args = json!({"mode": "hang", "items": 1, "ready_fifo": fifo.as_str()});
    let opts = RunOptions { args: Some(args), threads: Some(1), time_limit: Some(LIMIT) };
    let id = supervisor::create_run(&t.env, &app, &opts).await.expect("create run");
    let (tx, rx) = watch::channel((Interrupt::None, String::new()));
    let task = {
        let (env, id) = (t.env.clone(), id.clone());
        tokio::spawn(async move {
            supervisor::supervise_with(&env, &id, SuperviseOptions { time_limit: Some(LIMIT), interrupt: Some(rx) })
                .await
        })
    };
    let ready = tokio::task::block_in_place(|| fifo.read_line(LIMIT));
    let worker: i32 = ready
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("expected 'ready <pid>', got {ready:?}"));
    tx.send((Interrupt::Kill, "killed by the test".into())).expect("the supervisor listens");
    let r = finished(task).await;
    assert_eq!(r.status, "STOPPED", "{r:?}");
    assert_eq!(
        r.reason.as_deref(),
        Some("killed by the test: the worker's process group was killed; nothing of the unfinished merge was stored")
    );
    assert_eq!(r.exit_signal, Some(9), "{r:?}");
    assert_eq!(r.worker_pid, Some(i64::from(worker)), "the pid the plugin announced is the run's worker");
    assert!(tokio::task::block_in_place(|| dc_e2e::wait_pid_exit(worker, LIMIT)), "the worker is gone");
    assert_eq!(t.app().await.fail_count, 0, "an interrupt is not a failure");
}

async fn arguments_against_the_schema_create_no_run(t: &TestEnv) {
    let app = t.with_misbehave().await;
    let opts = RunOptions { args: Some(json!({"mode": "explode", "colour": "red"})), ..Default::default() };
    match supervisor::create_run(&t.env, &app, &opts).await {
        Err(RuntimeError::BadArgs { app, problems }) => {
            assert_eq!(app, crate::common::APP);
            assert!(
                problems.contains("mode") && problems.contains("colour"),
                "each problem names its field: {problems}"
            );
        }
        other => panic!("expected BadArgs, got {other:?}"),
    }
    assert!(runs::list(t.db(), Some(&app.app_id), 10).await.expect("list").is_empty(), "no run was created");
}

/// A host whose `dc-worker` is not installed next to `dc-host` fails the run,
/// naming the missing file and the fix, instead of starting something else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_worker_program_fails_the_run_naming_the_file_and_the_fix() {
    let t = TestEnv::sqlite().await;
    let app = t.with_misbehave().await;
    let lone = tempfile::tempdir().expect("tempdir");
    let mut env = t.env.clone();
    env.exe = lone.path().join("dc-host");
    let opts = RunOptions { args: Some(json!({"mode": "ok", "items": 1})), threads: Some(1), time_limit: Some(LIMIT) };
    let id = supervisor::create_run(&env, &app, &opts).await.expect("the run is created");
    let missing = lone.path().join("dc-worker").display().to_string();
    match supervisor::supervise(&env, &id, opts.time_limit).await {
        Err(RuntimeError::Refused(msg)) => assert!(msg.contains(&missing), "{msg}"),
        other => panic!("expected a refusal naming {missing}, got {other:?}"),
    }
    let r = runs::get(t.db(), &id).await.expect("the run");
    assert_failed(&r, &format!("{missing} does not exist; install dc-worker next to"));
    assert!(r.reason.as_deref().unwrap_or_default().contains("cargo build -p dc-host"), "{r:?}");
    assert_eq!(t.app().await.fail_count, 1, "the failure counts on the app");
}

/// Asserts a FAILED run whose reason contains `reason`.
fn assert_failed(r: &RunRow, reason: &str) {
    assert_eq!(r.status, "FAILED", "{r:?}");
    let got = r.reason.as_deref().unwrap_or_default();
    assert!(got.contains(reason), "reason {got:?} lacks {reason:?}");
    assert!(r.ended_at.is_some(), "{r:?}");
}

/// The run a supervising task returned (bounded only against a broken test).
async fn finished(task: tokio::task::JoinHandle<Result<RunRow, RuntimeError>>) -> RunRow {
    tokio::time::timeout(LIMIT, task)
        .await
        .expect("the run ends")
        .expect("the supervising task does not panic")
        .expect("the run is supervised to its end")
}
