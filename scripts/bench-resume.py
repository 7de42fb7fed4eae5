#!/usr/bin/env python3
"""Cost of saving the crawl frontier (`runs.persist_frontier`) on a crawl.

A generated site of DC_BENCH_PAGES pages (default 5000; each links to the
next page and to five others, about 2 KiB of text each) is served on loopback
by `dc-fixture-site`; the example crawler (`plugins/crawl`) crawls all of it
from the home page with `runs.threads` threads, once with the frontier saved
(the default) and once without (the baseline), pair after pair in alternating
order, each run on a fresh database, on SQLite and on PostgreSQL. Reported:
pages per second of each (the run's started_at..ended_at: prepare, collect,
store) and the ratio saved / not saved, the median of DC_BENCH_REPS pairs
(default 5).

    scripts/bench-resume.py                       # release build, 5000 pages
    DC_BENCH_PAGES=2000 DC_BENCH_REPS=3 DC_BENCH_DB=sqlite scripts/bench-resume.py
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
PAGES = int(os.environ.get("DC_BENCH_PAGES", "5000"))
REPS = int(os.environ.get("DC_BENCH_REPS", "5"))
DBS = os.environ.get("DC_BENCH_DB", "sqlite,postgres").split(",")
PROFILE = os.environ.get("DC_BENCH_PROFILE", "release")
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / PROFILE
PG = "postgres://postgres@127.0.0.1:5432"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def gen_site(out: Path):
    filler = " ".join(f"word{i}" for i in range(300))
    for i in range(PAGES):
        links = {(i + 1) % PAGES} | {(i * 7 + k * 131) % PAGES for k in range(1, 6)}
        hrefs = "".join(f'<li><a href="{"/" if j == 0 else f"/p/{j}.html"}">page {j}</a></li>' for j in sorted(links))
        html = f"<!doctype html><html><head><title>Page {i}</title></head><body><h1>Page {i}</h1><p>{filler}</p><ul>{hrefs}</ul></body></html>"
        path = out / ("index.html" if i == 0 else f"p/{i}.html")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html)


def start_site(site: Path):
    port_file = site.parent / "port"
    proc = subprocess.Popen(
        [TARGET / "dc-fixture-site", "--dir", site, "--port-file", port_file],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        if port_file.exists() and port_file.read_text():
            return proc, f"http://127.0.0.1:{port_file.read_text()}/"
        time.sleep(0.05)
    raise SystemExit("dc-fixture-site did not start")


def psql(sql):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAtc", sql], check=True, capture_output=True)


def one_run(db: str, persist: bool, start_url: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DC_BENCH_")}
        env.update(DC_DATA_DIR=data, DC_LOG="warn", DC_RUNS_PERSIST_FRONTIER=str(persist).lower())
        pg_name = None
        if db == "postgres":
            pg_name = f"dc_bench_resume_{os.getpid()}_{n}"
            psql(f"CREATE DATABASE {pg_name}")
            env["DC_DATABASE_URL"] = f"{PG}/{pg_name}"
        try:
            host = [str(TARGET / "dc-host")]
            if pg_name:
                subprocess.run(host + ["db", "migrate"], env=env, check=True, capture_output=True)
            plugins = Path(data) / "plugins"
            plugins.mkdir()
            (plugins / "crawl.so").write_bytes((TARGET / "libdc_plugin_crawl.so").read_bytes())
            subprocess.run(host + ["reload"], env=env, check=True, capture_output=True)
            args = json.dumps({"start_url": start_url})
            out = subprocess.run(
                host + ["run", "demo/fixtures/crawl", "--args", args, "--json"], env=env, capture_output=True, text=True
            )
            run = json.loads(out.stdout)
            if run["status"] != "SUCCESS" or run["total_count"] != PAGES:
                raise SystemExit(f"the crawl did not succeed: {run}\n{out.stderr}")
            took = (datetime.fromisoformat(run["ended_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()
            return PAGES / took
        finally:
            if pg_name:
                psql(f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)")


def main():
    log(f"==> building ({PROFILE})")
    flag = ["--release"] if PROFILE == "release" else []
    subprocess.run(
        ["cargo", "build", *flag, "-p", "dc-host", "-p", "dc-plugin-crawl", "-p", "dc-fixture-site"], cwd=ROOT, check=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        log(f"==> generating a {PAGES}-page site")
        gen_site(site)
        proc, url = start_site(site)
        try:
            rows = []
            n = 0
            for db in DBS:
                on, off = [], []
                for rep in range(REPS):
                    order = [True, False] if rep % 2 == 0 else [False, True]
                    for persist in order:
                        n += 1
                        rate = one_run(db, persist, url, n)
                        (on if persist else off).append(rate)
                        log(f"{db} rep {rep + 1}: persist_frontier={persist}: {rate:.0f} pages/s")
                ratios = [a / b for a, b in zip(on, off)]
                rows.append((db, statistics.median(off), statistics.median(on), statistics.median(ratios)))
        finally:
            proc.terminate()
            proc.wait()
    load = open("/proc/loadavg").read().split()[:3]
    print(f"crawl of a {PAGES}-page loopback site, {PROFILE} build, {REPS} pairs, load {' '.join(load)}\n")
    print("| database | not saved (pages/s) | saved (pages/s) | saved / not saved |")
    print("|---|---|---|---|")
    for db, off, on, ratio in rows:
        print(f"| {db} | {off:.0f} | {on:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
