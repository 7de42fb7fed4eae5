//! The control plane served by `dc-host serve` itself: with `api.enabled`,
//! serve listens on `api.listen`, a user added from the CLI gets a token from
//! the OAuth2 token endpoint, and a command sent through the REST API starts a
//! run on that same serve. Without a token, or with a viewer's, commands are
//! refused. Every state-changing request, failed logins included, is in the
//! audit log, which admins read through the API and the CLI.

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
    for (user, role) in [("ops", "operator"), ("eve", "viewer"), ("root", "admin")] {
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

    // the audit log: every state-changing request, failed logins included, never a password
    let form = "grant_type=password&username=ops&password=not-the-pass-w0rd";
    let (status, body) =
        http(&format!("{api}/auth/token"), "POST", &[("Content-Type", "application/x-www-form-urlencoded")], form);
    assert_eq!(status, 400, "{body}");
    let (status, _) = http(&format!("{api}/audit"), "GET", &[("Authorization", &operator)], "");
    assert_eq!(status, 403, "the audit log is for admins");
    let admin = format!("Bearer {}", token(&api, "root", "pass-w0rd-long"));
    let (status, body) = http(&format!("{api}/audit"), "GET", &[("Authorization", &admin)], "");
    assert_eq!(status, 200, "{body}");
    let seen: Vec<String> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .rev()
        .map(|e| format!("{} {} {} {} {}", e["subject"], e["role"], e["method"], e["route"], e["status"]))
        .collect();
    let token_route = "\"/api/v1/auth/token\"";
    let command_route = "\"/api/v1/apps/{app_id}/commands\"";
    assert_eq!(
        seen,
        [
            format!("\"eve\" \"viewer\" \"POST\" {token_route} 200"),
            format!("\"eve\" \"viewer\" \"POST\" {command_route} 403"),
            format!("\"ops\" \"operator\" \"POST\" {token_route} 200"),
            format!("\"ops\" \"operator\" \"POST\" {command_route} 202"),
            format!("\"ops\" null \"POST\" {token_route} 400"),
            format!("\"root\" \"admin\" \"POST\" {token_route} 200"),
        ],
        "{body}"
    );
    assert!(
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|e| e["client_addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")))
    );
    let listed = host.json(&["audit", "list", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(6), "{listed}");
    assert_eq!(listed[1]["subject"], "ops", "{listed}");
    assert_eq!(listed[1]["status"], 400, "{listed}");
    let rows = host.db_rows(
        "SELECT COALESCE(subject, '') || ' ' || route || ' ' || COALESCE(target, '') || ' ' || \
         COALESCE(request_id, '') FROM dc_audit",
    );
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert!(!rows.concat().contains("pass-w0rd"), "no password in the audit log: {rows:?}");
    let text = host.ok(&["audit", "list", "--subject", "eve"]);
    assert!(text.contains("POST /api/v1/apps/{app_id}/commands") && text.contains("403"), "{text}");
    assert!(!text.contains("ops"), "{text}");
    serve.terminate();
}

/// POSTs `bytes` as the multipart file field `field` named `file_name`.
fn upload(api: &str, auth: &str, field: &str, file_name: &str, bytes: &[u8]) -> (u16, Value) {
    use std::io::{Read, Write};
    let rest = api.strip_prefix("http://").expect("an http URL");
    let (addr, base) = rest.split_at(rest.find('/').expect("a path"));
    let boundary = "dc-upload-boundary-7d93";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut s = std::net::TcpStream::connect(addr).expect("the API accepts connections");
    let head = format!(
        "POST {base}/plugins HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {auth}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("send");
    // the server may answer (413) and close before it read everything
    let _ = s.write_all(&body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    let status: u16 =
        out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("a status line: {out}"));
    let payload = out.split_once("\r\n\r\n").map(|(_, p)| p).unwrap_or_default();
    (status, serde_json::from_str(payload).unwrap_or(Value::String(payload.to_string())))
}

/// Files in the plugins directory, hidden ones included.
fn plugin_dir_names(host: &Host) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(host.plugins_dir())
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn an_admin_uploads_a_plugin_with_the_checks_of_reload() {
    let mut host = Host::sqlite();
    for (user, role) in [("ops", "operator"), ("root", "admin")] {
        let out = with_stdin(&host, &["users", "add", user, "--role", role, "--password-stdin"], "pass-w0rd-long");
        assert!(out.status.success(), "{out:?}");
    }
    let plugin = std::fs::read(plugin_lib("dc_plugin_misbehave")).expect("the built plugin");
    // the upload limit: the plugin fits, a body 1 MiB larger than the limit does not
    let limit_mb = plugin.len() / (1024 * 1024) + 2;
    host.env.push(("DC_API_ENABLED".into(), "true".into()));
    host.env.push(("DC_API_LISTEN".into(), "127.0.0.1:0".into()));
    host.env.push(("DC_API_MAX_UPLOAD_MB".into(), limit_mb.to_string()));
    let serve = Serve::start_collecting(&host, &["--tick", "600"]);
    let listening = serve.wait_for(|e| e["event"] == "api_listening");
    let api = listening["url"].as_str().expect("the API's URL").to_string();
    serve.wait_for(|e| e["event"] == "serving");
    let operator = format!("Bearer {}", token(&api, "ops", "pass-w0rd-long"));
    let admin = format!("Bearer {}", token(&api, "root", "pass-w0rd-long"));
    let before = plugin_dir_names(&host);

    let (status, body) = upload(&api, &operator, "file", "misbehave.so", &plugin);
    assert_eq!(status, 403, "admins only: {body}");
    // refused like reload refuses it, and nothing is left behind
    let (status, body) = upload(&api, &admin, "file", "notes.so", b"not a shared library at all");
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid", "{body}");
    let (_, reload_reason) = {
        let scratch = Host::sqlite();
        std::fs::write(scratch.plugins_dir().join("notes.so"), b"not a shared library at all").expect("write");
        scratch.fails(&["reload"])
    };
    let reason = body["error"]["message"].as_str().expect("message");
    assert!(reload_reason.contains(reason), "the reload's reason: {reason:?} in {reload_reason:?}");
    let (status, body) = upload(&api, &admin, "file", "../escape.so", &plugin);
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("plain name"), "{body}");
    let (status, body) = upload(&api, &admin, "plugin", "misbehave.so", &plugin);
    assert_eq!(status, 422, "{body}");
    let mut too_big = plugin.clone();
    too_big.resize((limit_mb + 1) * 1024 * 1024, 0);
    let (status, body) = upload(&api, &admin, "file", "big.so", &too_big);
    assert_eq!(status, 413, "{body}");
    assert_eq!(plugin_dir_names(&host), before, "refused uploads leave nothing in the plugins directory");
    assert_eq!(host.db_rows("SELECT COUNT(*) FROM plugin_versions"), ["0"]);

    // a real plugin: registered, then in the plugins directory under its name
    let (status, body) = upload(&api, &admin, "file", "misbehave.so", &plugin);
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (&body["outcome"], &body["app"], &body["file"]),
        (&json!("registered"), &json!(APP), &json!("misbehave.so"))
    );
    assert_eq!(body["sha256"], dc_e2e::sha256_hex(&plugin_lib("dc_plugin_misbehave")), "{body}");
    assert_eq!(std::fs::read(host.plugins_dir().join("misbehave.so")).expect("written"), plugin);
    let mut expected = before.clone();
    expected.push("misbehave.so".into());
    expected.sort();
    assert_eq!(plugin_dir_names(&host), expected, "no temporary file is left");
    assert_eq!(host.active_version(APP).as_deref(), body["version"].as_str());
    let source = host.db_rows("SELECT source_file FROM plugin_versions");
    assert_eq!(source, [host.plugins_dir().join("misbehave.so").display().to_string()], "recorded where it lives");
    // the same file again: already active
    let (status, body) = upload(&api, &admin, "file", "misbehave.so", &plugin);
    assert_eq!((status, &body["outcome"]), (200, &json!("already_active")), "{body}");
    // audited with the admin's name
    let audited = host.db_rows("SELECT status FROM dc_audit WHERE route = '/api/v1/plugins' ORDER BY id");
    assert_eq!(audited, ["403", "422", "422", "422", "413", "201", "200"]);
    serve.terminate();
}
