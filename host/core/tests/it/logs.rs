//! The database log sink: run ids from the span, extra fields as JSON context,
//! sqlx's own events skipped, and the JSONL fallback when the database is gone.

use std::path::Path;

use dc_core::logs::{self, LogSink};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

use crate::common::{TestDb, new_app, new_run};

both_backends!(log_sink_stores_run_records, log_sink_falls_back_to_jsonl);

/// Flushes from a blocking thread (the writer needs the runtime meanwhile).
async fn flush(sink: &LogSink) {
    let sink = sink.clone();
    tokio::task::spawn_blocking(move || sink.flush()).await.expect("flush");
}

/// Emits the same set of events for both tests; returns how many should be stored for `rid`.
fn emit(app: &str, rid: &str, other_rid: &str) -> usize {
    let span = tracing::info_span!("run", app_id = %app, runtime_id = %rid, plugin = "it");
    let _g = span.enter();
    tracing::info!(page = 3, url = "https://example.test/p3", ok = true, ratio = 0.5, "fetched page");
    // the sink's own queries must never feed back into it
    tracing::warn!(target: "sqlx::query", rows_affected = 1, "INSERT INTO logs ...");
    tracing::debug!(target: "sqlx::pool::acquire", "acquired");
    tracing::error!(context_json = r#"{"sku":"a-1","attempt":2}"#, "plugin said");
    {
        let inner = tracing::debug_span!("item", sku = "inner");
        let _i = inner.enter();
        tracing::debug!(elapsed_ms = 12u64, "nested span keeps the run ids");
    }
    // an id on the event itself wins over the span's
    tracing::info!(runtime_id = %other_rid, "for the other run");
    3
}

/// A stored log record: level, target, message, app id, run id, context.
type LogRecord = (String, String, String, Option<dc_core::AppId>, Option<dc_core::RuntimeId>, Value);

fn check_records(rows: &[LogRecord], app: &str, rid: &str) {
    let target = module_path!();
    let expected = [
        ("INFO", "fetched page", json!({"page": 3, "url": "https://example.test/p3", "ok": true, "ratio": 0.5})),
        ("ERROR", "plugin said", json!({"sku": "a-1", "attempt": 2})),
        ("DEBUG", "nested span keeps the run ids", json!({"elapsed_ms": 12})),
    ];
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    for (row, (level, message, context)) in rows.iter().zip(expected) {
        let (l, t, m, a, r, c) = row;
        assert_eq!((l.as_str(), t.as_str(), m.as_str()), (level, target, message), "{row:?}");
        assert_eq!(a.as_deref(), Some(app), "{row:?}");
        assert_eq!(r.as_deref(), Some(rid), "{row:?}");
        assert_eq!(c, &context, "{row:?}");
    }
}

async fn log_sink_stores_run_records(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "logs").await;
    let rid = new_run(db, &app).await;
    let other = new_run(db, &app).await;
    let fallback = t.dir.path().join("fallback.jsonl");
    let (layer, sink) = logs::start_db_sink(db.clone(), tokio::runtime::Handle::current(), 1000, fallback.clone());
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || emit(&app, &rid, &other));
    // outside the subscriber: not captured
    tracing::info!(runtime_id = %rid, "not captured");
    flush(&sink).await;

    let rows = logs::for_run(db, &rid, 100).await.expect("for_run");
    let rows: Vec<_> =
        rows.into_iter().map(|r| (r.level, r.target, r.message, r.app_id, r.runtime_id, r.context.0)).collect();
    check_records(&rows, &app, &rid);
    let o = logs::for_run(db, &other, 100).await.expect("for_run other");
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!((o[0].message.as_str(), o[0].app_id.as_deref()), ("for the other run", Some(app.as_str())));
    assert_eq!(o[0].context.0, json!({}));

    // nothing from sqlx targets anywhere in the table
    let sqlx_rows: i64 =
        dc_core::on_pool!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM logs WHERE target LIKE 'sqlx%'")
        .fetch_one(pool).await)
        .expect("count");
    assert_eq!(sqlx_rows, 0);
    let total: i64 =
        dc_core::on_pool!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM logs").fetch_one(pool).await)
            .expect("count");
    assert_eq!(total, 4);
    assert_eq!(sink.dropped(), 0);
    assert!(!fallback.exists(), "nothing may go to the fallback file while the database works");

    // the for_run limit is honoured
    assert_eq!(logs::for_run(db, &rid, 2).await.expect("limit").len(), 2);
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("fallback file {}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("fallback line is not JSON ({e}): {l}")))
        .collect()
}

async fn log_sink_falls_back_to_jsonl(t: &TestDb) {
    let app = new_app(&t.db, "fallback").await;
    let rid = new_run(&t.db, &app).await;
    let other = new_run(&t.db, &app).await;
    let closed = t.reconnect().await;
    closed.close().await;
    // the directory does not exist yet: the sink creates it
    let fallback = t.dir.path().join("logs").join("fallback.jsonl");
    let (layer, sink) = logs::start_db_sink(closed, tokio::runtime::Handle::current(), 1000, fallback.clone());
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || emit(&app, &rid, &other));
    flush(&sink).await;

    let records = read_jsonl(&fallback);
    assert_eq!(records.len(), 4, "{records:#?}");
    let ours: Vec<_> = records
        .iter()
        .filter(|r| r["runtime_id"] == json!(rid))
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_else(|| panic!("{k} in {r}")).to_string();
            let ts: chrono::DateTime<chrono::Utc> = s("ts").parse().expect("ts is RFC 3339");
            assert!((chrono::Utc::now() - ts).num_seconds().abs() < 60, "{r}");
            (
                s("level"),
                s("target"),
                s("message"),
                Some(s("app_id").into()),
                Some(s("runtime_id").into()),
                r["context"].clone(),
            )
        })
        .collect();
    check_records(&ours, &app, &rid);
    assert!(records.iter().all(|r| !r["target"].as_str().unwrap_or("").starts_with("sqlx")));

    // a second failing sink appends to the file, it does not overwrite it
    let closed = t.reconnect().await;
    closed.close().await;
    let (layer, sink2) = logs::start_db_sink(closed, tokio::runtime::Handle::current(), 10, fallback.clone());
    tracing::subscriber::with_default(
        tracing_subscriber::registry().with(layer),
        || tracing::info!(runtime_id = %rid, "second batch"),
    );
    flush(&sink2).await;
    let records = read_jsonl(&fallback);
    assert_eq!(records.len(), 5, "{records:#?}");
    assert_eq!(records[4]["message"], json!("second batch"));
    assert_eq!(records[4]["runtime_id"], json!(rid));

    // and the working database received none of it
    assert!(logs::for_run(&t.db, &rid, 100).await.expect("for_run").is_empty());
}
