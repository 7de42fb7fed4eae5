//! Request metrics and the circuit breaker, end to end: a run against a
//! loopback server that answers a known script (a 503 that is retried, 200s,
//! 404s) stores exactly those counts with the run, and `runs show --metrics`
//! shows them; a run against a dead port opens the domain's circuit, its
//! later requests fail at once, and the run's reason and logs say so. On
//! SQLite and PostgreSQL.

use std::io::{BufRead, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use dc_e2e::Host;
use serde_json::{Value, json};

use crate::storage::{run, with_misbehave};

/// A loopback server answering one request per connection with the next
/// answer of its script (status, body, extra header lines), then 500s; the
/// statuses it sent arrive on `served`.
struct Scripted {
    url: String,
    served: mpsc::Receiver<u16>,
}

impl Scripted {
    fn start(script: Vec<(u16, &'static str, &'static str)>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}/page", listener.local_addr().expect("address"));
        let (tx, served) = mpsc::channel();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                // the request line and headers (a GET has no body)
                let mut request_line = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if request_line.is_empty() {
                        request_line = line;
                    }
                }
                // no robots.txt (the host's politeness limiter asks for it before
                // the first request); not part of the script, not counted by the run
                if request_line.starts_with("GET /robots.txt ") {
                    let _ = write!(stream, "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    continue;
                }
                let (status, body, extra) = script.next().unwrap_or((500, "script over", ""));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Scripted\r\n{extra}content-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.flush();
                if tx.send(status).is_err() {
                    return;
                }
            }
        });
        Scripted { url, served }
    }
}

fn show_metrics(host: &Host, runtime_id: &str) -> Value {
    host.json(&["runs", "show", runtime_id, "--metrics", "--json"])["metrics"].clone()
}

fn counts_are_stored_exactly(host: Host) {
    let host = with_misbehave(host);
    // 5 items, one request each: the first is answered 503 (Retry-After: 0)
    // and retried; 10-byte 200 bodies, 7-byte 404 bodies
    let server = Scripted::start(vec![
        (503, "busy", "retry-after: 0\r\n"),
        (200, "ok-0123456", ""),
        (200, "ok-0123456", ""),
        (200, "ok-0123456", ""),
        (404, "missing", ""),
        (404, "missing", ""),
    ]);
    let r = run(&host, json!({"mode": "fetch", "items": 5, "url": server.url}));
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let mut served: Vec<u16> = server.served.try_iter().collect();
    served.sort_unstable();
    assert_eq!(served, [200, 200, 200, 404, 404, 503], "the server's own count");

    let rid = r["runtime_id"].as_str().expect("runtime id");
    let m = show_metrics(&host, rid);
    assert_eq!(m["version"], 1, "{m}");
    assert_eq!((&m["requests"], &m["attempts"], &m["retries"]), (&json!(5), &json!(6), &json!(1)), "{m}");
    assert_eq!(m["status"], json!({"200": 3, "404": 2, "503": 1}), "{m}");
    assert_eq!(m["errors"], json!({}), "{m}");
    assert_eq!(m["bytes_received"], 3 * 10 + 2 * 7, "the bodies handed to the plugin: {m}");
    assert_eq!(m["latency"]["count"], 6, "one latency per attempt: {m}");
    let p = |k: &str| m["latency"][k].as_f64().unwrap_or_default();
    assert!(p("p50_ms") > 0.0 && p("p50_ms") <= p("p95_ms") && p("p95_ms") <= p("p99_ms"), "{m}");
    let domains = m["domains"].as_object().expect("domains");
    assert_eq!(domains.keys().collect::<Vec<_>>(), ["127.0.0.1"], "{m}");
    let d = &domains["127.0.0.1"];
    assert_eq!((&d["requests"], &d["attempts"], &d["status"]), (&m["requests"], &m["attempts"], &m["status"]));
    assert_eq!(m["proxies"], json!({}), "no proxy was used: {m}");

    // the same for people
    let text = host.ok(&["runs", "show", rid, "--metrics"]);
    assert!(text.contains("requests   5 (6 attempts, 1 retries), 44 B received"), "{text}");
    assert!(text.contains("status     200×3 404×2 503×1"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("127.0.0.1") && l.contains("200×3 404×2 503×1")), "{text}");

    // a run without requests has none
    let quiet = run(&host, json!({"mode": "ok", "items": 2}));
    assert_eq!(show_metrics(&host, quiet["runtime_id"].as_str().expect("id")), Value::Null);
    let text = host.ok(&["runs", "show", quiet["runtime_id"].as_str().expect("id"), "--metrics"]);
    assert!(text.contains("none recorded"), "{text}");
}

#[test]
fn request_metrics_are_stored_with_the_run_on_sqlite() {
    counts_are_stored_exactly(Host::sqlite());
}

#[test]
fn request_metrics_are_stored_with_the_run_on_postgres() {
    counts_are_stored_exactly(Host::postgres());
}

fn breaker_opens_on_a_dead_port(mut host: Host) {
    host.env.push(("DC_RUNS_BREAKER_FAILURES".into(), "3".into()));
    let host = with_misbehave(host);
    // a port nobody listens on: connections are refused
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/page", l.local_addr().expect("address"))
    };
    // the first request is tried 3 times (runs.http_retries = 2): the third
    // refused connection opens the circuit; the 4 others fail without a try
    let r = run(&host, json!({"mode": "fetch", "items": 5, "url": dead}));
    assert_eq!(r["status"], "FAILED", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("all 5 items failed in collect")
            && reason.contains("the circuit breaker opened for 127.0.0.1 (4 requests refused)"),
        "{reason}"
    );
    let rid = r["runtime_id"].as_str().expect("runtime id");
    let m = show_metrics(&host, rid);
    assert_eq!((&m["requests"], &m["attempts"], &m["retries"]), (&json!(5), &json!(3), &json!(2)), "{m}");
    assert_eq!(m["errors"], json!({"connection": 3, "circuit_open": 4}), "{m}");
    assert_eq!(m["domains"]["127.0.0.1"]["circuit_opened"], 1, "{m}");
    assert_eq!(m["status"], json!({}), "{m}");

    // the run's logs say when it opened and why each later request failed
    let logs = host.json(&["runs", "show", rid, "--logs", "--json"])["logs"].to_string();
    assert!(logs.contains("circuit opened for host 127.0.0.1 after 3 consecutive failures"), "{logs}");
    assert!(logs.contains("circuit open for host 127.0.0.1 after 3 consecutive failures"), "{logs}");
    assert!(logs.contains("retrying at "), "{logs}");
}

#[test]
fn the_circuit_opens_for_a_dead_port_on_sqlite() {
    breaker_opens_on_a_dead_port(Host::sqlite());
}

#[test]
fn the_circuit_opens_for_a_dead_port_on_postgres() {
    breaker_opens_on_a_dead_port(Host::postgres());
}
