//! Data-layer benchmarks of the SHA merge (plain `fn main`, no criterion; run
//! with `cargo bench -p dc-core --bench merge`, or `scripts/bench.sh`).
//!
//! Every measurement is compared with a baseline measured IN THE SAME RUN on
//! the same rows, and the ratio is printed next to the target from our issues:
//!
//! * A1 first merge into PostgreSQL (`merge::merge`, without and with a change
//!   feed) vs a raw binary COPY of the same rows — target ≥ 50 % of COPY.
//! * A2 re-merge (10 % changed, 5 % removed, 85 % unchanged, full snapshot) vs
//!   the same COPY — target ≥ 25 %; also checks that `n_tup_upd` grew by exactly
//!   the number of changed rows (unchanged rows cause no writes).
//! * A3 first merge into SQLite vs a bare prepared-insert loop in one
//!   transaction into an identical table — target ≥ 40 %.
//! * A4 row hashing (`hash::bulk_hash`) vs `openssl speed -evp sha256` at the
//!   average encoded row size — target ≥ 70 %.
//!
//! Environment: `DC_BENCH_ROWS` (default 1 000 000), `DC_BENCH_REPS` (default
//! 3; the median is reported), `DC_BENCH_SQLITE_ROWS` (rows for the SQLite
//! part, default 200 000, at most `DC_BENCH_ROWS`), `DC_BENCH_SQLITE_PIN`
//! (default 1: the SQLite part runs in a child process pinned to one CPU with
//! `taskset`), `DC_BENCH_PG_ADMIN_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `DC_BENCH_ONLY` (comma list
//! of `pg`, `sqlite`, `hash`), `DC_BENCH_PG_LOG_DURATIONS=1` (diagnostic: the
//! scratch database logs every statement's duration, and with auto_explain the
//! plans of statements over 1 s, to the server log; slows the PG part),
//! `DC_BENCH_PG_WORK_MEM` (what-if: e.g. `256MB` for the scratch database). When
//! PostgreSQL is unreachable the PG parts are skipped with the reason; the
//! others still run.

#![allow(clippy::too_many_arguments, clippy::type_complexity)]

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use dc_core::enums::UnicodeForm;
use dc_core::hash::{self, Cell};
use dc_core::merge::{self, MergeRequest, PreparedRows, pgcopy};
use dc_core::{Database, Settings, apps, runs};
use dc_plugin_api::{ColumnType, MergeSummary, TableDecl};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Connection, Row};

const DEFAULT_ROWS: usize = 1_000_000;
const DEFAULT_REPS: usize = 3;
const DEFAULT_SQLITE_ROWS: usize = 200_000;
/// Set in the pinned child process that runs the SQLite part.
const SQLITE_CHILD_ENV: &str = "DC_BENCH_SQLITE_CHILD";
const TABLE: &str = "bench_items";
const FORM: UnicodeForm = UnicodeForm::Nfc;

// ---------------------------------------------------------------- rows ----

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
    "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "steel", "copper", "linen", "walnut", "granite", "amber", "cobalt", "velvet", "canvas", "bamboo",
    "marble", "cedar", "indigo", "saffron", "compact", "deluxe", "classic", "outdoor", "premium", "portable",
    "wireless", "organic",
];
const CATEGORIES: &[&str] = &[
    "kitchen", "garden", "tools", "toys", "books", "office", "outdoor", "audio", "lighting", "storage", "textiles",
    "sports",
];

/// splitmix64: deterministic, seedable, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn words(&mut self, min_len: usize) -> String {
        let mut s = String::with_capacity(min_len + 12);
        while s.len() < min_len {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(WORDS[self.below(WORDS.len())]);
        }
        s
    }
}

fn decl(name: &str) -> TableDecl {
    serde_json::from_value(json!({
        "name": name,
        "key": ["sku"],
        "columns": [
            {"name": "sku", "type": "text", "nullable": false},
            {"name": "title", "type": "text"},
            {"name": "description", "type": "text"},
            {"name": "category", "type": "text"},
            {"name": "price", "type": "real"},
            {"name": "stock", "type": "integer"},
            {"name": "active", "type": "boolean"},
            {"name": "rating", "type": "real"},
            {"name": "vendor_id", "type": "integer"},
            {"name": "updated_at", "type": "timestamp"}
        ]
    }))
    .expect("the bench table declaration parses")
}

/// Row `i` as a plugin would deliver it (JSON object). `changed` alters price
/// and stock, so its hash differs while the key stays.
fn row(i: u64, changed: bool) -> Map<String, Value> {
    let mut r = Rng(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xDC);
    let title = r.words(44);
    let description = r.words(84);
    let category = CATEGORIES[r.below(CATEGORIES.len())];
    let mut price = (r.next() % 100_000) as f64 / 100.0;
    let mut stock = (r.next() % 1000) as i64;
    let active = !r.next().is_multiple_of(10);
    let rating = (r.next() % 50) as f64 / 10.0;
    let vendor_id = (r.next() % 5000) as i64;
    let ts = 1_767_225_600 + (r.next() % 31_536_000) as i64; // during 2026
    if changed {
        price += 1.0;
        stock += 1;
    }
    let updated_at =
        DateTime::<Utc>::from_timestamp(ts, 0).expect("timestamp in range").to_rfc3339_opts(SecondsFormat::Secs, true);
    match json!({
        "sku": format!("SKU-{i:09}"),
        "title": title,
        "description": description,
        "category": category,
        "price": price,
        "stock": stock,
        "active": active,
        "rating": rating,
        "vendor_id": vendor_id,
        "updated_at": updated_at,
    }) {
        Value::Object(m) => m,
        _ => unreachable!("json! object"),
    }
}

/// The re-merge snapshot: row i with i % 20 ∈ {0, 1} changed (10 %), i % 20 == 2
/// removed (5 %), the rest unchanged (85 %).
fn snapshot_rows(n: usize) -> (Vec<Map<String, Value>>, u64, u64) {
    let (mut changed, mut removed) = (0u64, 0u64);
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        match i % 20 {
            0 | 1 => {
                changed += 1;
                out.push(row(i, true));
            }
            2 => removed += 1,
            _ => out.push(row(i, false)),
        }
    }
    (out, changed, removed)
}

/// Bytes of one cell's value as stored (text bytes, 8 for numbers/timestamps, 1 for booleans).
fn value_bytes(c: &Cell) -> usize {
    match c {
        Cell::Null => 0,
        Cell::Text(s) => s.len(),
        Cell::Int(_) | Cell::Real(_) | Cell::Timestamp(_) => 8,
        Cell::Bool(_) => 1,
        Cell::Json(v) => v.to_string().len(),
    }
}

/// The exact byte string `hash::row_hash` feeds to SHA-256.
fn hash_input(names: &[&str], cells: &[Cell]) -> Vec<u8> {
    dc_core::hash::RowHasher::new(names, UnicodeForm::Nfc).encode(cells).to_vec()
}

// ------------------------------------------------------------- results ----

struct Line {
    bench: &'static str,
    what: String,
    n: usize,
    secs: f64,
    throughput: String,
    baseline: String,
    ratio: Option<f64>,
    target: Option<f64>,
}

impl Line {
    fn verdict(&self) -> &'static str {
        match (self.ratio, self.target) {
            (Some(r), Some(t)) if r >= t => "yes",
            (Some(_), Some(_)) => "**no**",
            _ => "(info)",
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

fn rate(rows: usize, secs: f64) -> String {
    format!("{:.0} rows/s", rows as f64 / secs)
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB/s", bytes / 1e6)
}

fn print_table(lines: &[Line]) {
    println!();
    println!("| Bench | Measured | Rows | Median time | Throughput | Baseline (same run) | Ratio | Target | Met |");
    println!("|---|---|---:|---:|---:|---|---:|---:|---|");
    for l in lines {
        println!(
            "| {} | {} | {} | {:.3} s | {} | {} | {} | {} | {} |",
            l.bench,
            l.what,
            l.n,
            l.secs,
            l.throughput,
            l.baseline,
            l.ratio.map(|r| format!("{:.0} %", r * 100.0)).unwrap_or_else(|| "–".into()),
            l.target.map(|t| format!("≥ {:.0} %", t * 100.0)).unwrap_or_else(|| "–".into()),
            l.verdict()
        );
    }
    println!();
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[merge-bench {}] {}", Utc::now().format("%H:%M:%S"), msg.as_ref());
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn enabled(part: &str) -> bool {
    match std::env::var("DC_BENCH_ONLY") {
        Ok(v) if !v.trim().is_empty() => v.split(',').any(|p| p.trim() == part),
        _ => true,
    }
}

// ---------------------------------------------------------- PostgreSQL ----

fn pg_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "TEXT",
        ColumnType::Integer => "BIGINT",
        ColumnType::Real => "DOUBLE PRECISION",
        ColumnType::Boolean => "BOOLEAN",
        ColumnType::Json => "JSONB",
        ColumnType::Timestamp => "TIMESTAMPTZ",
        other => panic!("the benchmark table uses no {other:?} column"),
    }
}

fn col_list(d: &TableDecl) -> String {
    d.columns.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ")
}

async fn pg_exec(pool: &sqlx::PgPool, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(sql)).execute(pool).await.map(|_| ())
}

/// Flushes pending stats (CHECKPOINT too, so no checkpoint lands inside a timed region).
async fn pg_quiesce(pool: &sqlx::PgPool) {
    let _ = pg_exec(pool, "CHECKPOINT").await;
}

/// (n_tup_ins, n_tup_upd, n_tup_del) of a table. The pool has ONE connection,
/// the one the merge ran on, so `pg_stat_force_next_flush()` flushes exactly
/// the merge's pending counters (PostgreSQL 15+); then we poll until the
/// counters reach `expect_upd` or stop moving.
async fn pg_tup_stats(
    pool: &sqlx::PgPool,
    table: &str,
    expect_upd: Option<i64>,
) -> Result<(i64, i64, i64), sqlx::Error> {
    let _ = pg_exec(pool, "SELECT pg_stat_force_next_flush()").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = (-1, -1, -1);
    loop {
        pg_exec(pool, "SELECT pg_stat_clear_snapshot()").await?;
        let r = sqlx::query(
            "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = $1",
        )
        .bind(table)
        .fetch_optional(pool)
        .await?;
        let now = match r {
            Some(r) => (r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?, r.try_get::<i64, _>(2)?),
            None => (0, 0, 0),
        };
        let reached = expect_upd.is_none_or(|e| now.1 == e);
        if (reached && now == last) || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Encodes `cells` (+ optional key/hash text) as binary COPY and sends it, like the merge does.
async fn pg_copy(
    pool: &sqlx::PgPool,
    stmt: &str,
    cells: &[Vec<Cell>],
    extra: Option<(&[String], &[String])>,
) -> Result<u64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut copy = conn.copy_in_raw(stmt).await?;
    let mut buf = Vec::with_capacity(1 << 20);
    pgcopy::header(&mut buf);
    for (i, c) in cells.iter().enumerate() {
        match extra {
            Some((k, h)) => pgcopy::tuple(&mut buf, c, &[&k[i], &h[i]]),
            None => pgcopy::tuple(&mut buf, c, &[]),
        }
        if buf.len() >= 4 << 20 {
            copy.send(std::mem::take(&mut buf)).await?;
        }
    }
    pgcopy::trailer(&mut buf);
    copy.send(buf).await?;
    copy.finish().await
}

struct PgTimes {
    copy_plain: Vec<f64>,
    copy_ident: Vec<f64>,
    first: [Vec<f64>; 2],
    remerge: [Vec<f64>; 2],
    upd_checks: Vec<String>,
    upd_ok: bool,
}

async fn pg_bench(
    url: &str,
    reps: usize,
    rows: &[Map<String, Value>],
    snap: &[Map<String, Value>],
    changed: u64,
    removed: u64,
    p: &PreparedRows,
) -> Result<PgTimes, String> {
    let mut settings = Settings::default();
    settings.database.max_connections = 1;
    let db = Database::connect_url(url, &settings).await.map_err(|e| e.to_string())?;
    db.migrate().await.map_err(|e| e.to_string())?;
    let Database::Postgres(pool) = &db else { return Err("not a PostgreSQL pool".into()) };
    let e = |e: sqlx::Error| e.to_string();
    let d = decl(TABLE);
    let n = rows.len();

    apps::ensure_app(&db, "bench", "bench", "merge", "scraper", "merge benchmark").await.map_err(|e| e.to_string())?;
    let app_id = apps::app_id_for("bench", "bench", "merge");

    // baseline tables: declared columns only, no constraints ("plain"), and the
    // merge's own DDL (same columns + _row_key UNIQUE + _row_hash ...)
    let plain_cols: Vec<String> = d
        .columns
        .iter()
        .map(|c| format!("\"{}\" {}{}", c.name, pg_type(c.ty), if c.nullable { "" } else { " NOT NULL" }))
        .collect();
    let ident = decl("bench_copy_ident");
    let copy_plain_sql = format!("COPY bench_copy_plain ({}) FROM STDIN (FORMAT binary)", col_list(&d));
    let copy_ident_sql =
        format!("COPY bench_copy_ident ({}, _row_key, _row_hash) FROM STDIN (FORMAT binary)", col_list(&d));

    let mut t = PgTimes {
        copy_plain: vec![],
        copy_ident: vec![],
        first: [vec![], vec![]],
        remerge: [vec![], vec![]],
        upd_checks: vec![],
        upd_ok: true,
    };
    for rep in 0..reps {
        // --- COPY baselines
        pg_exec(pool, "DROP TABLE IF EXISTS bench_copy_plain").await.map_err(e)?;
        pg_exec(pool, &format!("CREATE TABLE bench_copy_plain ({})", plain_cols.join(", "))).await.map_err(e)?;
        pg_quiesce(pool).await;
        let t0 = Instant::now();
        let copied = pg_copy(pool, &copy_plain_sql, &p.cells, None).await.map_err(e)?;
        t.copy_plain.push(t0.elapsed().as_secs_f64());
        assert_eq!(copied as usize, n, "COPY loaded every row");
        log(format!("rep {rep}: COPY plain {:.2}s", t.copy_plain[rep]));
        pg_exec(pool, "DROP TABLE bench_copy_plain").await.map_err(e)?;

        pg_exec(pool, "DROP TABLE IF EXISTS bench_copy_ident").await.map_err(e)?;
        merge::ensure_table(&db, &app_id, &ident).await.map_err(|e| e.to_string())?;
        pg_quiesce(pool).await;
        let t0 = Instant::now();
        pg_copy(pool, &copy_ident_sql, &p.cells, Some((&p.keys, &p.hashes))).await.map_err(e)?;
        t.copy_ident.push(t0.elapsed().as_secs_f64());
        log(format!("rep {rep}: COPY identical DDL {:.2}s", t.copy_ident[rep]));
        pg_exec(pool, "DROP TABLE bench_copy_ident").await.map_err(e)?;

        // --- merges: variant 0 without change feed, 1 with
        for (v, feed) in [false, true].into_iter().enumerate() {
            pg_exec(pool, &format!("DROP TABLE IF EXISTS {TABLE}")).await.map_err(e)?;
            pg_exec(pool, "TRUNCATE run_changes").await.map_err(e)?;
            merge::ensure_table(&db, &app_id, &d).await.map_err(|e| e.to_string())?;
            let rid = if feed {
                Some(
                    runs::create(
                        &db,
                        &runs::NewRun {
                            app_id: &app_id,
                            plugin_version: "1.0.0",
                            plugin_hash: "bench",
                            args: "{}",
                            threads: 1,
                            host_name: "bench",
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                )
            } else {
                None
            };
            let req = MergeRequest {
                app_id: &app_id,
                runtime_id: rid.as_deref(),
                decl: &d,
                full_snapshot: true,
                form: FORM,
                archive_missing: false,
            };
            pg_quiesce(pool).await;
            let t0 = Instant::now();
            let s = merge::merge(&db, req, rows).await.map_err(|e| e.to_string())?;
            t.first[v].push(t0.elapsed().as_secs_f64());
            check(&s, n as u64, 0, 0, 0)?;
            log(format!("rep {rep}: first merge (feed: {feed}) {:.2}s", t.first[v][rep]));

            let before = pg_tup_stats(pool, TABLE, None).await.map_err(e)?;
            pg_quiesce(pool).await;
            let t0 = Instant::now();
            let s = merge::merge(&db, req, snap).await.map_err(|e| e.to_string())?;
            t.remerge[v].push(t0.elapsed().as_secs_f64());
            check(&s, 0, changed, removed, n as u64 - changed - removed)?;
            let after = pg_tup_stats(pool, TABLE, Some(before.1 + changed as i64)).await.map_err(e)?;
            let (d_upd, d_del, d_ins) = (after.1 - before.1, after.2 - before.2, after.0 - before.0);
            let ok = d_upd == changed as i64 && d_del == removed as i64 && d_ins == 0;
            t.upd_ok &= ok;
            t.upd_checks.push(format!(
                "rep {rep} feed={feed}: n_tup_upd +{d_upd} (expected +{changed}), n_tup_del +{d_del} (expected +{removed}), n_tup_ins +{d_ins} (expected +0) → {}",
                if ok { "OK" } else { "MISMATCH" }
            ));
            log(format!(
                "rep {rep}: re-merge (feed: {feed}) {:.2}s; {}",
                t.remerge[v][rep],
                t.upd_checks.last().map(String::as_str).unwrap_or("")
            ));
        }
        pg_exec(pool, &format!("DROP TABLE IF EXISTS {TABLE}")).await.map_err(e)?;
        pg_exec(pool, "TRUNCATE run_changes").await.map_err(e)?;
    }
    db.close().await;
    Ok(t)
}

fn check(s: &MergeSummary, ins: u64, upd: u64, del: u64, unch: u64) -> Result<(), String> {
    if (s.inserted, s.updated, s.deleted, s.unchanged) != (ins, upd, del, unch) {
        return Err(format!(
            "merge summary {s:?} differs from expected inserted {ins}, updated {upd}, deleted {del}, unchanged {unch}"
        ));
    }
    Ok(())
}

async fn pg_part(
    reps: usize,
    rows: &[Map<String, Value>],
    snap: &[Map<String, Value>],
    changed: u64,
    removed: u64,
    p: &PreparedRows,
    lines: &mut Vec<Line>,
    notes: &mut Vec<String>,
) {
    let admin =
        std::env::var("DC_BENCH_PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let reachable = tokio::time::timeout(Duration::from_secs(5), sqlx::postgres::PgConnection::connect(&admin)).await;
    match reachable {
        Ok(Ok(c)) => {
            let _ = c.close().await;
        }
        Ok(Err(err)) => {
            let msg = format!("PostgreSQL parts SKIPPED: cannot connect to {admin}: {err}");
            log(&msg);
            notes.push(msg);
            return;
        }
        Err(_) => {
            let msg = format!("PostgreSQL parts SKIPPED: connecting to {admin} timed out after 5 s");
            log(&msg);
            notes.push(msg);
            return;
        }
    }
    let url = match dc_core::db::create_scratch_postgres(&admin, "dc_bench").await {
        Ok(u) => u,
        Err(err) => {
            let msg = format!("PostgreSQL parts SKIPPED: cannot create a scratch database: {err}");
            log(&msg);
            notes.push(msg);
            return;
        }
    };
    log(format!("PostgreSQL scratch database {}", dc_core::settings::redact_url(&url)));
    let name = sqlx::postgres::PgConnectOptions::from_str(&url).ok().and_then(|o| o.get_database().map(str::to_string));
    // diagnostic: have the server log every statement's duration (server log file)
    if std::env::var("DC_BENCH_PG_LOG_DURATIONS").is_ok_and(|v| v == "1")
        && let (Some(name), Ok(mut c)) = (&name, sqlx::postgres::PgConnection::connect(&admin).await)
    {
        for setting in [
            "log_min_duration_statement = 0",
            "session_preload_libraries = 'auto_explain'",
            "auto_explain.log_min_duration = 1000",
            "auto_explain.log_analyze = on",
            "auto_explain.log_timing = off",
        ] {
            let sql = format!("ALTER DATABASE \"{name}\" SET {setting}");
            if let Err(err) = sqlx::query(AssertSqlSafe(sql)).execute(&mut c).await {
                log(format!("cannot set {setting}: {err}"));
            }
        }
        let _ = c.close().await;
    }
    // what-if diagnostic: a different work_mem for the scratch database
    if let Ok(wm) = std::env::var("DC_BENCH_PG_WORK_MEM")
        && let (Some(name), Ok(mut c)) = (&name, sqlx::postgres::PgConnection::connect(&admin).await)
    {
        let ok = wm.chars().all(|ch| ch.is_ascii_alphanumeric());
        let sql = format!("ALTER DATABASE \"{name}\" SET work_mem = '{wm}'");
        match if ok { sqlx::query(AssertSqlSafe(sql)).execute(&mut c).await.map(|_| ()) } else { Ok(()) } {
            Ok(()) if ok => {
                notes.push(format!("WHAT-IF run: the scratch database has work_mem = {wm} (DC_BENCH_PG_WORK_MEM)"))
            }
            Ok(()) => log(format!("ignoring DC_BENCH_PG_WORK_MEM={wm:?} (use e.g. 256MB)")),
            Err(err) => log(format!("cannot set work_mem: {err}")),
        }
        let _ = c.close().await;
    }
    let result = pg_bench(&url, reps, rows, snap, changed, removed, p).await;
    // drop the scratch database whatever happened
    if let (Some(name), Ok(mut c)) = (name, sqlx::postgres::PgConnection::connect(&admin).await) {
        let dropped = sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
            .execute(&mut c)
            .await;
        if let Err(err) = dropped {
            log(format!("could not drop scratch database {name}: {err}"));
        }
        let _ = c.close().await;
    }
    let t = match result {
        Ok(t) => t,
        Err(err) => {
            let msg = format!("PostgreSQL benchmark FAILED: {err}");
            log(&msg);
            notes.push(msg);
            return;
        }
    };
    let n = rows.len();
    let copy = median(t.copy_plain.clone());
    let ident = median(t.copy_ident.clone());
    let base = format!("COPY binary, plain table: {:.3} s, {}", copy, rate(n, copy));
    lines.push(Line {
        bench: "A1 PG first merge",
        what: "COPY into merge DDL (+_row_key/_row_hash, UNIQUE), keys+hashes precomputed".into(),
        n,
        secs: ident,
        throughput: rate(n, ident),
        baseline: base.clone(),
        ratio: Some(copy / ident),
        target: None,
    });
    for (v, label) in [(0, "merge::merge, no change feed"), (1, "merge::merge, with change feed (runtime id)")] {
        let m = median(t.first[v].clone());
        lines.push(Line {
            bench: "A1 PG first merge",
            what: label.into(),
            n,
            secs: m,
            throughput: rate(n, m),
            baseline: base.clone(),
            ratio: Some(copy / m),
            target: Some(0.50),
        });
    }
    let sn = snap.len();
    for (v, label) in [
        (0, "re-merge 10 % chg / 5 % del / 85 % same, no feed"),
        (1, "re-merge 10 % chg / 5 % del / 85 % same, with feed"),
    ] {
        let m = median(t.remerge[v].clone());
        lines.push(Line {
            bench: "A2 PG re-merge",
            what: label.into(),
            n: sn,
            secs: m,
            throughput: rate(sn, m),
            baseline: base.clone(),
            ratio: Some((sn as f64 / m) / (n as f64 / copy)),
            target: Some(0.25),
        });
    }
    notes.push(format!(
        "A2 n_tup_upd check ({}): {}",
        if t.upd_ok { "PASS — unchanged rows caused no updates" } else { "FAIL" },
        t.upd_checks.join("; ")
    ));
    notes.push(format!(
        "PG samples (s): copy_plain {:?}, copy_ident {:?}, first(no feed) {:?}, first(feed) {:?}, remerge(no feed) {:?}, remerge(feed) {:?}",
        round(&t.copy_plain),
        round(&t.copy_ident),
        round(&t.first[0]),
        round(&t.first[1]),
        round(&t.remerge[0]),
        round(&t.remerge[1])
    ));
}

fn round(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}

// -------------------------------------------------------------- SQLite ----

use dc_core::merge::bind_sqlite as bind_cell;

async fn sqlite_db(dir: &std::path::Path, file: &str) -> Result<Database, String> {
    let url = format!("sqlite://{}", dir.join(file).display());
    let db = Database::connect_url(&url, &Settings::default()).await.map_err(|e| e.to_string())?;
    db.migrate().await.map_err(|e| e.to_string())?;
    Ok(db)
}

struct SqliteTimes {
    insert_loop: Vec<f64>,
    first: [Vec<f64>; 2],
    remerge: Vec<f64>,
}

async fn sqlite_bench(
    reps: usize,
    rows: &[Map<String, Value>],
    snap: &[Map<String, Value>],
    changed: u64,
    removed: u64,
    p: &PreparedRows,
) -> Result<SqliteTimes, String> {
    let d = decl(TABLE);
    let n = rows.len();
    let app_id = apps::app_id_for("bench", "bench", "merge");
    let mut t = SqliteTimes { insert_loop: vec![], first: [vec![], vec![]], remerge: vec![] };
    let cols = col_list(&d);
    let ph: Vec<String> = (1..=d.columns.len() + 5).map(|i| format!("${i}")).collect();
    let insert_sql: std::sync::Arc<str> = format!(
        "INSERT INTO \"{TABLE}\" ({cols}, _row_key, _row_hash, _runtime_id, _first_seen, _last_seen) VALUES ({})",
        ph.join(", ")
    )
    .into();
    for rep in 0..reps {
        // --- baseline: identical table (created by ensure_table), bare prepared
        // INSERT loop of the same values in one BEGIN IMMEDIATE transaction
        {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let db = sqlite_db(dir.path(), "raw.db").await?;
            merge::ensure_table(&db, &app_id, &d).await.map_err(|e| e.to_string())?;
            let Database::Sqlite(pool) = &db else { return Err("not SQLite".into()) };
            let now = Utc::now();
            let t0 = Instant::now();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| e.to_string())?;
            for i in 0..n {
                let mut q = sqlx::query(AssertSqlSafe(insert_sql.clone()));
                for c in &p.cells[i] {
                    q = bind_cell(q, c);
                }
                q.bind(p.keys[i].clone())
                    .bind(p.hashes[i].clone())
                    .bind(None::<String>)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().await.map_err(|e| e.to_string())?;
            t.insert_loop.push(t0.elapsed().as_secs_f64());
            log(format!("rep {rep}: SQLite insert loop {:.2}s", t.insert_loop[rep]));
            db.close().await;
        }
        for (v, feed) in [false, true].into_iter().enumerate() {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let db = sqlite_db(dir.path(), "merge.db").await?;
            apps::ensure_app(&db, "bench", "bench", "merge", "scraper", "").await.map_err(|e| e.to_string())?;
            merge::ensure_table(&db, &app_id, &d).await.map_err(|e| e.to_string())?;
            let rid = if feed {
                Some(
                    runs::create(
                        &db,
                        &runs::NewRun {
                            app_id: &app_id,
                            plugin_version: "1.0.0",
                            plugin_hash: "bench",
                            args: "{}",
                            threads: 1,
                            host_name: "bench",
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                )
            } else {
                None
            };
            let req = MergeRequest {
                app_id: &app_id,
                runtime_id: rid.as_deref(),
                decl: &d,
                full_snapshot: true,
                form: FORM,
                archive_missing: false,
            };
            let t0 = Instant::now();
            let s = merge::merge(&db, req, rows).await.map_err(|e| e.to_string())?;
            t.first[v].push(t0.elapsed().as_secs_f64());
            check(&s, n as u64, 0, 0, 0)?;
            log(format!("rep {rep}: SQLite first merge (feed: {feed}) {:.2}s", t.first[v][rep]));
            if !feed {
                let t0 = Instant::now();
                let s = merge::merge(&db, req, snap).await.map_err(|e| e.to_string())?;
                t.remerge.push(t0.elapsed().as_secs_f64());
                check(&s, 0, changed, removed, n as u64 - changed - removed)?;
                log(format!("rep {rep}: SQLite re-merge {:.2}s", t.remerge[rep]));
            }
            db.close().await;
        }
    }
    Ok(t)
}

async fn sqlite_part(
    reps: usize,
    rows: &[Map<String, Value>],
    snap: &[Map<String, Value>],
    changed: u64,
    removed: u64,
    p: &PreparedRows,
    lines: &mut Vec<Line>,
    notes: &mut Vec<String>,
) {
    let t = match sqlite_bench(reps, rows, snap, changed, removed, p).await {
        Ok(t) => t,
        Err(err) => {
            let msg = format!("SQLite benchmark FAILED: {err}");
            log(&msg);
            notes.push(msg);
            return;
        }
    };
    let n = rows.len();
    let base_t = median(t.insert_loop.clone());
    let base = format!("prepared INSERT loop, 1 tx, identical table: {:.3} s, {}", base_t, rate(n, base_t));
    for (v, label) in [(0, "merge::merge, no change feed"), (1, "merge::merge, with change feed (runtime id)")] {
        let m = median(t.first[v].clone());
        lines.push(Line {
            bench: "A3 SQLite first merge",
            what: label.into(),
            n,
            secs: m,
            throughput: rate(n, m),
            baseline: base.clone(),
            ratio: Some(base_t / m),
            target: Some(0.40),
        });
    }
    let sn = snap.len();
    let m = median(t.remerge.clone());
    lines.push(Line {
        bench: "A3 SQLite re-merge",
        what: "re-merge 10 % chg / 5 % del / 85 % same, no feed".into(),
        n: sn,
        secs: m,
        throughput: rate(sn, m),
        baseline: base,
        ratio: Some((sn as f64 / m) / (n as f64 / base_t)),
        target: None,
    });
    notes.push(format!(
        "SQLite samples (s): insert_loop {:?}, first(no feed) {:?}, first(feed) {:?}, remerge(no feed) {:?}",
        round(&t.insert_loop),
        round(&t.first[0]),
        round(&t.first[1]),
        round(&t.remerge)
    ));
}

// ------------------------------------------------------------- hashing ----

/// `openssl speed -evp sha256 -bytes N` in bytes/s (its output is in 1000s of bytes/s).
fn openssl_sha256(bytes: usize, seconds: u32) -> Result<f64, String> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-evp", "sha256", "-bytes", &bytes.to_string(), "-seconds", &seconds.to_string()])
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().rev() {
        let mut f = line.split_whitespace();
        if f.next() == Some("sha256")
            && let Some(v) = f.next_back()
            && let Some(k) = v.strip_suffix('k')
        {
            return k.parse::<f64>().map(|x| x * 1000.0).map_err(|e| format!("cannot parse {v:?}: {e}"));
        }
    }
    Err(format!("no sha256 line in openssl output: {text}{}", String::from_utf8_lossy(&out.stderr)))
}

fn hash_part(reps: usize, p: &PreparedRows, lines: &mut Vec<Line>, notes: &mut Vec<String>) {
    let d = decl(TABLE);
    let names: Vec<&str> = d.columns.iter().map(|c| c.name.as_str()).collect();
    let n = p.cells.len();
    let inputs: Vec<Vec<u8>> = p.cells.iter().map(|c| hash_input(&names, c)).collect();
    for i in (0..n).step_by((n / 1000).max(1)) {
        let mine = hex::encode(Sha256::digest(&inputs[i]));
        assert_eq!(mine, p.hashes[i], "the bench's byte accounting must match hash.rs for row {i}");
    }
    let total: usize = inputs.iter().map(Vec::len).sum();
    let avg = total / n.max(1);
    log(format!("hash input: {n} rows, {total} bytes, {avg} bytes/row on average"));

    let mut bulk = Vec::new();
    let mut raw = Vec::new();
    for rep in 0..reps.max(3) {
        let t0 = Instant::now();
        let hs = hash::bulk_hash(&names, &p.cells, FORM);
        bulk.push(t0.elapsed().as_secs_f64());
        assert_eq!(hs.len(), n);
        std::hint::black_box(hs);
        let t0 = Instant::now();
        let mut acc = 0u8;
        for b in &inputs {
            acc ^= Sha256::digest(b)[0];
        }
        raw.push(t0.elapsed().as_secs_f64());
        std::hint::black_box(acc);
        log(format!("rep {rep}: bulk_hash {:.3}s, sha2 digest of pre-encoded rows {:.3}s", bulk[rep], raw[rep]));
    }
    let openssl = match openssl_sha256(avg, 3) {
        Ok(b) => b,
        Err(err) => {
            let msg = format!("A4 openssl baseline SKIPPED: {err}");
            log(&msg);
            notes.push(msg);
            f64::NAN
        }
    };
    let base = format!("openssl speed -evp sha256 -bytes {avg}: {}", mb(openssl));
    let b = median(bulk.clone());
    let r = median(raw.clone());
    lines.push(Line {
        bench: "A4 row hashing",
        what: "hash::bulk_hash (encode + SHA-256 + hex), bytes = encoded row".into(),
        n,
        secs: b,
        throughput: mb(total as f64 / b),
        baseline: base.clone(),
        ratio: (openssl.is_finite()).then(|| (total as f64 / b) / openssl),
        target: Some(0.70),
    });
    lines.push(Line {
        bench: "A4 row hashing",
        what: "sha2::Sha256::digest of the pre-encoded rows (no encode/hex)".into(),
        n,
        secs: r,
        throughput: mb(total as f64 / r),
        baseline: base,
        ratio: (openssl.is_finite()).then(|| (total as f64 / r) / openssl),
        target: None,
    });
    notes.push(format!("hash samples (s): bulk_hash {:?}, sha2 raw {:?}", round(&bulk), round(&raw)));
}

// ---------------------------------------------------------------- main ----

fn main() {
    let n = env_usize("DC_BENCH_ROWS", DEFAULT_ROWS).max(20);
    let reps = env_usize("DC_BENCH_REPS", DEFAULT_REPS).max(1);
    let started = Instant::now();
    let load_start = loadavg();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(2);
        }
    };

    log(format!("generating {n} rows (deterministic) ..."));
    let rows: Vec<Map<String, Value>> = (0..n as u64).map(|i| row(i, false)).collect();
    let (snap, changed, removed) = snapshot_rows(n);
    let d = decl(TABLE);
    let t0 = Instant::now();
    let p = match merge::prepare_rows(&d, &rows, FORM) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("the generated rows do not validate: {e}");
            std::process::exit(2);
        }
    };
    let prep = t0.elapsed().as_secs_f64();
    let data_bytes: usize = p.cells.iter().flat_map(|r| r.iter().map(value_bytes)).sum();
    let mut notes = vec![
        format!(
            "rows: {n}, 10 columns (4 text, 2 integer, 2 real, boolean, timestamp), {:.0} bytes of values per row on average; re-merge snapshot {} rows ({changed} changed, {removed} removed)",
            data_bytes as f64 / n as f64,
            snap.len()
        ),
        format!(
            "merge::prepare_rows alone (JSON → typed cells, validation, keys, SHA-256): {prep:.3} s = {} (part of every merge time below; the COPY / INSERT baselines start from typed cells)",
            rate(n, prep)
        ),
    ];
    let mut lines = Vec::new();

    if enabled("hash") {
        hash_part(reps, &p, &mut lines, &mut notes);
    }
    if enabled("sqlite") {
        // SQLite uses the first DC_BENCH_SQLITE_ROWS rows of the same data set:
        // a 1M-row single-transaction load takes ~2 min per pass here (see docs)
        let m = env_usize("DC_BENCH_SQLITE_ROWS", DEFAULT_SQLITE_ROWS).clamp(20, n);
        if m < n {
            notes.push(format!(
                "SQLite runs on the first {m} rows (DC_BENCH_SQLITE_ROWS), not {n}: see docs/benchmarks.md"
            ));
        }
        let child = std::env::var_os(SQLITE_CHILD_ENV).is_some();
        let pin = std::env::var("DC_BENCH_SQLITE_PIN").map(|v| v != "0").unwrap_or(true);
        let taskset_ok =
            || std::process::Command::new("taskset").args(["-c", "0", "true"]).status().is_ok_and(|s| s.success());
        match (child, pin) {
            (false, true) if taskset_ok() => {
                // The single-row INSERT baseline does one round trip between the
                // tokio thread and sqlx's SQLite worker thread per row; when the
                // two land on different vCPUs every futex wake-up is slow and the
                // baseline runs up to 5x slower for the whole process (see
                // docs/benchmarks.md). Run the SQLite part in a child pinned to
                // one CPU, so baseline and merge are measured undisturbed.
                log("SQLite part: child process pinned to CPU 0 (taskset -c 0); DC_BENCH_SQLITE_PIN=0 to run it here");
                let status = std::env::current_exe().and_then(|exe| {
                    std::process::Command::new("taskset")
                        .args(["-c", "0"])
                        .arg(exe)
                        .env(SQLITE_CHILD_ENV, "1")
                        .env("DC_BENCH_ONLY", "sqlite")
                        .env("DC_BENCH_ROWS", m.to_string())
                        .env("DC_BENCH_SQLITE_ROWS", m.to_string())
                        .env("DC_BENCH_REPS", reps.to_string())
                        .status()
                });
                match status {
                    Ok(s) if s.success() => notes.push(
                        "A3 (SQLite) ran in a child process pinned to one CPU; its table is printed above".into(),
                    ),
                    other => notes.push(format!("A3 (SQLite) child process FAILED: {other:?}")),
                }
            }
            _ => {
                if !child && pin {
                    notes.push("taskset is unavailable: A3 ran unpinned, its baseline may be distorted".into());
                }
                let (snap_m, changed_m, removed_m) =
                    if m == n { (snap.clone(), changed, removed) } else { snapshot_rows(m) };
                rt.block_on(sqlite_part(reps, &rows[..m], &snap_m, changed_m, removed_m, &p, &mut lines, &mut notes));
            }
        }
    }
    if enabled("pg") {
        rt.block_on(pg_part(reps, &rows, &snap, changed, removed, &p, &mut lines, &mut notes));
    }

    if std::env::var_os(SQLITE_CHILD_ENV).is_some() {
        println!("\n## dc-core merge benchmarks: SQLite part, pinned to CPU 0 (N = {n}, median of {reps} repetitions)");
    } else {
        println!("\n## dc-core merge benchmarks (N = {n}, median of {reps} repetitions)");
    }
    print_table(&lines);
    for note in &notes {
        println!("- {note}");
    }
    let mut cats: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.target.is_some()) {
        let e = cats.entry(l.bench).or_default();
        e.0 += 1;
        e.1 += usize::from(l.verdict() == "yes");
    }
    println!("- targets met: {}", cats.iter().map(|(k, (t, m))| format!("{k} {m}/{t}")).collect::<Vec<_>>().join(", "));
    println!(
        "- total bench wall time: {:.0} s; load average (1/5/15 min) at start {load_start}, at end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}

/// The machine's load average (the box may be shared: report it with the numbers).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
