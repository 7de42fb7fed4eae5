//! dc-net integration tests: the permit server and its clients over a real
//! Unix socket, with robots.txt from a real loopback HTTP server. Waits end on
//! events (a grant, a connection, the election's "serving" signal); the
//! timeouts only bound a broken test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dc_net::{HostLimiter, LimitConfig, Outcome, PermitClient, Politeness, Tuning};
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(30);

fn ok() -> Outcome {
    Outcome { status: Some(200), latency: Duration::from_millis(1), retry_after: None }
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
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("limiter.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    tokio::spawn(dc_net::serve(listener, Arc::new(Politeness::new(one_at_a_time()))));
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
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("limiter.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    tokio::spawn(dc_net::serve(listener, Arc::new(Politeness::new(LimitConfig::default()))));
    let workers: Vec<HostLimiter> = (0..3)
        .map(|_| HostLimiter::new(Some(socket.clone()), LimitConfig::default(), true, "opt out with X".into()))
        .collect();
    for w in &workers {
        let p = bounded(w.acquire(&Url::parse(&format!("{base}/public")).expect("url"))).await.expect("allowed");
        w.release(p, &ok()).await;
        let refused =
            bounded(w.acquire(&Url::parse(&format!("{base}/private/a")).expect("url"))).await.expect_err("disallowed");
        assert_eq!(refused, format!("disallowed by {base}/robots.txt for user-agent dc-host; opt out with X"));
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
