//! L1: the politeness limiter's permit round trip (acquire + release) from a
//! worker over the Unix socket to a permit server in another process, vs the
//! same limiter in-process (the baseline, same run). Target (issue #10):
//! p99 ≤ 50 µs over the socket. Plain `fn main` (`harness = false`).
//!
//! The server process is this binary again, re-executed with
//! `DC_BENCH_PERMIT_SERVE=<socket>`. The main domain is a loopback host with
//! no rate or concurrency limit, so what is measured is the permit
//! machinery, not a wait: such a domain is granted passes (one round trip,
//! nothing released). A second loopback domain with a concurrency limit (far
//! above what one client holds, so nobody waits) measures a held permit:
//! acquire, then a release line. Knobs: `DC_BENCH_PERMITS` (round trips per pass, default
//! 20000), `DC_BENCH_PASSES` (default 5; the median pass is reported).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dc_net::{LimitConfig, Outcome, PermitClient, Politeness};
use reqwest::Url;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The limited domain: concurrency 1000, no rate.
const HELD_HOST: &str = "127.0.0.2";

fn config() -> LimitConfig {
    let held = dc_net::Tuning { rps: None, concurrency: 1000, ..dc_net::Tuning::default() };
    LimitConfig { domains: [(HELD_HOST.to_string(), held)].into(), ..LimitConfig::default() }
}

fn serve(socket: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(socket).expect("bind the socket");
        dc_net::serve(listener, Arc::new(Politeness::new(config()))).await;
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Stats {
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats { p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99), p999: percentile(&samples, 0.999) }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    if let Ok(socket) = std::env::var("DC_BENCH_PERMIT_SERVE") {
        serve(&socket);
        return;
    }
    let n = env_num("DC_BENCH_PERMITS", 20_000);
    let passes = env_num("DC_BENCH_PASSES", 5).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("limiter.sock");
    let mut server = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env("DC_BENCH_PERMIT_SERVE", &socket)
        .spawn()
        .expect("start the server process");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let url = Url::parse("http://127.0.0.1:8080/page").expect("url");
    let held_url = Url::parse(&format!("http://{HELD_HOST}:8080/page")).expect("url");
    let outcome = Outcome { status: Some(200), latency: Duration::from_millis(3), retry_after: None, failed: false };
    let (remote, held, local) = rt.block_on(async {
        let client = PermitClient::new(&socket);
        // the server process binds when it is up
        let started = Instant::now();
        loop {
            match client.acquire(&url, false).await {
                Ok(Ok(p)) => {
                    client.release(p, &outcome).await;
                    break;
                }
                Ok(Err(e)) => panic!("refused: {e}"),
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("the permit server did not come up: {e}"),
            }
        }
        let limiter = Politeness::new(config());
        let (mut remote, mut held, mut local) = (vec![], vec![], vec![]);
        for _ in 0..passes {
            let mut r = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let p = client.acquire(&url, false).await.expect("server up").expect("granted");
                assert!(p.is_pass(), "an unlimited domain is granted passes");
                client.release(p, &outcome).await;
                r.push(t.elapsed());
            }
            remote.push(stats(r));
            let mut h = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let p = client.acquire(&held_url, false).await.expect("server up").expect("granted");
                assert!(!p.is_pass(), "a domain with a concurrency limit holds its permits");
                client.release(p, &outcome).await;
                h.push(t.elapsed());
            }
            held.push(stats(h));
            let mut l = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let p = limiter.acquire(&url, false).await.expect("granted");
                limiter.release(p, &outcome);
                l.push(t.elapsed());
            }
            local.push(stats(l));
        }
        (remote, held, local)
    });
    let _ = server.kill();
    let _ = server.wait();
    // the median pass by p99
    let median = |mut v: Vec<Stats>| {
        v.sort_by_key(|s| s.p99);
        v.swap_remove(v.len() / 2)
    };
    let (r, h, l) = (median(remote), median(held), median(local));
    let met = if r.p99 <= Duration::from_micros(50) { "met" } else { "NOT met" };
    println!(
        "| L1 permit round trip (acquire + release), {n} × {passes} passes, median pass | p50 µs | p99 µs | p99.9 µs |"
    );
    println!("|---|---|---|---|");
    println!(
        "| over the Unix socket, server in another process: a pass (unlimited domain, nothing released) | {} | {} | {} |",
        us(r.p50),
        us(r.p99),
        us(r.p999)
    );
    println!(
        "| over the Unix socket: a held permit and its release line (domain with a concurrency limit) | {} | {} | {} |",
        us(h.p50),
        us(h.p99),
        us(h.p999)
    );
    println!("| in-process baseline | {} | {} | {} |", us(l.p50), us(l.p99), us(l.p999));
    println!(
        "| socket / in-process | {:.1}× | {:.1}× | {:.1}× |",
        r.p50.as_secs_f64() / l.p50.as_secs_f64().max(1e-9),
        r.p99.as_secs_f64() / l.p99.as_secs_f64().max(1e-9),
        r.p999.as_secs_f64() / l.p999.as_secs_f64().max(1e-9)
    );
    println!();
    let held_met = if h.p99 <= Duration::from_micros(50) { "met" } else { "NOT met" };
    println!(
        "target p99 ≤ 50 µs over the socket: {met} for a pass ({} µs), {held_met} for a held permit ({} µs)",
        us(r.p99),
        us(h.p99)
    );
}
