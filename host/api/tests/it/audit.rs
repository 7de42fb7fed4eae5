//! The audit log through the API: every state-changing request is recorded
//! with who (subject, role; none without a valid token), the route template,
//! the target id, the status, the client address and the request id; reads
//! are not; `GET /api/v1/audit` is for admins, filters by subject and time
//! and pages by cursor.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

/// Every entry of `GET path`, following next_cursor.
async fn walk(api: &TestApi, path: &str, limit: u32) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (s, body) = api.get(&url, Some(ADMIN)).await;
        assert_eq!(s, 200, "{url}: {body}");
        items.extend(body["items"].as_array().expect("items").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
    panic!("the cursor walk of {path} did not end");
}

async fn state_changing_requests_are_audited(api: TestApi) {
    let id = app(&api.db, "audited").await;
    let cmd = format!("/api/v1/apps/{id}/commands");
    let start = json!({"command": "START"});

    // reads are not recorded
    let (s, _) = api.get("/api/v1/apps", Some(VIEWER)).await;
    assert_eq!(s, 200);
    let (_, body) = api.get("/api/v1/audit", Some(ADMIN)).await;
    assert_eq!(body["items"], json!([]), "{body}");

    // an accepted command, with the client's request id
    let r = api
        .client
        .post(api.url(&cmd))
        .bearer_auth(OPERATOR)
        .header("x-request-id", "req-audit-1")
        .json(&start)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 202);
    // refused ones: too small a role, no token, a forged token
    let (s, _) = api.send(Method::POST, &cmd, Some(VIEWER), &start).await;
    assert_eq!(s, 403);
    let (s, _) = api.send(Method::POST, &cmd, None, &start).await;
    assert_eq!(s, 401);
    let (s, _) = api.send(Method::PATCH, &format!("/api/v1/apps/{id}"), Some("forged"), &json!({})).await;
    assert_eq!(s, 401);
    // a request to no route changes nothing and is not recorded
    let (s, _) = api.send(Method::POST, "/api/v1/nothing-here", Some(ADMIN), &json!({})).await;
    assert_eq!(s, 404);

    let (s, body) = api.get("/api/v1/audit", Some(ADMIN)).await;
    assert_eq!(s, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    let summary: Vec<(Value, Value, &str, i64)> = items
        .iter()
        .map(|e| {
            (
                e["subject"].clone(),
                e["role"].clone(),
                e["method"].as_str().expect("method"),
                e["status"].as_i64().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Value::Null, Value::Null, "PATCH", 401),
            (Value::Null, Value::Null, "POST", 401),
            (json!("vera"), json!("viewer"), "POST", 403),
            (json!("otto"), json!("operator"), "POST", 202),
        ],
        "newest first: {body}"
    );
    let accepted = &items[3];
    assert_eq!(accepted["route"], "/api/v1/apps/{app_id}/commands", "{accepted}");
    assert_eq!(accepted["target"], id.as_str(), "{accepted}");
    assert_eq!(accepted["request_id"], "req-audit-1", "{accepted}");
    assert!(accepted["client_addr"].as_str().expect("address").starts_with("127.0.0.1:"), "{accepted}");
    assert!(items[2]["request_id"].as_str().is_some_and(|r| !r.is_empty()), "a generated request id: {}", items[2]);

    // admins only
    for token in [VIEWER, OPERATOR] {
        let (s, _) = api.get("/api/v1/audit", Some(token)).await;
        assert_eq!(s, 403, "{token}");
    }
    // filters: subject, time window
    let (_, body) = api.get("/api/v1/audit?subject=otto", Some(ADMIN)).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
    let at = accepted["at"].as_str().expect("at").to_string();
    let (_, body) = api.get(&format!("/api/v1/audit?until={}", at.replace('+', "%2B")), Some(ADMIN)).await;
    assert_eq!(body["items"], json!([]), "until is exclusive: {body}");
    let (_, body) = api.get(&format!("/api/v1/audit?since={}", at.replace('+', "%2B")), Some(ADMIN)).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(4), "since is inclusive: {body}");
    // the admin's own reads are not recorded; a cursor walk sees every entry once
    for _ in 0..7 {
        let (s, _) = api.send(Method::POST, &cmd, Some(ADMIN), &start).await;
        assert_eq!(s, 202);
    }
    let all = walk(&api, "/api/v1/audit", 3).await;
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().expect("id")).collect();
    assert_eq!(ids.len(), 11, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, no repeats: {ids:?}");
    // bad input is refused in the error shape
    let (s, body) = api.get("/api/v1/audit?limit=1000000000", Some(ADMIN)).await;
    assert_eq!((s, error_code(&body).as_str()), (422, "invalid"));
    let (s, body) = api.get("/api/v1/audit?cursor=bm90LWEtY3Vyc29y", Some(ADMIN)).await;
    assert_eq!((s, error_code(&body).as_str()), (422, "invalid_query"));
    let (s, body) = api.get("/api/v1/audit?subject=x%27%20OR%201%3D1--", Some(ADMIN)).await;
    assert_eq!((s, &body["items"]), (200, &json!([])), "SQL metacharacters are data");
    api.stop().await;
}

#[tokio::test]
async fn state_changing_requests_are_audited_sqlite() {
    state_changing_requests_are_audited(TestApi::sqlite().await).await;
}

#[tokio::test]
async fn state_changing_requests_are_audited_postgres() {
    state_changing_requests_are_audited(TestApi::postgres().await).await;
}
