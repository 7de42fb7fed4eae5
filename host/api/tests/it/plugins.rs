//! With real registered plugins (the misbehave fixture, two versions):
//! stored arguments checked against the plugin's args_schema, the version
//! history, and an admin's rollback.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

const APP: &str = "test%2Ffixtures%2Fmisbehave";

#[tokio::test]
async fn args_are_checked_against_the_plugin_schema_and_an_admin_rolls_back() {
    let builds = tempfile::tempdir().expect("tempdir");
    let dest = builds.path().to_path_buf();
    let (v1, v2) = tokio::task::spawn_blocking(move || {
        (dc_e2e::misbehave_build("1.0.0", &dest), dc_e2e::misbehave_build("1.1.0", &dest))
    })
    .await
    .expect("build plugins");
    let api = TestApi::with_plugins(&[v1, v2]).await;
    let app_path = format!("/api/v1/apps/{APP}");

    // arguments: refused naming the field (nothing stored), then stored
    let (s, body) = api.send(Method::PATCH, &app_path, Some(OPERATOR), &json!({"args": {"mode": "nope"}})).await;
    assert_eq!((s, error_code(&body).as_str()), (422, "invalid"), "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("mode"), "{body}");
    let (_, body) = api.get(&app_path, Some(VIEWER)).await;
    assert!(body["args"].is_null(), "{body}");
    let (s, body) =
        api.send(Method::PATCH, &app_path, Some(OPERATOR), &json!({"args": {"mode": "ok", "items": 2}})).await;
    assert_eq!((s, &body["args"]), (200, &json!({"mode": "ok", "items": 2})), "{body}");
    let (s, body) = api.send(Method::PATCH, &app_path, Some(OPERATOR), &json!({"args": null})).await;
    assert_eq!(s, 200);
    assert!(body["args"].is_null(), "{body}");

    // history: both versions, 1.1.0 active
    let versions = format!("/api/v1/plugins/{APP}/versions");
    let (s, body) = api.get(&versions, Some(VIEWER)).await;
    assert_eq!(s, 200, "{body}");
    let active: Vec<(&str, bool)> = body
        .as_array()
        .expect("list")
        .iter()
        .map(|v| (v["version"].as_str().expect("version"), v["active"].as_bool().expect("active")))
        .collect();
    assert_eq!(active, vec![("1.1.0", true), ("1.0.0", false)]);

    // rollback: admins only; then 1.0.0 is active
    let rollback = format!("/api/v1/plugins/{APP}/rollback");
    let (s, _) = api.send(Method::POST, &rollback, Some(OPERATOR), &json!({})).await;
    assert_eq!(s, 403);
    let (s, body) = api.send(Method::POST, &rollback, Some(ADMIN), &json!({})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!((body["from"].as_str(), body["to"].as_str()), (Some("1.1.0"), Some("1.0.0")));
    let (_, body) = api.get(&app_path, Some(VIEWER)).await;
    assert_eq!(body["active_version"], "1.0.0");
    let (s, body) = api.send(Method::POST, &rollback, Some(ADMIN), &json!({"to": "7.0.0"})).await;
    assert_eq!((s, error_code(&body).as_str()), (404, "not_found"), "{body}");
    api.stop().await;
}
