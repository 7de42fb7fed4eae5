//! The control plane served by `dc-host serve` itself: with `api.enabled`,
//! serve listens on `api.listen`, a user added from the CLI gets a token from
//! the OAuth2 token endpoint, and a command sent through the REST API starts a
//! run on that same serve. Without a token, or with a viewer's, commands are
//! refused.

use dc_e2e::{Host, HttpSink, Serve, plugin_lib, with_stdin};
use serde_json::{Value, json};

const APP: &str = "test/fixtures/misbehave";

/// A small HTTP/1.1 client over a loopback socket: the test speaks the wire
/// format itself, so it needs no HTTP library.
fn http(url: &str, method: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut s = std::net::TcpStream::connect(addr).expect("the API accepts connections");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status: u16 = out.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    let (head, payload) = out.split_once("\r\n\r\n").expect("headers end");
    // the API answers with Content-Length; a chunked body is decoded minimally
    let payload = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut body = String::new();
        let mut rest = payload;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            body.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        body
    } else {
        payload.to_string()
    };
    (status, serde_json::from_str(&payload).unwrap_or(Value::String(payload)))
}

fn token(api: &str, user: &str, password: &str) -> String {
    let form = format!("grant_type=password&username={user}&password={password}");
    let (status, body) =
        http(&format!("{api}/auth/token"), "POST", &[("Content-Type", "application/x-www-form-urlencoded")], &form);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    body["access_token"].as_str().expect("an access token").to_string()
}

#[test]
fn serve_offers_the_rest_api_and_a_command_through_it_starts_a_run() {
    let mut host = Host::sqlite();
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    // each item fetches from a loopback sink whose first answer is a 503 (retried)
    let sink = HttpSink::start_with(1, 503, Some("0"));
    host.ok(&["apps", "args", APP, &json!({"mode": "fetch", "items": 2, "url": sink.url}).to_string()]);
    for (user, role) in [("ops", "operator"), ("eve", "viewer")] {
        let out = with_stdin(&host, &["users", "add", user, "--role", role, "--password-stdin"], "pass-w0rd-long");
        assert!(out.status.success(), "{out:?}");
    }
    host.env.push(("DC_API_ENABLED".into(), "true".into()));
    host.env.push(("DC_API_LISTEN".into(), "127.0.0.1:0".into()));
    // commands come only through the API: the next tick is beyond the test's limit
    let serve = Serve::start_collecting(&host, &["--tick", "600"]);
    let listening = serve.wait_for(|e| e["event"] == "api_listening");
    let api = listening["url"].as_str().expect("the API's URL").to_string();
    serve.wait_for(|e| e["event"] == "serving");

    let (status, body) = http(&format!("{api}/health"), "GET", &[], "");
    assert_eq!(status, 200, "{body}");
    // no token: refused with the error shape
    let (status, body) = http(&format!("{api}/apps"), "GET", &[], "");
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");

    let viewer = format!("Bearer {}", token(&api, "eve", "pass-w0rd-long"));
    let (status, body) = http(&format!("{api}/apps"), "GET", &[("Authorization", &viewer)], "");
    assert_eq!(status, 200, "{body}");
    let app_id = body["items"][0]["app_id"].as_str().expect("the app is listed").to_string();
    let command = json!({"command": "START"}).to_string();
    let json_type = ("Content-Type", "application/json");
    let url = format!("{api}/apps/{app_id}/commands");
    let (status, body) = http(&url, "POST", &[("Authorization", &viewer), json_type], &command);
    assert_eq!(status, 403, "a viewer sends no commands: {body}");

    let operator = format!("Bearer {}", token(&api, "ops", "pass-w0rd-long"));
    let (status, body) = http(&url, "POST", &[("Authorization", &operator), json_type], &command);
    assert_eq!(status, 202, "{body}");
    // the API queued the command and woke the serve it runs in (no tick comes)
    let started = serve.wait_for(|e| e["event"] == "started");
    assert_eq!(started["cause"], "command START", "{started}");
    let ended = serve.wait_for(|e| e["event"] == "ended");
    assert_eq!(ended["status"], "SUCCESS", "{ended}");
    assert_eq!(sink.requests.try_iter().count(), 3, "two requests, one retried");

    // the run's request metrics, as its worker stored them
    let run_url = format!("{api}/runs/{}", ended["runtime_id"].as_str().expect("runtime id"));
    let (status, body) = http(&run_url, "GET", &[("Authorization", &viewer)], "");
    assert_eq!(status, 200, "{body}");
    let m = &body["request_metrics"];
    assert_eq!((&m["requests"], &m["attempts"], &m["retries"]), (&json!(2), &json!(3), &json!(1)), "{body}");
    assert_eq!(m["status"], json!({"200": 2, "503": 1}), "{body}");

    // Prometheus metrics (viewer role): the run above is counted
    let metrics_url = api.replace("/api/v1", "/metrics");
    let (status, _) = http(&metrics_url, "GET", &[], "");
    assert_eq!(status, 401, "metrics need a token");
    let (status, text) = http(&metrics_url, "GET", &[("Authorization", &viewer)], "");
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().expect("text, not JSON").to_string();
    for line in [
        "dc_runs_started_total{cause=\"command\"} 1",
        "dc_runs_ended_total{status=\"SUCCESS\"} 1",
        "dc_run_duration_seconds_count 1",
        "dc_apps{state=\"enabled\"} 1",
        "dc_hosts{state=\"serving\"} 1",
        "dc_commands_pending 0",
        // from the ended run's stored request metrics
        "dc_http_requests_total 2",
        "dc_http_responses_total{status=\"200\"} 2",
        "dc_http_responses_total{status=\"503\"} 1",
        "dc_http_retries_total 1",
        "dc_http_received_bytes_total 22",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    serve.terminate();
}
