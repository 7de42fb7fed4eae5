#!/usr/bin/env bash
# The API benchmark (issue #11): authenticated `GET /api/v1/apps` on a running
# `dc-host serve` (fresh SQLite data dir with one registered app; a client made
# with `dc-host clients add`, its token from the token endpoint) vs an axum
# hello-world (`dc-bench-hello`: same axum, same tokio runtime as serve) on the
# same machine, with the same wrk settings, pair by pair in alternating order.
# Target: ≥ 60 % of the hello-world's requests/s; p99 latency of each is
# reported. Release build. Prints a markdown table on stdout; progress on
# stderr. See docs/benchmarks.md.
#
# Installs `wrk` (apt) if missing. Knobs (environment): DC_BENCH_PAIRS (5),
# DC_BENCH_CONNECTIONS (16), DC_BENCH_WRK_THREADS (1), DC_BENCH_WRK_SECS (10).
set -euo pipefail
cd "$(dirname "$0")/.."
load() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) on $(nproc) CPUs"; }
echo "==> start: $(load)" >&2
if ! command -v wrk >/dev/null; then
    echo "==> installing wrk (apt)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
fi
echo "==> building dc-host, the crawl plugin and dc-bench-hello (release)" >&2
cargo build --release -p dc-host -p dc-plugin-crawl -p dc-fixture-site >&2
DC_BENCH_TARGET="${CARGO_TARGET_DIR:-$PWD/target}/release" python3 - <<'PY'
import json, os, re, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

T = Path(os.environ["DC_BENCH_TARGET"])
PAIRS = int(os.environ.get("DC_BENCH_PAIRS", "5"))
CONN = int(os.environ.get("DC_BENCH_CONNECTIONS", "16"))
THREADS = int(os.environ.get("DC_BENCH_WRK_THREADS", "1"))
SECS = int(os.environ.get("DC_BENCH_WRK_SECS", "10"))
load = lambda: " ".join(open("/proc/loadavg").read().split()[:3])
def log(m): print(f"==> {m}", file=sys.stderr, flush=True)

def wrk(url, headers=()):
    cmd = ["wrk", f"-t{THREADS}", f"-c{CONN}", f"-d{SECS}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors on {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    v, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
    p99_ms = float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    return rps, p99_ms

with tempfile.TemporaryDirectory(prefix="dc-bench-api-") as d:
    d = Path(d)
    procs = []
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DC_")}
        env.update(DC_DATA_DIR=str(d / "data"), DC_LOG="warn", DC_API_ENABLED="true", DC_API_LISTEN="127.0.0.1:0",
                   # the per-client rate limit (default 20/s) would answer most of wrk's requests 429
                   DC_API_REQUESTS_PER_SECOND_PER_CLIENT="1000000", DC_API_BURST_PER_CLIENT="1000000")
        host = str(T / "dc-host")
        (d / "data/plugins").mkdir(parents=True)
        shutil.copy(T / "libdc_plugin_crawl.so", d / "data/plugins/crawl.so")
        subprocess.run([host, "reload"], env=env, check=True, capture_output=True)
        client = json.loads(subprocess.run([host, "clients", "add", "bench", "--role", "viewer", "--json"], env=env,
                                           check=True, capture_output=True, text=True).stdout)
        serve = subprocess.Popen([host, "serve", "--json"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
        procs.append(serve)
        api = None
        for line in serve.stdout:
            ev = json.loads(line)
            if ev.get("event") == "api_listening":
                api = ev["url"]
                break
        if api is None:
            raise SystemExit("dc-host serve ended without printing api_listening")
        # keep serve's stdout drained (it prints an event per tick)
        import threading
        threading.Thread(target=lambda: [None for _ in serve.stdout], daemon=True).start()
        port_file = d / "hello.port"
        procs.append(subprocess.Popen([T / "dc-bench-hello", "--port-file", port_file], stderr=subprocess.DEVNULL))
        for _ in range(200):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.05)
        hello = f"http://127.0.0.1:{port_file.read_text()}/"

        def token():
            out = subprocess.run(["curl", "-sf", "-u", f"{client['client_id']}:{client['client_secret']}",
                                  f"{api}/auth/token", "-d", "grant_type=client_credentials"],
                                 capture_output=True, text=True, check=True).stdout
            return json.loads(out)["access_token"]

        tok = token()
        body = subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {tok}", f"{api}/apps"],
                              capture_output=True, text=True, check=True).stdout
        apps = json.loads(body)
        log(f"GET {api}/apps answers {len(body)} bytes ({body[:120]}...); hello at {hello}")
        load_start = load()
        log(f"{PAIRS} pairs, wrk -t{THREADS} -c{CONN} -d{SECS}s; load average {load_start}")
        rows = []
        for p in range(PAIRS):
            before = load()
            tok = token()
            res = {}
            for who in (["api", "hello"] if p % 2 == 0 else ["hello", "api"]):
                res[who] = wrk(f"{api}/apps", [f"Authorization: Bearer {tok}"]) if who == "api" else wrk(hello)
            rows.append((res["api"], res["hello"], before, load()))
            log(f"pair {p + 1}: API {res['api'][0]:.0f} req/s p99 {res['api'][1]:.2f} ms, "
                f"hello {res['hello'][0]:.0f} req/s p99 {res['hello'][1]:.2f} ms; load {load()}")
    finally:
        for pr in procs:
            pr.terminate()
            pr.wait()

ratio = statistics.median(a[0] / h[0] for a, h, _, _ in rows)
print(f"Authenticated GET /api/v1/apps ({len(body)}-byte answer) vs an axum hello-world, wrk -t{THREADS} -c{CONN} "
      f"-d{SECS}s, {PAIRS} pairs, {os.cpu_count()} CPUs; load average (1/5/15 min) {load_start} at start, {load()} at end.\n")
print("| pair | API req/s | API p99 ms | hello req/s | hello p99 ms | API / hello | load before → after |")
print("|---:|---:|---:|---:|---:|---:|---|")
for i, (a, h, b, e) in enumerate(rows, 1):
    print(f"| {i} | {a[0]:.0f} | {a[1]:.2f} | {h[0]:.0f} | {h[1]:.2f} | {a[0] / h[0]:.0%} | {b} → {e} |")
med = lambda f: statistics.median(f(r) for r in rows)
print(f"| median | {med(lambda r: r[0][0]):.0f} | {med(lambda r: r[0][1]):.2f} | {med(lambda r: r[1][0]):.0f} "
      f"| {med(lambda r: r[1][1]):.2f} | {ratio:.0%} | |")
print(f"\nAPI / hello-world: {ratio:.0%} of its requests/s (target ≥ 60 %: {'met' if ratio >= 0.6 else 'NOT met'}).")
PY
echo "==> end: $(load)" >&2
