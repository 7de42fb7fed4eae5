//! The error shape and statuses: unknown things 404, bad input 422 naming
//! the field, malformed JSON 400, oversized bodies 413, unknown routes 404.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn errors_have_one_shape_and_the_right_status() {
    let api = TestApi::sqlite().await;
    let id = app(&api.db, "errors").await;
    let cmd = format!("/api/v1/apps/{id}/commands");

    let (s, body) = api.get("/api/v1/apps/ffffffffffff", Some(VIEWER)).await;
    assert_eq!((s, error_code(&body).as_str()), (404, "not_found"), "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("ffffffffffff"));
    let (s, body) = api
        .send(Method::POST, "/api/v1/apps/ffffffffffff/commands", Some(OPERATOR), &json!({"command": "START"}))
        .await;
    assert_eq!((s, error_code(&body).as_str()), (404, "not_found"));
    let (s, body) = api.get("/api/v1/runs/0123456789abcdef", Some(VIEWER)).await;
    assert_eq!((s, error_code(&body).as_str()), (404, "not_found"));

    // a bad command: 422 naming the field, nothing queued
    let (s, body) = api.send(Method::POST, &cmd, Some(OPERATOR), &json!({"command": "JUMP"})).await;
    assert_eq!((s, error_code(&body).as_str()), (422, "invalid_body"), "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("command") && message.contains("JUMP"), "{message}");
    let (s, body) = api.send(Method::POST, &cmd, Some(OPERATOR), &json!({})).await;
    assert_eq!(s, 422);
    assert!(body["error"]["message"].as_str().expect("message").contains("command"), "{body}");
    let row = dc_core::apps::get_app(&api.db, &id).await.expect("read").expect("app");
    assert_eq!(row.cmd_flag, "IDLE");

    // malformed JSON, wrong content type, oversized body
    let r = api
        .client
        .post(api.url(&cmd))
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body("{\"command\": ")
        .send()
        .await
        .expect("POST");
    let (s, body) = answer(r).await;
    assert_eq!((s, error_code(&body).as_str()), (400, "malformed_json"), "{body}");
    let r = api
        .client
        .post(api.url(&cmd))
        .bearer_auth(OPERATOR)
        .body("{\"command\": \"START\"}")
        .send()
        .await
        .expect("POST");
    let (s, body) = answer(r).await;
    assert_eq!((s, error_code(&body).as_str()), (415, "unsupported_media_type"), "{body}");
    let big = json!({"command": "START", "padding": "x".repeat(8 * 1024)});
    let (s, body) = api.send(Method::POST, &cmd, Some(OPERATOR), &big).await;
    assert_eq!((s, error_code(&body).as_str()), (413, "body_too_large"), "{body}");

    // a query that does not parse names the parameter; unknown parameters are refused
    let (s, body) = api.get("/api/v1/apps?enabled=maybe", Some(VIEWER)).await;
    assert_eq!((s, error_code(&body).as_str()), (422, "invalid_query"));
    assert!(body["error"]["message"].as_str().expect("message").contains("enabled"), "{body}");
    let (s, body) = api.get("/api/v1/runs?colour=red", Some(VIEWER)).await;
    assert_eq!(s, 422);
    assert!(body["error"]["message"].as_str().expect("message").contains("colour"), "{body}");

    // unknown routes and methods answer in the same shape
    let (s, body) = api.get("/api/v1/nothing-here", Some(VIEWER)).await;
    assert_eq!((s, error_code(&body).as_str()), (404, "not_found"));
    let (s, body) = api.send(Method::PUT, "/api/v1/apps", Some(ADMIN), &json!({})).await;
    assert_eq!((s, error_code(&body).as_str()), (405, "method_not_allowed"), "{body}");
    api.stop().await;
}

#[tokio::test]
async fn server_side_failures_answer_5xx_without_internal_detail() {
    let api = TestApi::unmigrated().await;
    let (s, body) = api.get("/api/v1/ready", None).await;
    assert_eq!((s, error_code(&body).as_str()), (503, "unavailable"), "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("dc-host db migrate"), "{body}");
    // a query against the missing tables fails inside dc-core: 500, and the
    // body names neither the SQL nor the database, only the request id to quote
    let r = api.client.get(api.url("/api/v1/apps")).bearer_auth(VIEWER).send().await.expect("GET");
    assert!(r.headers().contains_key("x-request-id"));
    let (s, body) = answer(r).await;
    assert_eq!((s, error_code(&body).as_str()), (500, "internal"), "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("x-request-id"), "{message}");
    for leak in ["table", "sqlite", "SELECT", "t.db"] {
        assert!(!message.contains(leak), "{leak} in {message}");
    }
    api.stop().await;
}
