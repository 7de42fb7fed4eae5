//! `dc-host serve`, the manager: it starts apps on operator commands (queued
//! before it started, too) and on their schedules, supervises their runs,
//! writes a heartbeat, and on SIGTERM stops claiming, stops the runs still
//! going after the grace period and records why. Two hosts on one database
//! claim a command once. Tests wait on the events `serve --json` prints (and
//! on the plugin's named pipe), never on the clock.

use std::time::Duration;

use dc_e2e::{Fifo, Host, HttpSink, Serve, plugin_lib, send_signal};
use serde_json::{Value, json};

const APP: &str = "test/fixtures/misbehave";
/// Bounds a broken test only; every wait below ends on an event.
const LIMIT: Duration = Duration::from_secs(90);

fn with_misbehave(host: Host) -> Host {
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    host
}

fn is(e: &Value, event: &str) -> bool {
    e["event"] == event
}

#[test]
fn serve_runs_commands_and_schedules_and_shuts_down_gracefully() {
    let host = with_misbehave(Host::sqlite());
    host.ok(&["apps", "args", APP, &json!({"mode": "ok", "items": 2}).to_string()]);
    // a command queued while no host serves waits for one
    let out = host.ok(&["apps", "start", APP]);
    assert!(out.contains("START queued; no host is serving"), "{out}");
    let serve = Serve::start(&host, &["--grace", "0"]);
    let started = serve.wait_for(|e| is(e, "started"));
    assert_eq!(started["cause"], "command START", "{started}");
    let ended = serve.wait_for(|e| is(e, "ended"));
    assert_eq!(
        (ended["status"].as_str(), ended["runtime_id"].clone()),
        (Some("SUCCESS"), started["runtime_id"].clone())
    );
    let hosts = host.json(&["hosts", "list", "--json"]);
    assert_eq!(hosts[0]["state"], "SERVING", "{hosts}");

    // a schedule: planned first, then run when due
    host.ok(&["apps", "schedule", APP, "--every", "1s"]);
    let started = serve.wait_for(|e| is(e, "started"));
    assert_eq!(started["cause"], "schedule", "{started}");
    host.ok(&["apps", "disable", APP]);
    // the run's end and the command come in either order; a scheduled run may
    // still start before the command is claimed, and it ends too
    let (mut disabled, mut open) = (false, vec![started["runtime_id"].clone()]);
    while !disabled || !open.is_empty() {
        let e = serve.wait_for(|e| is(e, "command") || is(e, "started") || is(e, "ended"));
        match e["event"].as_str() {
            Some("command") => disabled |= e["command"] == "DISABLE",
            Some("started") => open.push(e["runtime_id"].clone()),
            _ => {
                assert_eq!(e["status"], "SUCCESS", "{e}");
                open.retain(|id| *id != e["runtime_id"]);
            }
        }
    }
    assert_eq!(host.json(&["apps", "show", APP, "--json"])["enabled"], false);

    // shutdown with a run going: it is stopped (grace 0) and the reason says why
    let ready = Fifo::new();
    host.ok(&["apps", "args", APP, &json!({"mode": "slow", "items": 3, "ready_fifo": ready.as_str()}).to_string()]);
    host.ok(&["apps", "start", APP]);
    let started = serve.wait_for(|e| is(e, "started") && e["cause"] == "command START");
    let line = ready.read_line(LIMIT);
    assert!(line.starts_with("ready "), "{line}");
    let rest = serve.terminate();
    assert!(rest.iter().any(|e| is(e, "shutting_down") && e["running"] == 1), "{rest:?}");
    let ended = rest.iter().find(|e| is(e, "ended")).unwrap_or_else(|| panic!("the run ends: {rest:?}"));
    assert_eq!(ended["runtime_id"], started["runtime_id"]);
    assert_eq!(ended["status"], "STOPPED", "{ended}");
    assert!(ended["reason"].as_str().unwrap_or_default().contains("was shut down"), "{ended}");
    assert!(is(rest.last().expect("events"), "stopped"), "{rest:?}");
    let hosts = host.json(&["hosts", "list", "--json"]);
    assert_eq!(hosts[0]["state"], "STOPPED", "{hosts}");
    let runs = host.json(&["runs", "list", "--json"]);
    assert!(runs.as_array().expect("runs").iter().all(|r| r["status"] != "RUNNING"), "{runs}");
}

#[test]
fn two_hosts_on_one_database_claim_a_command_once() {
    let mut host = with_misbehave(Host::postgres());
    host.ok(&["apps", "args", APP, &json!({"mode": "ok", "items": 1}).to_string()]);
    host.env.push(("DC_GENERAL_HOST_NAME".into(), "host-a".into()));
    let a = Serve::start(&host, &[]);
    host.env.pop();
    host.env.push(("DC_GENERAL_HOST_NAME".into(), "host-b".into()));
    let b = Serve::start(&host, &[]);
    host.ok(&["apps", "start", APP]);
    // whichever host claims it runs it; wait for the run's end on either
    let mut all = Vec::new();
    let ended = loop {
        for (name, serve) in [("a", &a), ("b", &b)] {
            if let Ok(e) = serve.events.recv_timeout(Duration::from_millis(20)) {
                all.push((name, e));
            }
        }
        if let Some((_, e)) = all.iter().find(|(_, e)| is(e, "ended")) {
            break e.clone();
        }
        // bounds a broken test only: about LIMIT of silence on both
        assert!(all.len() < 1000, "no run ended: {all:?}");
    };
    assert_eq!(ended["status"], "SUCCESS", "{ended}");
    all.extend(a.terminate().into_iter().map(|e| ("a", e)));
    all.extend(b.terminate().into_iter().map(|e| ("b", e)));
    let commands: Vec<_> = all.iter().filter(|(_, e)| is(e, "command")).collect();
    let starts: Vec<_> = all.iter().filter(|(_, e)| is(e, "started") || is(e, "skipped")).collect();
    assert_eq!((commands.len(), starts.len()), (1, 1), "one claim, one run: {all:?}");
    let hosts = host.json(&["hosts", "list", "--json"]);
    let names: Vec<&str> = hosts.as_array().expect("hosts").iter().filter_map(|h| h["host_name"].as_str()).collect();
    assert_eq!(names, vec!["host-a", "host-b"], "{hosts}");
    assert_eq!(host.json(&["runs", "list", "--json"]).as_array().map(Vec::len), Some(1));
}

/// The HMAC-SHA256 a signed webhook must carry.
fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn a_failing_app_is_disabled_and_alerts_reach_their_channels() {
    // the webhook answers 500 once: the notice is retried, the run is not affected
    let (hook, slack) = (HttpSink::start(1), HttpSink::start(0));
    let mut host = Host::sqlite();
    let config = host.dir.path().join("dc-host.toml");
    std::fs::write(
        &config,
        format!(
            "[runs]\nmax_consecutive_failures = 2\n\n\
             [[notify.channels]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"k3y\"\nmin_severity = \"ERROR\"\n\n\
             [[notify.channels]]\nkind = \"slack\"\nurl = \"{}\"\nmin_severity = \"CRITICAL\"\n",
            hook.url, slack.url
        ),
    )
    .expect("config");
    host.env.push(("DC_CONFIG".into(), config.display().to_string()));
    let host = with_misbehave(host);
    host.ok(&["apps", "args", APP, &json!({"mode": "fail", "items": 1}).to_string()]);
    let serve = Serve::start(&host, &[]);
    for _ in 0..2 {
        host.ok(&["apps", "start", APP]);
        let ended = serve.wait_for(|e| is(e, "ended"));
        assert_eq!(ended["status"], "FAILED", "{ended}");
    }
    let disabled = serve.wait_for(|e| is(e, "disabled"));
    assert_eq!((disabled["app"].as_str(), disabled["failures"].as_i64()), (Some(APP), Some(2)), "{disabled}");
    let shown = host.json(&["apps", "show", APP, "--json"]);
    assert_eq!(shown["enabled"], false, "{shown}");

    // the webhook: two run_failed (the first after a 500 and a retry), then app_disabled, each signed
    let mut events = Vec::new();
    while events.iter().filter(|(_, code)| *code == 200).count() < 3 {
        let r = hook.requests.recv_timeout(LIMIT).expect("the webhook gets the notices");
        let sig = r.header("x-dc-signature").unwrap_or_default().to_string();
        assert_eq!(sig, format!("sha256={}", hmac_hex(b"k3y", &r.body)), "signed over the exact body");
        let n = r.json();
        assert_eq!(r.header("x-dc-event"), n["event"].as_str());
        events.push((n["event"].as_str().unwrap_or_default().to_string(), r.answered));
    }
    // (a retried notice arrives after later ones: compare them as a set)
    let mut ok: Vec<&str> = events.iter().filter(|(_, c)| *c == 200).map(|(e, _)| e.as_str()).collect();
    ok.sort();
    assert_eq!(ok, vec!["app_disabled", "run_failed", "run_failed"], "{events:?}");
    assert_eq!(events[0], ("run_failed".to_string(), 500), "the first attempt failed and was retried: {events:?}");
    // Slack gets only what is CRITICAL, in Slack's webhook format
    let r = slack.requests.recv_timeout(LIMIT).expect("slack gets the disable");
    let text = r.json()["text"].as_str().unwrap_or_default().to_string();
    assert!(text.contains(&format!("{APP} was disabled")) && text.contains("dc-host apps enable"), "{text}");

    // ENABLE clears it
    host.ok(&["apps", "enable", APP]);
    serve.wait_for(|e| is(e, "command") && e["command"] == "ENABLE");
    let rest = serve.terminate();
    assert!(is(rest.last().expect("events"), "stopped"), "{rest:?}");
    let shown = host.json(&["apps", "show", APP, "--json"]);
    assert_eq!(shown["enabled"], true, "{shown}");
    assert!(slack.requests.try_recv().is_err(), "nothing below CRITICAL went to Slack");
}

#[test]
fn runs_of_a_host_whose_heartbeat_stopped_are_reaped() {
    let host = with_misbehave(Host::postgres());
    // a host that died mid-run: its heartbeat is two minutes old and its run still says RUNNING
    let app_id = host.json(&["apps", "show", APP, "--json"])["app_id"].as_str().expect("app id").to_string();
    host.db_exec(&format!(
        "INSERT INTO dc_hosts (host_name, pid, version, state, started_at, heartbeat_at) \
         VALUES ('ghost', 1, '0', 'SERVING', now() - interval '1 hour', now() - interval '2 minutes'); \
         INSERT INTO runtime (runtime_id, app_id, plugin_version, plugin_hash, status, args, threads, created_at, started_at, host_name, worker_pid) \
         SELECT 'aaaabbbbccccddddeeeeffff00001111', app_id, active_version, active_hash, 'RUNNING', '{{}}', 1, now(), now(), 'ghost', 1 \
         FROM apps WHERE app_id = '{app_id}'"
    ));
    let serve = Serve::start(&host, &["--host-timeout", "60"]);
    let reaped = serve.wait_for(|e| is(e, "reaped"));
    assert_eq!(reaped["runtime_id"], "aaaabbbbccccddddeeeeffff00001111", "{reaped}");
    serve.terminate();
    let run = host.json(&["runs", "show", "aaaabbbbccccddddeeeeffff00001111", "--json"]);
    assert_eq!(run["status"], "FAILED", "{run}");
    let reason = run["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("its host ghost stopped sending heartbeats"), "{reason}");
    // a host that stopped cleanly, or one still alive, keeps its runs: only ghost's was ended
    let hosts = host.json(&["hosts", "list", "--json"]);
    assert_eq!(hosts.as_array().map(Vec::len), Some(2), "{hosts}");
}

#[test]
fn a_host_that_never_saw_the_plugin_file_runs_it_from_the_database() {
    let registering = with_misbehave(Host::postgres());
    // on one machine both hosts could read the registering host's store: take
    // it away, as on another machine
    std::fs::remove_dir_all(registering.dir.path().join("store")).expect("remove the registering host's store");
    // another host: its own, empty data directory (no plugins, no store), the same database
    let mut other = Host::sqlite();
    other.env.push(("DC_DATABASE_URL".into(), registering.database_url()));
    let r = other.json(&["run", APP, "--args", r#"{"mode": "ok", "items": 2}"#, "--json"]);
    assert_eq!((r["status"].as_str(), r["inserted"].as_i64()), (Some("SUCCESS"), Some(2)), "{r}");
    let store: Vec<_> = std::fs::read_dir(other.dir.path().join("store"))
        .expect("the other host's store was filled")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(store.len(), 1, "{store:?}");
    assert!(store[0].starts_with(r["plugin_hash"].as_str().expect("hash")), "{store:?}");
}

#[test]
fn a_scheduled_run_starts_at_its_fire_time_not_at_the_next_tick() {
    let host = with_misbehave(Host::sqlite());
    host.ok(&["apps", "args", APP, &json!({"mode": "ok", "items": 1}).to_string()]);
    host.ok(&["apps", "schedule", APP, "--every", "2s"]);
    // the first tick plans the first fire time; the next tick is ten minutes
    // away (beyond the test's limit), so only the loop's wake-up at the fire
    // time can start the run
    let serve = Serve::start(&host, &["--tick", "600"]);
    let started = serve.wait_for(|e| is(e, "started"));
    assert_eq!(started["cause"], "schedule", "{started}");
    let ended = serve.wait_for(|e| is(e, "ended"));
    assert_eq!(ended["status"], "SUCCESS", "{ended}");
    // and the one after it, without a tick in between
    let again = serve.wait_for(|e| is(e, "started"));
    assert_eq!(again["cause"], "schedule", "{again}");
    host.ok(&["apps", "schedule", APP, "--off"]);
    serve.terminate();
}

#[test]
fn three_hosts_on_a_one_second_schedule_never_double_run() {
    let mut host = with_misbehave(Host::postgres());
    host.ok(&["apps", "args", APP, &json!({"mode": "ok", "items": 1}).to_string()]);
    let mut serves = Vec::new();
    for name in ["host-a", "host-b", "host-c"] {
        host.env.push(("DC_GENERAL_HOST_NAME".into(), name.into()));
        serves.push(Serve::start(&host, &[]));
        host.env.pop();
    }
    host.ok(&["apps", "schedule", APP, "--every", "1s"]);
    // bounded by count: five runs end, whichever hosts start them
    let mut all = Vec::new();
    while all.iter().filter(|e: &&Value| is(e, "ended")).count() < 5 {
        for s in &serves {
            if let Ok(e) = s.events.recv_timeout(Duration::from_millis(20)) {
                all.push(e);
            }
        }
        assert!(all.len() < 1000, "runs do not end: {all:?}");
    }
    host.ok(&["apps", "schedule", APP, "--off"]);
    for s in serves {
        all.extend(s.terminate());
    }
    assert!(all.iter().all(|e| !is(e, "error")), "{all:?}");
    let started = all.iter().filter(|e| is(e, "started")).count();
    let runs = host.json(&["runs", "list", "--limit", "100", "--json"]);
    let mut runs: Vec<&Value> = runs.as_array().expect("runs").iter().collect();
    assert_eq!(runs.len(), started, "every run was started by exactly one host: {all:?}");
    runs.sort_by_key(|r| r["created_at"].as_str().unwrap_or_default().to_string());
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time")).expect("RFC 3339");
    for pair in runs.windows(2) {
        // no overlap: a run starts only after the previous one ended
        assert!(time(&pair[0]["ended_at"]) <= time(&pair[1]["started_at"]), "{pair:?}");
        // no fire time twice: runs of one 1 s schedule are at least half a second apart
        let gap = time(&pair[1]["created_at"]) - time(&pair[0]["created_at"]);
        assert!(gap >= chrono::TimeDelta::milliseconds(500), "two runs for one fire time: {pair:?}");
    }
}

#[test]
fn a_killed_serve_is_restarted_its_run_is_reaped_and_the_next_one_goes_on() {
    let host = with_misbehave(Host::sqlite());
    let ready = Fifo::new();
    host.ok(&["apps", "args", APP, &json!({"mode": "hang", "items": 1, "ready_fifo": ready.as_str()}).to_string()]);
    let serve = Serve::start(&host, &[]);
    host.ok(&["apps", "start", APP]);
    let started = serve.wait_for(|e| is(e, "started"));
    let worker: i32 = ready.read_line(LIMIT).trim().trim_start_matches("ready ").parse().expect("the worker's pid");
    // the machine "crashes": serve and its worker die without a word
    let mut child = serve.child;
    send_signal(child.0.id() as i32, libc::SIGKILL);
    let _ = child.0.wait();
    send_signal(-worker, libc::SIGKILL);
    assert!(dc_e2e::wait_pid_exit(worker, LIMIT), "the worker is gone");
    let run = host.json(&["runs", "show", started["runtime_id"].as_str().expect("id"), "--json"]);
    assert_eq!(run["status"], "RUNNING", "left RUNNING by the crash: {run}");
    // a new serve reaps it, and the app runs again
    host.ok(&["apps", "args", APP, &json!({"mode": "ok", "items": 1}).to_string()]);
    let serve = Serve::start_collecting(&host, &[]);
    let reaped = serve.wait_for(|e| is(e, "reaped"));
    assert_eq!(reaped["runtime_id"], started["runtime_id"]);
    host.ok(&["apps", "start", APP]);
    let ended = serve.wait_for(|e| is(e, "ended"));
    assert_eq!(ended["status"], "SUCCESS", "{ended}");
    serve.terminate();
    let run = host.json(&["runs", "show", started["runtime_id"].as_str().expect("id"), "--json"]);
    assert_eq!(run["status"], "FAILED", "{run}");
    assert!(run["reason"].as_str().unwrap_or_default().contains("orphaned"), "{run}");
}

#[test]
fn notices_reach_telegram_and_teams_in_their_wire_formats() {
    let (telegram, teams) = (HttpSink::start(0), HttpSink::start(0));
    let mut host = Host::sqlite();
    let config = host.dir.path().join("dc-host.toml");
    std::fs::write(
        &config,
        format!(
            "[[notify.channels]]\nkind = \"telegram\"\nurl = \"{}\"\nchat_id = \"-1001234\"\nmin_severity = \"INFO\"\n\n\
             [[notify.channels]]\nkind = \"teams\"\nurl = \"{}\"\nmin_severity = \"INFO\"\n",
            telegram.url, teams.url
        ),
    )
    .expect("config");
    host.env.push(("DC_CONFIG".into(), config.display().to_string()));
    host.ok(&["db", "migrate"]);
    let serve = Serve::start(&host, &[]);
    // Telegram Bot API: POST <bot url>/sendMessage {"chat_id", "text"}
    let r = telegram.requests.recv_timeout(LIMIT).expect("telegram gets host_started");
    assert_eq!(r.line, "POST /hook/sendMessage HTTP/1.1");
    let m = r.json();
    assert_eq!(m["chat_id"], "-1001234", "{m}");
    assert!(m["text"].as_str().unwrap_or_default().starts_with("dc-host serve started on "), "{m}");
    // Teams Workflows webhook: a message with an Adaptive Card
    let r = teams.requests.recv_timeout(LIMIT).expect("teams gets host_started");
    let m = r.json();
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive", "{m}");
    assert_eq!(m["attachments"][0]["content"]["type"], "AdaptiveCard", "{m}");
    assert!(
        m["attachments"][0]["content"]["body"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("dc-host serve started"),
        "{m}"
    );
    serve.terminate();
    let r = telegram.requests.recv_timeout(LIMIT).expect("telegram gets host_stopped");
    assert!(r.json()["text"].as_str().unwrap_or_default().starts_with("dc-host serve stopped on "));
}

/// A host runs at most `runs.max_runs_per_host` runs at once: a START beyond
/// that waits unclaimed (`deferred`) and starts when a run ends. An app runs
/// once at a time unless `apps concurrency` allows more.
#[test]
fn a_full_host_defers_starts_until_a_run_ends_and_apps_run_as_often_as_allowed() {
    let mut host = Host::sqlite();
    host.env.push(("DC_RUNS_MAX_RUNS_PER_HOST".into(), "2".into()));
    let host = with_misbehave(host);
    let ready = Fifo::new();
    let gates = [Fifo::new(), Fifo::new(), Fifo::new()];
    // each run waits on its own gate: the args are stored before each START
    let hold = |gate: &Fifo| {
        let args = json!({"mode": "wait", "items": 1, "ready_fifo": ready.as_str(), "continue_fifo": gate.as_str()});
        host.ok(&["apps", "args", APP, &args.to_string()]);
    };
    let serve = Serve::start(&host, &[]);
    hold(&gates[0]);
    host.ok(&["apps", "start", APP]);
    let first = serve.wait_for(|e| is(e, "started"));
    ready.read_line(LIMIT);

    // once at a time by default
    host.ok(&["apps", "start", APP]);
    let e = serve.wait_for(|e| is(e, "started") || is(e, "skipped"));
    assert_eq!(e["event"], "skipped", "{e}");
    assert!(e["reason"].as_str().unwrap_or_default().contains("still running"), "{e}");

    // allowed three at once: a second run starts beside the first
    let out = host.ok(&["apps", "concurrency", APP, "3"]);
    assert!(out.contains("runs up to 3 times at once"), "{out}");
    assert_eq!(host.json(&["apps", "show", APP, "--json"])["max_concurrent_runs"], 3);
    hold(&gates[1]);
    host.ok(&["apps", "start", APP]);
    let e = serve.wait_for(|e| is(e, "started") || is(e, "skipped"));
    assert_eq!(e["event"], "started", "{e}");
    ready.read_line(LIMIT);

    // the host is full (2 runs): a third START waits, unclaimed
    hold(&gates[2]);
    host.ok(&["apps", "start", APP]);
    let e = serve.wait_for(|e| is(e, "started") || is(e, "skipped") || is(e, "deferred"));
    assert_eq!(e["event"], "deferred", "{e}");
    assert!(e["reason"].as_str().unwrap_or_default().contains("runs.max_runs_per_host"), "{e}");

    // the first run ends: the waiting START is claimed and starts
    gates[0].release();
    let ended = serve.wait_for(|e| is(e, "ended") || is(e, "started"));
    assert_eq!((ended["event"].as_str(), &ended["runtime_id"]), (Some("ended"), &first["runtime_id"]), "{ended}");
    let third = serve.wait_for(|e| is(e, "started"));
    assert_eq!(third["cause"], "command START", "{third}");
    ready.read_line(LIMIT);
    gates[1].release();
    gates[2].release();
    let mut statuses: Vec<String> =
        (0..2).map(|_| serve.wait_for(|e| is(e, "ended"))["status"].as_str().unwrap_or_default().to_string()).collect();
    statuses.dedup();
    assert_eq!(statuses, vec!["SUCCESS".to_string()]);
    serve.terminate();
}

/// `runs.max_runs_per_host = 0` is refused at start, naming the key.
#[test]
fn a_host_limit_of_zero_runs_is_refused() {
    let mut host = Host::sqlite();
    host.env.push(("DC_RUNS_MAX_RUNS_PER_HOST".into(), "0".into()));
    let (code, text) = host.fails(&["apps", "list"]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("runs.max_runs_per_host"), "{text}");
}
