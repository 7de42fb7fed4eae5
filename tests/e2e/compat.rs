//! The plugin interface keeps its promise (docs/plugin-abi.md): a plugin built
//! against the previous minor version of `dc-plugin-api` — the frozen 1.0.0
//! crate as it shipped — registers and runs unchanged on today's host, on SQLite
//! and PostgreSQL; the host publishes its interface and capabilities; a plugin
//! requiring a capability this host lacks is refused, naming it. (Newer minor
//! and other major versions are refused in `refusals.rs`.)

use dc_e2e::{ApiVariant, FixtureSite, Host, interface_version, legacy_plugin, tiny_plugin};
use serde_json::{Value, json};

const LEGACY: &str = "test/fixtures/legacy";

fn legacy_registers_and_runs(host: &Host, lib: &std::path::Path, site: &FixtureSite) {
    host.install(lib, "legacy.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered test/fixtures/legacy 1.0.0"), "{out}");

    let file = host.plugins_dir().join("legacy.so");
    let shown = host.json(&["plugins", "inspect", file.to_str().expect("utf-8"), "--json"]);
    assert_eq!(shown["interface_version"], "1.0.0", "{shown}");
    assert_eq!(shown["sdk_version"], Value::Null, "built before the SDK existed: {shown}");
    assert_eq!(shown["requires"], json!([]), "{shown}");
    assert_eq!(shown["missing_capabilities"], json!([]), "{shown}");

    // every 1.0 callback: configure_session, log, fetch, progress, args, merge
    let args = json!({"url": format!("{}catalogue/page-1.html", site.base_url)}).to_string();
    let run = host.json(&["run", LEGACY, "--args", &args, "--json"]);
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(run["inserted"], 2, "{run}");
    let rows = host.json(&["data", "head", "legacy_rows", "--json"]);
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in rows {
        assert_eq!(r["status"], 200, "{r}");
        assert!(r["title"].as_str().is_some_and(|t| !t.is_empty()), "the page title was fetched and parsed: {r}");
    }
    let id = run["runtime_id"].as_str().expect("runtime id");
    let shown = host.json(&["runs", "show", id, "--logs", "--json"]);
    let logs = shown["logs"].to_string();
    assert!(logs.contains("legacy plugin prepared"), "the 1.0 log callback reached the database: {logs}");

    // a second run changes nothing
    let again = host.json(&["run", LEGACY, "--args", &args, "--json"]);
    assert_eq!((again["status"].as_str(), again["unchanged"].as_u64()), (Some("SUCCESS"), Some(2)), "{again}");
}

#[test]
fn a_plugin_built_against_interface_1_0_registers_and_runs_unchanged_on_sqlite() {
    let bin = tempfile::tempdir().expect("tempdir");
    let lib = legacy_plugin(bin.path());
    let site = FixtureSite::start();
    legacy_registers_and_runs(&Host::sqlite(), &lib, &site);
}

#[test]
fn a_plugin_built_against_interface_1_0_registers_and_runs_unchanged_on_postgres() {
    let bin = tempfile::tempdir().expect("tempdir");
    let lib = legacy_plugin(bin.path());
    let site = FixtureSite::start();
    legacy_registers_and_runs(&Host::postgres(), &lib, &site);
}

/// Builds the tiny fixture plugin with the frozen SDK `sdk` (which ships with
/// the frozen interface `interface`) as app `test/fixtures/<name>`, and checks
/// that today's host shows its versions, registers it and runs it unchanged.
fn frozen_plugin_runs(host: &Host, sdk: &str, interface: &str, name: &str) {
    let bin = tempfile::tempdir().expect("tempdir");
    let lib = tiny_plugin(
        // `frozen-1-3` for 1.3.0: the build directory of the fixture crate
        &format!("frozen-{}", interface.rsplit_once('.').map_or(interface, |(mm, _)| mm).replace('.', "-")),
        ApiVariant::Frozen(&format!("tests/fixtures/abi/dc-plugin-sdk-{sdk}")),
        &[("DC_FIXTURE_NAME", name)],
        bin.path(),
    );
    let shown = host.json(&["plugins", "inspect", lib.to_str().expect("utf-8"), "--json"]);
    assert_eq!(shown["interface_version"], interface, "{shown}");
    assert_eq!(shown["sdk_version"], sdk, "{shown}");
    host.install(&lib, &format!("{name}.so"));
    let out = host.ok(&["reload"]);
    assert!(out.contains(&format!("registered test/fixtures/{name}")), "{out}");
    let run = host.json(&["run", &format!("test/fixtures/{name}"), "--json"]);
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert!(run["inserted"].as_i64().is_some_and(|n| n > 0), "{run}");
}

/// A plugin built with the frozen SDK 0.2.0 against the frozen interface 1.1.0
/// registers and runs unchanged.
fn interface_1_1_plugin_runs(new_host: fn() -> Host) {
    frozen_plugin_runs(&new_host(), "0.2.0", "1.1.0", "tiny11");
}

/// The frozen SDK 0.3.0 and interface 1.2.0 (the previous minor since 1.3
/// added `HostCallbacks::call`).
fn interface_1_2_plugin_runs(new_host: fn() -> Host) {
    frozen_plugin_runs(&new_host(), "0.3.0", "1.2.0", "tiny12");
}

/// The frozen SDK 0.4.0 and interface 1.3.0 (the previous minor since 1.4
/// added session setters, request options, error classes and `proxy.*` host
/// calls).
fn interface_1_3_plugin_runs(new_host: fn() -> Host) {
    frozen_plugin_runs(&new_host(), "0.4.0", "1.3.0", "tiny13");
}

/// The frozen SDK 0.5.0 and interface 1.4.0 (the previous minor since 1.5
/// added shared tables and streamed records).
fn interface_1_4_plugin_runs(new_host: fn() -> Host) {
    frozen_plugin_runs(&new_host(), "0.5.0", "1.4.0", "tiny14");
}

dc_e2e::both_backends!(
    interface_1_1_plugin_runs,
    interface_1_2_plugin_runs,
    interface_1_3_plugin_runs,
    interface_1_4_plugin_runs
);

#[test]
fn the_host_publishes_its_interface_and_capabilities() {
    let host = Host::sqlite();
    let api = interface_version();
    let i = host.json(&["interface", "--json"]);
    assert_eq!(i["interface_version"], api.as_str(), "{i}");
    let minor = api.split('.').nth(1).expect("minor");
    assert_eq!(i["loads"], format!("1.0 – 1.{minor}"), "{i}");
    assert_eq!(i["capabilities"], json!(["fetch", "merge", "log", "progress", "metrics", "frontier", "http"]), "{i}");
    assert!(i["not_implemented"].as_array().is_some_and(|a| a.contains(&json!("proxy"))), "{i}");
    let v = host.ok(&["--version"]);
    assert!(
        v.contains(&format!("plugin interface {api}"))
            && v.contains("fetch, merge, log, progress, metrics, frontier, http"),
        "{v}"
    );

    // a plugin built today records the interface and SDK it was built with
    let bin = tempfile::tempdir().expect("tempdir");
    let tiny = tiny_plugin("api-same", ApiVariant::Workspace, &[], bin.path());
    let shown = host.json(&["plugins", "inspect", tiny.to_str().expect("utf-8"), "--json"]);
    assert_eq!(shown["interface_version"], api.as_str(), "{shown}");
    let sdk = std::fs::read_to_string(dc_e2e::workspace().join("plugin-api/sdk/Cargo.toml")).expect("sdk toml");
    let sdk_version = shown["sdk_version"].as_str().expect("sdk_version is recorded");
    assert!(sdk.contains(&format!("version = \"{sdk_version}\"")), "{sdk_version}");
}

#[test]
fn a_plugin_requiring_a_capability_this_host_lacks_is_refused_naming_it() {
    let bin = tempfile::tempdir().expect("tempdir");
    let host = Host::sqlite();
    let needs_proxy = tiny_plugin(
        "requires-proxy",
        ApiVariant::Workspace,
        &[("DC_FIXTURE_REQUIRES", "fetch,proxy"), ("DC_FIXTURE_VERSION", "1.1.0")],
        bin.path(),
    );
    let file = needs_proxy.to_str().expect("utf-8");
    // inspect shows it, and says what is missing
    let shown = host.json(&["plugins", "inspect", file, "--json"]);
    assert_eq!(shown["requires"], json!(["fetch", "proxy"]), "{shown}");
    assert_eq!(shown["missing_capabilities"], json!(["proxy"]), "{shown}");
    let text = host.ok(&["plugins", "inspect", file]);
    assert!(text.contains("requires:    fetch, proxy (NOT offered by this host)"), "{text}");
    // registering refuses it, naming the capability, and registers nothing
    let (code, text) = host.fails(&["plugins", "register", file]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("test/fixtures/tiny 1.1.0 requires the capability \"proxy\" that this host does not implement")
            && text.contains("(it implements fetch, merge, log, progress, metrics, frontier, http)"),
        "{text}"
    );
    assert_eq!(host.json(&["plugins", "list", "--json"]), json!([]), "nothing was registered");
    assert!(dc_e2e::dir_snapshot(&host.dir.path().join("store")).is_empty(), "nothing entered the store");

    // requiring only what the host offers is fine
    let basic = tiny_plugin(
        "requires-basic",
        ApiVariant::Workspace,
        &[("DC_FIXTURE_REQUIRES", "fetch,merge"), ("DC_FIXTURE_VERSION", "1.2.0")],
        bin.path(),
    );
    let out = host.ok(&["plugins", "register", basic.to_str().expect("utf-8")]);
    assert!(out.contains("registered test/fixtures/tiny 1.2.0"), "{out}");
}
