//! The HTTP controls of interface 1.4 (capability `http`), end to end: a
//! real plugin cdylib (`tests/fixtures/plugins/http`) sets its session's
//! headers, cookies (into the thread's cookie jar, next to the site's own),
//! basic and bearer credentials and proxy, resets them, and sends requests
//! with per-request retries, redirects and proxy; failed requests come back
//! with their class (timeout, connection reset, 403, body too large, robots.txt,
//! open circuit), read by the plugin through the SDK. The site is a loopback
//! server written for this test; the proxies are `dc_e2e::proxy::TestProxy`.
//! Secrets never reach the run's logs or metrics.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use dc_e2e::proxy::{ProxyConfig, TestProxy};
use dc_e2e::{Host, RequestHead, http_plugin};
use serde_json::{Value, json};

use crate::storage::rows;

const APP: &str = "test/fixtures/http";

/// One request the site answered: its path and headers (names lower-case).
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A loopback site, one thread per connection, one request per connection:
/// `/robots.txt` disallows `/private`; `/echo` answers 200 `ok`; `/login` sets
/// the cookie `site=1`; `/redirect` redirects to `/echo`; `/chain/N` redirects
/// N times before answering; `/forbidden` answers 403, `/missing` 404; `/busy` 503 with
/// `Retry-After: 0`; `/big` 1000 bytes; `/slow` never answers (it holds the
/// connection until the client gives up); `/reset` resets the connection.
struct Site {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Site {
    fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || answer(stream, &log));
            }
        });
        Site { base, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|s| s.path == path).cloned().collect()
    }
}

fn answer(mut stream: TcpStream, log: &Mutex<Vec<Seen>>) {
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
    let Some(RequestHead { path, headers, .. }) = RequestHead::read(&mut reader) else {
        return;
    };
    if path != "/robots.txt" {
        log.lock().unwrap_or_else(|p| p.into_inner()).push(Seen { path: path.clone(), headers });
    }
    let reply = |stream: &mut TcpStream, status: &str, extra: &str, body: &str| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\n{extra}content-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.flush();
    };
    match path.as_str() {
        "/robots.txt" => reply(&mut stream, "200 OK", "", "User-agent: *\nDisallow: /private\n"),
        "/login" => reply(&mut stream, "200 OK", "set-cookie: site=1; Path=/\r\n", "welcome"),
        "/redirect" => reply(&mut stream, "302 Found", "location: /echo\r\n", ""),
        "/forbidden" => reply(&mut stream, "403 Forbidden", "", "go away"),
        "/missing" => reply(&mut stream, "404 Not Found", "", "gone"),
        "/busy" => reply(&mut stream, "503 Service Unavailable", "retry-after: 0\r\n", "busy"),
        "/big" => reply(&mut stream, "200 OK", "", &"x".repeat(1000)),
        "/slow" => {
            // hold the connection, answering nothing, until the client closes it
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
        }
        "/reset" => {
            // SO_LINGER 0: closing sends RST, so the client sees a reset connection
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: setsockopt on the descriptor this stream owns, with a valid linger struct.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&stream),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
            drop(reader);
            drop(stream);
        }
        p if p.starts_with("/chain/") => match p["/chain/".len()..].parse::<u32>() {
            Ok(0) | Err(_) => reply(&mut stream, "200 OK", "", "end"),
            Ok(n) => reply(&mut stream, "302 Found", &format!("location: /chain/{}\r\n", n - 1), ""),
        },
        _ => reply(&mut stream, "200 OK", "", "ok"),
    }
}

fn host_with_plugin(extra: &[(&str, &str)]) -> Host {
    host_with(false, extra)
}

fn host_with(requires_proxy: bool, extra: &[(&str, &str)]) -> Host {
    let mut host = Host::sqlite();
    for (k, v) in extra {
        host.env.push(((*k).into(), (*v).into()));
    }
    let bin = tempfile::tempdir().expect("tempdir");
    host.install(&http_plugin(requires_proxy, bin.path()), "http.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered test/fixtures/http 1.0.0"), "{out}");
    host
}

/// Runs the steps; returns the run and its rows in step order.
fn run_steps(host: &Host, steps: Value) -> (Value, Vec<Value>) {
    let args = json!({"steps": steps}).to_string();
    let run = host.json(&["run", APP, "--args", &args, "--threads", "1", "--json"]);
    assert_eq!(run["status"], "SUCCESS", "{run}");
    let mut rows = rows(host, "http_steps");
    rows.sort_by_key(|r| r["id"].as_i64());
    (run, rows)
}

/// What a row says: `200 ok (1)`, or `blocked: message`.
fn said(row: &Value) -> String {
    match row["class"].as_str() {
        Some(c) => format!("{c}: {}", row["message"].as_str().unwrap_or_default()),
        None => format!("{} {} ({})", row["status"], row["message"].as_str().unwrap_or_default(), row["attempts"]),
    }
}

/// The run's logs and request metrics (not its arguments, which hold what
/// the test gave the plugin, secrets included).
fn logs_and_metrics(host: &Host, run: &Value) -> String {
    let id = run["runtime_id"].as_str().expect("runtime id");
    let logs = &host.json(&["runs", "show", id, "--logs", "--json"])["logs"];
    let metrics = &host.json(&["runs", "show", id, "--metrics", "--json"])["metrics"];
    assert!(logs.as_array().is_some_and(|l| !l.is_empty()) && metrics.is_object(), "{logs} {metrics}");
    format!("{logs}\n{metrics}")
}

#[test]
fn session_setters_reach_the_site_and_secrets_stay_out_of_logs_and_metrics() {
    let site = Site::start();
    let host = host_with_plugin(&[]);
    let echo = site.url("/echo");
    let (run, rows) = run_steps(
        &host,
        json!([
            {"op": "set_headers", "headers": {"x-team": "blue"}},
            {"op": "set_cookies", "url": site.url("/"), "cookies": {"sid": "abc"}},
            {"op": "set_auth", "basic": ["ann", "s3cret-pw"]},
            {"op": "fetch", "url": site.url("/login")},
            {"op": "fetch", "url": echo},
            {"op": "reset_headers"},
            {"op": "reset_cookies"},
            {"op": "set_auth", "bearer": "tok-123-secret"},
            {"op": "fetch", "url": echo},
            {"op": "set_auth"},
            {"op": "fetch", "url": echo},
        ]),
    );
    assert_eq!(rows.len(), 11, "{rows:?}");
    assert_eq!(said(&rows[4]), "200 ok (1)");
    let echoes = site.seen("/echo");
    assert_eq!(echoes.len(), 3, "{echoes:?}");
    // the session's header, the plugin's cookie and the site's own, basic credentials ("ann:s3cret-pw")
    assert_eq!(echoes[0].header("x-team"), Some("blue"));
    let mut cookies: Vec<&str> = echoes[0].header("cookie").unwrap_or_default().split("; ").collect();
    cookies.sort();
    assert_eq!(cookies, ["sid=abc", "site=1"]);
    assert_eq!(echoes[0].header("authorization"), Some("Basic YW5uOnMzY3JldC1wdw=="));
    // headers and cookies reset; the bearer token replaced the basic credentials
    assert_eq!((echoes[1].header("x-team"), echoes[1].header("cookie")), (None, None), "{:?}", echoes[1]);
    assert_eq!(echoes[1].header("authorization"), Some("Bearer tok-123-secret"));
    // credentials dropped
    assert_eq!(echoes[2].header("authorization"), None, "{:?}", echoes[2]);

    let shown = logs_and_metrics(&host, &run);
    assert!(!shown.contains("s3cret-pw") && !shown.contains("tok-123-secret"), "{shown}");
}

#[test]
fn per_request_retries_and_redirects_are_honoured() {
    let site = Site::start();
    let host = host_with_plugin(&[]);
    let (_, rows) = run_steps(
        &host,
        json!([
            {"op": "fetch", "url": site.url("/busy")},
            {"op": "fetch", "url": site.url("/busy"), "retries": 0},
            {"op": "fetch", "url": site.url("/busy"), "retries": 4},
            {"op": "fetch", "url": site.url("/redirect"), "follow_redirects": false},
            {"op": "fetch", "url": site.url("/redirect")},
            {"op": "fetch", "url": site.url("/chain/2"), "follow_redirects": 2},
            {"op": "fetch", "url": site.url("/chain/3"), "follow_redirects": 2},
        ]),
    );
    // the host's 2 retries, none, four
    assert_eq!(said(&rows[0]), "503 busy (3)");
    assert_eq!(said(&rows[1]), "503 busy (1)");
    assert_eq!(said(&rows[2]), "503 busy (5)");
    assert_eq!(site.seen("/busy").len(), 3 + 1 + 5);
    // a redirect unfollowed, followed, and a limit of 2
    assert_eq!(said(&rows[3]), "302  (1)");
    assert_eq!(said(&rows[4]), "200 ok (1)");
    assert_eq!(said(&rows[5]), "200 end (1)");
    let too_many = said(&rows[6]);
    assert!(too_many.starts_with("other: GET ") && too_many.contains("redirect"), "{too_many}");
    assert_eq!(site.seen("/chain/0").len(), 1, "the third redirect was not followed");
}

#[test]
fn failed_requests_tell_the_plugin_why() {
    let site = Site::start();
    // a dead port on another loopback address: its own circuit breaker
    let dead = TcpListener::bind("127.0.0.2:0").expect("bind");
    let dead_url = format!("http://{}/gone", dead.local_addr().expect("address"));
    drop(dead);
    // two consecutive failures open a domain's circuit; the site's failures
    // below are separated by answers, so only the dead port's circuit opens
    let host = host_with_plugin(&[("DC_RUNS_BREAKER_FAILURES", "2")]);
    let (_, rows) = run_steps(
        &host,
        json!([
            {"op": "fetch", "url": site.url("/slow"), "timeout_ms": 300, "retries": 0},
            {"op": "fetch", "url": site.url("/forbidden"), "check": true},
            {"op": "fetch", "url": site.url("/reset"), "retries": 0},
            {"op": "fetch", "url": site.url("/forbidden")},
            {"op": "fetch", "url": site.url("/missing"), "check": true},
            {"op": "fetch", "url": site.url("/big"), "max_body_bytes": 100},
            {"op": "fetch", "url": site.url("/private")},
            {"op": "fetch", "url": dead_url, "retries": 0},
            {"op": "fetch", "url": dead_url, "retries": 0},
            {"op": "fetch", "url": dead_url, "retries": 0},
        ]),
    );
    let classes: Vec<Option<&str>> = rows.iter().map(|r| r["class"].as_str()).collect();
    assert_eq!(
        classes,
        [
            Some("timeout"),
            Some("blocked"),
            Some("connection"),
            None,
            Some("http_status"),
            Some("body_too_large"),
            Some("robots_denied"),
            Some("connection"),
            Some("connection"),
            Some("circuit_open"),
        ],
        "{rows:#?}"
    );
    // the messages stay human, without the tag
    assert!(said(&rows[0]).starts_with(&format!("timeout: GET {}/slow failed", site.base)), "{}", said(&rows[0]));
    assert_eq!(said(&rows[1]), format!("blocked: {}/forbidden returned HTTP 403", site.base));
    assert_eq!(said(&rows[3]), "403 go away (1)", "fetch itself returns the 403");
    assert!(said(&rows[6]).contains("robots.txt"), "{}", said(&rows[6]));
    assert!(site.seen("/private").is_empty(), "robots.txt kept the request from being sent");
}

#[test]
fn session_and_per_request_proxies_carry_the_traffic_without_showing_passwords() {
    let site = Site::start();
    let mut cfg = ProxyConfig::new("proxy-a", "127.0.0.2");
    cfg.require_auth = true;
    let a = TestProxy::start(cfg);
    let b = TestProxy::start(ProxyConfig::new("proxy-b", "127.0.0.3"));
    let with_password = a.url.replace("http://", "http://carol:pr0xy-pw@");
    let host = host_with_plugin(&[]);
    let (run, rows) = run_steps(
        &host,
        json!([
            {"op": "set_proxy", "url": with_password},
            {"op": "fetch", "url": site.url("/echo")},
            {"op": "fetch", "url": site.url("/echo"), "proxy": b.url},
            {"op": "fetch", "url": site.url("/echo"), "proxy": "none"},
            {"op": "set_proxy", "url": null},
            {"op": "fetch", "url": site.url("/echo")},
        ]),
    );
    assert!(rows.iter().filter(|r| r["op"] == "fetch").all(|r| r["status"] == 200), "{rows:?}");
    let through_a = a.seen();
    assert_eq!(through_a.len(), 1, "{through_a:?}");
    assert_eq!((through_a[0].user.as_deref(), through_a[0].password.as_deref()), (Some("carol"), Some("pr0xy-pw")));
    assert_eq!(b.count_for("/echo"), 1, "the request's own proxy");
    let echoes = site.seen("/echo");
    assert_eq!(echoes.len(), 4);
    // Via from proxy-a, proxy-b, then direct twice
    let vias: Vec<Option<&str>> = echoes.iter().map(|e| e.header("via")).collect();
    assert!(
        vias[0].is_some_and(|v| v.contains("proxy-a")) && vias[1].is_some_and(|v| v.contains("proxy-b")),
        "{vias:?}"
    );
    assert_eq!((vias[2], vias[3]), (None, None), "{vias:?}");

    let shown = logs_and_metrics(&host, &run);
    assert!(!shown.contains("pr0xy-pw"), "{shown}");
    assert!(shown.contains("carol:<redacted>@"), "the proxy is named in the metrics, redacted: {shown}");
}

/// Per-request redirects hold for requests through the run's proxies too
/// (`[proxy]` names the app): unfollowed, followed, and at most 2.
#[test]
fn run_proxies_honour_per_request_redirects() {
    let site = Site::start();
    let proxy = TestProxy::start(ProxyConfig::new("proxy-a", "127.0.0.2"));
    let host = host_with(true, &[("DC_PROXY_APPS", APP), ("DC_PROXY_URLS", &proxy.url)]);
    let (_, rows) = run_steps(
        &host,
        json!([
            {"op": "fetch", "url": site.url("/redirect"), "follow_redirects": false},
            {"op": "fetch", "url": site.url("/redirect")},
            {"op": "fetch", "url": site.url("/chain/3"), "follow_redirects": 2},
            {"op": "fetch", "url": site.url("/redirect"), "follow_redirects": false},
        ]),
    );
    assert_eq!(said(&rows[0]), "302  (1)", "{rows:?}");
    assert_eq!(said(&rows[1]), "200 ok (1)", "{rows:?}");
    let too_many = said(&rows[2]);
    assert!(too_many.starts_with("other: GET ") && too_many.contains("redirect"), "{too_many}");
    assert_eq!(said(&rows[3]), "302  (1)", "the proxy's client for 0 redirects is kept: {rows:?}");
    // every request went through the proxy, and only the followed redirect reached /echo
    assert_eq!(proxy.count_for("/redirect"), 3);
    assert_eq!(proxy.count_for("/echo"), 1);
    assert_eq!(site.seen("/echo").len(), 1);
    assert_eq!(site.seen("/chain/0").len(), 0, "the third redirect was not followed");
    assert!(site.seen("/redirect").iter().all(|s| s.header("via").is_some_and(|v| v.contains("proxy-a"))));
}

/// The session's cookies go along through the run's proxies, rotating per
/// request: the plugin's own and those the site set through another proxy,
/// until the plugin resets them.
#[test]
fn the_sessions_cookies_go_through_the_runs_rotating_proxies() {
    let site = Site::start();
    let a = TestProxy::start(ProxyConfig::new("proxy-a", "127.0.0.2"));
    let b = TestProxy::start(ProxyConfig::new("proxy-b", "127.0.0.3"));
    let urls = format!("{},{}", a.url, b.url);
    let host = host_with(true, &[("DC_PROXY_APPS", APP), ("DC_PROXY_URLS", &urls)]);
    let echo = site.url("/echo");
    run_steps(
        &host,
        json!([
            {"op": "set_cookies", "url": site.url("/"), "cookies": {"sid": "abc"}},
            {"op": "fetch", "url": site.url("/login")},
            {"op": "fetch", "url": echo},
            {"op": "fetch", "url": echo},
            {"op": "reset_cookies"},
            {"op": "fetch", "url": echo},
        ]),
    );
    let logins = site.seen("/login");
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0].header("cookie"), Some("sid=abc"), "{logins:?}");
    let echoes = site.seen("/echo");
    assert_eq!(echoes.len(), 3, "{echoes:?}");
    for e in &echoes[..2] {
        let mut cookies: Vec<&str> = e.header("cookie").unwrap_or_default().split("; ").collect();
        cookies.sort();
        assert_eq!(cookies, ["sid=abc", "site=1"], "{e:?}");
    }
    assert_eq!(echoes[2].header("cookie"), None, "{:?}", echoes[2]);
    // one proxy after the other: the site's cookie came through one and went back through both
    let vias: Vec<&str> = echoes.iter().map(|e| e.header("via").unwrap_or_default()).collect();
    assert!(vias[0].contains("proxy-b") && vias[1].contains("proxy-a") && vias[2].contains("proxy-b"), "{vias:?}");
    assert_eq!((a.count_for("/login"), b.count_for("/login")), (1, 0));
}

/// A plugin requiring `proxy` on a host whose `[proxy]` names its app asks
/// which proxy its thread uses, moves to another, and reports a ban: the
/// traffic follows, and the banned proxy's count shows in the run's log.
#[test]
fn a_plugin_reads_rotates_and_reports_the_run_s_proxies() {
    let site = Site::start();
    let a = TestProxy::start(ProxyConfig::new("proxy-a", "127.0.0.2"));
    let b = TestProxy::start(ProxyConfig::new("proxy-b", "127.0.0.3"));
    let urls = format!("{},{}", a.url, b.url);
    let host = host_with(true, &[("DC_PROXY_APPS", APP), ("DC_PROXY_URLS", &urls), ("DC_PROXY_ROTATE", "session")]);
    let echo = site.url("/echo");
    let (run, rows) = run_steps(
        &host,
        json!([
            {"op": "fetch", "url": echo},
            {"op": "proxy_current"},
            {"op": "proxy_rotate"},
            {"op": "fetch", "url": echo},
            {"op": "proxy_report", "verdict": "ban"},
            {"op": "fetch", "url": echo},
        ]),
    );
    let exit =
        |i: usize| -> Value { serde_json::from_str(rows[i]["message"].as_str().unwrap_or_default()).expect("JSON") };
    let first = exit(1)["proxy"].as_str().expect("a proxy").to_string();
    let second = exit(2)["proxy"].as_str().expect("a proxy").to_string();
    assert!([&a.url, &b.url].contains(&&first) && first != second, "{first} {second}");
    assert_eq!(exit(1)["requests"], 1, "{rows:?}");
    assert_eq!(exit(4)["proxy"], first.as_str(), "after the ban the thread moved back to the first proxy");
    let through = |p: &str| if p == a.url { a.count_for("/echo") } else { b.count_for("/echo") };
    assert_eq!((through(&first), through(&second)), (2, 1));
    let vias: Vec<String> =
        site.seen("/echo").iter().map(|e| e.header("via").unwrap_or_default().to_string()).collect();
    assert_eq!(vias.len(), 3);
    assert!(vias[0] == vias[2] && vias[0] != vias[1], "{vias:?}");

    let id = run["runtime_id"].as_str().expect("runtime id");
    let logs = host.json(&["runs", "show", id, "--logs", "--json"])["logs"].as_array().cloned().unwrap_or_default();
    let banned = logs
        .iter()
        .find(|l| l["message"] == "proxy stats" && l["context"]["proxy"] == second.as_str())
        .unwrap_or_else(|| panic!("no proxy stats for {second}: {logs:?}"));
    assert_eq!(
        (banned["context"]["bans"].as_u64(), banned["context"]["requests"].as_u64()),
        (Some(1), Some(2)),
        "{banned}"
    );

    // without [proxy] for the app, the capability is not offered: registration refuses the plugin
    let plain = Host::sqlite();
    let bin = tempfile::tempdir().expect("tempdir");
    let (code, text) = plain.fails(&["plugins", "register", http_plugin(true, bin.path()).to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("requires the capability \"proxy\""), "{text}");
}
