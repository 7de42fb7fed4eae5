//! Plugin requests through proxies (`[proxy]`): real forward proxies on
//! loopback (`dc_e2e::proxy::TestProxy`, connecting out from 127.0.0.2 and
//! 127.0.0.3) that count what they forward and add `Via`, a proxy judge that
//! echoes the caller's address (the first judge configured is down), a proxy
//! that answers 403 to everything, and a stand-in for BrightData's
//! super-proxy that requires credentials and records the user names. The
//! run's exits are reserved in `dc_proxy_reservations` and released when the
//! run ends, or by the reaper when its worker is gone.

use std::process::Stdio;
use std::time::Duration;

use dc_e2e::proxy::{Judge, ProxyConfig, TestProxy};
use dc_e2e::{Fifo, Host, HttpSink, KillOnDrop, send_signal, wait_pid_exit, with_stdin};
use serde_json::{Value, json};

use crate::storage::{rows, with_misbehave};

const APP: &str = "test/fixtures/misbehave";
const LIMIT: Duration = Duration::from_secs(60);

fn with_proxies(host: Host, urls: &[&str], extra: &[(&str, &str)]) -> Host {
    let mut host = with_misbehave(host);
    host.env.push(("DC_PROXY_APPS".into(), APP.into()));
    host.env.push(("DC_PROXY_URLS".into(), urls.join(",")));
    for (k, v) in extra {
        host.env.push(((*k).into(), (*v).into()));
    }
    host
}

fn fetch_run(host: &Host, url: &str, items: u64) -> Value {
    let args = json!({"mode": "fetch", "items": items, "url": url}).to_string();
    host.json(&["run", APP, "--args", &args, "--threads", "1", "--json"])
}

fn notes(host: &Host) -> Vec<String> {
    rows(host, "misbehave_rows").iter().map(|r| r["note"].as_str().unwrap_or_default().to_string()).collect()
}

fn logs(host: &Host, run: &Value) -> Vec<Value> {
    let id = run["runtime_id"].as_str().expect("runtime id");
    host.json(&["runs", "show", id, "--logs", "--json"])["logs"].as_array().cloned().unwrap_or_default()
}

fn rotating_proxies_verified_by_judges(new_host: fn() -> Host) {
    let a = TestProxy::start(ProxyConfig::new("proxy-a", "127.0.0.2"));
    let b = TestProxy::start(ProxyConfig::new("proxy-b", "127.0.0.3"));
    let judge = Judge::start();
    let judges = format!("{},{}", Judge::down_url(), judge.url);
    let host = with_proxies(new_host(), &[&a.url, &b.url], &[("DC_PROXY_JUDGES", &judges)]);
    let target = HttpSink::start(0);

    let r = fetch_run(&host, &target.url, 6);
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert!(notes(&host).iter().all(|n| n == "200 after 1 attempts"), "{:?}", notes(&host));
    // traffic provably went through the proxies, one after the other
    assert_eq!((a.count_for(&target.url), b.count_for(&target.url)), (3, 3));
    let mut vias: Vec<String> = (0..6)
        .map(|_| target.requests.recv_timeout(LIMIT).expect("the target saw the request"))
        .map(|r| r.header("via").unwrap_or("none").to_string())
        .collect();
    vias.sort();
    assert_eq!(vias, ["1.1 proxy-a", "1.1 proxy-a", "1.1 proxy-a", "1.1 proxy-b", "1.1 proxy-b", "1.1 proxy-b"]);
    // the judge (the second one: the first is down) saw each proxy's exit
    let mut asked: Vec<String> = judge.asked().iter().map(ToString::to_string).collect();
    asked.sort();
    assert_eq!(asked, ["127.0.0.2", "127.0.0.3"]);
    let logs = logs(&host, &r);
    assert!(logs.iter().any(|l| l["message"] == "proxy judge failed; trying the next one"), "{logs:?}");
    assert!(
        logs.iter().any(|l| l["message"] == "proxies reserved for the run" && l["context"]["proxies"] == 2),
        "{logs:?}"
    );
    assert!(logs.iter().any(|l| l["message"] == "proxy stats" && l["context"]["requests"] == 3), "{logs:?}");
    // the run reserved the two exit IPs and released them at its end
    let reserved = host.db_rows("SELECT exit_key FROM dc_proxy_reservations ORDER BY exit_key");
    assert_eq!(reserved, ["ip:127.0.0.2", "ip:127.0.0.3"]);
    let released = host.db_rows("SELECT release_reason FROM dc_proxy_reservations WHERE released_at IS NOT NULL");
    assert_eq!(released, ["run ended", "run ended"]);
}

dc_e2e::both_backends!(rotating_proxies_verified_by_judges);

#[test]
fn a_proxy_that_answers_403_is_retired_and_the_log_says_so() {
    let good = TestProxy::start(ProxyConfig::new("good", "127.0.0.2"));
    let banned = TestProxy::start(ProxyConfig { answer_status: Some(403), ..ProxyConfig::new("banned", "127.0.0.3") });
    let host = with_proxies(Host::sqlite(), &[&good.url, &banned.url], &[]);
    let target = HttpSink::start(0);
    let r = fetch_run(&host, &target.url, 8);
    assert_eq!(r["status"], "SUCCESS", "{r}");
    // good, banned ×3 alternating; after the third ban only the good proxy
    let notes = notes(&host);
    assert_eq!(notes.iter().filter(|n| *n == "403 after 1 attempts").count(), 3, "{notes:?}");
    assert_eq!(notes.iter().filter(|n| *n == "200 after 1 attempts").count(), 5, "{notes:?}");
    assert_eq!(banned.seen().len(), 3);
    assert_eq!(good.count_for(&target.url), 5);
    let logs = logs(&host, &r);
    let retired: Vec<&Value> = logs
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("proxy retired for the rest of the run")))
        .collect();
    assert_eq!(retired.len(), 1, "{logs:?}");
    assert_eq!(retired[0]["context"]["proxy"], banned.url.as_str());
    assert_eq!(retired[0]["context"]["bans"], 3);
}

#[test]
fn brightdata_gets_a_new_session_id_per_request_and_its_password_from_the_secrets_store() {
    // stands in for brd.superproxy.io:22225: it wants credentials and records them
    let superproxy = TestProxy::start(ProxyConfig { require_auth: true, ..ProxyConfig::new("brd", "127.0.0.2") });
    let host = with_misbehave(Host::sqlite());
    let out = with_stdin(&host, &["secrets", "set", "brd_password"], "zone-pass-123");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut host = host;
    let brd_host = superproxy.url.trim_start_matches("http://").to_string();
    for (k, v) in [
        ("DC_PROXY_APPS", "*"),
        ("DC_PROXY_PROVIDER", "brightdata"),
        ("DC_PROXY_BRIGHTDATA_HOST", brd_host.as_str()),
        ("DC_PROXY_BRIGHTDATA_CUSTOMER", "hl_e2e42"),
        ("DC_PROXY_BRIGHTDATA_ZONE", "isp_zone"),
        ("DC_PROXY_BRIGHTDATA_COUNTRY", "de"),
        ("DC_PROXY_PASSWORD", "${secret:brd_password}"),
    ] {
        host.env.push((k.into(), v.into()));
    }
    let target = HttpSink::start(0);
    let r = fetch_run(&host, &target.url, 4);
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let seen = superproxy.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let prefix = "brd-customer-hl_e2e42-zone-isp_zone-country-de-session-";
    let mut sessions: Vec<&str> = seen.iter().filter_map(|s| s.user.as_deref()?.strip_prefix(prefix)).collect();
    sessions.sort_unstable();
    sessions.dedup();
    assert_eq!(sessions.len(), 4, "a new session id per request: {seen:?}");
    assert!(seen.iter().all(|s| s.password.as_deref() == Some("zone-pass-123")));
    // the configuration shows the reference, never the password
    let shown = host.ok(&["config", "show"]);
    assert!(!shown.contains("zone-pass-123"), "{shown}");

    // a password written into the configuration is refused, naming the fix
    host.env.retain(|(k, _)| k != "DC_PROXY_PASSWORD");
    host.env.push(("DC_PROXY_PASSWORD".into(), "zone-pass-123".into()));
    let (_, text) = host.fails(&["runs", "list"]);
    assert!(text.contains("proxy.password") && text.contains("secrets set"), "{text}");
    assert!(!text.contains("zone-pass-123"), "{text}");
}

#[test]
fn a_held_exit_is_not_shared_and_the_reaper_releases_an_orphaned_runs_exits() {
    let only = TestProxy::start(ProxyConfig::new("only", "127.0.0.2"));
    let host = with_proxies(Host::sqlite(), &[&only.url], &[]);
    // a run that hangs in collect holds the only exit
    let fifo = Fifo::new();
    let args = json!({"mode": "hang", "items": 1, "ready_fifo": fifo.as_str()}).to_string();
    let child = host
        .command(&["run", APP, "--args", &args, "--threads", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dc-host run starts");
    let mut supervisor = KillOnDrop(child);
    let line = fifo.read_line(LIMIT);
    let worker: i32 = line.strip_prefix("ready ").and_then(|p| p.trim().parse().ok()).expect("ready <pid>");
    let active = host.db_rows("SELECT exit_key FROM dc_proxy_reservations WHERE released_at IS NULL");
    assert_eq!(active, [format!("proxy:{}", only.url)]);

    // another run finds no free exit and fails, saying why
    let target = HttpSink::start(0);
    let r = fetch_run(&host, &target.url, 1);
    assert_eq!(r["status"], "FAILED", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no proxy is free for this run") && reason.contains("another run holds"), "{reason}");
    assert_eq!(only.count_for(&target.url), 0);

    // supervisor and worker die without ending the run: the reaper ends it and frees the exit
    send_signal(supervisor.0.id() as i32, libc::SIGKILL);
    let _ = supervisor.0.wait();
    send_signal(-worker, libc::SIGKILL);
    assert!(wait_pid_exit(worker, LIMIT), "the worker is gone");
    assert_eq!(host.db_rows("SELECT COUNT(*) FROM dc_proxy_reservations WHERE released_at IS NULL"), ["1"]);
    let reaped = host.json(&["runs", "reap", "--json"]);
    assert_eq!(reaped.as_array().map(Vec::len), Some(1), "{reaped}");
    assert_eq!(host.db_rows("SELECT COUNT(*) FROM dc_proxy_reservations WHERE released_at IS NULL"), ["0"]);

    let r = fetch_run(&host, &target.url, 1);
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(only.count_for(&target.url), 1);
}
