//! One politeness limiter per machine: two concurrent `dc-host run`s of two
//! different plugins (the crawl example and the misbehave fixture's `fetch`
//! mode) hit one loopback domain limited in `[[limits.domain]]`; the first
//! supervisor serves permits and the second one's worker asks it. The test's
//! server records every arrival on its own clock and answers one request 429
//! with `Retry-After: 1`: no request of either run arrives before that second
//! has passed, and the arrivals of both runs together keep to one rate.
//! robots.txt is fetched once for both runs, a disallowed path is never
//! fetched (the run says why and how to opt out), and an opted-out app
//! fetches it.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dc_e2e::{Host, RequestHead, plugin_lib};
use serde_json::{Value, json};

const MISBEHAVE: &str = "test/fixtures/misbehave";
const CRAWL: &str = "demo/fixtures/crawl";
/// The domain's limit in the test's configuration.
const RPS: f64 = 10.0;
/// Items of the misbehave run (one request each, one of them retried).
const FETCHES: usize = 25;
/// Bounds a broken test only: every wait ends on an event.
const LIMIT: Duration = Duration::from_secs(120);

/// One request the server received, on the server's clock.
#[derive(Debug, Clone)]
struct Arrival {
    path: String,
    at: Duration,
    status: u16,
}

#[derive(Default)]
struct State {
    arrivals: Vec<Arrival>,
    fetches_ok: usize,
    /// The 429 was answered: the held first crawl page may be answered too.
    throttled: bool,
}

/// A loopback site: `/robots.txt` disallows `/private/`; `/crawl/N` links to
/// two new pages until the misbehave run has its answers; the first `/fetch`
/// is answered 429 with `Retry-After: 1`, and `/crawl/0` is held until then,
/// so both runs hold a permit when the 429 goes out.
struct Site {
    base: String,
    state: Arc<(Mutex<State>, Condvar)>,
    events: Receiver<String>,
}

fn respond(mut s: &TcpStream, status: u16, extra: &str, ctype: &str, body: &str) {
    let reason = if status == 200 { "OK" } else { "Not OK" };
    let _ = write!(
        s,
        "HTTP/1.1 {status} {reason}\r\n{extra}content-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

fn handle(stream: TcpStream, state: Arc<(Mutex<State>, Condvar)>, started: Instant, events: Sender<String>) {
    let Some(head) = RequestHead::read(&mut BufReader::new(&stream)) else { return };
    let at = started.elapsed();
    let path = head.path;
    let (lock, cvar) = &*state;
    let record = |status: u16| {
        lock.lock().expect("lock").arrivals.push(Arrival { path: path.clone(), at, status });
        let _ = events.send(path.clone());
    };
    if path == "/robots.txt" {
        record(200);
        respond(&stream, 200, "", "text/plain", "User-agent: *\nDisallow: /private/\n");
    } else if let Some(n) = path.strip_prefix("/crawl/").and_then(|n| n.parse::<u32>().ok()) {
        record(200);
        let mut st = lock.lock().expect("lock");
        if n == 0 {
            // the first page waits until the 429 has gone out
            st = cvar.wait_timeout_while(st, LIMIT, |s| !s.throttled).expect("lock").0;
        }
        // two new pages per page while the misbehave run is busy: the crawl
        // outlives it (its supervisor serves the permits to the end)
        let links = if st.fetches_ok < FETCHES {
            format!("<a href=\"/crawl/{}\">a</a><a href=\"/crawl/{}\">b</a>", 2 * n + 1, 2 * n + 2)
        } else {
            String::new()
        };
        drop(st);
        respond(&stream, 200, "", "text/html", &format!("<html><title>page {n}</title>{links}</html>"));
    } else if path == "/fetch" {
        let mut st = lock.lock().expect("lock");
        let first = !st.throttled && st.arrivals.iter().all(|a| a.path != "/fetch");
        let status = if first { 429 } else { 200 };
        st.arrivals.push(Arrival { path: path.clone(), at, status });
        drop(st);
        let _ = events.send(path.clone());
        if first {
            respond(&stream, 429, "retry-after: 1\r\n", "text/plain", "slow down");
            let mut st = lock.lock().expect("lock");
            st.throttled = true;
            cvar.notify_all();
        } else {
            lock.lock().expect("lock").fetches_ok += 1;
            respond(&stream, 200, "", "text/plain", "ok");
        }
    } else {
        record(200);
        respond(&stream, 200, "", "text/plain", "fetched");
    }
}

impl Site {
    fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let (tx, events) = channel();
        let shared = state.clone();
        let started = Instant::now();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (state, tx) = (shared.clone(), tx.clone());
                std::thread::spawn(move || handle(stream, state, started, tx));
            }
        });
        Site { base, state, events }
    }

    fn arrivals(&self) -> Vec<Arrival> {
        let mut a = self.state.0.lock().expect("lock").arrivals.clone();
        a.sort_by_key(|a| a.at);
        a
    }

    fn wait_for(&self, path: &str) {
        loop {
            match self.events.recv_timeout(LIMIT) {
                Ok(p) if p == path => return,
                Ok(_) => {}
                Err(e) => panic!("the site never saw {path} ({e}); it saw {:?}", self.arrivals()),
            }
        }
    }
}

/// A host with both plugins registered and the loopback domain limited.
fn limited_host(extra_config: &str) -> Host {
    let mut host = Host::sqlite();
    let config = host.dir.path().join("dc-host.toml");
    std::fs::write(
        &config,
        format!("[[limits.domain]]\nhost = \"127.0.0.1\"\nrps = {RPS:?}\nconcurrency = 2\n\n{extra_config}"),
    )
    .expect("write config");
    host.env.push(("DC_CONFIG".into(), config.display().to_string()));
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.install(&plugin_lib("dc_plugin_crawl"), "crawl.so");
    host.ok(&["reload"]);
    host
}

fn spawn_run(host: &Host, app: &str, args: Value) -> Child {
    host.command(&["run", app, "--args", &args.to_string(), "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dc-host run starts")
}

fn finished(child: Child) -> Value {
    let out = child.wait_with_output().expect("dc-host run ends");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no run JSON ({e}); stderr:\n{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn two_runs_of_two_plugins_share_one_budget_and_both_back_off_on_429() {
    let host = limited_host("");
    let site = Site::start();
    let crawl = spawn_run(&host, CRAWL, json!({"start_url": format!("{}/crawl/0", site.base)}));
    // the crawl's first page is held by the site, so the misbehave run starts while it is in flight
    site.wait_for("/crawl/0");
    let fetch =
        spawn_run(&host, MISBEHAVE, json!({"mode": "fetch", "items": FETCHES, "url": format!("{}/fetch", site.base)}));
    let (crawled, fetched) = (finished(crawl), finished(fetch));
    assert_eq!(crawled["status"], "SUCCESS", "{crawled}");
    assert_eq!(fetched["status"], "SUCCESS", "{fetched}");
    let arrivals = site.arrivals();
    let shown: Vec<String> =
        arrivals.iter().map(|a| format!("{:>6} ms {} {}", a.at.as_millis(), a.status, a.path)).collect();
    let shown = shown.join("\n");

    // robots.txt was fetched once, for both runs
    assert_eq!(arrivals.iter().filter(|a| a.path == "/robots.txt").count(), 1, "{shown}");

    // nobody came back before Retry-After had passed
    let throttled = arrivals.iter().position(|a| a.status == 429).expect("one request was answered 429");
    let t429 = arrivals[throttled].at;
    let after: Vec<&Arrival> = arrivals[throttled + 1..].iter().collect();
    assert!(after.iter().any(|a| a.path.starts_with("/crawl/")), "the crawl went on after the 429:\n{shown}");
    assert!(after.iter().any(|a| a.path == "/fetch"), "the fetch run went on after the 429:\n{shown}");
    for a in &after {
        assert!(
            a.at >= t429 + Duration::from_secs(1),
            "{} arrived {} ms after the 429 with Retry-After: 1; both runs must wait:\n{shown}",
            a.path,
            (a.at - t429).as_millis()
        );
    }

    // one budget for both runs: any 20 consecutive arrivals span at least
    // 1.5 s at 10 requests per second (two separate budgets would need 1 s)
    let pages: Vec<&Arrival> = arrivals.iter().filter(|a| a.path != "/robots.txt").collect();
    let runs_interleave =
        pages.windows(2).filter(|w| w[0].path.starts_with("/crawl/") != w[1].path.starts_with("/crawl/")).count();
    assert!(runs_interleave >= 4, "the two runs' requests interleave:\n{shown}");
    assert!(pages.len() >= 22, "enough requests to measure the shared rate:\n{shown}");
    for w in pages.windows(21) {
        let span = w[20].at - w[0].at;
        assert!(
            span >= Duration::from_millis(1500),
            "21 requests from {} ms arrived within {} ms; the domain allows {RPS} per second for both runs together:\n{shown}",
            w[0].at.as_millis(),
            span.as_millis()
        );
    }
}

#[test]
fn robots_txt_is_obeyed_unless_the_app_opts_out() {
    let site = Site::start();
    let private = format!("{}/private/page", site.base);
    let args = json!({"mode": "fetch", "items": 1, "url": private});

    let host = limited_host("");
    let r = finished(spawn_run(&host, MISBEHAVE, args.clone()));
    assert_eq!(r["status"], "FAILED", "its only item failed: {r}");
    assert_eq!(site.arrivals().iter().filter(|a| a.path.starts_with("/private/")).count(), 0, "never fetched");
    let id = r["runtime_id"].as_str().expect("id");
    let shown = host.json(&["runs", "show", id, "--logs", "--json"]);
    let errors: Vec<String> = shown["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["context"]["error"].as_str().map(String::from))
        .collect();
    let robots = format!("disallowed by {}/robots.txt for user-agent dc-host", site.base);
    let opt_out = format!("limits.robots_ignore_apps = [\"{MISBEHAVE}\"]");
    assert!(
        errors.iter().any(|e| e.contains(&robots) && e.contains(&opt_out)),
        "the run says why, and how to opt out: {errors:?}"
    );

    let opted_out = limited_host(&format!("[limits]\nrobots_ignore_apps = [\"{MISBEHAVE}\"]\n"));
    let r = finished(spawn_run(&opted_out, MISBEHAVE, args));
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let arrivals = site.arrivals();
    assert_eq!(arrivals.iter().filter(|a| a.path == "/private/page").count(), 1, "{arrivals:?}");
    assert_eq!(
        arrivals.iter().filter(|a| a.path == "/robots.txt").count(),
        1,
        "an opted-out app does not ask: {arrivals:?}"
    );
}

/// A port nobody listens on: its connections are refused.
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}/page", l.local_addr().expect("address"))
}

fn metrics_of(host: &Host, run: &Value) -> Value {
    let id = run["runtime_id"].as_str().expect("runtime id");
    host.json(&["runs", "show", id, "--metrics", "--json"])["metrics"].clone()
}

/// Two `dc-host run`s of two different plugins against one dead domain: the
/// first run's refused connections open the domain's host-wide circuit (the
/// permit server's), and the second run — another app, another supervisor
/// process that takes the permit socket over — is refused by that circuit
/// before it sends anything: its metrics count no attempt and no connection
/// error, only requests refused by the open circuit, and its reason says
/// another run opened it.
#[test]
fn a_dead_domain_s_circuit_opened_by_one_run_refuses_the_next_run_of_another_app() {
    let mut host = Host::sqlite();
    host.env.push(("DC_RUNS_BREAKER_FAILURES".into(), "3".into()));
    host.env.push(("DC_RUNS_BREAKER_COOLDOWN_SECS".into(), "3600".into()));
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.install(&plugin_lib("dc_plugin_crawl"), "crawl.so");
    host.ok(&["reload"]);
    let dead = dead_url();

    // one thread: the first request is tried 3 times (runs.http_retries = 2):
    // the third refused connection opens the circuit, in the run and host-wide
    let first = crate::storage::run(&host, json!({"mode": "fetch", "items": 5, "url": dead}));
    assert_eq!(first["status"], "FAILED", "{first}");
    let m = metrics_of(&host, &first);
    assert_eq!(m["errors"]["connection"], 3, "{m}");
    assert_eq!(m["errors"]["circuit_open"], 4, "{m}");
    assert_eq!(m["domains"]["127.0.0.1"]["circuit_opened"], 1, "{m}");

    let second = finished(spawn_run(&host, CRAWL, json!({"start_url": dead})));
    assert_eq!(second["status"], "FAILED", "{second}");
    let m = metrics_of(&host, &second);
    assert_eq!((&m["requests"], &m["attempts"]), (&json!(1), &json!(0)), "nothing was sent: {m}");
    assert_eq!(m["errors"], json!({"circuit_open": 1}), "refused before any connection: {m}");
    assert_eq!(m["status"], json!({}), "{m}");
    assert_eq!(m["domains"]["127.0.0.1"]["circuit_opened"], 0, "its own circuit never opened: {m}");
    let reason = second["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(
            "127.0.0.1 (1 requests refused) by the host-wide circuit breaker, open after failures of another run"
        ),
        "{reason}"
    );
    let id = second["runtime_id"].as_str().expect("runtime id");
    let logs = host.json(&["runs", "show", id, "--logs", "--json"])["logs"].to_string();
    assert!(logs.contains("circuit open for host 127.0.0.1 after 3 consecutive failures"), "{logs}");
}
