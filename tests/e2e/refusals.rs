//! Every unusable plugin file is refused with its own reason — by `dc-host
//! reload` (exit 1, a `REFUSED:` line naming the file), by `dc-host plugins
//! register FILE` and, when the file itself is unusable, by `dc-host plugins
//! inspect FILE` (exit 2) — while the previously registered good version stays
//! active and keeps running, and nothing in the plugin store changes.
//!
//! Every case runs on both backends (`<case>::sqlite`, `<case>::postgres`,
//! see [`dc_e2e::both_backends`]): the body gets the constructor of its host.

use std::path::Path;

use dc_e2e::{ApiVariant, Host, dir_snapshot, misbehave_build, rustc_cdylib, sha256_hex, tiny_plugin, workspace};
use serde_json::Value;

const MISBEHAVE: &str = "test/fixtures/misbehave";
const TINY: &str = "test/fixtures/tiny";

dc_e2e::both_backends!(
    refusal_of_a_text_file,
    refusal_of_a_truncated_plugin,
    refusal_of_a_plugin_for_another_architecture,
    refusal_of_a_library_without_a_root_module,
    refusal_of_an_incompatible_interface_version_and_layout,
    refusal_of_an_invalid_manifest,
    refusal_of_a_silent_downgrade,
    refusal_of_the_same_version_with_different_content,
    refusal_of_a_forged_probe_answer,
    refusal_of_a_file_over_the_size_limit_without_reading_it,
    odd_entries_in_the_plugins_directory_are_reported_not_skipped,
    a_valid_plugin_with_a_manifest_over_64_kib_registers,
    refusal_of_a_host_table_or_another_apps_table,
);

/// A new host (from `new_host`) with `file` registered as the active version of `app`.
fn host_with(new_host: fn() -> Host, file: &Path, name: &str, app: &str, version: &str) -> Host {
    let host = new_host();
    host.install(file, name);
    let out = host.ok(&["reload"]);
    assert!(out.contains(&format!("registered {app} {version}")), "{out}");
    assert_eq!(host.active_version(app).as_deref(), Some(version));
    host
}

/// A host with misbehave 1.0.0 active.
fn host_with_misbehave(new_host: fn() -> Host, bin: &Path) -> Host {
    host_with(new_host, &misbehave_build("1.0.0", bin), "misbehave.so", MISBEHAVE, "1.0.0")
}

/// Runs an app once and checks it succeeds on `version`.
fn run_succeeds(host: &Host, app: &str, args: &str, version: &str) -> Value {
    let r = host.json(&["run", app, "--args", args, "--json"]);
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["plugin_version"], version, "{r}");
    r
}

fn history(host: &Host, app: &str) -> Vec<(String, String)> {
    let h = host.json(&["plugins", "history", app, "--json"]);
    h.as_array()
        .expect("history is an array")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap_or_default().to_string(),
                v["sha256"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// What refuses a file: the file itself is unusable (so `plugins inspect`
/// refuses it too), or it is a good plugin the registry will not take (so only
/// registering it is refused).
#[derive(Clone, Copy)]
enum Check<'a> {
    File,
    Registry { version: &'a str },
}

/// Drops `bad` into the plugins directory as `name` and checks that `reload`,
/// `plugins register` and (for an unusable file) `plugins inspect` refuse it
/// with a message containing every `expected` part, that `app` stays on `active` with the same history, that no
/// other app appeared, that the store is untouched, and that `app` still runs.
#[allow(clippy::too_many_arguments)]
fn assert_refused(
    host: &Host,
    bad: &Path,
    name: &str,
    check: Check<'_>,
    expected: &[&str],
    app: &str,
    active: &str,
    run_args: &str,
) {
    let store = host.dir.path().join("store");
    let store_before = dir_snapshot(&store);
    assert!(!store_before.is_empty(), "the good version is in the store");
    let history_before = history(host, app);
    let apps_before = host.json(&["plugins", "list", "--json"]).as_array().map(Vec::len);

    let dropped = host.install(bad, name);
    let (code, text) = host.fails(&["reload"]);
    assert_eq!(code, 1, "reload with a refused file exits 1:\n{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{}: REFUSED: ", dropped.display())))
        .unwrap_or_else(|| panic!("no REFUSED line for {}:\n{text}", dropped.display()));
    for part in expected {
        assert!(line.contains(part), "reload's refusal lacks {part:?}:\n{line}");
    }
    assert_eq!(text.matches("REFUSED").count(), 1, "only the bad file is refused:\n{text}");

    let file = dropped.display().to_string();
    let mut commands = vec!["register"];
    match check {
        Check::File => commands.push("inspect"),
        Check::Registry { version } => {
            // the file itself is a good plugin: inspect shows it, registering it is refused
            let shown = host.ok(&["plugins", "inspect", &file]);
            assert!(shown.contains(&format!("version:     {version}")), "{shown}");
        }
    }
    for cmd in commands {
        let (code, text) = host.fails(&["plugins", cmd, &file]);
        assert_eq!(code, 2, "plugins {cmd} of a refused file exits 2:\n{text}");
        assert!(text.starts_with("error: "), "{text}");
        for part in expected {
            assert!(text.contains(part), "plugins {cmd}'s refusal lacks {part:?}:\n{text}");
        }
    }

    // the refusal changed nothing
    assert_eq!(host.active_version(app).as_deref(), Some(active), "the active version stays");
    assert_eq!(history(host, app), history_before, "no version was added");
    assert_eq!(host.json(&["plugins", "list", "--json"]).as_array().map(Vec::len), apps_before, "no app was added");
    assert_eq!(dir_snapshot(&store), store_before, "the plugin store is untouched");
    run_succeeds(host, app, run_args, active);

    // and the refusal is repeated, not forgotten, on the next reload
    let (code, text) = host.fails(&["reload"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(expected[0]), "{text}");
}

fn refused_while_misbehave_serves(new_host: fn() -> Host, bad: &Path, name: &str, expected: &[&str]) {
    let bin = tempfile::tempdir().expect("tempdir");
    let host = host_with_misbehave(new_host, bin.path());
    assert_refused(&host, bad, name, Check::File, expected, MISBEHAVE, "1.0.0", r#"{"mode": "ok", "items": 2}"#);
}

fn refusal_of_a_text_file(new_host: fn() -> Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("x.so");
    std::fs::write(&bad, "these are release notes, not a library; someone saved them with the wrong name.\n".repeat(3))
        .expect("write");
    refused_while_misbehave_serves(
        new_host,
        &bad,
        "x.so",
        &["is not a shared library (no ELF header)", "crate-type = [\"cdylib\"]"],
    );
}

fn refusal_of_a_truncated_plugin(new_host: fn() -> Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = std::fs::read(misbehave_build("1.0.0", dir.path())).expect("read plugin");
    let bad = dir.path().join("half.so");
    std::fs::write(&bad, &full[..full.len() / 2]).expect("write");
    refused_while_misbehave_serves(new_host, &bad, "half.so", &["truncated", "copy the complete file again"]);
}

fn refusal_of_a_plugin_for_another_architecture(new_host: fn() -> Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = std::fs::read(misbehave_build("1.0.0", dir.path())).expect("read plugin");
    bytes[18] = 0x28; // e_machine = EM_ARM, little endian
    bytes[19] = 0x00;
    let bad = dir.path().join("arm.so");
    std::fs::write(&bad, &bytes).expect("write");
    let runs = format!("this host runs {}", std::env::consts::ARCH);
    refused_while_misbehave_serves(new_host, &bad, "arm.so", &["is built for another architecture (ARM)", &runs]);
}

fn refusal_of_a_library_without_a_root_module(new_host: fn() -> Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("no_root.so");
    rustc_cdylib(&workspace().join("tests/fixtures/plugins/no_root.rs"), &bad);
    refused_while_misbehave_serves(
        new_host,
        &bad,
        "no_root.so",
        &["is a shared library but has no dc-host root module", "dc_plugin_sdk::export_plugin!"],
    );
}

fn refusal_of_an_incompatible_interface_version_and_layout(new_host: fn() -> Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = tempfile::tempdir().expect("tempdir");
    let host = host_with_misbehave(new_host, bin.path());
    let args = r#"{"mode": "ok", "items": 1}"#;

    // built against another major (2.0.0) and the next minor of the
    // interface: refused before any plugin code runs, naming both versions
    let host_api = dc_e2e::interface_version();
    let minor: u32 = host_api.split('.').nth(1).and_then(|m| m.parse().ok()).expect("a minor version");
    let next_minor = format!("1.{}.0", minor + 1);
    for (variant, version, words) in [
        ("api-v2", "2.0.0", "another major version than this host's"),
        ("api-v1-next", next_minor.as_str(), "newer than this host's"),
    ] {
        let built = tiny_plugin(variant, ApiVariant::Copy { version, edits: &[] }, &[], dir.path());
        let name = format!("tiny-{variant}.so");
        let expected_versions = format!("built against plugin interface (dc-plugin-api) {version}, {words} {host_api}");
        assert_refused(
            &host,
            &built,
            &name,
            Check::File,
            &["was built against an incompatible plugin interface", &expected_versions],
            MISBEHAVE,
            "1.0.0",
            args,
        );
        std::fs::remove_file(host.plugins_dir().join(&name)).expect("remove");
    }

    // the same interface version, but one field of an ABI type has another type
    let layout = tiny_plugin(
        "api-layout",
        ApiVariant::Copy {
            version: &host_api,
            edits: &[
                ("abi/src/abi.rs", "pub timeout_ms: u64,", "pub timeout_ms: u32,"),
                ("sdk/src/sdk.rs", "timeout_ms: req.timeout_ms,", "timeout_ms: req.timeout_ms as u32,"),
                ("sdk/src/testing.rs", "timeout_ms: r.timeout_ms,", "timeout_ms: u64::from(r.timeout_ms),"),
            ],
        },
        &[],
        dir.path(),
    );
    let rebuild = format!("); rebuild the plugin against this host's dc-plugin-api {host_api}");
    assert_refused(
        &host,
        &layout,
        "tiny-api-layout.so",
        Check::File,
        &[
            "has an incompatible plugin interface layout (",
            // abi_stable's dump summarized: the mismatch, the field and both types
            "mismatched type in field timeout_ms: the plugin has u32, this host has u64",
            &rebuild,
        ],
        MISBEHAVE,
        "1.0.0",
        args,
    );

    // control: the very same fixture built against the workspace's interface is accepted
    std::fs::remove_file(host.plugins_dir().join("tiny-api-layout.so")).expect("remove");
    let good = tiny_plugin("api-same", ApiVariant::Workspace, &[], dir.path());
    host.install(&good, "tiny.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered test/fixtures/tiny 1.0.0"), "{out}");
}

fn refusal_of_an_invalid_manifest(new_host: fn() -> Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = misbehave_build("1.0", dir.path());
    refused_while_misbehave_serves(
        new_host,
        &bad,
        "misbehave-next.so",
        &["has an invalid manifest", "version \"1.0\" is not MAJOR.MINOR.PATCH"],
    );
}

fn refusal_of_a_silent_downgrade(new_host: fn() -> Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    let newer = misbehave_build("1.1.0", dir.path());
    let older = misbehave_build("1.0.0", dir.path());
    let host = host_with(new_host, &newer, "misbehave-1.1.0.so", MISBEHAVE, "1.1.0");
    assert_refused(
        &host,
        &older,
        "misbehave-1.0.0.so",
        Check::Registry { version: "1.0.0" },
        &[
            "registering test/fixtures/misbehave 1.0.0 would downgrade it from the active version 1.1.0",
            "use `dc-host plugins rollback test/fixtures/misbehave --to VERSION`",
        ],
        MISBEHAVE,
        "1.1.0",
        r#"{"mode": "ok", "items": 1}"#,
    );
}

fn refusal_of_the_same_version_with_different_content(new_host: fn() -> Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = tiny_plugin(
        "same-a",
        ApiVariant::Workspace,
        &[("DC_FIXTURE_VERSION", "1.2.0"), ("DC_FIXTURE_FLAVOUR", "a")],
        dir.path(),
    );
    let b = tiny_plugin(
        "same-b",
        ApiVariant::Workspace,
        &[("DC_FIXTURE_VERSION", "1.2.0"), ("DC_FIXTURE_FLAVOUR", "b")],
        dir.path(),
    );
    let sha_a = sha256_hex(&a);
    assert_ne!(sha_a, sha256_hex(&b), "the two builds differ");
    let host = host_with(new_host, &a, "tiny.so", TINY, "1.2.0");
    let prefix = format!("(sha256 {}…)", &sha_a[..12]);
    assert_refused(
        &host,
        &b,
        "tiny-rebuilt.so",
        Check::Registry { version: "1.2.0" },
        &[
            "test/fixtures/tiny version 1.2.0 is already registered with different content",
            &prefix,
            "bump the plugin version to register a new build",
        ],
        TINY,
        "1.2.0",
        "{}",
    );
    // the rows come from build "a", the one that stayed active
    let rows = host.json(&["data", "head", "tiny_rows", "--json"]);
    assert_eq!(rows[0]["flavour"], "a", "{rows}");
}

fn refusal_of_a_forged_probe_answer(new_host: fn() -> Host) {
    // the library's constructor prints what looks like the probe's answer and
    // exits: the host validates the answer instead of trusting it
    let dir = tempfile::tempdir().expect("tempdir");
    let forged = dir.path().join("forge.so");
    rustc_cdylib(&workspace().join("tests/fixtures/plugins/forge.rs"), &forged);
    let bin = tempfile::tempdir().expect("tempdir");
    let host = host_with_misbehave(new_host, bin.path());
    assert_refused(
        &host,
        &forged,
        "forge.so",
        Check::File,
        &["has an invalid manifest", r#"name "\u{1b}[31mevil" is not allowed"#],
        MISBEHAVE,
        "1.0.0",
        r#"{"mode": "ok", "items": 1}"#,
    );
    let (_, text) = host.fails(&["reload"]);
    assert!(!text.contains('\u{1b}'), "no raw escape code reaches the terminal: {text:?}");
}

fn refusal_of_a_file_over_the_size_limit_without_reading_it(new_host: fn() -> Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    // sparse: 300 MiB long, nothing on disk; reading it whole was the defect
    let big = dir.path().join("big.so");
    std::fs::File::create(&big).and_then(|f| f.set_len(300 << 20)).expect("sparse file");
    refused_while_misbehave_serves(
        new_host,
        &big,
        "big.so",
        &["is 300 MiB, over the limit of 256 MiB for plugin files", "general.max_plugin_file_mb"],
    );
}

fn odd_entries_in_the_plugins_directory_are_reported_not_skipped(new_host: fn() -> Host) {
    let bin = tempfile::tempdir().expect("tempdir");
    let host = host_with_misbehave(new_host, bin.path());
    let dir = host.plugins_dir();
    std::os::unix::fs::symlink(dir.join("loop.so"), dir.join("loop.so")).expect("symlink loop");
    std::os::unix::fs::symlink(dir.join("gone.so"), dir.join("dangling.so")).expect("dangling symlink");
    std::fs::create_dir(dir.join("folder.so")).expect("directory");
    std::os::unix::fs::symlink("/dev/null", dir.join("device.so")).expect("symlink to a device");
    let (code, text) = host.fails(&["reload"]);
    assert_eq!(code, 1, "{text}");
    for (file, why) in [
        ("loop.so", "is a symlink loop"),
        ("dangling.so", "is a dangling symlink (to "),
        ("folder.so", "is a directory, not a plugin file"),
        ("device.so", "is a device (through a symlink), not a plugin file"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{}: REFUSED: ", dir.join(file).display())))
            .unwrap_or_else(|| panic!("{file} is not reported:\n{text}"));
        assert!(line.contains(why), "{line}");
    }
    assert_eq!(host.active_version(MISBEHAVE).as_deref(), Some("1.0.0"), "the good plugin keeps serving");
}

fn a_valid_plugin_with_a_manifest_over_64_kib_registers(new_host: fn() -> Host) {
    // the probe's answer no longer fits a pipe buffer: the host must read it while the child runs
    let dir = tempfile::tempdir().expect("tempdir");
    let big = tiny_plugin("big-manifest", ApiVariant::Workspace, &[("DC_FIXTURE_SCHEMA_PROPS", "2000")], dir.path());
    let host = new_host();
    let shown = host.json(&["plugins", "inspect", big.to_str().expect("utf-8"), "--json"]);
    let size = shown["manifest"].to_string().len();
    assert!(size > 64 * 1024, "the manifest is {size} bytes");
    host.install(&big, "big.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered test/fixtures/tiny 1.0.0"), "{out}");
}

fn refusal_of_a_host_table_or_another_apps_table(new_host: fn() -> Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = tempfile::tempdir().expect("tempdir");
    let host = host_with_misbehave(new_host, bin.path());
    // misbehave owns misbehave_rows and has rows in it
    let args = r#"{"mode": "ok", "items": 3}"#;
    run_succeeds(&host, MISBEHAVE, args, "1.0.0");
    for (variant, table, expected) in [
        ("table-apps", "apps", "table \"apps\" is one of dc-host's own tables; a plugin may not declare it"),
        ("table-runtime", "runtime", "table \"runtime\" is one of dc-host's own tables"),
        ("table-sqlite", "sqlite_stat1", "starts with \"sqlite_\", which SQLite reserves for itself"),
        (
            "table-theirs",
            "misbehave_rows",
            "table \"misbehave_rows\" belongs to app test/fixtures/misbehave; a second app may not declare it",
        ),
    ] {
        let built = tiny_plugin(variant, ApiVariant::Workspace, &[("DC_FIXTURE_TABLE", table)], dir.path());
        let name = format!("{variant}.so");
        assert_refused(
            &host,
            &built,
            &name,
            Check::Registry { version: "1.0.0" },
            &[expected, "test/fixtures/tiny 1.0.0"],
            MISBEHAVE,
            "1.0.0",
            args,
        );
        std::fs::remove_file(host.plugins_dir().join(&name)).expect("remove");
    }
    // the owner's rows are all there, and no tiny app or table appeared
    let rows = host.json(&["data", "head", "misbehave_rows", "--json"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(3), "{rows}");
    let apps = host.json(&["plugins", "list", "--json"]);
    assert_eq!(apps.as_array().map(Vec::len), Some(1), "{apps}");
}
