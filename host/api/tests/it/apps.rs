//! Apps: listing with filters, sort and a cursor walk; commands queued
//! PENDING in the database; schedule, args and enabled updates checked before
//! anything is stored.

use std::collections::BTreeSet;

use dc_core::apps;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

/// Every item of `GET path` (with `limit`), following next_cursor; asserts no
/// page is larger than asked.
async fn walk(api: &TestApi, path: &str, limit: u32) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (s, body) = api.get(&url, Some(VIEWER)).await;
        assert_eq!(s, 200, "{url}: {body}");
        let page = body["items"].as_array().expect("items").clone();
        assert!(page.len() <= limit as usize, "{url}: {} items", page.len());
        items.extend(page);
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
    panic!("the cursor walk of {path} did not end");
}

pub async fn apps_walk_every_row_once(api: &TestApi) {
    let mut names = Vec::new();
    for i in 0..23 {
        let name = format!("app{i:02}");
        app(&api.db, &name).await;
        names.push(format!("it/tests/{name}"));
    }
    let items = walk(api, "/api/v1/apps", 5).await;
    let paths: Vec<String> = items.iter().map(|a| a["path"].as_str().expect("path").to_string()).collect();
    assert_eq!(paths, names, "every app once, by name");
    let items = walk(api, "/api/v1/apps?sort=-name", 4).await;
    let mut paths: Vec<String> = items.iter().map(|a| a["path"].as_str().expect("path").to_string()).collect();
    paths.reverse();
    assert_eq!(paths, names, "-name is the reverse order");
    // exactly one page: no cursor to a trailing empty page
    let (_, body) = api.get("/api/v1/apps?limit=23", Some(VIEWER)).await;
    assert_eq!(body["items"].as_array().expect("items").len(), 23);
    assert!(body["next_cursor"].is_null(), "{}", body["next_cursor"]);
}

#[tokio::test]
async fn a_cursor_walk_sees_every_app_exactly_once_and_filters_apply() {
    let api = TestApi::sqlite().await;
    apps_walk_every_row_once(&api).await;
    // status sort with a walk: every app once (statuses differ)
    let failed = apps::app_id_for("it", "tests", "app03");
    apps::record_run_outcome(&api.db, &failed, dc_core::enums::RunStatus::Failed, chrono::Utc::now())
        .await
        .expect("outcome");
    let items = walk(&api, "/api/v1/apps?sort=status", 6).await;
    let ids: BTreeSet<&str> = items.iter().map(|a| a["app_id"].as_str().expect("id")).collect();
    assert_eq!((items.len(), ids.len()), (23, 23));
    assert_eq!(items.last().expect("last")["app_id"], failed.as_str(), "FAILED sorts after no status");
    let (_, body) = api.get("/api/v1/apps?status=FAILED", Some(VIEWER)).await;
    assert_eq!(body["items"].as_array().expect("items").len(), 1);
    // name substring, case-insensitive, with LIKE metacharacters taken literally
    let (_, body) = api.get("/api/v1/apps?name=APP1", Some(VIEWER)).await;
    assert_eq!(body["items"].as_array().expect("items").len(), 10, "app10..app19");
    let (_, body) = api.get("/api/v1/apps?name=%25", Some(VIEWER)).await;
    assert_eq!(body["items"].as_array().expect("items").len(), 0, "% is not a wildcard");
    let (_, body) = api.get("/api/v1/apps?name=app_1", Some(VIEWER)).await;
    assert_eq!(body["items"].as_array().expect("items").len(), 0, "_ is not a wildcard");
    // enabled filter
    let (_, body) = api.get("/api/v1/apps?enabled=false", Some(VIEWER)).await;
    assert_eq!(body["items"].as_array().expect("items").len(), 0);
    api.stop().await;
}

#[tokio::test]
async fn page_sizes_over_the_cap_and_foreign_cursors_are_refused() {
    let api = TestApi::sqlite().await;
    for n in 0..3 {
        app(&api.db, &format!("a{n}")).await;
    }
    for limit in ["501", "1000000000", "0"] {
        let (s, body) = api.get(&format!("/api/v1/apps?limit={limit}"), Some(VIEWER)).await;
        assert_eq!(s, 422, "limit={limit}: {body}");
        assert!(body["error"]["message"].as_str().expect("message").contains("limit"), "{body}");
    }
    let (s, _) = api.get("/api/v1/apps?limit=500", Some(VIEWER)).await;
    assert_eq!(s, 200);
    let (_, body) = api.get("/api/v1/apps?limit=1", Some(VIEWER)).await;
    let cursor = body["next_cursor"].as_str().expect("a next page").to_string();
    // a cursor of another order, or of another listing, or garbage
    for path in [
        format!("/api/v1/apps?sort=-name&cursor={cursor}"),
        format!("/api/v1/runs?cursor={cursor}"),
        "/api/v1/apps?cursor=bm90IGEgY3Vyc29y".to_string(),
    ] {
        let (s, body) = api.get(&path, Some(VIEWER)).await;
        assert_eq!((s, error_code(&body).as_str()), (422, "invalid_query"), "{path}: {body}");
    }
    // SQL in a sort key or filter: refused or taken literally; the table is intact
    let (s, body) = api.get("/api/v1/apps?sort=name%3B%20DROP%20TABLE%20apps", Some(VIEWER)).await;
    assert_eq!(s, 422, "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("sort"), "{body}");
    let (s, body) = api.get("/api/v1/apps?name=%27%20OR%201%3D1%20--", Some(VIEWER)).await;
    assert_eq!((s, body["items"].as_array().expect("items").len()), (200, 0));
    assert_eq!(apps::list_apps(&api.db).await.expect("apps").len(), 3);
    api.stop().await;
}

pub async fn command_is_queued_pending(api: &TestApi) {
    let id = app(&api.db, "commanded").await;
    let (s, body) = api
        .send(
            Method::POST,
            &format!("/api/v1/apps/{}/commands", &id[..10]),
            Some(OPERATOR),
            &json!({"command": "RESTART"}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["command"], "RESTART");
    assert_eq!(body["state"], "PENDING");
    assert_eq!(body["app_id"], id.as_str());
    assert_eq!(body["serving_hosts"], 0);
    let row = apps::get_app(&api.db, &id).await.expect("read").expect("app");
    assert_eq!((row.cmd_name.as_deref(), row.cmd_flag.as_str()), (Some("RESTART"), "PENDING"));
    let pending = apps::pending_commands(&api.db).await.expect("pending");
    assert_eq!(pending, vec![(id.clone(), dc_core::enums::CmdName::Restart)]);
    let (_, body) = api.get(&format!("/api/v1/apps/{id}"), Some(VIEWER)).await;
    assert_eq!(body["pending_command"], "RESTART");
}

#[tokio::test]
async fn a_command_is_queued_pending_in_the_database() {
    let api = TestApi::sqlite().await;
    command_is_queued_pending(&api).await;
    // the app can be named by group/parent/name with encoded slashes
    let (s, body) = api
        .send(Method::POST, "/api/v1/apps/it%2Ftests%2Fcommanded/commands", Some(OPERATOR), &json!({"command": "STOP"}))
        .await;
    assert_eq!((s, body["command"].as_str()), (202, Some("STOP")), "{body}");
    api.stop().await;
}

#[tokio::test]
async fn schedule_args_and_enabled_updates_are_checked_before_anything_is_stored() {
    let api = TestApi::sqlite().await;
    let id = app(&api.db, "scheduled").await;
    let path = format!("/api/v1/apps/{id}");
    let stored = || async { apps::get_app(&api.db, &id).await.expect("read").expect("app") };

    let (s, body) = api
        .send(
            Method::PATCH,
            &path,
            Some(OPERATOR),
            &json!({"schedule": {"cron": "30 6 * * 1-5", "tz": "Europe/Berlin"}}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["schedule"]["kind"], "cron");
    assert_eq!(body["schedule"]["origin"], "operator");
    assert!(body["next_run"].is_string(), "{body}");
    let row = stored().await;
    assert_eq!(
        (row.schedule_cron.as_deref(), row.schedule_tz.as_deref()),
        (Some("30 6 * * 1-5"), Some("Europe/Berlin"))
    );

    // refused: a bad expression, a bad zone, a zone without cron, two kinds at once, unknown fields
    for (patch, needle) in [
        (json!({"schedule": {"cron": "61 * * * *"}}), "61"),
        (json!({"schedule": {"cron": "0 6 * * *", "tz": "Mars/Olympus"}}), "Mars/Olympus"),
        (json!({"schedule": {"tz": "UTC"}}), "schedule.tz"),
        (json!({"schedule": {"cron": "0 6 * * *", "every": "5m"}}), "schedule must be one of"),
        (json!({"schedule": {"every": "soon"}}), "soon"),
        (json!({"schedule": {"cron": "0 6 * * *"}, "colour": "red"}), "colour"),
        (json!({}), "nothing to change"),
        (json!({"schedule": {"every": "5m"}, "max_concurrent_runs": 0}), "max_concurrent_runs must be 1 to 1000"),
    ] {
        let (s, body) = api.send(Method::PATCH, &path, Some(OPERATOR), &patch).await;
        assert_eq!(s, 422, "{patch}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{patch}: {message}");
        let row = stored().await;
        assert_eq!(row.schedule_cron.as_deref(), Some("30 6 * * 1-5"), "{patch} changed the schedule");
    }

    // args need the app's plugin (its args_schema): refused, and the schedule
    // in the same request is not stored either
    let (s, body) = api
        .send(Method::PATCH, &path, Some(OPERATOR), &json!({"schedule": {"every": "5m"}, "args": {"max_pages": 2}}))
        .await;
    assert_eq!(s, 404, "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("no plugin registered"), "{body}");
    let row = stored().await;
    assert_eq!(
        (row.schedule_cron.as_deref(), row.interval_secs, row.run_args.as_deref()),
        (Some("30 6 * * 1-5"), None, None)
    );

    let (s, body) =
        api.send(Method::PATCH, &path, Some(OPERATOR), &json!({"schedule": {"every": "5m"}, "args": null})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (body["schedule"]["kind"].as_str(), body["schedule"]["every_secs"].as_i64()),
        (Some("every"), Some(300))
    );
    let (s, body) = api.send(Method::PATCH, &path, Some(OPERATOR), &json!({"schedule": {"off": true}})).await;
    assert_eq!((s, body["schedule"]["kind"].as_str()), (200, Some("off")));
    assert!(body["next_run"].is_null());

    // how many runs at once, like `dc-host apps concurrency`
    assert_eq!(stored().await.max_concurrent_runs, 1, "refused patches stored nothing");
    let (s, body) = api.send(Method::PATCH, &path, Some(OPERATOR), &json!({"max_concurrent_runs": 4})).await;
    assert_eq!((s, body["max_concurrent_runs"].as_i64()), (200, Some(4)), "{body}");
    assert_eq!(stored().await.max_concurrent_runs, 4);

    // enabled is queued for `serve`, like `dc-host apps disable`
    let (s, body) = api.send(Method::PATCH, &path, Some(OPERATOR), &json!({"enabled": false})).await;
    assert_eq!((s, body["pending_command"].as_str()), (200, Some("DISABLE")), "{body}");
    let row = stored().await;
    assert_eq!((row.cmd_name.as_deref(), row.cmd_flag.as_str()), (Some("DISABLE"), "PENDING"));
    api.stop().await;
}

async fn deleting_an_app(api: TestApi) {
    let id = app(&api.db, "to-delete").await;
    let path = format!("/api/v1/apps/{id}");
    // admins only
    for token in [VIEWER, OPERATOR] {
        let (s, body) = api.send(Method::DELETE, &path, Some(token), &json!({})).await;
        assert_eq!(s, 403, "{token}: {body}");
    }
    // an active run: 409, nothing deleted
    let run = run(&api.db, &id).await;
    let (s, body) = api.send(Method::DELETE, &path, Some(ADMIN), &json!({})).await;
    assert_eq!((s, error_code(&body).as_str()), (409, "conflict"), "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains(run.as_str()), "{body}");
    let (s, _) = api.get(&path, Some(VIEWER)).await;
    assert_eq!(s, 200, "still there");
    dc_core::runs::finish(&api.db, &run, dc_core::enums::RunStatus::Stopped, None).await.expect("finish");
    let (s, body) = api.send(Method::DELETE, &format!("{path}?drop_data=maybe"), Some(ADMIN), &json!({})).await;
    assert_eq!((s, error_code(&body).as_str()), (422, "invalid_query"), "{body}");
    // by group/parent/name, encoded
    let (s, body) =
        api.send(Method::DELETE, "/api/v1/apps/it%2Ftests%2Fto-delete?drop_data=true", Some(ADMIN), &json!({})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!((&body["app_id"], &body["path"], &body["runs"]), (&json!(id), &json!("it/tests/to-delete"), &json!(1)));
    let (s, body) = api.get(&path, Some(VIEWER)).await;
    assert_eq!((s, error_code(&body).as_str()), (404, "not_found"));
    assert!(apps::get_app(&api.db, &id).await.expect("read").is_none());
    let (s, _) = api.send(Method::DELETE, &path, Some(ADMIN), &json!({})).await;
    assert_eq!(s, 404);
    // audited, refusals included
    let (_, body) = api.get("/api/v1/audit?subject=ada", Some(ADMIN)).await;
    let statuses: Vec<i64> =
        body["items"].as_array().expect("items").iter().map(|e| e["status"].as_i64().expect("status")).collect();
    assert_eq!(statuses, [404, 200, 422, 409], "{body}");
    assert_eq!(body["items"][1]["route"], "/api/v1/apps/{app_id}", "{body}");
    assert_eq!(body["items"][1]["target"], "it/tests/to-delete", "{body}");
    api.stop().await;
}

#[tokio::test]
async fn deleting_an_app_needs_admin_no_active_run_and_is_audited_sqlite() {
    deleting_an_app(TestApi::sqlite().await).await;
}

#[tokio::test]
async fn deleting_an_app_needs_admin_no_active_run_and_is_audited_postgres() {
    deleting_an_app(TestApi::postgres().await).await;
}

/// `GET /apps` answers are kept for `api.apps_cache_ms` (1000 ms by
/// default): a change made outside the API shows once that time has passed,
/// a change made through the API at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_list_is_stale_at_most_its_bound_and_never_after_a_change_through_the_api() {
    let clock = std::sync::Arc::new(dc_scheduler::ManualClock::new(chrono::Utc::now()));
    let api = TestApi::with_apps_cache_clock(clock.clone()).await;
    let id = app(&api.db, "kept").await;
    let enabled = |body: &Value| body["items"][0]["enabled"].as_bool().expect("enabled");
    let (s, first) = api.get("/api/v1/apps", Some(VIEWER)).await;
    assert_eq!(s, 200, "{first}");
    assert!(enabled(&first));

    // changed elsewhere (the CLI, the serve loop, another host)
    apps::set_enabled(&api.db, &id, false).await.expect("disable");
    clock.advance(std::time::Duration::from_millis(999));
    let (_, body) = api.get("/api/v1/apps", Some(VIEWER)).await;
    assert!(enabled(&body), "kept for up to 1000 ms: {body}");
    let (_, other) = api.get("/api/v1/apps?limit=10", Some(VIEWER)).await;
    assert!(!enabled(&other), "another query is read now: {other}");
    clock.advance(std::time::Duration::from_millis(1));
    let (_, body) = api.get("/api/v1/apps", Some(VIEWER)).await;
    assert!(!enabled(&body), "read again after 1000 ms: {body}");

    // changed through the API (enabling queues an ENABLE command for serve):
    // the next list shows it, however soon
    let (s, body) =
        api.send(Method::PATCH, &format!("/api/v1/apps/{id}"), Some(OPERATOR), &json!({"enabled": true})).await;
    assert_eq!(s, 200, "{body}");
    let (_, body) = api.get("/api/v1/apps", Some(VIEWER)).await;
    assert_eq!(body["items"][0]["pending_command"], "ENABLE", "the queued command shows at once: {body}");
    // a bad query is still refused, kept answers or not
    let (s, body) = api.get("/api/v1/apps?limit=0", Some(VIEWER)).await;
    assert_eq!(s, 422, "{body}");
    api.stop().await;
}
