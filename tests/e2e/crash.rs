//! A plugin that panics, aborts, segfaults, hangs or returns bad records takes
//! down only its worker; the host records why and keeps serving.
//!
//! Every case runs on both backends (`<case>::sqlite`, `<case>::postgres`,
//! see [`dc_e2e::both_backends`]): the body gets the constructor of its hosts.

use dc_e2e::{Fifo, Host, plugin_lib};
use serde_json::Value;
use std::time::Duration;

dc_e2e::both_backends!(
    crashes_are_recorded_with_their_cause,
    a_hanging_plugin_is_killed_at_the_time_limit,
    a_memory_limit_applies_to_the_worker_only,
    stop_ends_a_run_as_stopped_and_stores_nothing,
    log_records_dropped_by_a_full_buffer_are_counted_on_the_run,
);

fn host_with_misbehave(new_host: fn() -> Host) -> Host {
    let host = new_host();
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    host
}

fn run(host: &Host, args: &str, extra: &[&str]) -> Value {
    let mut a = vec!["run", "test/fixtures/misbehave", "--args", args, "--json"];
    a.extend_from_slice(extra);
    host.json(&a)
}

fn crashes_are_recorded_with_their_cause(new_host: fn() -> Host) {
    let host = host_with_misbehave(new_host);
    let cases: &[(&str, &str, Option<i64>)] = &[
        (r#"{"mode": "abort"}"#, "signal 6 (SIGABRT", Some(6)),
        (r#"{"mode": "segfault"}"#, "signal 11 (SIGSEGV", Some(11)),
        (r#"{"mode": "segfault", "at": "new"}"#, "signal 11 (SIGSEGV", Some(11)),
        (r#"{"mode": "abort", "at": "store"}"#, "signal 6 (SIGABRT", Some(6)),
        (
            r#"{"mode": "panic", "at": "prepare"}"#,
            "prepare_list failed: plugin panicked: misbehave: deliberate panic",
            None,
        ),
        (r#"{"mode": "panic", "at": "new"}"#, "plugin failed to start: plugin panicked", None),
        (r#"{"mode": "panic"}"#, "all 5 items failed in collect", None),
        (
            r#"{"mode": "bad_record"}"#,
            "field \"note\": expected a string, got a number 42; nothing of this batch was written",
            None,
        ),
    ];
    for (args, reason, signal) in cases {
        let r = run(&host, args, &[]);
        assert_eq!(r["status"], "FAILED", "{args}: {r}");
        let got = r["reason"].as_str().unwrap_or_default();
        assert!(got.contains(reason), "{args}: reason {got:?} lacks {reason:?}");
        assert_eq!(r["exit_signal"].as_i64(), *signal, "{args}: {r}");
    }
    // the host is fine and the next run succeeds
    let ok = run(&host, r#"{"mode": "ok"}"#, &[]);
    assert_eq!(ok["status"], "SUCCESS", "{ok}");
    assert_eq!(ok["inserted"], 5);
    let apps = host.json(&["plugins", "list", "--json"]);
    assert_eq!(apps[0]["fail_count"], 0, "a success resets the failure count");
}

fn a_hanging_plugin_is_killed_at_the_time_limit(new_host: fn() -> Host) {
    let host = host_with_misbehave(new_host);
    let r = run(&host, r#"{"mode": "hang"}"#, &["--time-limit", "2"]);
    assert_eq!(r["status"], "FAILED", "{r}");
    assert!(r["reason"].as_str().unwrap_or_default().contains("exceeded the time limit of 2s"), "{r}");
    assert_eq!(r["exit_signal"], 9);
}

fn a_memory_limit_applies_to_the_worker_only(new_host: fn() -> Host) {
    // a limit too small for any worker to start is refused up front, naming the key
    let mut tiny = new_host();
    tiny.env.push(("DC_RUNS_MEMORY_LIMIT_MB".into(), "64".into()));
    let (code, text) = tiny.fails(&["runs", "list"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("invalid setting runs.memory_limit_mb = 64: at least 512"), "{text}");
    // a workable limit binds the worker only: an ordinary run succeeds under it
    let mut limited = new_host();
    limited.env.push(("DC_RUNS_MEMORY_LIMIT_MB".into(), "1024".into()));
    limited.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    limited.ok(&["reload"]);
    assert_eq!(run(&limited, r#"{"mode": "ok"}"#, &[])["status"], "SUCCESS");
}

fn stop_ends_a_run_as_stopped_and_stores_nothing(new_host: fn() -> Host) {
    let host = host_with_misbehave(new_host);
    let fifo = Fifo::new();
    let args = serde_json::json!({"mode": "slow", "items": 20, "ready_fifo": fifo.as_str()}).to_string();
    let child = host
        .command(&["run", "test/fixtures/misbehave", "--args", &args, "--threads", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run starts");
    // the plugin announces itself from inside collect: the run is RUNNING
    assert!(fifo.read_line(Duration::from_secs(60)).starts_with("ready "));
    let runs = host.json(&["runs", "list", "--json"]);
    let rid = runs[0]["runtime_id"].as_str().expect("a run").to_string();
    assert_eq!(runs[0]["status"], "RUNNING", "{runs}");
    assert!(host.ok(&["runs", "stop", &rid]).contains("stop requested"));
    let out = child.wait_with_output().expect("run ends");
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["status"], "STOPPED", "{r}");
    assert!(r["reason"].as_str().unwrap_or_default().contains("nothing was stored"));
    assert_eq!(r["inserted"], 0);
    assert!((r["current_count"].as_i64().unwrap_or(99)) < 20);
}

fn log_records_dropped_by_a_full_buffer_are_counted_on_the_run(new_host: fn() -> Host) {
    let mut host = host_with_misbehave(new_host);
    host.env.push(("DC_LOGGING_BUFFER".into(), "50".into()));
    let r = run(&host, r#"{"mode": "flood", "items": 1}"#, &[]);
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let dropped = r["dropped_logs"].as_i64().expect("dropped_logs");
    assert!(dropped > 0, "20,000 records through a buffer of 50 drop some: {r}");
    let id = r["runtime_id"].as_str().expect("id");
    let shown = host.json(&["runs", "show", id, "--logs", "--json"]);
    let stored = shown["logs"].as_array().map(Vec::len).unwrap_or(0) as i64;
    assert!(stored + dropped >= 20_000, "every record is either stored or counted: {stored} + {dropped}");
    let text = host.ok(&["runs", "show", id]);
    assert!(text.contains(&format!("dropped    {dropped} log records: the log buffer was full")), "{text}");
}
