//! Apps as an operator schedules them: `schedule preview` shows a cron
//! expression's fire times (time zones, DST, the Vixie day rule) without a
//! database; `apps schedule` and `apps args` validate and store what scheduled
//! and commanded runs use; `apps list|show` report it; a run without `--args`
//! uses the stored arguments; a plugin version whose schema rejects them is
//! refused, naming the field; `apps rm` deletes an app (its data only with
//! `--drop-data`).

use dc_e2e::{ApiVariant, Host, plugin_lib, tiny_plugin};
use serde_json::{Value, json};

const MISBEHAVE: &str = "test/fixtures/misbehave";

#[test]
fn schedule_preview_shows_fire_times_with_offsets() {
    let host = Host::sqlite();
    // 02:30 does not exist in Berlin on 2026-03-29: the job runs once, at 03:00
    let times = host.json(&[
        "schedule",
        "preview",
        "30 2 * * *",
        "--from",
        "2026-03-28T00:00:00Z",
        "--tz",
        "Europe/Berlin",
        "--count",
        "3",
        "--json",
    ]);
    assert_eq!(times, json!(["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]));
    // the Vixie rule: a restricted day of month OR a restricted day of week
    let times =
        host.json(&["schedule", "preview", "0 0 13 * fri", "--from", "2026-02-01T00:00:00Z", "--count", "4", "--json"]);
    assert_eq!(
        times,
        json!([
            "2026-02-06T00:00:00+00:00",
            "2026-02-13T00:00:00+00:00",
            "2026-02-20T00:00:00+00:00",
            "2026-02-27T00:00:00+00:00"
        ])
    );
    let (code, out) = host.fails(&["schedule", "preview", "0 25 * * *"]);
    assert_ne!(code, 0);
    assert!(out.contains("cron field 2 (hour) \"25\": out of range 0-23"), "{out}");
    let (_, out) = host.fails(&["schedule", "preview", "0 * * * *", "--tz", "Mars/Olympus"]);
    assert!(out.contains("Mars/Olympus"), "{out}");
    assert!(!host.dir.path().join("dc-host.db").exists(), "a preview touches no database");
}

fn show(host: &Host, app: &str) -> Value {
    host.json(&["apps", "show", app, "--json"])
}

#[test]
fn apps_schedule_and_args_are_validated_stored_and_used() {
    let host = Host::sqlite();
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    assert_eq!(show(&host, MISBEHAVE)["schedule"], Value::Null);

    // arguments are checked against the plugin's schema before they are stored
    let (code, out) = host.fails(&["apps", "args", MISBEHAVE, r#"{"mode": "nope"}"#]);
    assert_ne!(code, 0);
    assert!(out.contains("field mode"), "{out}");
    assert_eq!(show(&host, MISBEHAVE)["args"], Value::Null, "nothing stored");
    let (_, out) = host.fails(&["apps", "args", MISBEHAVE, "{not json"]);
    assert!(out.contains("not valid JSON"), "{out}");
    host.ok(&["apps", "args", MISBEHAVE, r#"{"mode": "ok", "items": 2}"#]);
    assert_eq!(show(&host, MISBEHAVE)["args"], json!({"mode": "ok", "items": 2}));
    // a run without --args uses them
    let r = host.json(&["run", MISBEHAVE, "--json"]);
    assert_eq!((r["status"].as_str(), r["inserted"].as_i64()), (Some("SUCCESS"), Some(2)), "{r}");

    // schedules: checked, stored as the operator's, with the next run
    let (_, out) = host.fails(&["apps", "schedule", MISBEHAVE, "--cron", "0 25 * * *"]);
    assert!(out.contains("cron field 2 (hour) \"25\""), "{out}");
    let (_, out) = host.fails(&["apps", "schedule", MISBEHAVE, "--every", "0s"]);
    assert!(out.contains("0s"), "{out}");
    let out = host.ok(&["apps", "schedule", MISBEHAVE, "--cron", "*/15 * * * *", "--tz", "Europe/Berlin"]);
    assert!(out.contains("next run"), "{out}");
    let v = show(&host, MISBEHAVE);
    assert_eq!(v["schedule"], "cron \"*/15 * * * *\" (Europe/Berlin)", "{v}");
    assert_eq!(v["schedule_origin"], "operator");
    let next = v["next_run"].as_str().expect("a next run");
    let minute: u32 = next[14..16].parse().expect("minute");
    assert_eq!(minute % 15, 0, "{next}");
    host.ok(&["apps", "schedule", MISBEHAVE, "--every", "5m"]);
    assert_eq!(show(&host, MISBEHAVE)["schedule"], "every 300s");
    host.ok(&["apps", "schedule", MISBEHAVE, "--off"]);
    let v = show(&host, MISBEHAVE);
    assert_eq!((v["schedule"].clone(), v["next_run"].clone()), (Value::Null, Value::Null), "{v}");
    let list = host.json(&["apps", "list", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[test]
fn a_version_whose_schema_rejects_the_stored_args_is_refused() {
    let host = Host::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    let open = tiny_plugin("args-open", ApiVariant::Workspace, &[("DC_FIXTURE_TABLE", "args_rows")], dir.path());
    let strict = tiny_plugin(
        "args-strict",
        ApiVariant::Workspace,
        &[("DC_FIXTURE_TABLE", "args_rows"), ("DC_FIXTURE_VERSION", "1.1.0"), ("DC_FIXTURE_STRICT_ARGS", "1")],
        dir.path(),
    );
    host.install(&open, "tiny-1.0.0.so");
    host.ok(&["reload"]);
    host.ok(&["apps", "args", "test/fixtures/tiny", r#"{"colour": "red"}"#]);
    host.install(&strict, "tiny-1.1.0.so");
    let (code, out) = host.fails(&["reload"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("its args_schema rejects the app's stored arguments")
            && out.contains("colour")
            && out.contains("dc-host apps args test/fixtures/tiny JSON"),
        "{out}"
    );
    assert_eq!(host.active_version("test/fixtures/tiny").as_deref(), Some("1.0.0"));
    host.ok(&["apps", "args", "test/fixtures/tiny", "--clear"]);
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered test/fixtures/tiny 1.1.0"), "{out}");
}

#[test]
fn apps_rm_deletes_an_app_and_keeps_its_data_unless_asked() {
    let host = Host::sqlite();
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    host.ok(&["run", MISBEHAVE, "--args", r#"{"mode": "ok", "items": 3}"#]);
    assert_eq!(host.db_rows("SELECT COUNT(*) FROM misbehave_rows"), ["3"]);

    // without --yes nothing is deleted
    let (code, out) = host.fails(&["apps", "rm", MISBEHAVE]);
    assert_ne!(code, 0);
    assert!(out.contains("run again with --yes") && out.contains("keeps its data tables"), "{out}");
    assert_eq!(show(&host, MISBEHAVE)["app"], MISBEHAVE);

    let gone = host.json(&["apps", "rm", MISBEHAVE, "--yes", "--json"]);
    assert_eq!((&gone["path"], &gone["versions"], &gone["runs"]), (&json!(MISBEHAVE), &json!(1), &json!(1)), "{gone}");
    assert_eq!(gone["dropped_tables"], json!([]), "{gone}");
    assert!(gone["kept_tables"].as_array().expect("kept").contains(&json!("misbehave_rows")), "{gone}");
    let (_, out) = host.fails(&["apps", "show", MISBEHAVE]);
    assert!(out.contains("no app matches"), "{out}");
    assert_eq!(host.db_rows("SELECT COUNT(*) FROM runtime"), ["0"]);
    assert_eq!(host.db_rows("SELECT COUNT(*) FROM misbehave_rows"), ["3"], "the data stays");

    // its file is still in the plugins directory: reload registers it again, its table is its own
    host.ok(&["reload"]);
    host.ok(&["run", MISBEHAVE, "--args", r#"{"mode": "ok", "items": 3}"#]);
    let out = host.ok(&["apps", "rm", MISBEHAVE, "--drop-data", "--yes"]);
    assert!(out.contains("deleted (1 version(s), 1 run(s))") && out.contains("dropped tables: "), "{out}");
    assert_eq!(host.db_rows("SELECT COUNT(*) FROM sqlite_master WHERE name = 'misbehave_rows'"), ["0"]);
}
