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
//!   average encoded row size — target ≥ 70 %. `openssl speed` reports bytes
//!   per second of user CPU time, so `bulk_hash` is timed by its thread's CPU
//!   time too (the wall-clock ratio is printed beside it). `bulk_hash` hashes
//!   a cold batch of 1M rows, the worst case; the merge itself hashes each
//!   row right after building its cells, which an info line measures on a
//!   batch that stays in the cache.
//!
//! Method (see "results" below): baseline and subject run pair by pair, the
//! ratio is taken per pair, and pairs repeat until the median ratio is stable
//! or a maximum is reached; the machine load is printed at start and end, and
//! the CPU the rest of the machine used during the pairs is measured, so a
//! result taken on a loaded machine is printed as "noisy", not as a result.
//!
//! Environment: `DC_BENCH_ROWS` (default 1 000 000), `DC_BENCH_REPS` (minimum
//! pairs, default 3), `DC_BENCH_MAX_REPS` (default 10), `DC_BENCH_STABLE_WINDOW`
//! (default 3) and `DC_BENCH_STABLE_SPREAD` (percent, default 10): stable when
//! the last WINDOW ratios lie within SPREAD of their median,
//! `DC_BENCH_NOISE_LOAD` (cores of foreign load above which a result is noisy,
//! default 0.3), `DC_BENCH_OPENSSL_SECONDS` (default 1), `DC_BENCH_SQLITE_ROWS` (rows for the SQLite
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
const DEFAULT_MAX_REPS: usize = 10;
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
//
// Methodology: every targeted quantity is measured in PAIRS: its baseline and
// the subject run back to back (baseline first), and the ratio is taken per
// pair. Pairs are repeated until the ratios are stable — the relative spread
// (max − min) / median of the last `window` ratios is at most `spread` — or
// `max` pairs were run. The reported ratio is the median over all pairs. While
// the pairs run, the CPU time the REST of the machine used is measured
// ("foreign load", in cores: machine busy time from /proc/stat, including
// steal, minus this process, its children and the PostgreSQL server processes
// working for it); a result that did not stabilise, or was measured under a
// foreign load above `noise_load`, is printed as "noisy", not as a result.

/// When to stop repeating, and when a result counts as noise (environment knobs).
#[derive(Debug, Clone, Copy)]
struct Policy {
    /// Minimum pairs (`DC_BENCH_REPS`, default 3).
    min: usize,
    /// Maximum pairs (`DC_BENCH_MAX_REPS`, default 10).
    max: usize,
    /// Ratios the stability test looks at (`DC_BENCH_STABLE_WINDOW`, default 3).
    window: usize,
    /// Largest relative spread of the window that counts as stable
    /// (`DC_BENCH_STABLE_SPREAD`, percent, default 10).
    spread: f64,
    /// Foreign load (cores) above which a result is noise (`DC_BENCH_NOISE_LOAD`, default 0.3).
    noise_load: f64,
}

impl Policy {
    fn from_env() -> Policy {
        let min = env_usize("DC_BENCH_REPS", DEFAULT_REPS).max(1);
        let max = env_usize("DC_BENCH_MAX_REPS", DEFAULT_MAX_REPS).max(min);
        let window = env_usize("DC_BENCH_STABLE_WINDOW", 3).clamp(2, max.max(2));
        let spread = env_f64("DC_BENCH_STABLE_SPREAD", 10.0) / 100.0;
        let noise_load = env_f64("DC_BENCH_NOISE_LOAD", 0.3);
        Policy { min, max, window, spread, noise_load }
    }

    /// True when every series is stable (enough pairs, small spread).
    fn done(&self, series: &[&Series]) -> bool {
        series.iter().all(|s| s.stable(self))
    }

    fn describe(&self) -> String {
        format!(
            "pairs (baseline, subject) repeated until the spread (max − min) / median of the last {} ratios ≤ {:.0} %, at least {} and at most {} pairs; noisy when not stable or the foreign load exceeded {:.2} cores",
            self.window,
            self.spread * 100.0,
            self.min,
            self.max,
            self.noise_load
        )
    }
}

/// One measured quantity: per pair its time, its baseline's time, the ratio
/// and the foreign load during the pair.
#[derive(Debug, Clone, Default)]
struct Series {
    secs: Vec<f64>,
    base: Vec<f64>,
    ratio: Vec<f64>,
    load: Vec<f64>,
}

impl Series {
    fn push(&mut self, secs: f64, base: f64, ratio: f64, load: f64) {
        self.secs.push(secs);
        self.base.push(base);
        self.ratio.push(ratio);
        self.load.push(load);
    }

    fn n(&self) -> usize {
        self.ratio.len()
    }

    /// (max − min) / median of the last `window` ratios.
    fn spread(&self, window: usize) -> f64 {
        if self.ratio.len() < 2 {
            return f64::INFINITY;
        }
        let last = &self.ratio[self.ratio.len().saturating_sub(window)..];
        let (lo, hi) = last.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
        (hi - lo) / median(last.to_vec())
    }

    fn stable(&self, p: &Policy) -> bool {
        self.n() >= p.min.max(p.window) && self.spread(p.window) <= p.spread
    }

    fn ratio(&self) -> f64 {
        median(self.ratio.clone())
    }

    fn mean_load(&self) -> f64 {
        if self.load.is_empty() { f64::NAN } else { self.load.iter().sum::<f64>() / self.load.len() as f64 }
    }
}

struct Line {
    bench: &'static str,
    what: String,
    n: usize,
    series: Series,
    /// Throughput of the median time.
    throughput: String,
    baseline: String,
    target: Option<f64>,
}

impl Line {
    fn verdict(&self, p: &Policy) -> String {
        let Some(t) = self.target else { return "(info)".into() };
        let s = &self.series;
        if s.n() == 0 || !s.ratio().is_finite() {
            return "not measured".into();
        }
        if !s.stable(p) {
            return format!("noisy: not stable after {} pairs", s.n());
        }
        if s.mean_load() > p.noise_load {
            return format!("noisy: foreign load {:.2} cores", s.mean_load());
        }
        if s.ratio() >= t { "yes".into() } else { "**no**".into() }
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

fn pct(x: f64) -> String {
    if x.is_finite() { format!("{:.0} %", x * 100.0) } else { "–".into() }
}

fn print_table(lines: &[Line], p: &Policy) {
    println!();
    println!(
        "| Bench | Measured | Rows | Median time | Throughput | Baseline (same run, median) | Ratio (median) | Spread (last {}) | Pairs | Foreign load | Target | Met |",
        p.window
    );
    println!("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|");
    for l in lines {
        let s = &l.series;
        println!(
            "| {} | {} | {} | {:.3} s | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
            l.bench,
            l.what,
            l.n,
            median(s.secs.clone()),
            l.throughput,
            l.baseline,
            pct(s.ratio()),
            pct(s.spread(p.window)),
            s.n(),
            s.mean_load(),
            l.target.map(|t| format!("≥ {:.0} %", t * 100.0)).unwrap_or_else(|| "–".into()),
            l.verdict(p)
        );
    }
    println!();
}

// ------------------------------------------------------- machine load ----

/// CPU ticks per second in /proc (USER_HZ; 100 on every Linux we run on).
const CLK_TCK: f64 = 100.0;

/// A reading of the machine's CPU counters: busy ticks of all CPUs, and the
/// ticks of this process (with its waited-for children) and of the PostgreSQL
/// server processes that work for it.
#[derive(Debug, Clone, Copy)]
struct CpuSnap {
    at: Instant,
    busy: u64,
    ours: u64,
}

/// The scratch PostgreSQL database of this run (its backends count as ours).
static PG_DB: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn proc_ticks(stat: &str, with_children: bool) -> u64 {
    // fields after "(comm) ": state ppid ... utime(14) stime(15) cutime(16) cstime(17)
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return 0 };
    let f: Vec<u64> = rest.split_whitespace().skip(1).take(14).map(|x| x.parse().unwrap_or(0)).collect();
    if f.len() < 14 {
        return 0;
    }
    f[10] + f[11] + if with_children { f[12] + f[13] } else { 0 }
}

/// Is this PostgreSQL process working for us? The postmaster and its auxiliary
/// processes (WAL writer, checkpointer, autovacuum ...) are; client backends
/// only when connected to our scratch database.
fn pg_process_is_ours(cmdline: &str) -> bool {
    let client = cmdline.contains("127.0.0.1(") || cmdline.contains("[local]") || cmdline.contains("::1(");
    !client || PG_DB.get().is_some_and(|db| cmdline.contains(db.as_str()))
}

fn cpu_snap() -> CpuSnap {
    let at = Instant::now();
    let busy = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_string();
            let f: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
            // user nice system idle iowait irq softirq steal: busy = all but idle and iowait
            Some(f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum())
        })
        .unwrap_or(0);
    let mut ours = std::fs::read_to_string("/proc/self/stat").map(|s| proc_ticks(&s, true)).unwrap_or(0);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let path = e.path();
            let is_pid = e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
            if !is_pid || std::fs::read_to_string(path.join("comm")).map(|c| c.trim() != "postgres").unwrap_or(true) {
                continue;
            }
            let cmd = std::fs::read(path.join("cmdline")).map(|b| String::from_utf8_lossy(&b).into_owned());
            if cmd.is_ok_and(|c| pg_process_is_ours(&c))
                && let Ok(stat) = std::fs::read_to_string(path.join("stat"))
            {
                ours += proc_ticks(&stat, false);
            }
        }
    }
    CpuSnap { at, busy, ours }
}

impl CpuSnap {
    /// Cores the rest of the machine kept busy since `self`.
    fn foreign_since(&self) -> f64 {
        let now = cpu_snap();
        let wall = now.at.duration_since(self.at).as_secs_f64();
        let foreign = now.busy.saturating_sub(self.busy) as f64 - now.ours.saturating_sub(self.ours) as f64;
        if wall <= 0.0 { 0.0 } else { (foreign / CLK_TCK / wall).max(0.0) }
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[merge-bench {}] {}", Utc::now().format("%H:%M:%S"), msg.as_ref());
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
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
    extra: Option<(&[String], &[hash::HexDigest])>,
) -> Result<u64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut copy = conn.copy_in_raw(stmt).await?;
    let mut buf = Vec::with_capacity(1 << 20);
    pgcopy::header(&mut buf);
    for (i, c) in cells.iter().enumerate() {
        match extra {
            Some((k, h)) => pgcopy::tuple(&mut buf, c, &[&k[i], h[i].as_str()]),
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
    copy_ident: Series,
    first: [Series; 2],
    remerge: [Series; 2],
    upd_checks: Vec<String>,
    upd_ok: bool,
}

async fn pg_bench(
    url: &str,
    policy: &Policy,
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
    let sn = snap.len();

    apps::ensure_app(&db, "bench", "bench", "merge", "scraper", "merge benchmark").await.map_err(|e| e.to_string())?;
    let app_id = apps::app_id_for("bench", "bench", "merge");

    // baseline tables: declared columns only, no constraints ("plain"), and the
    // merge's own DDL (same columns + _row_key + _row_hash ..., the key index built after the COPY)
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
        copy_ident: Series::default(),
        first: Default::default(),
        remerge: Default::default(),
        upd_checks: vec![],
        upd_ok: true,
    };
    let mut rep = 0;
    while rep < policy.max
        && !(rep >= policy.min && policy.done(&[&t.first[0], &t.first[1], &t.remerge[0], &t.remerge[1]]))
    {
        let cpu = cpu_snap();
        // --- the baseline of this pair: COPY into a plain table
        pg_exec(pool, "DROP TABLE IF EXISTS bench_copy_plain").await.map_err(e)?;
        pg_exec(pool, &format!("CREATE TABLE bench_copy_plain ({})", plain_cols.join(", "))).await.map_err(e)?;
        pg_quiesce(pool).await;
        let t0 = Instant::now();
        let copied = pg_copy(pool, &copy_plain_sql, &p.cells, None).await.map_err(e)?;
        let copy = t0.elapsed().as_secs_f64();
        t.copy_plain.push(copy);
        assert_eq!(copied as usize, n, "COPY loaded every row");
        pg_exec(pool, "DROP TABLE bench_copy_plain").await.map_err(e)?;

        pg_exec(pool, "DROP TABLE IF EXISTS bench_copy_ident").await.map_err(e)?;
        merge::ensure_table(&db, &app_id, &ident).await.map_err(|e| e.to_string())?;
        pg_quiesce(pool).await;
        let t0 = Instant::now();
        pg_copy(pool, &copy_ident_sql, &p.cells, Some((&p.keys, &p.hashes))).await.map_err(e)?;
        // the key's unique index, built after the rows as a first load builds it
        pg_exec(pool, "CREATE UNIQUE INDEX bench_copy_ident_key ON bench_copy_ident (_row_key)").await.map_err(e)?;
        let copy_ident = t0.elapsed().as_secs_f64();
        pg_exec(pool, "DROP TABLE bench_copy_ident").await.map_err(e)?;

        // --- the subjects: variant 0 without change feed, 1 with
        let mut first = [0.0; 2];
        let mut remerge = [0.0; 2];
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
                runtime_id: rid.as_ref(),
                decl: &d,
                full_snapshot: true,
                form: FORM,
                archive_missing: false,
                clock: &dc_core::clock::SYSTEM,
            };
            pg_quiesce(pool).await;
            let t0 = Instant::now();
            let s = merge::merge(&db, req, rows).await.map_err(|e| e.to_string())?;
            first[v] = t0.elapsed().as_secs_f64();
            check(&s, n as u64, 0, 0, 0)?;

            let before = pg_tup_stats(pool, TABLE, None).await.map_err(e)?;
            pg_quiesce(pool).await;
            let t0 = Instant::now();
            let s = merge::merge(&db, req, snap).await.map_err(|e| e.to_string())?;
            remerge[v] = t0.elapsed().as_secs_f64();
            check(&s, 0, changed, removed, n as u64 - changed - removed)?;
            let after = pg_tup_stats(pool, TABLE, Some(before.1 + changed as i64)).await.map_err(e)?;
            let (d_upd, d_del, d_ins) = (after.1 - before.1, after.2 - before.2, after.0 - before.0);
            let ok = d_upd == changed as i64 && d_del == removed as i64 && d_ins == 0;
            t.upd_ok &= ok;
            t.upd_checks.push(format!(
                "pair {rep} feed={feed}: n_tup_upd +{d_upd} (expected +{changed}), n_tup_del +{d_del} (expected +{removed}), n_tup_ins +{d_ins} (expected +0) → {}",
                if ok { "OK" } else { "MISMATCH" }
            ));
        }
        pg_exec(pool, &format!("DROP TABLE IF EXISTS {TABLE}")).await.map_err(e)?;
        pg_exec(pool, "TRUNCATE run_changes").await.map_err(e)?;
        let load = cpu.foreign_since();
        t.copy_ident.push(copy_ident, copy, copy / copy_ident, load);
        for v in 0..2 {
            t.first[v].push(first[v], copy, copy / first[v], load);
            t.remerge[v].push(remerge[v], copy, (sn as f64 / remerge[v]) / (n as f64 / copy), load);
        }
        log(format!(
            "pair {rep}: COPY {copy:.2}s (merge DDL {copy_ident:.2}s) | first merge {:.2}s = {}, feed {:.2}s = {} | re-merge {:.2}s = {}, feed {:.2}s = {} | foreign load {load:.2} | loadavg {}",
            first[0],
            pct(copy / first[0]),
            first[1],
            pct(copy / first[1]),
            remerge[0],
            pct(t.remerge[0].ratio[rep]),
            remerge[1],
            pct(t.remerge[1].ratio[rep]),
            loadavg()
        ));
        rep += 1;
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
    policy: &Policy,
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
    if let Some(name) = &name {
        let _ = PG_DB.set(name.clone());
    }
    let result = pg_bench(&url, policy, rows, snap, changed, removed, p).await;
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
    let base = format!("COPY binary, plain table: {:.3} s, {}", copy, rate(n, copy));
    let ident = median(t.copy_ident.secs.clone());
    lines.push(Line {
        bench: "A1 PG first merge",
        what: "COPY into merge DDL (+_row_key/_row_hash), then its UNIQUE key index, keys+hashes precomputed".into(),
        n,
        throughput: rate(n, ident),
        series: t.copy_ident,
        baseline: base.clone(),
        target: None,
    });
    for (v, label) in [(0, "merge::merge, no change feed"), (1, "merge::merge, with change feed (runtime id)")] {
        let m = median(t.first[v].secs.clone());
        lines.push(Line {
            bench: "A1 PG first merge",
            what: label.into(),
            n,
            throughput: rate(n, m),
            series: t.first[v].clone(),
            baseline: base.clone(),
            target: Some(0.50),
        });
    }
    let sn = snap.len();
    for (v, label) in [
        (0, "re-merge 10 % chg / 5 % del / 85 % same, no feed"),
        (1, "re-merge 10 % chg / 5 % del / 85 % same, with feed"),
    ] {
        let m = median(t.remerge[v].secs.clone());
        lines.push(Line {
            bench: "A2 PG re-merge",
            what: label.into(),
            n: sn,
            throughput: rate(sn, m),
            series: t.remerge[v].clone(),
            baseline: base.clone(),
            target: Some(0.25),
        });
    }
    notes.push(format!(
        "A2 n_tup_upd check ({}): {}",
        if t.upd_ok { "PASS — unchanged rows caused no updates" } else { "FAIL" },
        t.upd_checks.join("; ")
    ));
    notes.push(format!(
        "PG samples (s): copy_plain {:?}, first(no feed) {:?}, first(feed) {:?}, remerge(no feed) {:?}, remerge(feed) {:?}; foreign load per pair {:?}",
        round(&t.copy_plain),
        round(&t.first[0].secs),
        round(&t.first[1].secs),
        round(&t.remerge[0].secs),
        round(&t.remerge[1].secs),
        round(&t.first[0].load)
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
    first: [Series; 2],
    remerge: Series,
}

async fn sqlite_bench(
    policy: &Policy,
    rows: &[Map<String, Value>],
    snap: &[Map<String, Value>],
    changed: u64,
    removed: u64,
    p: &PreparedRows,
) -> Result<SqliteTimes, String> {
    let d = decl(TABLE);
    let n = rows.len();
    let sn = snap.len();
    let app_id = apps::app_id_for("bench", "bench", "merge");
    let mut t = SqliteTimes { insert_loop: vec![], first: Default::default(), remerge: Series::default() };
    let cols = col_list(&d);
    let ph: Vec<String> = (1..=d.columns.len() + 5).map(|i| format!("${i}")).collect();
    let insert_sql: std::sync::Arc<str> = format!(
        "INSERT INTO \"{TABLE}\" ({cols}, _row_key, _row_hash, _runtime_id, _first_seen, _last_seen) VALUES ({})",
        ph.join(", ")
    )
    .into();
    let mut rep = 0;
    while rep < policy.max && !(rep >= policy.min && policy.done(&[&t.first[0], &t.first[1]])) {
        let cpu = cpu_snap();
        // --- baseline: identical table (created by ensure_table), bare prepared
        // INSERT loop of the same values in one BEGIN IMMEDIATE transaction
        let base = {
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
                    .bind(p.hashes[i].as_str())
                    .bind(None::<String>)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().await.map_err(|e| e.to_string())?;
            let secs = t0.elapsed().as_secs_f64();
            db.close().await;
            secs
        };
        t.insert_loop.push(base);
        let mut first = [0.0; 2];
        let mut remerge = 0.0;
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
                runtime_id: rid.as_ref(),
                decl: &d,
                full_snapshot: true,
                form: FORM,
                archive_missing: false,
                clock: &dc_core::clock::SYSTEM,
            };
            let t0 = Instant::now();
            let s = merge::merge(&db, req, rows).await.map_err(|e| e.to_string())?;
            first[v] = t0.elapsed().as_secs_f64();
            check(&s, n as u64, 0, 0, 0)?;
            if !feed {
                let t0 = Instant::now();
                let s = merge::merge(&db, req, snap).await.map_err(|e| e.to_string())?;
                remerge = t0.elapsed().as_secs_f64();
                check(&s, 0, changed, removed, n as u64 - changed - removed)?;
            }
            db.close().await;
        }
        let load = cpu.foreign_since();
        for (series, secs) in t.first.iter_mut().zip(first) {
            series.push(secs, base, base / secs, load);
        }
        t.remerge.push(remerge, base, (sn as f64 / remerge) / (n as f64 / base), load);
        log(format!(
            "pair {rep}: SQLite insert loop {base:.2}s | first merge {:.2}s = {}, feed {:.2}s = {} | re-merge {remerge:.2}s | foreign load {load:.2} | loadavg {}",
            first[0],
            pct(base / first[0]),
            first[1],
            pct(base / first[1]),
            loadavg()
        ));
        rep += 1;
    }
    Ok(t)
}

async fn sqlite_part(
    policy: &Policy,
    rows: &[Map<String, Value>],
    snap: &[Map<String, Value>],
    changed: u64,
    removed: u64,
    p: &PreparedRows,
    lines: &mut Vec<Line>,
    notes: &mut Vec<String>,
) {
    let t = match sqlite_bench(policy, rows, snap, changed, removed, p).await {
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
        let m = median(t.first[v].secs.clone());
        lines.push(Line {
            bench: "A3 SQLite first merge",
            what: label.into(),
            n,
            throughput: rate(n, m),
            series: t.first[v].clone(),
            baseline: base.clone(),
            target: Some(0.40),
        });
    }
    let sn = snap.len();
    let m = median(t.remerge.secs.clone());
    lines.push(Line {
        bench: "A3 SQLite re-merge",
        what: "re-merge 10 % chg / 5 % del / 85 % same, no feed".into(),
        n: sn,
        throughput: rate(sn, m),
        series: t.remerge.clone(),
        baseline: base,
        target: None,
    });
    notes.push(format!(
        "SQLite samples (s): insert_loop {:?}, first(no feed) {:?}, first(feed) {:?}, remerge(no feed) {:?}; foreign load per pair {:?}",
        round(&t.insert_loop),
        round(&t.first[0].secs),
        round(&t.first[1].secs),
        round(&t.remerge.secs),
        round(&t.first[0].load)
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

/// CPU time this thread has run, in seconds (`/proc/thread-self/schedstat`,
/// nanoseconds; `None` where the kernel does not provide it).
fn thread_cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// This thread's user and system CPU seconds (`getrusage(RUSAGE_THREAD)`).
/// The kernel splits the precise run time between the two by tick samples,
/// like the `times()` that `openssl speed` reads.
#[allow(unsafe_code)]
fn thread_user_sys_secs() -> Option<(f64, f64)> {
    // SAFETY: getrusage writes one `rusage` into the zeroed value it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return None;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some((s(ru.ru_utime), s(ru.ru_stime)))
}

/// What [`timed`] measured, in seconds.
struct Took {
    wall: f64,
    /// This thread's CPU time, user + system (falls back to `wall`).
    cpu: f64,
    /// The system share of `cpu` (page faults, mostly), by `getrusage`.
    sys: Option<f64>,
}

/// Runs `f` and returns what it took: wall clock, CPU, and the system share.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Took) {
    let (c0, r0, t0) = (thread_cpu_secs(), thread_user_sys_secs(), Instant::now());
    let out = f();
    let (wall, c1, r1) = (t0.elapsed().as_secs_f64(), thread_cpu_secs(), thread_user_sys_secs());
    let cpu = match (c0, c1) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall,
    };
    let sys = match (r0, r1) {
        (Some((_, a)), Some((_, b))) => Some((b - a).max(0.0)),
        _ => None,
    };
    (out, Took { wall, cpu, sys })
}

/// Rows of the warm-cache hashing line: about 0.5 MB of cells and texts.
const WARM_ROWS: usize = 1_000;

fn hash_part(policy: &Policy, p: &PreparedRows, lines: &mut Vec<Line>, notes: &mut Vec<String>) {
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
    let secs = env_usize("DC_BENCH_OPENSSL_SECONDS", 1).max(1) as u32;
    let cpu_clock = thread_cpu_secs().is_some();

    // `openssl speed` divides by its user CPU time (its default; `-elapsed`
    // would use the wall clock), so the subject is timed by its thread's CPU
    // time too: like for like, and a busy machine does not bias the ratio
    // against the subject. The wall-clock ratio is kept as an info line.
    let (mut bulk, mut bulk_wall, mut raw) = (Series::default(), Series::default(), Series::default());
    let mut plain_series = Series::default();
    // the merge's own case: it hashes each row right after building its cells,
    // so they are in the cache; here a batch small enough to stay there is
    // hashed again and again (as many rows in all as the cold batch)
    let warm_rows = &p.cells[..n.min(WARM_ROWS)];
    let warm_passes = (n / warm_rows.len().max(1)).max(1);
    let warm_bytes = inputs[..warm_rows.len()].iter().map(Vec::len).sum::<usize>() * warm_passes;
    let mut warm_series = Series::default();
    let mut openssl_rates = Vec::new();
    let mut rep = 0;
    while rep < policy.max && !(rep >= policy.min && policy.done(&[&bulk])) {
        let cpu = cpu_snap();
        // the baseline of this pair, in a child process (its CPU time counts as ours)
        let openssl = match openssl_sha256(avg, secs) {
            Ok(b) => b,
            Err(err) => {
                let msg = format!("A4 openssl baseline SKIPPED: {err}");
                log(&msg);
                notes.push(msg);
                return;
            }
        };
        openssl_rates.push(openssl);
        let base_secs = total as f64 / openssl;
        let (hs, took) = timed(|| hash::bulk_hash(&names, &p.cells, FORM));
        let (b, b_wall) = (took.cpu, took.wall);
        assert_eq!(hs.len(), n);
        std::hint::black_box(hs);
        let (hp, plain) = timed(|| hash::bulk_hash_plain(&names, &p.cells, FORM));
        std::hint::black_box(hp);
        log(format!(
            "pair {rep}: bulk_hash without the look-ahead {:.3}s CPU = {}",
            plain.cpu,
            pct(base_secs / plain.cpu)
        ));
        let (acc, warm) = timed(|| {
            let mut h = hash::RowHasher::new(&names, FORM);
            let mut acc = 0u8;
            for _ in 0..warm_passes {
                for row in warm_rows {
                    acc ^= h.hex(row).as_bytes()[0];
                }
            }
            acc
        });
        std::hint::black_box(acc);
        let warm_base = warm_bytes as f64 / openssl;
        let (acc, Took { cpu: r, .. }) = timed(|| {
            let mut acc = 0u8;
            for x in &inputs {
                acc ^= Sha256::digest(x)[0];
            }
            acc
        });
        std::hint::black_box(acc);
        let load = cpu.foreign_since();
        bulk.push(b, base_secs, base_secs / b, load);
        bulk_wall.push(b_wall, base_secs, base_secs / b_wall, load);
        raw.push(r, base_secs, base_secs / r, load);
        plain_series.push(plain.cpu, base_secs, base_secs / plain.cpu, load);
        warm_series.push(warm.cpu, warm_base, warm_base / warm.cpu, load);
        log(format!(
            "pair {rep}: openssl {} | bulk_hash {b:.3}s CPU (of it system {}) ({b_wall:.3}s wall) = {} ({} by wall clock) | sha2 of pre-encoded rows {r:.3}s CPU = {} | foreign load {load:.2}",
            mb(openssl),
            took.sys.map_or("unknown".to_string(), |s| format!("{s:.3}s")),
            pct(base_secs / b),
            pct(base_secs / b_wall),
            pct(base_secs / r)
        ));
        rep += 1;
    }
    let clock = if cpu_clock { "thread CPU time" } else { "wall clock (no /proc/thread-self/schedstat)" };
    let base = format!(
        "openssl speed -evp sha256 -bytes {avg} -seconds {secs} (user CPU time): {}",
        mb(median(openssl_rates.clone()))
    );
    let b = median(bulk.secs.clone());
    lines.push(Line {
        bench: "A4 row hashing",
        what: format!("hash::bulk_hash (encode + SHA-256 + hex), bytes = encoded row, {clock}"),
        n,
        throughput: mb(total as f64 / b),
        series: bulk.clone(),
        baseline: base.clone(),
        target: Some(0.70),
    });
    let w = median(bulk_wall.secs.clone());
    lines.push(Line {
        bench: "A4 row hashing",
        what: "the same bulk_hash runs by wall clock".into(),
        n,
        throughput: mb(total as f64 / w),
        series: bulk_wall.clone(),
        baseline: base.clone(),
        target: None,
    });
    let pl = median(plain_series.secs.clone());
    lines.push(Line {
        bench: "A4 row hashing",
        what: format!("the same without fetching rows ahead into the cache (hash::bulk_hash_plain), {clock}"),
        n,
        throughput: mb(total as f64 / pl),
        series: plain_series.clone(),
        baseline: base.clone(),
        target: None,
    });
    let wm = median(warm_series.secs.clone());
    lines.push(Line {
        bench: "A4 row hashing",
        what: format!(
            "RowHasher::hex on rows in the cache, as the merge hashes each row it has just built ({} rows {warm_passes} times), {clock}",
            warm_rows.len()
        ),
        n: warm_rows.len() * warm_passes,
        throughput: mb(warm_bytes as f64 / wm),
        series: warm_series.clone(),
        baseline: base.clone(),
        target: None,
    });
    let r = median(raw.secs.clone());
    lines.push(Line {
        bench: "A4 row hashing",
        what: format!("sha2::Sha256::digest of the pre-encoded rows (no encode/hex), {clock}"),
        n,
        throughput: mb(total as f64 / r),
        series: raw.clone(),
        baseline: base,
        target: None,
    });
    notes.push(format!(
        "hash samples (s): bulk_hash CPU {:?}, wall {:?}, sha2 raw CPU {:?}; openssl MB/s {:?}",
        round(&bulk.secs),
        round(&bulk_wall.secs),
        round(&raw.secs),
        openssl_rates.iter().map(|x| (x / 1e5).round() / 10.0).collect::<Vec<_>>()
    ));
}

// ---------------------------------------------------------------- main ----

fn main() {
    let n = env_usize("DC_BENCH_ROWS", DEFAULT_ROWS).max(20);
    let policy = Policy::from_env();
    let reps = policy.min;
    let started = Instant::now();
    let load_start = loadavg();
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let cpu_start = cpu_snap();
    log(format!("machine: {cores} CPUs, load average (1/5/15 min) {load_start}; {}", policy.describe()));
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
        hash_part(&policy, &p, &mut lines, &mut notes);
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
                        .env("DC_BENCH_MAX_REPS", policy.max.to_string())
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
                rt.block_on(sqlite_part(
                    &policy,
                    &rows[..m],
                    &snap_m,
                    changed_m,
                    removed_m,
                    &p,
                    &mut lines,
                    &mut notes,
                ));
            }
        }
    }
    if enabled("pg") {
        rt.block_on(pg_part(&policy, &rows, &snap, changed, removed, &p, &mut lines, &mut notes));
    }

    if std::env::var_os(SQLITE_CHILD_ENV).is_some() {
        println!("\n## dc-core merge benchmarks: SQLite part, pinned to CPU 0 (N = {n})");
    } else {
        println!("\n## dc-core merge benchmarks (N = {n})");
    }
    println!();
    println!("- machine: {cores} CPUs; load average (1/5/15 min) at start {load_start}");
    println!("- method: {}", policy.describe());
    print_table(&lines, &policy);
    for note in &notes {
        println!("- {note}");
    }
    let mut cats: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.target.is_some()) {
        let e = cats.entry(l.bench).or_default();
        e.0 += 1;
        e.1 += usize::from(l.verdict(&policy) == "yes");
        e.2 += usize::from(l.verdict(&policy).starts_with("noisy"));
    }
    println!(
        "- targets met: {}",
        cats.iter()
            .map(|(k, (t, m, z))| format!(
                "{k} {m}/{t}{}",
                if *z > 0 { format!(" ({z} noisy)") } else { String::new() }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "- total bench wall time: {:.0} s; {cores} CPUs; load average (1/5/15 min) at start {load_start}, at end {}; foreign load over the whole run {:.2} cores",
        started.elapsed().as_secs_f64(),
        loadavg(),
        cpu_start.foreign_since()
    );
}

/// The machine's load average (the box may be shared: report it with the numbers).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
