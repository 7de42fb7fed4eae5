//! Roles on every route class: 401 without or with a refused token (with the
//! Bearer challenge), 403 for too small a role, public health and readiness.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn tokens_and_roles_are_checked_on_reads_and_commands() {
    let api = TestApi::sqlite().await;
    let id = app(&api.db, "roles").await;
    let cmd = format!("/api/v1/apps/{id}/commands");
    let start = json!({"command": "START"});

    // no token: 401 with the challenge
    let r = api.client.get(api.url("/api/v1/apps")).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"dc-host\"");
    let (_, body) = answer(r).await;
    assert_eq!(error_code(&body), "unauthorized");
    // a refused token: 401, invalid_token
    let r = api.client.get(api.url("/api/v1/apps")).bearer_auth("forged").send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"].to_str().expect("text").contains("error=\"invalid_token\""));
    // not a bearer scheme
    let r = api.client.get(api.url("/api/v1/apps")).basic_auth("u", Some("p")).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    let (s, _) = api.send(Method::POST, &cmd, None, &start).await;
    assert_eq!(s, 401);

    // reads: every role
    for token in [VIEWER, OPERATOR, ADMIN] {
        let (s, body) = api.get("/api/v1/apps", Some(token)).await;
        assert_eq!(s, 200, "{token}: {body}");
    }
    // commands: operator and admin, not viewer
    let (s, body) = api.send(Method::POST, &cmd, Some(VIEWER), &start).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(error_code(&body), "forbidden");
    assert!(body["error"]["message"].as_str().expect("message").contains("operator"), "{body}");
    let row = dc_core::apps::get_app(&api.db, &id).await.expect("read").expect("app");
    assert_eq!(row.cmd_flag, "IDLE", "a refused command must not be queued");
    for token in [OPERATOR, ADMIN] {
        let (s, body) = api.send(Method::POST, &cmd, Some(token), &start).await;
        assert_eq!(s, 202, "{token}: {body}");
    }
    // other operator routes refuse viewers too
    let (s, _) = api.send(Method::PATCH, &format!("/api/v1/apps/{id}"), Some(VIEWER), &json!({"enabled": false})).await;
    assert_eq!(s, 403);
    let (s, _) = api.send(Method::POST, "/api/v1/runs/0123456789/stop", Some(VIEWER), &json!({})).await;
    assert_eq!(s, 403);

    // plugin management: admin only
    let rollback = format!("/api/v1/plugins/{id}/rollback");
    for token in [VIEWER, OPERATOR] {
        let (s, body) = api.send(Method::POST, &rollback, Some(token), &json!({})).await;
        assert_eq!(s, 403, "{token}: {body}");
        assert!(body["error"]["message"].as_str().expect("message").contains("admin"), "{body}");
    }
    // an admin gets past the guard to the registry, which finds nothing to roll back to
    let (s, body) = api.send(Method::POST, &rollback, Some(ADMIN), &json!({"to": "0.9.0"})).await;
    assert_eq!((s, error_code(&body).as_str()), (404, "not_found"), "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("0.9.0"), "{body}");

    // health and readiness need no token
    assert_eq!(api.get("/api/v1/health", None).await, (200, json!({"status": "ok"})));
    assert_eq!(api.get("/api/v1/ready", None).await, (200, json!({"status": "ok"})));
    api.stop().await;
}

#[tokio::test]
async fn responses_carry_security_headers_a_request_id_and_cors_only_for_the_configured_origin() {
    let api = TestApi::sqlite().await;
    let r = api.client.get(api.url("/api/v1/apps")).bearer_auth(VIEWER).send().await.expect("GET");
    let h = r.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h["content-security-policy"].to_str().expect("text").contains("default-src 'none'"));
    assert_eq!(h["cache-control"], "no-store");
    let id = h["x-request-id"].to_str().expect("request id").to_string();
    assert_eq!(id.len(), 36, "a uuid: {id}");
    // an error answer carries them too
    let r = api.client.get(api.url("/api/v1/apps")).send().await.expect("GET");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().contains_key("x-request-id"));

    let preflight = |origin: &'static str| {
        api.client
            .request(Method::OPTIONS, api.url("/api/v1/apps"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let r = preflight(ALLOWED_ORIGIN).await.expect("preflight");
    assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED_ORIGIN);
    let r = preflight("https://evil.example").await.expect("preflight");
    assert!(!r.headers().contains_key("access-control-allow-origin"), "{:?}", r.headers());
    api.stop().await;
}

#[tokio::test]
async fn each_client_is_rate_limited_by_its_token_subject() {
    let clock = governor::clock::FakeRelativeClock::default();
    let api = TestApi::rate_limited(2, 3, clock.clone()).await;
    let id = app(&api.db, "limited").await;
    for _ in 0..3 {
        let (s, body) = api.get("/api/v1/apps", Some(VIEWER)).await;
        assert_eq!(s, 200, "{body}");
    }
    // the burst is spent: 429 in the error shape, with Retry-After
    let r = api.client.get(api.url("/api/v1/apps")).bearer_auth(VIEWER).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let (_, body) = answer(r).await;
    assert_eq!(error_code(&body), "rate_limited");
    assert!(body["error"]["message"].as_str().expect("message").contains("vera"), "{body}");
    // commands count too, and a refused one changes nothing (and is audited as 429)
    let cmd = format!("/api/v1/apps/{id}/commands");
    let (s, _) = api.send(Method::POST, &cmd, Some(VIEWER), &json!({"command": "START"})).await;
    assert_eq!(s, 429);
    // another subject has its own budget; unauthenticated requests are not counted
    let (s, _) = api.get("/api/v1/apps", Some(OPERATOR)).await;
    assert_eq!(s, 200);
    let (s, _) = api.get("/api/v1/apps", None).await;
    assert_eq!(s, 401);
    // half a second later one more request of vera's is allowed (2 per second), then none
    clock.advance(std::time::Duration::from_millis(500));
    let (s, body) = api.get("/api/v1/apps", Some(VIEWER)).await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = api.get("/api/v1/apps", Some(VIEWER)).await;
    assert_eq!(s, 429);
    let (_, audit) = api.get("/api/v1/audit", Some(ADMIN)).await;
    assert_eq!(audit["items"][0]["status"], 429, "{audit}");
    assert_eq!(audit["items"][0]["subject"], "vera", "{audit}");
    api.stop().await;
}

/// A kept `GET /apps` answer is served without its route (no guard or
/// handler service), but only after the same checks (token, rate limit) and
/// with the same headers (security, request id, CORS) as the answer it keeps.
#[tokio::test]
async fn a_kept_apps_answer_passes_the_same_checks_and_carries_the_same_headers() {
    let limit_clock = governor::clock::FakeRelativeClock::default();
    // the kept answer stays fresh until this clock moves; it never does here
    let apps_clock = std::sync::Arc::new(dc_scheduler::ManualClock::new(chrono::Utc::now()));
    let api = TestApi::rate_limited_with_apps_cache_clock(2, 2, limit_clock.clone(), apps_clock).await;
    app(&api.db, "kept").await;
    let get = |token: Option<&'static str>| {
        let mut req = api.client.get(api.url("/api/v1/apps")).header("origin", ALLOWED_ORIGIN);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let read = get(Some(VIEWER)).await.expect("GET");
    let kept = get(Some(VIEWER)).await.expect("GET");
    assert_eq!((read.status().as_u16(), kept.status().as_u16()), (200, 200));
    let names = |r: &reqwest::Response| {
        let mut n: Vec<String> = r.headers().keys().map(|k| k.as_str().to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&kept), names(&read), "the same headers");
    for h in [
        "content-type",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "cache-control",
        "content-security-policy",
        "access-control-allow-origin",
        "access-control-expose-headers",
        "vary",
    ] {
        assert_eq!(kept.headers().get(h), read.headers().get(h), "{h}");
    }
    assert_eq!(kept.headers()["access-control-allow-origin"], ALLOWED_ORIGIN);
    assert_ne!(kept.headers()["x-request-id"], read.headers()["x-request-id"], "an id per request");
    let (_, read) = answer(read).await;
    let (_, kept) = answer(kept).await;
    assert_eq!(kept, read);
    assert_eq!(kept["items"][0]["name"], "kept", "{kept}");

    // no token, an unknown token: 401 with the challenge, not the kept answer
    let r = get(None).await.expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"dc-host\"");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = get(Some("forged-token")).await.expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    // vera's burst of 2 is spent: 429 with Retry-After
    let r = get(Some(VIEWER)).await.expect("GET");
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.headers().contains_key("x-request-id"));
    let (_, body) = answer(r).await;
    assert_eq!(error_code(&body), "rate_limited", "{body}");
    // half a second later she may read again: the kept answer
    limit_clock.advance(std::time::Duration::from_millis(500));
    let (s, body) = answer(get(Some(VIEWER)).await.expect("GET")).await;
    assert_eq!((s, body), (200, kept));
    api.stop().await;
}
