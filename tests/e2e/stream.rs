//! Streamed merges end to end (issue 7 item 7): the records of a plugin that
//! keeps the SDK's default `store` are staged in batches as `collect` returns
//! them — while `collect` is still running — merged once, each table as it
//! declares (a full snapshot removes what the run did not see), all tables
//! or none, and the worker's memory does not grow with the run's size the
//! way the buffered path's (a plugin that overrides `store`) does. On SQLite
//! and PostgreSQL.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use dc_e2e::{Fifo, Host, KillOnDrop, both_backends, plugin_lib};
use serde_json::{Value, json};

use crate::resume::StderrLines;

const BULK: &str = "test/fixtures/bulk";
const MISBEHAVE: &str = "test/fixtures/misbehave";
/// Bounds a broken test only; every wait below ends on an event.
const LIMIT: Duration = Duration::from_secs(120);

fn bulk_host(new_host: fn() -> Host) -> Host {
    let host = new_host();
    host.install(&plugin_lib("dc_plugin_bulk"), "bulk.so");
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    host
}

fn run(host: &Host, app: &str, args: Value) -> Value {
    let out = host.run(&["run", app, "--args", &args.to_string(), "--threads", "1", "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no run JSON ({e}); stderr:\n{}", String::from_utf8_lossy(&out.stderr)))
}

fn count(host: &Host, table: &str) -> i64 {
    host.db_rows(&format!("SELECT COUNT(*) FROM {table}"))[0].parse().expect("a count")
}

/// Rows arrive in several batches (5,000 rows each), merge as one full
/// snapshot: a second, smaller run removes the rows it no longer saw and
/// leaves the others unchanged.
fn streamed_full_snapshot(new_host: fn() -> Host) {
    let host = bulk_host(new_host);
    let first = run(&host, BULK, json!({"items": 4, "rows": 3000}));
    assert_eq!(first["status"], "SUCCESS", "{first}");
    assert_eq!((first["inserted"].as_i64(), first["unchanged"].as_i64()), (Some(12_000), Some(0)), "{first}");
    assert_eq!(count(&host, "bulk_rows"), 12_000);
    let second = run(&host, BULK, json!({"items": 4, "rows": 2000}));
    assert_eq!(second["status"], "SUCCESS", "{second}");
    // ids 0..8000 again: those keep their values; 8000..12000 are gone
    assert_eq!(
        (
            second["inserted"].as_i64(),
            second["updated"].as_i64(),
            second["deleted"].as_i64(),
            second["unchanged"].as_i64()
        ),
        (Some(0), Some(0), Some(4000), Some(8000)),
        "{second}"
    );
    assert_eq!(count(&host, "bulk_rows"), 8000);
    assert_eq!(host.db_rows("SELECT COUNT(*) FROM bulk_rows WHERE id >= 8000")[0], "0");
    assert_eq!(count(&host, "bulk_second"), 0, "a table without records is not merged");
}

/// A bad record in the second table, after the first table's rows were
/// staged, fails the run naming the table and column, and stores nothing;
/// so does a bad record in the last batch of a table.
fn streamed_failure_stores_nothing(new_host: fn() -> Host) {
    let host = bulk_host(new_host);
    let ok = run(&host, BULK, json!({"items": 2, "rows": 10}));
    assert_eq!(ok["status"], "SUCCESS", "{ok}");
    let second = run(&host, BULK, json!({"mode": "second_bad", "items": 3, "rows": 3000}));
    assert_eq!(second["status"], "FAILED", "{second}");
    let reason = second["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("bulk_second") && reason.contains("note"), "names table and column: {reason}");
    let bad = run(&host, BULK, json!({"mode": "bad_record", "items": 3, "rows": 3000}));
    assert_eq!(bad["status"], "FAILED", "{bad}");
    let reason = bad["reason"].as_str().unwrap_or_default();
    // the last record of the run: its place among all the table's records
    assert!(reason.contains("bulk_rows") && reason.contains("8999"), "names table and record: {reason}");
    assert_eq!(count(&host, "bulk_rows"), 20, "the failed runs stored nothing");
    assert_eq!(count(&host, "bulk_second"), 0);
}

/// Records are staged while `collect` is still running: with the last item
/// blocked, the worker has already staged the first items' 6,000 rows.
fn staged_while_collecting(new_host: fn() -> Host) {
    let host = bulk_host(new_host);
    let (ready, go) = (Fifo::new(), Fifo::new());
    let args =
        json!({"mode": "wait", "items": 3, "rows": 3000, "ready_fifo": ready.as_str(), "continue_fifo": go.as_str()});
    let mut child = KillOnDrop(
        host.command(&["run", BULK, "--args", &args.to_string(), "--threads", "1", "--json"])
            .stdin(Stdio::null())
            .env("DC_LOG", "warn,dc_runtime::callbacks=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dc-host run starts"),
    );
    let mut stderr = StderrLines::follow(child.0.stderr.take().expect("stderr"), host.dir.path().join("run.stderr"));
    // the last item's collect announces itself, then blocks
    ready.read_line(LIMIT);
    stderr.wait_for("the first two items' rows staged before collect ended", |l| {
        l.contains("records staged") && l.contains("staged_rows=6000")
    });
    go.release();
    let mut out = String::new();
    child.0.stdout.take().expect("stdout").read_to_string(&mut out).expect("stdout");
    let _ = child.0.wait();
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("no run JSON ({e}): {out}"));
    assert_eq!((r["status"].as_str(), r["inserted"].as_i64()), (Some("SUCCESS"), Some(9000)), "{r}");
    assert_eq!(count(&host, "bulk_rows"), 9000);
}

both_backends!(streamed_full_snapshot, streamed_failure_stores_nothing, staged_while_collecting);

/// Runs `dc-host run` and returns its JSON and the peak resident memory (KiB)
/// of it and the worker it waited for (`wait4`'s rusage covers both).
// the child is reaped by `wait4` (which `Child::wait` would not give the rusage of)
#[allow(unsafe_code, clippy::zombie_processes)]
fn run_measured(host: &Host, app: &str, args: Value) -> (Value, i64) {
    let mut child = host
        .command(&["run", app, "--args", &args.to_string(), "--threads", "1", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dc-host run starts");
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("stdout");
    let mut status = 0;
    // SAFETY: plain libc call on our own child's pid, with valid out-pointers
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("no run JSON ({e}): {out}"));
    (r, usage.ru_maxrss)
}

/// The same 200,000 rows of about 200 bytes: through the buffered path (the
/// misbehave fixture overrides `store`) the worker holds the whole run, so
/// its peak memory grows by hundreds of megabytes; streamed (the bulk
/// fixture keeps the default `store`) it stays near the worker's base size.
/// Memory, not time: the comparison is of two peaks measured by the kernel.
#[test]
fn streamed_memory_stays_bounded() {
    let host = bulk_host(Host::sqlite);
    let (small, small_kib) = run_measured(&host, BULK, json!({"items": 20, "rows": 500}));
    assert_eq!(small["status"], "SUCCESS", "{small}");
    let (streamed, streamed_kib) = run_measured(&host, BULK, json!({"items": 20, "rows": 10_000}));
    assert_eq!(
        (streamed["status"].as_str(), streamed["inserted"].as_i64()),
        (Some("SUCCESS"), Some(190_000)),
        "{streamed}"
    );
    let (buffered, buffered_kib) = run_measured(&host, MISBEHAVE, json!({"items": 20, "rows": 10_000}));
    assert_eq!(
        (buffered["status"].as_str(), buffered["inserted"].as_i64()),
        (Some("SUCCESS"), Some(200_000)),
        "{buffered}"
    );
    eprintln!(
        "peak RSS: streamed 10k rows {small_kib} KiB, 200k rows {streamed_kib} KiB; buffered 200k rows {buffered_kib} KiB"
    );
    // 20 times the rows cost the streamed path less than 64 MiB more ...
    assert!(streamed_kib < small_kib + 64 * 1024, "streamed peak {streamed_kib} KiB vs {small_kib} KiB for 10k rows");
    // ... where the buffered path needs far more than that
    assert!(buffered_kib > streamed_kib + 128 * 1024, "buffered {buffered_kib} KiB vs streamed {streamed_kib} KiB");
}
