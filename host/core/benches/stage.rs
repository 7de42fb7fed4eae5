//! How long a merge holds SQLite's write lock: staged (`dc_core::stage`) vs
//! direct (`merge::merge`, which holds the lock for the whole merge), on the
//! same rows in the same run (plain `fn main`; run with
//! `scripts/bench-staged-merge.sh` or `cargo bench -p dc-core --bench stage`).
//!
//! For a first merge of N rows of about 200 bytes and a re-merge of the same
//! rows with 10 % changed and 5 % removed, it prints the direct merge's time
//! (all of it under the lock), the staged merge's staging time (no lock) and
//! apply time (under the lock, commit included), and the ratio of lock time
//! staged / direct. Environment: `DC_BENCH_ROWS` (default 1 000 000).

use std::time::{Duration, Instant};

use dc_core::enums::UnicodeForm;
use dc_core::merge::{self, MergeRequest};
use dc_core::stage::StagedRun;
use dc_core::{Database, Settings, apps};
use dc_plugin_api::TableDecl;
use serde_json::{Map, Value, json};

fn decl(name: &str) -> TableDecl {
    serde_json::from_value(json!({
        "name": name, "key": ["id"],
        "columns": [
            {"name": "id", "type": "integer", "nullable": false},
            {"name": "note", "type": "text"},
            {"name": "n", "type": "integer"}
        ]
    }))
    .expect("declaration")
}

/// Row `i`: about 200 bytes of JSON.
fn row(i: u64, changed: bool) -> Map<String, Value> {
    let v = json!({"id": i, "note": format!("row {i:>12} {:-<170}", if changed { "changed" } else { "" }), "n": i * 7});
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object"),
    }
}

fn req<'a>(app: &'a dc_core::AppId, d: &'a TableDecl) -> MergeRequest<'a> {
    MergeRequest {
        app_id: app,
        runtime_id: None,
        decl: d,
        full_snapshot: true,
        form: UnicodeForm::Nfc,
        archive_missing: false,
        clock: &dc_core::clock::SYSTEM,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("DC_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let db = Database::connect_url(&url, &Settings::default()).await.expect("connect");
    db.migrate().await.expect("migrate");
    apps::ensure_app(&db, "bench", "stage", "app", "scraper", "bench").await.expect("app");
    let app = apps::app_id_for("bench", "stage", "app");
    let Database::Sqlite(pool) = &db else { unreachable!("SQLite") };
    let (direct, staged) = (decl("bench_direct"), decl("bench_staged"));
    for d in [&direct, &staged] {
        merge::ensure_table(&db, &app, d).await.expect("table");
    }
    let first: Vec<_> = (0..n).map(|i| row(i, false)).collect();
    let again: Vec<_> = (0..n).filter(|i| i % 20 != 7).map(|i| row(i, i % 10 == 3)).collect();
    eprintln!("load average {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    println!(
        "| merge ({n} rows of ~200 B, SQLite) | direct: lock held | staged: staging (no lock) | staged: apply (lock held) | lock time staged / direct |"
    );
    println!("|---|---|---|---|---|");
    for (label, rows) in [("first merge", &first), ("re-merge, 10 % changed, 5 % removed", &again)] {
        let t = Instant::now();
        let sd = merge::merge(&db, req(&app, &direct), rows).await.expect("direct merge");
        let direct_time = t.elapsed();
        let t = Instant::now();
        let mut s = StagedRun::open(pool).await.expect("open");
        s.stage(req(&app, &staged), rows).await.expect("stage");
        let staging = t.elapsed();
        let t = Instant::now();
        let (tx, ss) = s.apply().await.expect("apply");
        tx.commit().await.expect("commit");
        let apply = t.elapsed();
        assert_eq!(sd, ss, "{label}: the same counts");
        println!(
            "| {label} | {} | {} | {} | {:.0} % |",
            secs(direct_time),
            secs(staging),
            secs(apply),
            100.0 * apply.as_secs_f64() / direct_time.as_secs_f64()
        );
    }
    eprintln!("load average {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
}
