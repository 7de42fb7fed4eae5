//! Hot reload and rollback as an operator sees them: a new version registered
//! while a run is in flight does not disturb that run, the next run uses it,
//! `plugins rollback` goes back, `reload --watch` picks up dropped files, and
//! the content-addressed store keeps every registered file runnable even after
//! the original is gone from the plugins directory.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dc_e2e::{Fifo, Host, KillOnDrop, misbehave_build, sha256_hex};
use serde_json::Value;

const APP: &str = "test/fixtures/misbehave";
const OK: &str = r#"{"mode": "ok", "items": 2}"#;

fn run_ok(host: &Host) -> Value {
    let r = host.json(&["run", APP, "--args", OK, "--json"]);
    assert_eq!(r["status"], "SUCCESS", "{r}");
    r
}

fn run_status(host: &Host, rid: &str) -> String {
    host.json(&["runs", "show", rid, "--json"])["status"].as_str().unwrap_or_default().to_string()
}

#[test]
fn reload_while_a_run_is_in_flight_then_rollback() {
    let bin = tempfile::tempdir().expect("tempdir");
    let v100 = misbehave_build("1.0.0", bin.path());
    let v110 = misbehave_build("1.1.0", bin.path());
    let (sha100, sha110) = (sha256_hex(&v100), sha256_hex(&v110));
    let host = Host::sqlite();
    host.install(&v100, "misbehave.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered test/fixtures/misbehave 1.0.0 (new app"), "{out}");

    // one item that waits, inside collect, until the test lets it go on
    let (ready, go_on) = (Fifo::new(), Fifo::new());
    let args =
        serde_json::json!({"mode": "wait", "items": 1, "ready_fifo": ready.as_str(), "continue_fifo": go_on.as_str()})
            .to_string();
    let mut child = KillOnDrop(
        host.command(&["run", APP, "--args", &args, "--threads", "1", "--json"])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("run starts"),
    );
    assert!(ready.read_line(Duration::from_secs(60)).starts_with("ready "), "the run reached collect");
    let runs = host.json(&["runs", "list", "--json"]);
    assert_eq!(runs[0]["status"], "RUNNING", "{runs}");
    let rid = runs[0]["runtime_id"].as_str().expect("a run").to_string();

    // deploy 1.1.0 over the same file name and reload while the run is going
    host.install(&v110, "misbehave.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered test/fixtures/misbehave 1.1.0 (was 1.0.0)"), "{out}");
    assert_eq!(host.active_version(APP).as_deref(), Some("1.1.0"));
    assert_eq!(run_status(&host, &rid), "RUNNING", "the reload happened while the run was in flight");

    // the run in flight finishes on the version it started with
    go_on.release();
    let mut stdout = String::new();
    child.0.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("read run output");
    let status = child.0.wait().expect("run ends");
    assert!(status.success(), "{stdout}");
    let r: Value = serde_json::from_str(&stdout).expect("run prints JSON");
    assert_eq!(r["runtime_id"], rid.as_str());
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["plugin_version"], "1.0.0", "{r}");
    assert_eq!(r["plugin_hash"], sha100.as_str(), "{r}");
    assert_eq!(r["inserted"], 1, "{r}");

    // the next run uses the new version
    let next = run_ok(&host);
    assert_eq!((next["plugin_version"].as_str(), next["plugin_hash"].as_str()), (Some("1.1.0"), Some(sha110.as_str())));

    // both versions are in the history, with their hashes
    let hist = host.json(&["plugins", "history", APP, "--json"]);
    let mut versions: Vec<(String, String)> = hist
        .as_array()
        .expect("history")
        .iter()
        .map(|v| (v["version"].as_str().unwrap_or_default().into(), v["sha256"].as_str().unwrap_or_default().into()))
        .collect();
    versions.sort();
    assert_eq!(versions, vec![("1.0.0".to_string(), sha100.clone()), ("1.1.0".to_string(), sha110.clone())]);
    let text = host.ok(&["plugins", "history", APP]);
    let starred: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with('*')).collect();
    assert!(starred.len() == 1 && starred[0].contains("1.1.0"), "history marks 1.1.0 active:\n{text}");

    // rollback (no --to) goes to the newest older version, and runs follow
    let out = host.ok(&["plugins", "rollback", APP]);
    assert!(out.contains("rolled back test/fixtures/misbehave from 1.1.0 to 1.0.0"), "{out}");
    assert_eq!(host.active_version(APP).as_deref(), Some("1.0.0"));
    let back = run_ok(&host);
    assert_eq!((back["plugin_version"].as_str(), back["plugin_hash"].as_str()), (Some("1.0.0"), Some(sha100.as_str())));

    // a version that was never registered is refused, naming the ones that were
    let (code, text) = host.fails(&["plugins", "rollback", APP, "--to", "9.9.9"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("test/fixtures/misbehave has no registered version 9.9.9; registered: "), "{text}");
    assert!(text.contains("1.0.0") && text.contains("1.1.0"), "{text}");
    assert_eq!(host.active_version(APP).as_deref(), Some("1.0.0"));

    // the 1.1.0 file still in the plugins directory is not re-activated by a reload
    let out = host.ok(&["reload"]);
    assert!(out.contains("skipped: test/fixtures/misbehave 1.1.0 was registered before but 1.0.0 is active"), "{out}");
    assert!(out.contains("dc-host plugins rollback test/fixtures/misbehave --to 1.1.0"), "{out}");
    assert_eq!(host.active_version(APP).as_deref(), Some("1.0.0"));
    assert_eq!(run_ok(&host)["plugin_version"], "1.0.0");

    // and rolling forward explicitly works
    let out = host.ok(&["plugins", "rollback", APP, "--to", "1.1.0"]);
    assert!(out.contains("from 1.0.0 to 1.1.0"), "{out}");
    assert_eq!(run_ok(&host)["plugin_version"], "1.1.0");
}

/// Lines a child writes to one of its pipes, delivered through a channel.
fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits up to `timeout` for a line containing `needle`; returns every line seen.
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, timeout: Duration) -> Result<String, Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    Err(seen)
}

#[test]
fn reload_watch_registers_dropped_files() {
    let bin = tempfile::tempdir().expect("tempdir");
    let v100 = misbehave_build("1.0.0", bin.path());
    let host = Host::sqlite();
    host.plugins_dir();
    let mut watcher = KillOnDrop(
        host.command(&["reload", "--watch"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("watcher starts"),
    );
    let out = lines_of(watcher.0.stdout.take().expect("stdout"));
    let err = lines_of(watcher.0.stderr.take().expect("stderr"));
    wait_line(&out, "no plugin files in", Duration::from_secs(15))
        .expect("the first reload reports an empty directory");
    wait_line(&err, "for plugin files (Ctrl-C to stop)", Duration::from_secs(15)).expect("the watcher is watching");

    let dropped = host.install(&v100, "misbehave.so");
    let line =
        wait_line(&out, "registered test/fixtures/misbehave 1.0.0", Duration::from_secs(15)).unwrap_or_else(|seen| {
            panic!("the watcher did not register the dropped file within 15 s; it printed {seen:?}")
        });
    assert!(line.starts_with(&format!("{}: ", dropped.display())), "{line}");
    assert_eq!(host.active_version(APP).as_deref(), Some("1.0.0"));

    // a bad file is reported, and the watcher keeps going
    std::fs::write(
        host.plugins_dir().join("junk.so"),
        "not a library, just some text that happens to end in .so\n".repeat(2),
    )
    .expect("write");
    let line = wait_line(&out, "REFUSED", Duration::from_secs(15))
        .unwrap_or_else(|seen| panic!("no refusal within 15 s: {seen:?}"));
    assert!(line.contains("junk.so: REFUSED: ") && line.contains("is not a shared library"), "{line}");
    assert!(watcher.0.try_wait().expect("try_wait").is_none(), "the watcher is still running after a refusal");
    assert_eq!(host.active_version(APP).as_deref(), Some("1.0.0"));
    assert_eq!(run_ok(&host)["plugin_version"], "1.0.0");
}

#[test]
fn reload_puts_plugins_in_a_content_addressed_store() {
    let bin = tempfile::tempdir().expect("tempdir");
    let v100 = misbehave_build("1.0.0", bin.path());
    let sha = sha256_hex(&v100);
    let host = Host::sqlite();
    let dropped = host.install(&v100, "misbehave.so");
    host.ok(&["reload"]);

    let store = host.dir.path().join("store");
    let names: Vec<String> = std::fs::read_dir(&store)
        .expect("store exists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![format!("{sha}.so")], "the store holds the file under its SHA-256");
    let stored = store.join(format!("{sha}.so"));
    assert_eq!(sha256_hex(&stored), sha, "the stored file is byte-identical");
    let hist = host.json(&["plugins", "history", APP, "--json"]);
    assert_eq!(hist[0]["sha256"], sha.as_str());
    assert_eq!(hist[0]["store_path"], stored.display().to_string().as_str());
    assert_eq!(hist[0]["source_file"], dropped.display().to_string().as_str());

    // the same content under another name is recognised, not stored twice
    std::fs::remove_file(&dropped).expect("remove");
    host.install(&v100, "misbehave-copy.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains("unchanged: test/fixtures/misbehave 1.0.0 is already active"), "{out}");
    assert_eq!(std::fs::read_dir(&store).expect("store").count(), 1);

    // runs load from the store: with the plugins directory empty the app still runs
    std::fs::remove_file(host.plugins_dir().join("misbehave-copy.so")).expect("remove");
    assert_eq!(std::fs::read_dir(host.plugins_dir()).expect("plugins dir").count(), 0);
    let r = run_ok(&host);
    assert_eq!((r["plugin_version"].as_str(), r["plugin_hash"].as_str()), (Some("1.0.0"), Some(sha.as_str())));
    assert_eq!(r["inserted"], 2);
    // and a reload of the empty directory leaves the app and the store alone
    let out = host.ok(&["reload"]);
    assert!(out.contains("no plugin files in"), "{out}");
    assert_eq!(host.active_version(APP).as_deref(), Some("1.0.0"));
    assert_eq!(sha256_hex(&stored), sha);
}
