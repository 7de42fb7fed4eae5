//! What a run writes through the host callbacks (`callbacks`): the misbehave
//! fixture merges its records (`ctx.merge`, a full snapshot of
//! `misbehave_rows`), logs through `ctx.log` and reports progress; the run's
//! rows, change feed, merge counters and log records must all be in the
//! database afterwards, and a run whose merges fail must leave all of them
//! as they were.

use dc_core::merge;
use dc_core::runs::{self, RunRow};
use dc_plugin_api::TableDecl;
use serde_json::{Value, json};

use crate::common::TestEnv;

both_backends!(a_merging_run_writes_rows_change_feed_and_counters, a_run_whose_merge_fails_writes_nothing);

/// The declaration of one of the active plugin's tables.
async fn table(t: &TestEnv, name: &str) -> TableDecl {
    let (_, manifest) = dc_runtime::supervisor::active_plugin(&t.env, &t.app().await).await.expect("active plugin");
    manifest.tables.into_iter().find(|d| d.name == name).unwrap_or_else(|| panic!("no table {name}"))
}

/// The live rows of a table as (id, note), in key order.
async fn rows(t: &TestEnv, decl: &TableDecl) -> Vec<(i64, Value)> {
    merge::preview(t.db(), decl, 1000)
        .await
        .expect("preview")
        .into_iter()
        .map(|r| (r["id"].as_i64().expect("integer id"), r["note"].clone()))
        .collect()
}

/// A run's change feed as sorted (table, op, key).
async fn feed(t: &TestEnv, runtime_id: &dc_core::RuntimeId) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = runs::changes(t.db(), runtime_id)
        .await
        .expect("changes")
        .into_iter()
        .map(|c| (c.table_name, c.op, c.row_key))
        .collect();
    v.sort();
    v
}

fn counters(r: &RunRow) -> [i64; 4] {
    [r.inserted, r.updated, r.deleted, r.unchanged]
}

fn change(op: &str, id: i64) -> (String, String, String) {
    ("misbehave_rows".into(), op.into(), format!("[{id}]"))
}

async fn a_merging_run_writes_rows_change_feed_and_counters(t: &TestEnv) {
    t.with_misbehave().await;
    let decl = table(t, "misbehave_rows").await;
    let second = table(t, "misbehave_second").await;

    let r = t.run(json!({"mode": "ok", "items": 5}), None).await;
    assert_eq!(r.status, "SUCCESS", "{r:?}");
    let expected: Vec<(i64, Value)> = (0..5).map(|i| (i, json!(format!("item {i}")))).collect();
    assert_eq!(rows(t, &decl).await, expected, "every collected record was merged");
    assert!(rows(t, &second).await.is_empty(), "no records, no rows");
    assert_eq!(feed(t, &r.runtime_id).await, (0..5).map(|i| change("insert", i)).collect::<Vec<_>>());
    assert_eq!(counters(&r), [5, 0, 0, 0], "{r:?}");
    assert_eq!((r.current_count, r.total_count, r.error_count), (5, 5, 0), "progress: {r:?}");
    // what the plugin logged through the host is stored with the run
    let logs = dc_core::logs::for_run(t.db(), &r.runtime_id, 1000).await.expect("logs");
    let merged = logs
        .iter()
        .find(|l| l.message == "merged table" && l.target == "plugin")
        .unwrap_or_else(|| panic!("no 'merged table' record from the plugin in {logs:?}"));
    let context = merged.context.0.to_string();
    assert!(context.contains("misbehave_rows") && context.contains("\"inserted\":5"), "{context}");
    assert!(logs.iter().all(|l| l.runtime_id.as_deref() == Some(r.runtime_id.as_str())), "{logs:?}");

    // a smaller full snapshot: three rows stay unchanged, the two missing ones are deleted
    let r = t.run(json!({"mode": "ok", "items": 3}), None).await;
    assert_eq!(r.status, "SUCCESS", "{r:?}");
    assert_eq!(rows(t, &decl).await, expected[..3], "the rows missing from the snapshot are gone");
    assert_eq!(feed(t, &r.runtime_id).await, [change("delete", 3), change("delete", 4)], "unchanged rows are not fed");
    assert_eq!(counters(&r), [0, 0, 2, 3], "{r:?}");
}

async fn a_run_whose_merge_fails_writes_nothing(t: &TestEnv) {
    t.with_misbehave().await;
    let decl = table(t, "misbehave_rows").await;
    let second = table(t, "misbehave_second").await;
    let ok = t.run(json!({"mode": "ok", "items": 3}), None).await;
    assert_eq!(ok.status, "SUCCESS", "{ok:?}");
    let before = rows(t, &decl).await;
    assert_eq!(before.len(), 3);

    // a record of the wrong type is refused by the merge callback
    let r = t.run(json!({"mode": "bad_record", "items": 2}), None).await;
    assert_eq!(r.status, "FAILED", "{r:?}");
    let reason = r.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("field \"note\": expected a string, got a number 42"), "{reason}");
    assert_eq!(rows(t, &decl).await, before);
    assert!(feed(t, &r.runtime_id).await.is_empty(), "no change feed for a failed run");
    assert_eq!(counters(&r), [0, 0, 0, 0], "{r:?}");

    // the first table merges (one new row, one fewer), the second fails: both are as they were
    let r = t.run(json!({"mode": "second_bad", "items": 4}), None).await;
    assert_eq!(r.status, "FAILED", "{r:?}");
    let reason = r.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("misbehave_second") && reason.contains("the run's merges were rolled back, nothing was stored"),
        "{reason}"
    );
    assert_eq!(rows(t, &decl).await, before, "the first table's merge was rolled back");
    assert!(rows(t, &second).await.is_empty());
    assert!(feed(t, &r.runtime_id).await.is_empty(), "no change feed for rolled-back merges");
    assert_eq!(counters(&r), [0, 0, 0, 0], "no counts for rolled-back rows: {r:?}");
    assert_eq!(t.app().await.fail_count, 2);
}
