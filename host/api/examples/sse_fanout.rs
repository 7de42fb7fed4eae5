//! Benchmark (not a test): SSE fan-out of one run's live log to N clients on
//! loopback. For each client count (baseline 1, then the others) a fresh
//! SQLite database, the real API server, N clients reading
//! `GET /api/v1/runs/{id}/events`, and a writer inserting log records at a
//! fixed rate for a fixed time; then the run ends and every stream closes.
//! Reports, per client count: records delivered of those written (per
//! client), records lost to lag, delivery delay (record time to arrival)
//! p50/p99, hubs running (one per run, whatever N), and the process's CPU
//! seconds; ratios against the 1-client baseline. Run by
//! `scripts/bench-sse.sh`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dc_api::ApiState;
use dc_core::access::{AuthFailure, Authenticate, Principal, Role};
use dc_core::enums::RunStatus;
use dc_core::logs::LogRow;
use dc_core::{Database, Settings, apps, logs, runs};
use dc_runtime::HostEnv;
use serde_json::json;

struct OneToken;

impl Authenticate for OneToken {
    fn authenticate<'a>(
        &'a self,
        bearer: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, AuthFailure>> + Send + 'a>> {
        Box::pin(async move {
            if bearer == "bench" {
                Ok(Principal { subject: "bench".into(), role: Role::Viewer })
            } else {
                Err(AuthFailure("unknown token".into()))
            }
        })
    }
}

#[derive(Default)]
struct ClientStats {
    records: u64,
    skipped: u64,
    delays_ms: Vec<f64>,
}

fn cpu_secs() -> f64 {
    // utime + stime of this process, in clock ticks (fields 14 and 15)
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Outcome {
    clients: usize,
    written: u64,
    delivered_min: u64,
    skipped: u64,
    p50: f64,
    p99: f64,
    hubs: usize,
    cpu: f64,
}

async fn one(clients: usize, rate: u64, seconds: u64) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::default();
    settings.general.data_dir = dir.path().to_path_buf();
    // every client uses one token: the per-client rate limit would measure itself
    settings.api.requests_per_second_per_client = 1_000_000;
    settings.api.burst_per_client = 1_000_000;
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let db = Database::connect_url(&url, &settings).await.expect("connect");
    db.migrate().await.expect("migrate");
    apps::ensure_app(&db, "bench", "sse", "fanout", "scraper", "bench").await.expect("app");
    let app_id = apps::app_id_for("bench", "sse", "fanout");
    let run = runs::create(
        &db,
        &runs::NewRun {
            app_id: &app_id,
            plugin_version: "1.0.0",
            plugin_hash: "00",
            args: "{}",
            threads: 1,
            host_name: "bench",
        },
    )
    .await
    .expect("run");
    let env = HostEnv { settings, db: db.clone(), exe: dir.path().join("none") };
    let state = ApiState::new(env, Arc::new(OneToken));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dc_api::serve(listener, state.clone(), async move {
        let _ = stop_rx.await;
    }));

    let http = reqwest::Client::new();
    let mut readers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(clients);
    for _ in 0..clients {
        let mut resp = http
            .get(format!("{base}/api/v1/runs/{run}/events"))
            .bearer_auth("bench")
            .send()
            .await
            .expect("open stream");
        assert_eq!(resp.status().as_u16(), 200);
        let ready = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut s = ClientStats::default();
            let mut buf = String::new();
            let mut announced = false;
            while let Some(chunk) = resp.chunk().await.expect("read") {
                buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
                let mut used = 0;
                while let Some(end) = buf[used..].find("\n\n") {
                    let block = &buf[used..used + end];
                    used += end + 2;
                    let name = block.lines().find_map(|l| l.strip_prefix("event:")).map(str::trim).unwrap_or("");
                    let data = block.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim).unwrap_or("{}");
                    match name {
                        "state" if !announced => {
                            announced = true;
                            let _ = ready.send(()).await;
                        }
                        "log" => {
                            let v: serde_json::Value = serde_json::from_str(data).expect("json");
                            let ts: DateTime<Utc> = v["ts"].as_str().expect("ts").parse().expect("time");
                            s.delays_ms.push((Utc::now() - ts).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                            s.records += 1;
                        }
                        "lagged" => {
                            let v: serde_json::Value = serde_json::from_str(data).expect("json");
                            s.skipped += v["skipped"].as_u64().unwrap_or(0);
                        }
                        _ => {}
                    }
                }
                buf.drain(..used);
            }
            s
        }));
    }
    drop(ready_tx);
    for _ in 0..clients {
        ready_rx.recv().await.expect("every client got its first state");
    }
    let hubs = state.stream_hubs();

    let cpu0 = cpu_secs();
    let started = Instant::now();
    let mut written = 0u64;
    let batch = (rate / 20).max(1); // every 50 ms
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let rows: Vec<LogRow> = (0..batch)
            .map(|i| LogRow {
                ts: Utc::now(),
                level: "INFO".into(),
                target: "bench".into(),
                message: format!("record {}", written + i),
                app_id: Some(app_id.clone()),
                runtime_id: Some(run.clone()),
                context: sqlx::types::Json(json!({"i": written + i})),
            })
            .collect();
        logs::insert_batch(&db, &rows).await.expect("insert");
        written += batch;
    }
    runs::finish(&db, &run, RunStatus::Success, None).await.expect("finish");
    let mut all = ClientStats::default();
    let mut delivered_min = u64::MAX;
    for r in readers {
        let s = r.await.expect("reader");
        delivered_min = delivered_min.min(s.records);
        all.skipped += s.skipped;
        all.delays_ms.extend(s.delays_ms);
    }
    let cpu = cpu_secs() - cpu0;
    let _ = stop_tx.send(());
    server.await.expect("server").expect("serve");
    all.delays_ms.sort_by(f64::total_cmp);
    Outcome {
        clients,
        written,
        delivered_min,
        skipped: all.skipped,
        p50: pct(&all.delays_ms, 0.5),
        p99: pct(&all.delays_ms, 0.99),
        hubs,
        cpu,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: HashMap<String, String> = std::env::args()
        .skip(1)
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|c| (c[0].trim_start_matches("--").to_string(), c.get(1).cloned().unwrap_or_default()))
        .collect();
    let counts: Vec<usize> = args
        .get("clients")
        .map_or("1,10,100", String::as_str)
        .split(',')
        .map(|n| n.parse().expect("--clients 1,10,100"))
        .collect();
    let rate: u64 = args.get("rate").map_or(Ok(200), |v| v.parse()).expect("--rate records/s");
    let seconds: u64 = args.get("seconds").map_or(Ok(10), |v| v.parse()).expect("--seconds");
    println!("SSE fan-out: {rate} log records/s for {seconds} s into one run, clients on loopback");
    println!(
        "| clients | hubs | written | delivered (min per client) | lost to lag (all clients) | delay p50 | delay p99 | CPU s | CPU ÷ baseline | p99 ÷ baseline |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut base: Option<(f64, f64)> = None;
    for n in counts {
        let o = one(n, rate, seconds).await;
        let (bcpu, bp99) = *base.get_or_insert((o.cpu, o.p99));
        println!(
            "| {} | {} | {} | {} | {} | {:.0} ms | {:.0} ms | {:.2} | {:.1} | {:.2} |",
            o.clients,
            o.hubs,
            o.written,
            o.delivered_min,
            o.skipped,
            o.p50,
            o.p99,
            o.cpu,
            o.cpu / bcpu.max(0.01),
            o.p99 / bp99
        );
    }
}
