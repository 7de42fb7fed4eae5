//! dc-net integration tests: the permit server and its clients over a real
//! Unix socket, with robots.txt from a real loopback HTTP server. Waits end on
//! events (a grant, a connection, the election's "serving" signal); the
//! timeouts only bound a broken test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::io::BufRead;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::SystemTime;

use dc_net::{BreakerPolicy, HostLimiter, LimitConfig, Outcome, PermitClient, Politeness, Refusal, Tuning, WallClock};
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod tls;

const LIMIT: Duration = Duration::from_secs(30);

fn ok() -> Outcome {
    Outcome { status: Some(200), latency: Duration::from_millis(1), retry_after: None, failed: false }
}

fn one_at_a_time() -> LimitConfig {
    LimitConfig { loopback: Tuning { rps: None, concurrency: 1, ..Tuning::default() }, ..LimitConfig::default() }
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.expect("bounded only for a broken test")
}

/// A loopback HTTP server answering `/robots.txt` with `robots` (counting
/// how often it was asked) and everything else 200.
async fn robots_site(robots: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = if req.starts_with("GET /robots.txt ") {
                    count.fetch_add(1, Ordering::SeqCst);
                    robots
                } else {
                    "page"
                };
                let answer =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    (base, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_one_concurrency_budget_and_a_closed_connection_gives_its_permits_back() {
    let (_dir, socket) = permit_server(Politeness::new(one_at_a_time()));
    let url = Url::parse("http://127.0.0.1:9/x").expect("url");
    let (a, b) = (PermitClient::new(&socket), PermitClient::new(&socket));

    let held = bounded(a.acquire(&url, false)).await.expect("server up").expect("granted");
    // the second worker waits while the first holds the domain's only permit
    let mut waiting = Box::pin(b.acquire(&url, false));
    assert!(tokio::time::timeout(Duration::from_millis(200), &mut waiting).await.is_err(), "b waits for a's permit");
    a.release(held, &ok()).await;
    let second = bounded(&mut waiting).await.expect("server up").expect("granted after the release");

    // a worker killed mid-request: its connection closes, its permit comes back
    drop(second);
    let third = bounded(a.acquire(&url, false)).await.expect("server up").expect("granted after the close");
    a.release(third, &ok()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_txt_is_fetched_once_for_every_worker_and_refusals_say_where() {
    let (base, asked) = robots_site("User-agent: *\nDisallow: /private/\n").await;
    let (_dir, socket) = permit_server(Politeness::new(LimitConfig::default()));
    let workers: Vec<HostLimiter> = (0..3)
        .map(|_| HostLimiter::new(Some(socket.clone()), LimitConfig::default(), true, "opt out with X".into()))
        .collect();
    for w in &workers {
        let p = bounded(w.acquire(&Url::parse(&format!("{base}/public")).expect("url"))).await.expect("allowed");
        w.release(p, &ok()).await;
        let refused =
            bounded(w.acquire(&Url::parse(&format!("{base}/private/a")).expect("url"))).await.expect_err("disallowed");
        assert_eq!(
            refused.to_string(),
            format!("disallowed by {base}/robots.txt for user-agent dc-host; opt out with X")
        );
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1, "one fetch for all workers");
    // an app that does not obey robots.txt is never refused and never asks
    let free = HostLimiter::new(Some(socket.clone()), LimitConfig::default(), false, String::new());
    let p = bounded(free.acquire(&Url::parse(&format!("{base}/private/a")).expect("url"))).await.expect("allowed");
    free.release(p, &ok()).await;
}

#[test]
fn one_process_serves_the_next_takes_over_and_a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("run").join("limiter.sock");
    std::fs::create_dir_all(socket.parent().expect("parent")).expect("dir");
    // a socket file left by a process that died
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let rt = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let (first, second, client) = (rt("first"), rt("second"), rt("client"));
    let first_serves = dc_net::serve_shared(&socket, one_at_a_time(), first.handle().clone()).expect("takes part");
    let mut second_serves =
        dc_net::serve_shared(&socket, one_at_a_time(), second.handle().clone()).expect("takes part");
    assert!(*first_serves.borrow(), "the first process serves at once, over the stale file");
    assert!(!*second_serves.borrow(), "the second one stands by");
    let url = Url::parse("http://127.0.0.1:9/x").expect("url");
    let c = PermitClient::new(&socket);
    client.block_on(async {
        let p = bounded(c.acquire(&url, false)).await.expect("server up").expect("granted");
        c.release(p, &ok()).await;
    });
    // the serving process ends: the other one takes over and clients reconnect
    drop(first);
    second.block_on(async { bounded(second_serves.wait_for(|s| *s)).await.expect("the second one serves") });
    client.block_on(async {
        let p = bounded(c.acquire(&url, false)).await.expect("server up again").expect("granted");
        c.release(p, &ok()).await;
    });
}

#[tokio::test]
async fn a_worker_without_a_server_limits_on_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nobody = dir.path().join("nobody.sock");
    let w = HostLimiter::new(Some(nobody), one_at_a_time(), false, String::new());
    let url = Url::parse("http://127.0.0.1:9/x").expect("url");
    let p = bounded(w.acquire(&url)).await.expect("granted in-process");
    // its own limit still holds: one at a time
    let mut waiting = Box::pin(w.acquire(&url));
    assert!(tokio::time::timeout(Duration::from_millis(200), &mut waiting).await.is_err());
    w.release(p, &ok()).await;
    let q = bounded(&mut waiting).await.expect("granted after the release");
    w.release(q, &ok()).await;
}

/// A wall clock ahead of the system's by a fixed amount.
struct Ahead(Duration);

impl WallClock for Ahead {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.0
    }
}

/// A circuit opens after 2 failures in a row, for an hour.
fn breaking_after_two() -> LimitConfig {
    LimitConfig {
        breaker: BreakerPolicy { failures: 2, cooldown: Duration::from_secs(3600) },
        ..LimitConfig::default()
    }
}

fn failed() -> Outcome {
    Outcome { status: None, latency: Duration::from_millis(1), retry_after: None, failed: true }
}

const SERVE_ENV: &str = "DC_NET_TEST_SERVE";
const AHEAD_ENV: &str = "DC_NET_TEST_WALL_AHEAD_SECS";

/// The child process of `a_takeover_keeps_the_back_off_of_the_process_that_served`:
/// takes part in serving the socket in `DC_NET_TEST_SERVE` with a wall clock
/// `DC_NET_TEST_WALL_AHEAD_SECS` ahead, says "standby" and "serving" on
/// stdout, and lives until it is killed.
#[test]
#[ignore = "run as a child process by a_takeover_keeps_the_back_off_of_the_process_that_served"]
fn permit_server_process() {
    let Some(socket) = std::env::var_os(SERVE_ENV) else { return };
    let ahead = std::env::var(AHEAD_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut serving = dc_net::serve_shared_with_clock(
        std::path::Path::new(&socket),
        breaking_after_two(),
        rt.handle().clone(),
        Arc::new(Ahead(Duration::from_secs(ahead))),
    )
    .expect("takes part");
    if !*serving.borrow() {
        println!("PERMIT-SERVER standby");
    }
    rt.block_on(async { serving.wait_for(|s| *s).await.expect("serves") });
    println!("PERMIT-SERVER serving");
    rt.block_on(std::future::pending::<()>());
}

/// A permit server process, killed when dropped.
struct ServerProcess {
    child: Child,
    out: std::io::Lines<std::io::BufReader<ChildStdout>>,
}

impl ServerProcess {
    fn start(socket: &std::path::Path, wall_ahead_secs: u64) -> ServerProcess {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "permit_server_process", "--ignored", "--nocapture", "--test-threads=1"])
            .env(SERVE_ENV, socket)
            .env(AHEAD_ENV, wall_ahead_secs.to_string())
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("the server process starts");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        ServerProcess { child, out }
    }

    /// Waits for the process to say `what` ("standby", "serving").
    fn said(&mut self, what: &str) {
        let want = format!("PERMIT-SERVER {what}");
        for line in self.out.by_ref() {
            // libtest may print "test permit_server_process ... " before it on the same line
            if line.expect("stdout").ends_with(&want) {
                return;
            }
        }
        panic!("the permit server process ended before it said {what:?}");
    }

    /// SIGKILL: nothing is saved on the way out.
    fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_takeover_keeps_the_back_off_of_the_process_that_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("run").join("limiter.sock");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut a = ServerProcess::start(&socket, 0);
    a.said("serving");
    let mut b = ServerProcess::start(&socket, 0);
    b.said("standby");

    let throttled = Url::parse("http://127.0.0.1:9/x").expect("url");
    let other = Url::parse("http://127.0.0.2:9/x").expect("url");
    let c = PermitClient::new(&socket);
    rt.block_on(async {
        let p = bounded(c.acquire(&throttled, false)).await.expect("a serves").expect("granted");
        let answer = Outcome {
            status: Some(429),
            latency: Duration::from_millis(1),
            retry_after: Some(Duration::from_secs(3600)),
            failed: false,
        };
        c.release(p, &answer).await;
        // the next request on the same connection is read after the release:
        // the back-off is saved by the time it is answered
        // and a dead domain: its circuit opens
        let dead = Url::parse("http://127.0.0.3:9/x").expect("url");
        for _ in 0..2 {
            let p = bounded(c.acquire(&dead, false)).await.expect("a serves").expect("granted");
            c.release(p, &failed()).await;
        }
        let q = bounded(c.acquire(&other, false)).await.expect("a serves").expect("granted");
        c.release(q, &ok()).await;
    });
    let saved = std::fs::read_to_string(dc_net::state_path(&socket)).expect("the back-off is saved");
    assert!(saved.contains("\"127.0.0.1\""), "{saved}");
    assert!(!saved.contains("127.0.0.2"), "a domain without back-off is not saved: {saved}");
    assert!(saved.contains("\"circuits\":{\"127.0.0.3\""), "the open circuit is saved: {saved}");

    // a dies without a word; b takes over and still holds the domain back
    a.kill();
    b.said("serving");
    rt.block_on(async {
        let q = bounded(c.acquire(&other, false)).await.expect("b serves").expect("another domain goes at once");
        c.release(q, &ok()).await;
        let waiting = tokio::time::timeout(Duration::from_millis(300), c.acquire(&throttled, false)).await;
        assert!(waiting.is_err(), "a permit for the throttled domain still waits for Retry-After: {waiting:?}");
        let dead = Url::parse("http://127.0.0.3:9/x").expect("url");
        match bounded(c.acquire(&dead, false)).await.expect("b serves") {
            Err(Refusal::CircuitOpen(why)) => {
                assert!(why.starts_with("circuit open for host 127.0.0.3 after 2 consecutive failures"), "{why}")
            }
            other => panic!("the dead domain's circuit is still open after the takeover: {other:?}"),
        }
    });

    // a successor whose clock is past the Retry-After drops the expired entry
    b.kill();
    let mut later = ServerProcess::start(&socket, 3601);
    later.said("serving");
    rt.block_on(async {
        let p = bounded(c.acquire(&throttled, false)).await.expect("serves").expect("granted: the block has passed");
        c.release(p, &ok()).await;
    });
}

/// A permit server serving `politeness` on `limiter.sock` in a new temporary
/// directory (kept alive by the returned guard).
fn permit_server(politeness: Politeness) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("limiter.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    tokio::spawn(dc_net::serve(listener, Arc::new(politeness)));
    (dir, socket)
}

/// Limits whose breaker opens after 3 consecutive failures, for 30 s.
fn three_failures() -> LimitConfig {
    LimitConfig { breaker: BreakerPolicy { failures: 3, cooldown: Duration::from_secs(30) }, ..LimitConfig::default() }
}

/// A breaker clock the test moves by hand.
struct Manual(std::sync::Mutex<std::time::Instant>);

impl dc_net::breaker::Clock for Manual {
    fn now(&self) -> std::time::Instant {
        *self.0.lock().expect("clock")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_one_run_opened_refuses_every_run_until_its_probe_succeeds() {
    let config = three_failures();
    let clock = Arc::new(Manual(std::sync::Mutex::new(std::time::Instant::now())));
    let (_dir, socket) = permit_server(Politeness::with_breaker_clock(config.clone(), clock.clone()));
    let first = HostLimiter::new(Some(socket.clone()), config.clone(), false, String::new());
    let second = HostLimiter::new(Some(socket.clone()), config, false, String::new());
    let dead = Url::parse("http://127.0.0.1:9/x").expect("url");
    // abandoned requests say nothing about the domain
    for _ in 0..5 {
        drop(bounded(first.acquire(&dead)).await.expect("granted"));
    }
    // a 5xx and two connection failures in a row, all from the first run
    let p = bounded(first.acquire(&dead)).await.expect("granted");
    first.release(p, &Outcome { status: Some(500), ..ok() }).await;
    for _ in 0..2 {
        let p = bounded(first.acquire(&dead)).await.expect("granted");
        first.release(p, &failed()).await;
    }
    // a release is not answered: the next request on the same connection is read after it
    let other_domain = Url::parse("http://127.0.0.2:9/x").expect("url");
    let p = bounded(first.acquire(&other_domain)).await.expect("granted");
    first.release(p, &ok()).await;
    // the second run's request to the domain is refused without being sent
    match bounded(second.acquire(&dead)).await {
        Err(Refusal::CircuitOpen(why)) => {
            assert!(why.starts_with("circuit open for host 127.0.0.1 after 3 consecutive failures"), "{why}");
            assert!(why.ends_with("(in 30s)"), "{why}");
        }
        other => panic!("the circuit the first run opened holds for the second: {other:?}"),
    }
    let p = bounded(second.acquire(&other_domain)).await.expect("another domain is not affected");
    second.release(p, &ok()).await;
    // the cool-down passes: one probe goes, the others are refused while it is in flight
    *clock.0.lock().expect("clock") += Duration::from_secs(30);
    let probe = bounded(second.acquire(&dead)).await.expect("the probe");
    match bounded(first.acquire(&dead)).await {
        Err(Refusal::CircuitOpen(why)) => assert!(why.contains("one probe request is in flight"), "{why}"),
        other => panic!("the probe is in flight: {other:?}"),
    }
    second.release(probe, &ok()).await;
    let p = bounded(second.acquire(&other_domain)).await.expect("granted");
    second.release(p, &ok()).await;
    let p = bounded(first.acquire(&dead)).await.expect("closed again after the probe succeeded");
    first.release(p, &ok()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_s_probe_refused_by_the_host_wide_circuit_does_not_stay_in_flight() {
    use dc_net::breaker::State;
    let policy = BreakerPolicy { failures: 1, cooldown: Duration::from_secs(30) };
    let config = LimitConfig { breaker: policy, ..LimitConfig::default() };
    let (_dir, socket) = permit_server(Politeness::new(config.clone()));
    let limiter = HostLimiter::new(Some(socket.clone()), config, false, String::new());
    let dead = Url::parse("http://127.0.0.1:9/x").expect("url");
    // another run opened the domain's circuit on the server
    let other = HostLimiter::new(Some(socket.clone()), LimitConfig::default(), false, String::new());
    let p = bounded(other.acquire(&dead)).await.expect("granted");
    other.release(p, &failed()).await;
    let p = bounded(other.acquire(&Url::parse("http://127.0.0.2:9/").expect("url"))).await.expect("granted");
    other.release(p, &ok()).await;
    // this run's own circuit is half-open: its next attempt is its probe
    let clock = Arc::new(Manual(std::sync::Mutex::new(std::time::Instant::now())));
    let breakers = dc_net::Breakers::new(policy, clock.clone());
    breakers.record("127.0.0.1", false);
    *clock.0.lock().expect("clock") += Duration::from_secs(30);
    let metrics = dc_net::RequestMetrics::new();
    let exchange = dc_net::Exchange::start(&metrics, &breakers, dead.as_str(), None);
    let req = reqwest::Client::new().get(dead.clone());
    let (sent, attempts) = bounded(dc_net::send_limited(
        req,
        &reqwest::Method::GET,
        &dc_net::RetryPolicy::default(),
        Some(&limiter),
        &exchange,
    ))
    .await;
    assert!(
        matches!(&sent, Err(dc_net::FetchError::Refused(why)) if why.starts_with("circuit open for host 127.0.0.1")),
        "{sent:?}"
    );
    assert_eq!(attempts, 1);
    assert_eq!(
        breakers.state("127.0.0.1"),
        State::HalfOpen { probing: false, failures: 1 },
        "the refused probe is not in flight: the next attempt may probe"
    );
}

/// A relay in front of the permit server at `server` that records every line
/// workers send it: the test sees what crosses the socket.
async fn recording_relay(server: std::path::PathBuf, at: std::path::PathBuf) -> Arc<std::sync::Mutex<Vec<String>>> {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::UnixListener::bind(&at).expect("bind the relay");
    let seen = lines.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = tokio::net::UnixStream::connect(&server).await.expect("the server is up");
            let (cr, mut cw) = client.into_split();
            let (ur, mut uw) = upstream.into_split();
            let seen = seen.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut from_worker = tokio::io::BufReader::new(cr).lines();
                while let Ok(Some(line)) = from_worker.next_line().await {
                    seen.lock().expect("lines").push(line.clone());
                    if uw.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let mut ur = ur;
                let _ = tokio::io::copy(&mut ur, &mut cw).await;
            });
        }
    });
    lines
}

fn count(lines: &std::sync::Mutex<Vec<String>>, kind: &str) -> usize {
    let prefix = format!("{{\"{kind}\"");
    lines.lock().expect("lines").iter().filter(|l| l.starts_with(&prefix)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_without_limits_is_granted_passes_that_send_nothing_back_unless_notable() {
    let (dir, socket) = permit_server(Politeness::new(LimitConfig::default()));
    let relay = dir.path().join("relay.sock");
    let lines = recording_relay(socket.clone(), relay.clone()).await;
    let free = Url::parse("http://127.0.0.1:9/x").expect("url");
    let c = PermitClient::new(&relay);
    // 8 at once, none given back yet: no permit is held, none waits
    let mut passes = vec![];
    for _ in 0..8 {
        let p = bounded(c.acquire(&free, false)).await.expect("server up").expect("granted");
        assert!(p.is_pass(), "a loopback domain without limits grants passes");
        passes.push(p);
    }
    for p in passes {
        c.release(p, &ok()).await;
    }
    for _ in 0..42 {
        let p = bounded(c.acquire(&free, false)).await.expect("server up").expect("granted");
        c.release(p, &Outcome { status: Some(404), ..ok() }).await;
    }
    assert_eq!(count(&lines, "acquire"), 50);
    assert_eq!(count(&lines, "release") + count(&lines, "report"), 0, "nothing to give back: {:?}", lines.lock());

    // a domain with a concurrency limit still holds and releases its permits
    let limited = LimitConfig {
        domains: [("127.0.0.2".to_string(), Tuning { rps: None, concurrency: 2, ..Tuning::default() })].into(),
        ..LimitConfig::default()
    };
    let (dir2, socket2) = permit_server(Politeness::new(limited));
    let relay2 = dir2.path().join("relay.sock");
    let lines2 = recording_relay(socket2, relay2.clone()).await;
    let c2 = PermitClient::new(&relay2);
    let p = bounded(c2.acquire(&Url::parse("http://127.0.0.2:9/x").expect("url"), false))
        .await
        .expect("server up")
        .expect("granted");
    assert!(!p.is_pass(), "a limited domain holds its permit");
    c2.release(p, &ok()).await;
    let p = bounded(c2.acquire(&free, false)).await.expect("server up").expect("granted");
    c2.release(p, &ok()).await;
    assert_eq!(count(&lines2, "release"), 1, "{:?}", lines2.lock());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_a_pass_is_reported_and_blocks_the_other_run() {
    let (dir, socket) = permit_server(Politeness::new(LimitConfig::default()));
    let relay = dir.path().join("relay.sock");
    let lines = recording_relay(socket.clone(), relay.clone()).await;
    let first = HostLimiter::new(Some(relay.clone()), LimitConfig::default(), false, String::new());
    let second = HostLimiter::new(Some(relay.clone()), LimitConfig::default(), false, String::new());
    let domain = Url::parse("http://127.0.0.1:9/x").expect("url");
    let p = bounded(second.acquire(&domain)).await.expect("granted");
    second.release(p, &ok()).await;
    let p = bounded(first.acquire(&domain)).await.expect("granted");
    assert!(matches!(&p, dc_net::Permit::Remote(r) if r.is_pass()), "{p:?}");
    let throttled = Outcome { status: Some(429), retry_after: Some(Duration::from_secs(3600)), ..ok() };
    first.release(p, &throttled).await;
    // a report is not answered: the next request on the same connection is read after it
    let p = bounded(first.acquire(&Url::parse("http://127.0.0.2:9/").expect("url"))).await.expect("granted");
    first.release(p, &ok()).await;
    assert_eq!(count(&lines, "report"), 1, "the 429 is reported: {:?}", lines.lock());
    let waiting = tokio::time::timeout(Duration::from_millis(300), second.acquire(&domain)).await;
    assert!(waiting.is_err(), "the other run waits for the Retry-After: {waiting:?}");
    assert_eq!(count(&lines, "release"), 0, "passes only: {:?}", lines.lock());
}

/// Waits until `limiter`'s watch connection has read a generation other
/// than `not` (the server's pushed line, not a timer), and returns it.
async fn watched_past(limiter: &HostLimiter, not: u64) -> u64 {
    let mut generation = limiter.watched_generation().expect("the first lease opened a watch connection");
    *bounded(generation.wait_for(|g| *g != not)).await.expect("the watch connection is up")
}

/// Two acquires and releases of `url` on `limiter`: the first opens the
/// watch connection, the second (once it has read the generation) keeps
/// the lease.
async fn lease(limiter: &HostLimiter, url: &Url) {
    let p = bounded(limiter.acquire(url)).await.expect("granted");
    limiter.release(p, &ok()).await;
    watched_past(limiter, u64::MAX).await;
    let p = bounded(limiter.acquire(url)).await.expect("granted");
    limiter.release(p, &ok()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_origin_needs_no_round_trip_until_a_429_told_by_another_run_voids_the_lease() {
    let (base, _) = robots_site("User-agent: *\nAllow: /\n").await;
    let (dir, socket) = permit_server(Politeness::new(LimitConfig::default()));
    let relay = dir.path().join("relay.sock");
    let lines = recording_relay(socket.clone(), relay.clone()).await;
    let first = HostLimiter::new(Some(relay.clone()), LimitConfig::default(), true, String::new());
    let second = HostLimiter::new(Some(relay.clone()), LimitConfig::default(), true, String::new());
    let page = |n: usize| Url::parse(&format!("{base}/page/{n}")).expect("url");
    lease(&first, &page(0)).await;
    lease(&second, &page(0)).await;
    assert_eq!(count(&lines, "acquire"), 4);
    assert_eq!(count(&lines, "watch"), 2, "one watch connection per client: {:?}", lines.lock());
    for n in 1..=200 {
        let p = bounded(second.acquire(&page(n))).await.expect("granted");
        assert!(matches!(&p, dc_net::Permit::Remote(r) if r.is_pass()), "{p:?}");
        second.release(p, &Outcome { status: Some(404), ..ok() }).await;
    }
    // the lease lasts 1 s: only a stall of the test beyond it asks again
    let asked = count(&lines, "acquire") - 4;
    assert!(asked <= 2, "200 passes of a leased origin, {asked} asked the server: {:?}", lines.lock());

    // the first run gets a 429: it voids its own lease and reports, the server tells the second
    let before = *second.watched_generation().expect("watching").borrow();
    let p = bounded(first.acquire(&page(1))).await.expect("granted");
    let throttled = Outcome { status: Some(429), retry_after: Some(Duration::from_secs(3600)), ..ok() };
    first.release(p, &throttled).await;
    assert!(watched_past(&second, before).await > before);
    let waiting = tokio::time::timeout(Duration::from_millis(300), second.acquire(&page(2))).await;
    assert!(waiting.is_err(), "the other run's lease is void: it waits for the Retry-After: {waiting:?}");
    let waiting = tokio::time::timeout(Duration::from_millis(300), first.acquire(&page(3))).await;
    assert!(waiting.is_err(), "the run that got the 429 waits too: {waiting:?}");
    assert_eq!(count(&lines, "report"), 1, "{:?}", lines.lock());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_whose_robots_txt_disallows_a_path_is_never_leased() {
    let (base, asked) = robots_site("User-agent: *\nDisallow: /private/\n").await;
    let (dir, socket) = permit_server(Politeness::new(LimitConfig::default()));
    let relay = dir.path().join("relay.sock");
    let lines = recording_relay(socket.clone(), relay.clone()).await;
    let worker = HostLimiter::new(Some(relay.clone()), LimitConfig::default(), true, String::new());
    for n in 0..20 {
        let p =
            bounded(worker.acquire(&Url::parse(&format!("{base}/public/{n}")).expect("url"))).await.expect("allowed");
        worker.release(p, &ok()).await;
    }
    bounded(worker.acquire(&Url::parse(&format!("{base}/private/a")).expect("url"))).await.expect_err("disallowed");
    assert_eq!(count(&lines, "acquire"), 21, "every path is looked up by the server: {:?}", lines.lock());
    assert_eq!(count(&lines, "watch"), 0, "no lease was granted");
    assert_eq!(asked.load(Ordering::SeqCst), 1);

    // an origin that would be leased, on a server configured without leases
    let (base, _) = robots_site("User-agent: *\nAllow: /\n").await;
    let no_leases = LimitConfig { leases: false, ..LimitConfig::default() };
    let (dir, socket) = permit_server(Politeness::new(no_leases));
    let relay = dir.path().join("relay.sock");
    let lines = recording_relay(socket.clone(), relay.clone()).await;
    let worker = HostLimiter::new(Some(relay.clone()), LimitConfig::default(), true, String::new());
    for n in 0..20 {
        let p = bounded(worker.acquire(&Url::parse(&format!("{base}/{n}")).expect("url"))).await.expect("allowed");
        worker.release(p, &ok()).await;
    }
    assert_eq!(count(&lines, "acquire"), 20, "limits.leases = false: {:?}", lines.lock());
    assert_eq!(count(&lines, "watch"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_on_passes_open_the_circuit_for_every_run() {
    let config = three_failures();
    let (_dir, socket) = permit_server(Politeness::new(config.clone()));
    let (a, b) = (PermitClient::new(&socket), PermitClient::new(&socket));
    let dead = Url::parse("http://127.0.0.1:9/x").expect("url");
    let other = Url::parse("http://127.0.0.2:9/x").expect("url");
    // a failure on a pass; then the domain holds its permits until a success resets the count
    let p = bounded(a.acquire(&dead, false)).await.expect("up").expect("granted");
    assert!(p.is_pass());
    a.release(p, &failed()).await;
    let p = bounded(a.acquire(&dead, false)).await.expect("up").expect("granted");
    assert!(!p.is_pass(), "a failure is counted: the success that resets it must be told");
    a.release(p, &ok()).await;
    let p = bounded(a.acquire(&dead, false)).await.expect("up").expect("granted");
    assert!(p.is_pass(), "the count is back at 0");
    // now three failures in a row, the first on a pass, the others held
    a.release(p, &Outcome { status: Some(502), ..ok() }).await;
    for _ in 0..2 {
        let p = bounded(a.acquire(&dead, false)).await.expect("up").expect("granted");
        assert!(!p.is_pass());
        a.release(p, &failed()).await;
    }
    let p = bounded(a.acquire(&other, false)).await.expect("up").expect("granted");
    a.release(p, &ok()).await;
    match bounded(b.acquire(&dead, false)).await.expect("up") {
        Err(Refusal::CircuitOpen(why)) => {
            assert!(why.starts_with("circuit open for host 127.0.0.1 after 3 consecutive failures"), "{why}")
        }
        other => panic!("the circuit opened by one run's passes holds for the other: {other:?}"),
    }
}

#[test]
fn a_takeover_keeps_robots_txt_and_its_crawl_delay_until_they_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("run").join("limiter.sock");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (base, asked) = rt.block_on(robots_site("User-agent: *\nDisallow: /private/\nCrawl-delay: 60\n"));
    let public = Url::parse(&format!("{base}/public")).expect("url");
    let private = Url::parse(&format!("{base}/private/a")).expect("url");
    let mut a = ServerProcess::start(&socket, 0);
    a.said("serving");
    let mut b = ServerProcess::start(&socket, 0);
    b.said("standby");
    let c = PermitClient::new(&socket);
    rt.block_on(async {
        let p = bounded(c.acquire(&public, true)).await.expect("a serves").expect("allowed");
        assert!(!p.is_pass(), "a crawl-delay is a rate: the permit is held");
        c.release(p, &ok()).await;
    });
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    let saved = std::fs::read_to_string(dc_net::state_path(&socket)).expect("robots.txt is saved");
    assert!(saved.contains(&format!("\"robots\":{{\"{base}/robots.txt\"")), "{saved}");
    assert!(saved.contains("Crawl-delay: 60"), "{saved}");

    // a dies without a word; b takes over with the robots.txt a fetched
    a.kill();
    b.said("serving");
    rt.block_on(async {
        match bounded(c.acquire(&private, true)).await.expect("b serves") {
            Err(Refusal::Robots(why)) => {
                assert_eq!(why, format!("disallowed by {base}/robots.txt for user-agent dc-host"))
            }
            other => panic!("the saved robots.txt still disallows the path: {other:?}"),
        }
        let p = bounded(c.acquire(&public, true)).await.expect("b serves").expect("allowed");
        c.release(p, &ok()).await;
        let waiting = tokio::time::timeout(Duration::from_millis(300), c.acquire(&public, true)).await;
        assert!(waiting.is_err(), "the crawl-delay of 60 s still spaces the domain's requests: {waiting:?}");
    });
    assert_eq!(asked.load(Ordering::SeqCst), 1, "the successor did not ask the origin again");

    // a successor whose clock is past the robots.txt TTL (1 h) asks again
    b.kill();
    let mut later = ServerProcess::start(&socket, 3601);
    later.said("serving");
    rt.block_on(async {
        let p = bounded(c.acquire(&public, true)).await.expect("serves").expect("allowed");
        c.release(p, &ok()).await;
    });
    assert_eq!(asked.load(Ordering::SeqCst), 2, "an expired robots.txt is fetched again");
}

/// A worker's limiter is homed on the worker's runtime while its requests
/// come from the collecting threads' own runtimes: its pooled connections
/// and its watch connection answer another runtime while the one that
/// opened them does not run (its thread busy in the plugin's code).
#[test]
fn a_homed_limiter_answers_while_the_runtime_that_opened_its_connections_does_not_run() {
    let home = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let (_dir, socket) = {
        let _in_home = home.enter();
        permit_server(Politeness::new(LimitConfig::default()))
    };
    let limiter =
        HostLimiter::new(Some(socket), LimitConfig::default(), false, String::new()).homed(home.handle().clone());
    let own = || tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (opener, other) = (own(), own());
    let url = Url::parse("http://127.0.0.1:9/x").expect("url");
    // the opener asks first: its connection goes back to the pool, and the
    // lease that comes with the pass starts the watch connection
    opener.block_on(async {
        let p = bounded(limiter.acquire(&url)).await.expect("granted");
        limiter.release(p, &ok()).await;
    });
    // from here on the opener's runtime never runs again
    other.block_on(async {
        let mut generation = limiter.watched_generation().expect("the first lease opened a watch connection");
        bounded(generation.wait_for(|g| *g != u64::MAX)).await.expect("the watch connection reads the generation");
        // another origin: no lease, so a round trip on the pooled connection
        let elsewhere = Url::parse("http://127.0.0.2:9/x").expect("url");
        let p = bounded(limiter.acquire(&elsewhere)).await.expect("granted on the pooled connection");
        limiter.release(p, &ok()).await;
    });
}
