//! Every run ends with a true status and reason: Ctrl-C on `dc-host run`
//! stops (then kills) the run; the time limit kills everything the plugin
//! started; a worker whose supervisor was killed still ends its run at the time
//! limit; a run whose worker is gone is reaped as orphaned (also by `runs
//! stop`); every failure kind counts on the app; a memory-limit kill says so.
//! Tests wait on events (a named pipe the plugin writes to, process exits),
//! never on the clock.

use std::process::{Child, Stdio};
use std::time::Duration;

use dc_e2e::{Fifo, Host, KillOnDrop, plugin_lib, send_signal, wait_pid_exit};
use serde_json::{Value, json};

const APP: &str = "test/fixtures/misbehave";
/// Bounds a broken test only; every wait below ends on an event.
const LIMIT: Duration = Duration::from_secs(60);

fn host_with_misbehave(env: &[(&str, &str)]) -> Host {
    let mut host = Host::sqlite();
    for (k, v) in env {
        host.env.push(((*k).into(), (*v).into()));
    }
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    host
}

/// Starts `dc-host run` in the background with the plugin announcing itself on `fifo`.
fn start_run(host: &Host, mode: &str, fifo: &Fifo, extra: &[&str]) -> Child {
    let args = json!({"mode": mode, "items": 3, "ready_fifo": fifo.as_str()}).to_string();
    let mut a = vec!["run", APP, "--args", &args, "--threads", "1", "--json"];
    a.extend_from_slice(extra);
    host.command(&a).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("dc-host run starts")
}

/// The pid in a `ready <pid>` / `child <pid>` line.
fn pid_in(line: &str, word: &str) -> i32 {
    line.strip_prefix(word)
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("expected '{word} <pid>', got {line:?}"))
}

fn finished(child: Child) -> Value {
    let out = child.wait_with_output().expect("dc-host run ends");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no run JSON ({e}); stderr:\n{}", String::from_utf8_lossy(&out.stderr)))
}

fn the_only_run(host: &Host) -> Value {
    let runs = host.json(&["runs", "list", "--json"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    runs[0].clone()
}

fn fail_count(host: &Host) -> i64 {
    host.json(&["plugins", "list", "--json"])[0]["fail_count"].as_i64().expect("fail_count")
}

#[test]
fn ctrl_c_stops_a_cooperative_run() {
    let host = host_with_misbehave(&[]);
    let fifo = Fifo::new();
    let child = start_run(&host, "slow", &fifo, &[]);
    let ready = fifo.read_line(LIMIT);
    assert!(ready.starts_with("ready "), "{ready}");
    send_signal(child.id() as i32, libc::SIGINT);
    let r = finished(child);
    assert_eq!(r["status"], "STOPPED", "{r}");
    assert_eq!(r["inserted"], 0, "a stopped run stores nothing: {r}");
    assert_eq!(fail_count(&host), 0, "a stop is not a failure");
}

#[test]
fn ctrl_c_kills_a_plugin_that_ignores_stop_after_the_grace_period() {
    let host = host_with_misbehave(&[("DC_RUNS_STOP_GRACE_SECS", "1")]);
    let fifo = Fifo::new();
    let child = start_run(&host, "hang", &fifo, &[]);
    let worker = pid_in(&fifo.read_line(LIMIT), "ready ");
    send_signal(child.id() as i32, libc::SIGINT);
    let r = finished(child);
    assert_eq!(r["status"], "STOPPED", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("interrupted by the operator (Ctrl-C (SIGINT))")
            && reason.contains("did not stop within 1s and its process group was killed"),
        "{reason}"
    );
    assert!(wait_pid_exit(worker, LIMIT), "the worker is gone");
}

#[test]
fn the_time_limit_kills_everything_the_plugin_started_and_counts_as_a_failure() {
    let host = host_with_misbehave(&[]);
    let fifo = Fifo::new();
    let child = start_run(&host, "spawn_child", &fifo, &["--time-limit", "2"]);
    let grandchild = pid_in(&fifo.read_line(LIMIT), "child ");
    let r = finished(child);
    assert_eq!(r["status"], "FAILED", "{r}");
    assert!(r["reason"].as_str().unwrap_or_default().contains("exceeded the time limit of 2s"), "{r}");
    assert!(wait_pid_exit(grandchild, LIMIT), "the process the plugin spawned was killed with its worker");
    assert_eq!(fail_count(&host), 1, "a time-limit kill counts as a failure");
}

#[test]
fn a_worker_whose_supervisor_was_killed_still_ends_its_run_at_the_time_limit() {
    let host = host_with_misbehave(&[]);
    let fifo = Fifo::new();
    let child = start_run(&host, "hang", &fifo, &["--time-limit", "1"]);
    let worker = pid_in(&fifo.read_line(LIMIT), "ready ");
    let mut supervisor = KillOnDrop(child);
    send_signal(supervisor.0.id() as i32, libc::SIGKILL);
    let _ = supervisor.0.wait();
    assert!(wait_pid_exit(worker, LIMIT), "the worker ended itself");
    let r = the_only_run(&host);
    assert_eq!(r["status"], "FAILED", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason
            .contains("exceeded the time limit of 1s; the worker ended the run itself because its supervisor did not"),
        "{reason}"
    );
    assert_eq!(fail_count(&host), 1);
}

/// A run left RUNNING: supervisor and worker killed together.
fn orphan(host: &Host) -> String {
    let fifo = Fifo::new();
    let child = start_run(host, "hang", &fifo, &[]);
    let worker = pid_in(&fifo.read_line(LIMIT), "ready ");
    let mut supervisor = KillOnDrop(child);
    send_signal(supervisor.0.id() as i32, libc::SIGKILL);
    let _ = supervisor.0.wait();
    send_signal(-worker, libc::SIGKILL);
    assert!(wait_pid_exit(worker, LIMIT), "the worker is gone");
    let runs = host.json(&["runs", "list", "--json"]);
    let running: Vec<&Value> = runs.as_array().expect("runs").iter().filter(|r| r["status"] == "RUNNING").collect();
    assert_eq!(running.len(), 1, "the run was left RUNNING: {runs}");
    running[0]["runtime_id"].as_str().expect("id").to_string()
}

#[test]
fn a_run_whose_worker_is_gone_is_reaped_as_orphaned() {
    let host = host_with_misbehave(&[]);
    let rid = orphan(&host);
    let reaped = host.json(&["runs", "reap", "--json"]);
    assert_eq!(reaped.as_array().map(Vec::len), Some(1), "{reaped}");
    assert_eq!(reaped[0]["runtime_id"], rid.as_str());
    assert_eq!(reaped[0]["status"], "FAILED");
    assert!(reaped[0]["reason"].as_str().unwrap_or_default().starts_with("orphaned: its worker (pid "), "{reaped}");
    assert_eq!(fail_count(&host), 1, "an orphaned run counts as a failure");
    assert_eq!(host.json(&["runs", "reap", "--json"]), json!([]), "reaping twice ends nothing more");

    // `runs stop` on a run with no live worker says so and fails, instead of "stop requested"
    let rid2 = orphan(&host);
    let (code, text) = host.fails(&["runs", "stop", &rid2]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("has no live worker, so nothing can stop it; it was marked FAILED: orphaned"), "{text}");
    assert_eq!(fail_count(&host), 2);
}

#[test]
fn a_memory_limit_kill_says_so() {
    let host = host_with_misbehave(&[("DC_RUNS_MEMORY_LIMIT_MB", "1024")]);
    let r = host.json(&["run", APP, "--args", r#"{"mode": "alloc", "items": 1}"#, "--threads", "1", "--json"]);
    assert_eq!(r["status"], "FAILED", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("memory limit of 1024 MB reached (memory allocation of 8589934592 bytes failed")
            && reason.contains("raise runs.memory_limit_mb"),
        "{reason}"
    );
    assert_eq!(fail_count(&host), 1);
}

/// A worker on a host that another host took for dead (its heartbeat
/// expired, say during a network partition) may still be alive. Its run was
/// ended as orphaned meanwhile, so its rows must not land when it comes to
/// commit: the commit is fenced on the run still being RUNNING.
#[test]
fn a_run_ended_by_another_host_meanwhile_stores_nothing() {
    for host in [Host::sqlite(), Host::postgres()] {
        host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
        host.ok(&["reload"]);
        let (ready, go) = (Fifo::new(), Fifo::new());
        let args = json!({"mode": "wait", "at": "store", "items": 3, "ready_fifo": ready.as_str(), "continue_fifo": go.as_str()});
        let child = host
            .command(&["run", APP, "--args", &args.to_string(), "--threads", "1", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dc-host run starts");
        // the worker has collected its items and waits before merging them
        pid_in(&ready.read_line(LIMIT), "ready ");
        // what another host's reaper writes when it takes this host for dead
        host.db_exec(
            "UPDATE runtime SET status = 'FAILED', reason = 'orphaned: its host stopped sending heartbeats' \
             WHERE status = 'RUNNING'",
        );
        go.release();
        let run = finished(child);
        assert_eq!(run["status"], "FAILED", "{run}");
        assert_eq!(run["inserted"], 0, "{run}");
        assert!(run["reason"].as_str().unwrap_or_default().starts_with("orphaned"), "{run}");
        assert_eq!(host.db_rows("SELECT COUNT(*) FROM misbehave_rows"), vec!["0".to_string()], "no row landed");
    }
}
