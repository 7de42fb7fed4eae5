#!/usr/bin/env python3
"""The crawl through 4 local proxies with rotation per request vs direct.

The example crawler (`plugins/crawl`, 4 threads) crawls the catalogue fixture
site (317 pages, served by `dc-fixture-site` on loopback), or with
DC_BENCH_PAGES=N the crawl benchmark's generated site of N pages
(`dc-fixture-site --generate N`), with `dc-host run`,
alternately direct and through 4 forward proxies on loopback (`dc-test-proxy`,
the proxy of the tests, connecting out from 127.0.0.2 … 127.0.0.5; `[proxy]`
with `rotate = "request"`, so consecutive requests take consecutive proxies).
Pages per second are taken from each run's own start and end (`runs.started_at`
/ `ended_at`), so process start and plugin loading do not count; the median of
DC_BENCH_REPS (default 7) pairs is reported with the ratio. Target: >= 80 %.
The CPU each crawl cost is shown too: dc-host and its worker (as children of
this script), and the site and proxy processes (from /proc), so the table
tells what a proxied page costs on the machine's two cores.

    scripts/bench-proxies.py                     # release build
    DC_BENCH_PROFILE=debug scripts/bench-proxies.py
    DC_BENCH_PAGES=20000 DC_BENCH_REPS=3 scripts/bench-proxies.py   # the generated site
    DC_BENCH_TARGET=DIR scripts/bench-proxies.py  # no build: DIR holds dc-host, dc-worker, dc-test-proxy,
                                                  # dc-fixture-site and libdc_plugin_crawl.so
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPS = int(os.environ.get("DC_BENCH_REPS", "7"))
PROFILE = os.environ.get("DC_BENCH_PROFILE", "release")
THREADS = os.environ.get("DC_BENCH_THREADS", "4")
GENERATED = os.environ.get("DC_BENCH_PAGES")
PAGES = int(GENERATED) if GENERATED else 317


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def build():
    if os.environ.get("DC_BENCH_TARGET"):
        return Path(os.environ["DC_BENCH_TARGET"])
    flag = ["--release"] if PROFILE == "release" else []
    log(f"building ({PROFILE})")
    subprocess.run(
        ["cargo", "build", *flag, "-p", "dc-host", "-p", "dc-plugin-crawl", "-p", "dc-fixture-site",
         "-p", "dc-e2e", "--bin", "dc-host", "--bin", "dc-worker", "--bin", "dc-fixture-site", "--bin", "dc-test-proxy", "--lib"],
        cwd=ROOT, check=True, stdout=sys.stderr)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / PROFILE
    return target


def start_line(cmd):
    """Starts a program that prints its URL (or writes a port file) when it listens."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p, p.stdout.readline().strip()


def children_cpu():
    """CPU seconds (user + system) of this script's ended children so far."""
    t = os.times()
    return t.children_user + t.children_system


def proc_cpu(pids):
    """CPU seconds (user + system) used so far by the running processes `pids`."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def parse_ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def main():
    target = build()
    host_bin = target / "dc-host"
    procs = []
    try:
        with tempfile.TemporaryDirectory() as d:
            port_file = Path(d) / "port"
            pages = ["--generate", str(PAGES)] if GENERATED else ["--dir", ROOT / "tests/fixtures/catalogue"]
            site = subprocess.Popen([target / "dc-fixture-site", *pages, "--port-file", port_file],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(site)
            for _ in range(200):
                if port_file.exists() and port_file.read_text().strip():
                    break
                time.sleep(0.05)
            base = f"http://127.0.0.1:{port_file.read_text().strip()}/"
            proxies = []
            for i in range(4):
                p, url = start_line([target / "dc-test-proxy", "--name", f"p{i}", "--bind-out", f"127.0.0.{i + 2}"])
                procs.append(p)
                proxies.append(url)
            env = {k: v for k, v in os.environ.items() if not k.startswith("DC_")}
            env.update({"DC_DATA_DIR": str(Path(d) / "data"), "DC_LOG": "error", "DC_LOGGING_LEVEL": "warn"})
            plugins = Path(d) / "data/plugins"
            plugins.mkdir(parents=True)
            (plugins / "crawl.so").write_bytes((target / "libdc_plugin_crawl.so").read_bytes())
            subprocess.run([host_bin, "reload"], env=env, check=True, stdout=subprocess.DEVNULL)
            proxied = dict(env, DC_PROXY_APPS="demo/fixtures/crawl", DC_PROXY_URLS=",".join(proxies),
                           DC_PROXY_ROTATE="request")
            args = json.dumps({"start_url": base})

            servers = [p.pid for p in procs]
            cpu = {"direct": ([], []), "proxied": ([], [])}

            def crawl(e, kind=None):
                c0, s0 = children_cpu(), proc_cpu(servers)
                out = subprocess.run([host_bin, "run", "demo/fixtures/crawl", "--args", args, "--threads", THREADS,
                                      "--json"], env=e, capture_output=True, text=True)
                r = json.loads(out.stdout)
                if r["status"] != "SUCCESS" or r["current_count"] != PAGES:
                    raise SystemExit(f"crawl failed: {r}\n{out.stderr}")
                secs = (parse_ts(r["ended_at"]) - parse_ts(r["started_at"])).total_seconds()
                if kind:
                    cpu[kind][0].append(children_cpu() - c0)
                    cpu[kind][1].append(proc_cpu(servers) - s0)
                return PAGES / secs

            log(f"warm-up, then {REPS} pairs (direct, 4 proxies); load {open('/proc/loadavg').read().split()[:3]}")
            crawl(env)
            crawl(proxied)
            direct, through = [], []
            for i in range(REPS):
                direct.append(crawl(env, "direct"))
                through.append(crawl(proxied, "proxied"))
                log(f"pair {i + 1}: direct {direct[-1]:.0f} pages/s, proxies {through[-1]:.0f} pages/s")
            d_med, p_med = statistics.median(direct), statistics.median(through)
            ratio = p_med / d_med
            def ms(kind, i):
                return f"{statistics.median(cpu[kind][i]) * 1000:.0f}"

            print(f"| crawl ({PAGES} pages, {THREADS} threads) | pages/s (median) | CPU ms: dc-host + worker | CPU ms: site + proxies |")
            print("|---|---:|---:|---:|")
            print(f"| direct | {d_med:.0f} | {ms('direct', 0)} | {ms('direct', 1)} |")
            print(f"| through 4 proxies, rotation per request | {p_med:.0f} | {ms('proxied', 0)} | {ms('proxied', 1)} |")
            print(f"| ratio | {ratio:.0%} (target >= 80 %: {'met' if ratio >= 0.8 else 'NOT met'}) | | |")
            log(f"end; load {open('/proc/loadavg').read().split()[:3]}")
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
