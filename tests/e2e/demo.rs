//! The main job: register the example plugin, scrape the fixture site, store
//! through the SHA merge, re-run idempotently — on SQLite and on PostgreSQL.

use dc_e2e::{FixtureSite, Host, plugin_lib};

fn scrape_twice(host: &Host) {
    let site = FixtureSite::start();
    host.install(&plugin_lib("dc_plugin_catalogue"), "catalogue.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered demo/fixtures/catalogue 1.0.0"), "{out}");

    let first = host.json(&["run", "demo/fixtures/catalogue", "--args", &site.args(), "--json"]);
    assert_eq!(first["status"], "SUCCESS", "{first}");
    assert_eq!(first["total_count"], 300);
    assert_eq!(first["current_count"], 300);
    assert_eq!(first["inserted"], 300);
    assert_eq!(first["runtime_id"].as_str().map(str::len), Some(32));

    let rows = host.json(&["data", "head", "catalogue_items", "--limit", "300", "--json"]);
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 300);
    let first_row = &rows[0];
    assert_eq!(first_row["sku"], "SKU-0001");
    assert_eq!(first_row["title"], "Nordic Thermos");
    assert_eq!(first_row["price"], 99.21);
    assert_eq!(first_row["url"], "catalogue/item-0001.html");

    // the same site again (even on another port): nothing changes, nothing is written
    drop(site);
    let site = FixtureSite::start();
    let second = host.json(&["run", "demo/fixtures/catalogue", "--args", &site.args(), "--json"]);
    assert_eq!(second["status"], "SUCCESS", "{second}");
    assert_eq!(
        (second["inserted"].as_i64(), second["updated"].as_i64(), second["deleted"].as_i64()),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(second["unchanged"], 300);

    // the change feed of the first run lists every inserted key, the second none
    let rid = first["runtime_id"].as_str().expect("id");
    let shown = host.json(&["runs", "show", rid, "--changes", "--logs", "--json"]);
    let changes = shown["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 300);
    assert!(changes.iter().all(|c| c["op"] == "insert" && c["table_name"] == "catalogue_items"));
    assert!(changes.iter().any(|c| c["row_key"] == "[\"SKU-0042\"]"));
    let rid2 = second["runtime_id"].as_str().expect("id");
    assert_eq!(host.json(&["runs", "show", rid2, "--changes", "--json"])["changes"].as_array().map(Vec::len), Some(0));

    // logs of the run are in the database, stamped with the run's ids
    let logs = shown["logs"].as_array().expect("logs");
    assert!(
        logs.iter()
            .any(|l| l["target"] == "plugin" && l["message"] == "listing collected" && l["context"]["items"] == 300),
        "{logs:?}"
    );
    assert!(logs.iter().all(|l| l["runtime_id"] == rid));

    // the host's watched merge recorded one function_log row for the run
    // (SQLite stages its merges and applies them when the run ends)
    let calls = host.json(&["runs", "show", rid, "--functions", "--json"]);
    let calls = calls["functions"].as_array().expect("functions");
    let (name, module) = match host.database_url().starts_with("sqlite:") {
        true => ("stage", "dc_core::stage"),
        false => ("merge_in", "dc_core::merge"),
    };
    let merges: Vec<&serde_json::Value> = calls.iter().filter(|c| c["function_name"] == name).collect();
    assert_eq!(merges.len(), 1, "{calls:?}");
    assert_eq!(merges[0]["rows_count"], 300);
    assert_eq!(merges[0]["is_error"], false);
    assert_eq!(merges[0]["module_path"], module);

    // progress counters on the app and the run list
    let apps = host.json(&["plugins", "list", "--json"]);
    let app = &apps[0];
    assert_eq!(app["run_status"], "SUCCESS");
    assert_eq!(app["current_count"], 300);
    let runs = host.json(&["runs", "list", "--json"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(2));
    let text = host.ok(&["runs", "show", rid]);
    assert!(text.contains("300 inserted, 0 updated, 0 deleted, 0 unchanged"), "{text}");
}

#[test]
fn catalogue_on_sqlite() {
    scrape_twice(&Host::sqlite());
}

#[test]
fn catalogue_on_postgres() {
    scrape_twice(&Host::postgres());
}

#[test]
fn invalid_arguments_are_refused_before_anything_starts() {
    let host = Host::sqlite();
    host.install(&plugin_lib("dc_plugin_catalogue"), "catalogue.so");
    host.ok(&["reload"]);
    let (code, text) = host.fails(&["run", "demo/fixtures/catalogue", "--args", r#"{"max_pages": "two"}"#]);
    assert_eq!(code, 2);
    assert!(text.contains("\"base_url\" is a required property"), "{text}");
    assert!(text.contains("field max_pages: \"two\" is not of type \"integer\""), "{text}");
    let (_, text) = host.fails(&["run", "demo/fixtures/catalogue", "--args", "{not json"]);
    assert!(text.contains("--args is not valid JSON"), "{text}");
    assert_eq!(host.json(&["runs", "list", "--json"]).as_array().map(Vec::len), Some(0), "no run was created");
}
