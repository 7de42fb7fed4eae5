//! Runs (list, detail, stop), logs, hosts and plugins.

use chrono::{TimeDelta, Utc};
use dc_core::enums::RunStatus;
use dc_core::logs::LogRow;
use dc_core::runs;
use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn runs_list_walks_newest_first_filters_and_shows_details() {
    let api = TestApi::sqlite().await;
    let a = app(&api.db, "runs-a").await;
    let b = app(&api.db, "runs-b").await;
    let mut created = Vec::new();
    for i in 0..7 {
        let id = run(&api.db, if i % 2 == 0 { &a } else { &b }).await;
        created.push(id);
    }
    runs::finish(&api.db, &created[0], RunStatus::Success, None).await.expect("finish");
    // newest first: creation order reversed (the id breaks ties of equal times)
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/runs?limit=3&cursor={c}"),
            None => "/api/v1/runs?limit=3".to_string(),
        };
        let (s, body) = api.get(&path, Some(VIEWER)).await;
        assert_eq!(s, 200, "{body}");
        for r in body["items"].as_array().expect("items") {
            seen.push(r["runtime_id"].as_str().expect("id").to_string());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(seen.len() < 100, "the walk does not end");
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "every run exactly once: {seen:?}");
    let rows = runs::list(&api.db, None, 100).await.expect("runs");
    let expected: Vec<String> = rows.iter().map(|r| r.runtime_id.to_string()).collect();
    assert_eq!(seen, expected, "the order of `dc-host runs list`");

    let (_, body) = api.get("/api/v1/runs?app=it/tests/runs-b", Some(VIEWER)).await;
    assert_eq!(body["items"].as_array().expect("items").len(), 3);
    let (_, body) = api.get("/api/v1/runs?status=SUCCESS", Some(VIEWER)).await;
    let items = body["items"].as_array().expect("items");
    assert_eq!((items.len(), items[0]["runtime_id"].as_str()), (1, Some(created[0].as_str())));
    let (s, _) = api.get("/api/v1/runs?status=DONE", Some(VIEWER)).await;
    assert_eq!(s, 422);

    let (s, body) = api.get(&format!("/api/v1/runs/{}", &created[1][..8]), Some(VIEWER)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["runtime_id"], created[1].as_str());
    assert_eq!(body["app_path"], "it/tests/runs-b");
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["changes"], json!([]));
    assert_eq!(body["rows"]["inserted"], 0);
    assert_eq!(body["request_metrics"], json!(null), "no request made");

    // the request metrics a worker stored; a late write of an older
    // generation does not replace them
    let m = dc_net::RequestMetrics::new();
    m.request("site.example", None);
    m.attempt(
        "site.example",
        None,
        1,
        dc_net::metrics::AttemptOutcome::Status(404),
        std::time::Duration::from_millis(2),
    );
    let newer = serde_json::to_value(m.snapshot()).expect("json");
    runs::save_metrics(&api.db, &created[1], 5, &newer).await.expect("save");
    let older = serde_json::to_value(dc_net::RequestMetrics::new().snapshot()).expect("json");
    runs::save_metrics(&api.db, &created[1], 4, &older).await.expect("save");
    let (_, body) = api.get(&format!("/api/v1/runs/{}", created[1]), Some(VIEWER)).await;
    let got = &body["request_metrics"];
    assert_eq!((got["version"].as_u64(), got["requests"].as_u64()), (Some(1), Some(1)), "{body}");
    assert_eq!(got["status"]["404"], 1, "{body}");
    assert_eq!(got["domains"]["site.example"]["attempts"], 1, "{body}");
    assert!(got["latency"]["p99_ms"].as_f64().is_some_and(|v| v > 0.0), "{body}");
    api.stop().await;
}

#[tokio::test]
async fn stopping_a_run_that_has_not_started_ends_it_and_an_ended_run_is_a_conflict() {
    let api = TestApi::sqlite().await;
    let a = app(&api.db, "stoppable").await;
    let id = run(&api.db, &a).await;
    let path = format!("/api/v1/runs/{id}/stop");
    let (s, body) = api.send(Method::POST, &path, Some(OPERATOR), &json!(null)).await;
    assert_eq!((s, body["outcome"].as_str()), (200, Some("stopped_before_start")), "{body}");
    assert_eq!(runs::get(&api.db, &id).await.expect("run").status, "STOPPED");
    let (s, body) = api.send(Method::POST, &path, Some(OPERATOR), &json!(null)).await;
    assert_eq!((s, error_code(&body).as_str()), (409, "conflict"), "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("STOPPED"));

    // a run another host's worker runs: the request is recorded for it
    let remote = run(&api.db, &a).await;
    runs::mark_started(&api.db, &remote, 4242).await.expect("start");
    sqlx_set_host(&api, &remote, "other-host").await;
    let (s, body) = api.send(Method::POST, &format!("/api/v1/runs/{remote}/stop"), Some(ADMIN), &json!(null)).await;
    assert_eq!(
        (s, body["outcome"].as_str(), body["remote_host"].as_str()),
        (202, Some("requested"), Some("other-host"))
    );
    assert!(runs::stop_requested(&api.db, &remote).await.expect("flag"));
    api.stop().await;
}

/// Moves a run to another host (no dc-core function does that: only tests need it).
async fn sqlx_set_host(api: &TestApi, runtime_id: &str, host: &str) {
    match &api.db {
        dc_core::Database::Sqlite(pool) => {
            sqlx::query("UPDATE runtime SET host_name = $1 WHERE runtime_id = $2")
                .bind(host)
                .bind(runtime_id)
                .execute(pool)
                .await
                .expect("update");
        }
        dc_core::Database::Postgres(pool) => {
            sqlx::query("UPDATE runtime SET host_name = $1 WHERE runtime_id = $2")
                .bind(host)
                .bind(runtime_id)
                .execute(pool)
                .await
                .expect("update");
        }
    }
}

#[tokio::test]
async fn logs_are_queried_by_app_run_level_and_time() {
    let api = TestApi::sqlite().await;
    let a = app(&api.db, "logging").await;
    let r = run(&api.db, &a).await;
    let t0 = Utc::now() - TimeDelta::minutes(10);
    let row = |minute: i64, level: &str, message: &str, in_run: bool| LogRow {
        ts: t0 + TimeDelta::minutes(minute),
        level: level.into(),
        target: "it".into(),
        message: message.into(),
        app_id: in_run.then(|| a.clone()),
        runtime_id: in_run.then(|| r.clone()),
        context: sqlx::types::Json(json!({"n": minute})),
    };
    let rows = vec![
        row(0, "INFO", "host started", false),
        row(1, "DEBUG", "fetching", true),
        row(2, "INFO", "page 1", true),
        row(3, "WARN", "slow page", true),
        row(4, "ERROR", "page 3 failed", true),
        row(5, "INFO", "host idle", false),
    ];
    dc_core::logs::insert_batch(&api.db, &rows).await.expect("insert");
    let messages = |body: &serde_json::Value| -> Vec<String> {
        body["items"].as_array().expect("items").iter().map(|l| l["message"].as_str().expect("m").to_string()).collect()
    };
    let (s, body) = api.get("/api/v1/logs", Some(VIEWER)).await;
    assert_eq!((s, messages(&body).len()), (200, 6));
    let (_, body) = api.get(&format!("/api/v1/logs?run={}&level=warn", &r[..8]), Some(VIEWER)).await;
    assert_eq!(messages(&body), vec!["slow page", "page 3 failed"]);
    let (_, body) = api.get("/api/v1/logs?app=it/tests/logging", Some(VIEWER)).await;
    assert_eq!(messages(&body).len(), 4);
    let since = (t0 + TimeDelta::minutes(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until = (t0 + TimeDelta::minutes(4)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, body) = api.get(&format!("/api/v1/logs?since={since}&until={until}"), Some(VIEWER)).await;
    assert_eq!(messages(&body), vec!["page 1", "slow page"]);
    assert_eq!(body["items"][0]["context"], json!({"n": 2}));
    // pages of two, in order
    let (_, body) = api.get("/api/v1/logs?limit=4", Some(VIEWER)).await;
    let cursor = body["next_cursor"].as_str().expect("next").to_string();
    let (_, body) = api.get(&format!("/api/v1/logs?limit=4&cursor={cursor}"), Some(VIEWER)).await;
    assert_eq!(messages(&body), vec!["page 3 failed", "host idle"]);
    assert!(body["next_cursor"].is_null());
    let (s, _) = api.get(&format!("/api/v1/logs?since={until}&until={since}"), Some(VIEWER)).await;
    assert_eq!(s, 422);
    let (s, _) = api.get("/api/v1/logs?level=loud", Some(VIEWER)).await;
    assert_eq!(s, 422);
    api.stop().await;
}

#[tokio::test]
async fn hosts_and_plugins_are_listed() {
    let api = TestApi::sqlite().await;
    let now = Utc::now();
    dc_core::hosts::heartbeat(
        &api.db,
        "node-1",
        77,
        "SERVING",
        now - TimeDelta::hours(1),
        now - TimeDelta::seconds(30),
    )
    .await
    .expect("heartbeat");
    let (s, body) = api.get("/api/v1/hosts", Some(VIEWER)).await;
    assert_eq!(s, 200, "{body}");
    let h = &body[0];
    assert_eq!(
        (h["host_name"].as_str(), h["state"].as_str(), h["pid"].as_i64()),
        (Some("node-1"), Some("SERVING"), Some(77))
    );
    assert!(h["heartbeat_age_secs"].as_i64().expect("age") >= 30);

    let a = app(&api.db, "plugged").await;
    let (s, body) = api.get("/api/v1/plugins", Some(VIEWER)).await;
    assert_eq!(s, 200);
    assert_eq!(body[0]["app_id"], a.as_str());
    assert!(body[0]["active_version"].is_null());
    let (s, body) = api.get(&format!("/api/v1/plugins/{a}/versions"), Some(VIEWER)).await;
    assert_eq!((s, body), (200, json!([])));
    api.stop().await;
}

#[tokio::test]
async fn postgres_serves_commands_and_cursor_walks() {
    let api = TestApi::postgres().await;
    crate::apps::apps_walk_every_row_once(&api).await;
    crate::apps::command_is_queued_pending(&api).await;
    let a = app(&api.db, "pg-runs").await;
    for _ in 0..5 {
        run(&api.db, &a).await;
    }
    let (_, body) = api.get("/api/v1/runs?limit=2", Some(VIEWER)).await;
    let c = body["next_cursor"].as_str().expect("next").to_string();
    let (_, body2) = api.get(&format!("/api/v1/runs?limit=2&cursor={c}"), Some(VIEWER)).await;
    assert_ne!(body["items"][0]["runtime_id"], body2["items"][0]["runtime_id"]);
    assert_eq!(api.get("/api/v1/ready", None).await.0, 200);
    api.stop().await;
}
