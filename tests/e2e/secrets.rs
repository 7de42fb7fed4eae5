//! The secrets store under concurrency and misuse, driven through real
//! `dc-host secrets` processes: parallel `set`s lose nothing, `rotate-key`
//! beside `set`s keeps every secret decryptable, a key file readable by others
//! or missing beside an existing store is refused with the fix, and the next
//! command completes or rolls back an interrupted rotation without leaving
//! temporary files behind.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use dc_e2e::Host;

/// Starts `dc-host secrets set NAME` and hands it `value` on stdin (stdin is
/// closed afterwards); the process runs on while the caller starts others.
fn spawn_set(host: &Host, name: &str, value: &str) -> Child {
    let mut child = host
        .command(&["secrets", "set", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dc-host secrets set");
    child.stdin.take().expect("stdin").write_all(value.as_bytes()).expect("write value");
    child
}

/// Starts a `dc-host` command with no stdin.
fn spawn(host: &Host, args: &[&str]) -> Child {
    host.command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dc-host")
}

/// Waits for every child and asserts that each one succeeded.
fn wait_all_ok(children: Vec<(String, Child)>) {
    let outputs: Vec<(String, Output)> =
        children.into_iter().map(|(what, c)| (what, c.wait_with_output().expect("wait"))).collect();
    for (what, out) in outputs {
        assert!(
            out.status.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn set_one(host: &Host, name: &str, value: &str) {
    wait_all_ok(vec![(format!("secrets set {name}"), spawn_set(host, name, value))]);
}

fn get(host: &Host, name: &str) -> String {
    host.ok(&["secrets", "get", name]).trim_end_matches('\n').to_string()
}

fn key_file(host: &Host) -> PathBuf {
    host.dir.path().join("secrets.key")
}

fn store_file(host: &Host) -> PathBuf {
    host.dir.path().join("secrets.json")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Names in the data directory that a crashed write or rotation leaves behind.
fn leftovers(host: &Host) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(host.dir.path())
        .expect("read data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp") || n.ends_with(".new"))
        .collect();
    names.sort();
    names
}

/// Eight `secrets set` processes for eight names, all started before any is
/// waited for: every name must be stored with its own value.
#[test]
fn parallel_sets_lose_no_secret() {
    let host = Host::sqlite();
    // Every dc-host command connects and migrates the database first, and
    // concurrent first migrations of a fresh SQLite database fail ("table
    // app_groups already exists"), which is not what this test is about:
    // migrate once before the race.
    host.ok(&["db", "migrate"]);
    let children: Vec<(String, Child)> = (0..8)
        .map(|i| (format!("secrets set NAME_{i}"), spawn_set(&host, &format!("NAME_{i}"), &format!("value {i}"))))
        .collect();
    wait_all_ok(children);

    let names = host.json(&["secrets", "list", "--json"]);
    let expected: Vec<String> = (0..8).map(|i| format!("NAME_{i}")).collect();
    assert_eq!(names, serde_json::json!(expected));
    for i in 0..8 {
        assert_eq!(get(&host, &format!("NAME_{i}")), format!("value {i}"));
    }
    assert_eq!(leftovers(&host), Vec::<String>::new());
}

/// `rotate-key` started together with `set`s (three rounds): every secret set
/// before or during the rotations still decrypts to its value afterwards.
#[test]
fn rotate_key_beside_sets_keeps_every_secret() {
    let host = Host::sqlite();
    set_one(&host, "base", "base value");
    let mut expected = vec![("base".to_string(), "base value".to_string())];
    let mut key_ids = Vec::new();
    for round in 0..3 {
        let mut children = vec![("secrets rotate-key".to_string(), spawn(&host, &["secrets", "rotate-key"]))];
        for i in 0..4 {
            let (name, value) = (format!("r{round}_{i}"), format!("round {round} value {i}"));
            children.push((format!("secrets set {name}"), spawn_set(&host, &name, &value)));
            expected.push((name, value));
        }
        wait_all_ok(children);
        let store: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store_file(&host)).expect("store")).expect("store JSON");
        key_ids.push(store["key_id"].as_str().expect("key_id").to_string());
    }
    key_ids.dedup();
    assert_eq!(key_ids.len(), 3, "every round rotated the key: {key_ids:?}");

    for (name, value) in &expected {
        assert_eq!(&get(&host, name), value, "secret {name}");
    }
    let listed = host.json(&["secrets", "list", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(expected.len()), "{listed}");
    assert_eq!(leftovers(&host), Vec::<String>::new());
}

/// A key file with group/other permission bits is refused by every command
/// that needs the key, naming the file and `chmod 600`; new key files are 0600
/// even under a umask that would allow more.
#[test]
fn key_file_readable_by_others_is_refused() {
    let host = Host::sqlite();
    // `umask 000` so that only dc-host decides the mode of the new key file
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c").arg("umask 000 && printf v | exec \"$0\" secrets set first").arg(dc_e2e::host_bin());
    sh.current_dir(host.dir.path()).env("DC_LOG", "warn");
    for (k, v) in &host.env {
        sh.env(k, v);
    }
    let out = sh.output().expect("dc-host under umask 000");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = key_file(&host);
    assert_eq!(mode(&key), 0o600, "a new key file is private to its owner");

    for bad in [0o644, 0o640, 0o604, 0o660] {
        chmod(&key, bad);
        let fix = format!("chmod 600 {}", key.display());
        for args in [
            &["secrets", "get", "first"][..],
            &["secrets", "list"][..],
            &["secrets", "rm", "first"][..],
            &["secrets", "rotate-key"][..],
        ] {
            let (_, text) = host.fails(args);
            assert!(text.contains(&fix), "{args:?} with mode {bad:o}: {text}");
        }
        let set = spawn_set(&host, "second", "x").wait_with_output().expect("wait");
        assert!(!set.status.success());
        assert!(String::from_utf8_lossy(&set.stderr).contains(&fix), "{}", String::from_utf8_lossy(&set.stderr));
    }
    chmod(&key, 0o600);
    assert_eq!(get(&host, "first"), "v");
    chmod(&key, 0o400);
    assert_eq!(get(&host, "first"), "v");
}

/// Deleting the key file while the store holds secrets must not make dc-host
/// generate a new key (which would lose every secret): it refuses, naming both
/// files and the ways out. A brand-new data directory still gets a key.
#[test]
fn missing_key_file_beside_a_store_is_refused() {
    let host = Host::sqlite();
    set_one(&host, "kept", "kept value");
    let key = key_file(&host);
    let store = store_file(&host);
    let saved_key = std::fs::read(&key).expect("key");
    let saved_store = std::fs::read(&store).expect("store");
    std::fs::remove_file(&key).expect("delete key file");

    for args in [&["secrets", "get", "kept"][..], &["secrets", "list"][..], &["secrets", "rotate-key"][..]] {
        let (_, text) = host.fails(args);
        for needle in [&store.display().to_string(), &key.display().to_string(), "DC_SECRETS_KEY", "restore"] {
            assert!(text.contains(needle), "{args:?} should mention {needle}: {text}");
        }
    }
    let set = spawn_set(&host, "other", "x").wait_with_output().expect("wait");
    assert!(!set.status.success(), "set without the key must fail");
    assert!(!key.exists(), "no new key file was generated");
    assert_eq!(std::fs::read(&store).expect("store"), saved_store, "the store is untouched");

    // restoring the key file brings everything back
    std::fs::write(&key, &saved_key).expect("restore key");
    chmod(&key, 0o600);
    assert_eq!(get(&host, "kept"), "kept value");

    // a brand-new setup creates its key
    let fresh = Host::sqlite();
    set_one(&fresh, "a", "b");
    assert_eq!(mode(&key_file(&fresh)), 0o600);
    assert_eq!(get(&fresh, "a"), "b");
}

/// The state a crash leaves at each point of `rotate-key` (plus temp files
/// from interrupted writes) is completed or rolled back by the next command,
/// which leaves no pending key or temp file behind.
#[test]
fn interrupted_rotation_is_finished_by_the_next_command() {
    let host = Host::sqlite();
    set_one(&host, "a", "alpha");
    set_one(&host, "b", "beta");
    let key = key_file(&host);
    let pending = host.dir.path().join("secrets.key.new");
    let stray = |host: &Host| {
        for name in [".secrets.json.tmp-999999-0123456789ab", ".secrets.key.new.tmp-999999-0123456789ab"] {
            std::fs::write(host.dir.path().join(name), "partial").expect("stray temp file");
        }
    };

    // crash after step 2: the store is re-encrypted under the pending key, the
    // key file is still the old one -> the next command completes the rotation
    let old_key = std::fs::read(&key).expect("key");
    host.ok(&["secrets", "rotate-key"]);
    let new_key = std::fs::read(&key).expect("key");
    assert_ne!(old_key, new_key);
    std::fs::rename(&key, &pending).expect("move new key to pending");
    std::fs::write(&key, &old_key).expect("old key back");
    chmod(&key, 0o600);
    stray(&host);
    assert_eq!(get(&host, "a"), "alpha");
    assert_eq!(std::fs::read(&key).expect("key"), new_key, "rotation completed");
    assert_eq!(leftovers(&host), Vec::<String>::new());

    // crash after step 1: only the pending key exists -> rolled back
    std::fs::write(&pending, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n").expect("pending key");
    chmod(&pending, 0o600);
    stray(&host);
    let listed = host.json(&["secrets", "list", "--json"]);
    assert_eq!(listed, serde_json::json!(["a", "b"]));
    assert_eq!(std::fs::read(&key).expect("key"), new_key, "rotation rolled back");
    assert_eq!(leftovers(&host), Vec::<String>::new());
    assert_eq!(get(&host, "b"), "beta");

    // temp files of an interrupted `set` are cleaned up by the next writer too
    stray(&host);
    set_one(&host, "c", "gamma");
    assert_eq!(leftovers(&host), Vec::<String>::new());
    assert_eq!(get(&host, "c"), "gamma");
}
