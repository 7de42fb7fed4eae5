#!/usr/bin/env bash
# Worker peak memory of a run (issue #7 item 7): a real plugin run emitting N
# generated rows of ~200 B (the bulk fixture, tests/fixtures/plugins/bulk,
# which keeps the SDK's default store: its records are staged in batches as
# collect returns them), for N = 100,000 and 1,000,000, measured as the peak
# RSS of `dc-host run` and the worker it waits for (wait4's rusage). For
# comparison, the buffered path: the misbehave fixture with the same rows
# (it overrides store, so the worker holds every record until store).
# Targets: streamed 1M-row peak < 256 MiB and within 20 % of the 100k-row
# peak. Prints a markdown table on stdout (docs/benchmarks.md); load and
# progress on stderr.
#
#   scripts/bench-memory.sh                       # SQLite, release build
#   DC_BENCH_BACKENDS="sqlite postgres" scripts/bench-memory.sh
#   DC_BENCH_PROFILE=debug scripts/bench-memory.sh   # no release build
#   DC_BENCH_BUFFERED_MAX=1000000 ...             # buffered path at 1M rows too
#                                                 # (default: 100,000 only; 0: none)
#   DC_BENCH_REPS=5 ...                           # runs per size (default 3; the median counts)
#   DC_BENCH_ROWS_PER_ITEM=10000 ...              # rows one collect returns
#                                                 # (default 1,000: 100 and 1,000 items)
#
# One collect's records cross the plugin boundary as one JSON document, so
# the worker's peak grows with the rows per item; the run's size no longer
# matters.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${DC_BENCH_PROFILE:-release}"
echo "==> $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" -p dc-host -p dc-plugin-bulk -p dc-plugin-misbehave >&2
target="${CARGO_TARGET_DIR:-$PWD/target}/$profile"
DC_BENCH_TARGET="$target" python3 - <<'PY'
import json, os, statistics, subprocess, sys, tempfile, time, uuid

target = os.environ["DC_BENCH_TARGET"]
backends = os.environ.get("DC_BENCH_BACKENDS", "sqlite").split()
buffered_max = int(os.environ.get("DC_BENCH_BUFFERED_MAX", "100000"))
per_item = int(os.environ.get("DC_BENCH_ROWS_PER_ITEM", "1000"))
reps = max(1, int(os.environ.get("DC_BENCH_REPS", "3")))
host_bin = os.path.join(target, "dc-host")

def load():
    return " ".join(open("/proc/loadavg").read().split()[:3])

def host(backend):
    d = tempfile.mkdtemp(prefix="dc-bench-memory-")
    env = dict(os.environ, DC_DATA_DIR=d, DC_LOG="warn")
    if backend == "postgres":
        name = "bench_mem_" + uuid.uuid4().hex[:8]
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atc",
                        f"CREATE DATABASE {name}"], check=True, capture_output=True)
        env["DC_DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"
        subprocess.run([host_bin, "db", "migrate"], env=env, cwd=d, check=True, capture_output=True)
    os.makedirs(os.path.join(d, "plugins"))
    for lib, name in (("libdc_plugin_bulk.so", "bulk.so"), ("libdc_plugin_misbehave.so", "misbehave.so")):
        with open(os.path.join(target, lib), "rb") as src, open(os.path.join(d, "plugins", name), "wb") as dst:
            dst.write(src.read())
    subprocess.run([host_bin, "reload"], env=env, cwd=d, check=True, capture_output=True)
    return d, env

def measured(env, cwd, app, rows):
    args = json.dumps({"items": rows // per_item, "rows": per_item})
    started = time.monotonic()
    p = subprocess.Popen([host_bin, "run", app, "--args", args, "--threads", "1", "--json"],
                         env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = 0
    secs = time.monotonic() - started
    r = json.loads(out)
    if r.get("status") != "SUCCESS" or r.get("inserted") != rows:
        sys.exit(f"{app} {rows} rows: {r}")
    return usage.ru_maxrss / 1024, secs

print(f"| backend | path | rows | rows per item | peak RSS (MiB), median of {reps} (each) | run (s), median |")
print("|---|---|---:|---:|---:|---:|")
summary = []
for backend in backends:
    peaks = {}
    for path, app in (("streamed (default store)", "test/fixtures/bulk"),
                      ("buffered (store overridden)", "test/fixtures/misbehave")):
        for rows in (100_000, 1_000_000):
            if app.endswith("misbehave") and rows > buffered_max:
                continue
            runs = []
            for rep in range(reps):
                d, env = host(backend)  # a fresh database: every row is new
                print(f"==> {backend} {path} {rows} rows, rep {rep + 1}/{reps} (load {load()})", file=sys.stderr)
                runs.append(measured(env, d, app, rows))
            mib = statistics.median(m for m, _ in runs)
            secs = statistics.median(s for _, s in runs)
            peaks[(path, rows)] = mib
            each = ", ".join(f"{m:.0f}" for m, _ in runs)
            print(f"| {backend} | {path} | {rows:,} | {per_item:,} | {mib:.0f} ({each}) | {secs:.1f} |", flush=True)
    s = peaks.get(("streamed (default store)", 1_000_000))
    b = peaks.get(("streamed (default store)", 100_000))
    if s and b:
        summary.append(f"{backend}: streamed 1M-row peak {s:.0f} MiB (target < 256), "
                       f"{100 * (s / b - 1):+.0f} % vs the 100k-row run (target within 20 %)")
print()
for line in summary:
    print(f"- {line}")
print(f"- load average at the end {load()} on {os.cpu_count()} CPUs")
PY
