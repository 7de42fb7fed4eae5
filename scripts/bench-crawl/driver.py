#!/usr/bin/env python3
"""The crawl benchmark's measurements (started by scripts/bench-crawl.sh, which
builds and installs first; see there and docs/benchmarks.md).

One `dc-fixture-site --generate PAGES` server on loopback; then, pair by pair:
wrk hammering its pages (the raw request rate), dc-host's example crawler
(`dc-host run demo/fixtures/crawl`, fresh SQLite data dir each time) and
Scrapy (spider.py) crawling all of it from `/`, the two crawlers in alternating
order. Every crawl must visit exactly PAGES pages. Prints a markdown table on
stdout; progress on stderr.
"""

import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PAGES = int(os.environ.get("DC_BENCH_PAGES", "5000"))
SCRAPY = os.environ.get("DC_BENCH_SCRAPY", "1") != "0"
PAIRS = int(os.environ.get("DC_BENCH_PAIRS", "2"))
CONC = int(os.environ.get("DC_BENCH_CONCURRENCY", "8"))
WRK_SECS = int(os.environ.get("DC_BENCH_WRK_SECS", "10"))
TARGET = Path(os.environ["DC_BENCH_TARGET"])
VENV = Path(os.environ["DC_BENCH_VENV"])


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def load():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def ts(s):
    return datetime.fromisoformat(str(s).replace("Z", "+00:00"))


def site_paths():
    """Every page of the generated site (the same rule as tests/fixture-site/src/generate.rs)."""
    listings = -(-PAGES // 21)
    return ["/"] + [f"/list/{k}.html" for k in range(2, listings + 1)] + [
        f"/item/{i}.html" for i in range(1, PAGES - listings + 1)
    ]


def start_site(tmp: Path):
    port_file = tmp / "site.port"
    proc = subprocess.Popen(
        [TARGET / "dc-fixture-site", "--generate", str(PAGES), "--port-file", port_file],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        if port_file.exists() and port_file.read_text():
            return proc, f"http://127.0.0.1:{port_file.read_text()}"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("dc-fixture-site --generate did not start (no port file after 10 s)")


def children_cpu():
    """CPU seconds (user + system) of the ended child processes so far (and their waited-for children)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def crawl_dc_host(tmp: Path, url: str):
    """One crawl by dc-host's example crawler on a fresh SQLite data dir. Returns (pages, seconds, wall, cpu)."""
    data = tmp / "dc-data"
    shutil.rmtree(data, ignore_errors=True)
    (data / "plugins").mkdir(parents=True)
    shutil.copy(TARGET / "libdc_plugin_crawl.so", data / "plugins" / "crawl.so")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DC_")}
    env.update(DC_DATA_DIR=str(data), DC_LOG="warn")
    if os.environ.get("DC_BENCH_HOST_CONFIG"):
        # e.g. scripts/bench-crawl/held-permits.toml: the A/B of the permit protocol
        env["DC_CONFIG"] = str(Path(os.environ["DC_BENCH_HOST_CONFIG"]).resolve())
    host = str(TARGET / "dc-host")
    subprocess.run([host, "reload"], env=env, check=True, capture_output=True)
    args = json.dumps({"start_url": url + "/"})
    t0, c0 = time.monotonic(), children_cpu()
    out = subprocess.run(
        [host, "run", "demo/fixtures/crawl", "--args", args, "--threads", str(CONC), "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    wall, cpu = time.monotonic() - t0, children_cpu() - c0
    try:
        run = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"dc-host run printed no JSON (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    if run.get("status") != "SUCCESS":
        raise SystemExit(f"the dc-host crawl did not succeed: {run}\n{out.stderr}")
    rows = count_rows(data)
    if rows != PAGES:
        raise SystemExit(f"dc-host stored {rows} pages, expected {PAGES}: {run}")
    return rows, (ts(run["ended_at"]) - ts(run["started_at"])).total_seconds(), wall, cpu


def count_rows(data: Path):
    """Distinct page paths in the crawl's table (the SQLite database of the data dir)."""
    for db in sorted(data.glob("*.db")) + sorted(data.glob("*.sqlite*")):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(DISTINCT path) FROM crawl_pages").fetchone()[0]
        except sqlite3.OperationalError:
            continue
        finally:
            con.close()
    raise SystemExit(f"no SQLite database with a crawl_pages table in {data}: {list(data.iterdir())}")


def crawl_scrapy(tmp: Path, url: str):
    """One crawl by the Scrapy spider. Returns (pages, seconds, wall, cpu)."""
    items, stats_file = tmp / "items.jsonl", tmp / "stats.json"
    for f in (items, stats_file):
        f.unlink(missing_ok=True)
    cmd = [VENV / "bin/scrapy", "runspider", "-L", "WARNING", HERE / "spider.py", "-a", f"start_url={url}/", "-a",
           f"stats_out={stats_file}", "-s", f"CONCURRENT_REQUESTS={CONC}", "-s",
           f"CONCURRENT_REQUESTS_PER_DOMAIN={CONC}", "-O", f"{items}:jsonlines"]
    t0, c0 = time.monotonic(), children_cpu()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
    wall, cpu = time.monotonic() - t0, children_cpu() - c0
    if out.returncode != 0 or not stats_file.exists():
        raise SystemExit(f"scrapy failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    stats = json.loads(stats_file.read_text())
    with items.open() as f:
        paths = {json.loads(line)["path"] for line in f}
    if len(paths) != PAGES or stats.get("item_scraped_count") != PAGES:
        raise SystemExit(f"scrapy visited {len(paths)} distinct pages, expected {PAGES}: {stats}")
    return len(paths), (ts(stats["finish_time"]) - ts(stats["start_time"])).total_seconds(), wall, cpu


def run_wrk(tmp: Path, url: str):
    """wrk on the site's pages round-robin for WRK_SECS s. Returns requests/s."""
    paths = tmp / "paths.txt"
    if not paths.exists():
        paths.write_text("\n".join(site_paths()) + "\n")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONC}", f"-d{WRK_SECS}s", "-s", HERE / "paths.lua", url, "--", paths],
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in out.stdout:
        raise SystemExit(f"wrk got error answers:\n{out.stdout}")
    for line in out.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(f"no Requests/sec in wrk's output:\n{out.stdout}")


def main():
    load_start = load()
    log(f"{PAGES} pages, {PAIRS} pairs, concurrency {CONC}, Scrapy {'on' if SCRAPY else 'off'}; "
        f"load average {load_start}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dc-bench-crawl-") as d:
        tmp = Path(d)
        site, url = start_site(tmp)
        try:
            for p in range(PAIRS):
                before = load()
                w = run_wrk(tmp, url)
                order = ["dc", "scrapy"] if p % 2 == 0 else ["scrapy", "dc"]
                res = {"scrapy": (0, float("nan"), float("nan"), float("nan"))}
                for who in order:
                    if who == "dc":
                        res[who] = crawl_dc_host(tmp, url)
                    elif SCRAPY:
                        res[who] = crawl_scrapy(tmp, url)
                dc_rate = res["dc"][0] / res["dc"][1]
                sc_rate = res["scrapy"][0] / res["scrapy"][1] if SCRAPY else float("nan")
                rows.append(dict(wrk=w, dc=dc_rate, scrapy=sc_rate, dc_pages=res["dc"][0],
                                 sc_pages=res["scrapy"][0], dc_wall=res["dc"][2], sc_wall=res["scrapy"][2],
                                 dc_cpu=res["dc"][3], sc_cpu=res["scrapy"][3], before=before, after=load()))
                log(f"pair {p + 1}: wrk {w:.0f} req/s, dc-host {dc_rate:.0f} pages/s ({res['dc'][1]:.1f} s), "
                    f"Scrapy {sc_rate:.0f} pages/s ({res['scrapy'][1]:.1f} s); load {load()}")
        finally:
            site.terminate()
            site.wait()
    load_end = load()
    print(f"Crawl of a generated {PAGES}-page site on loopback, concurrency {CONC}, {PAIRS} pairs, "
          f"{os.cpu_count()} CPUs; load average (1/5/15 min) {load_start} at start, {load_end} at end.\n")
    print("| pair | wrk req/s | dc-host pages/s (pages) | Scrapy pages/s (pages) | dc-host / Scrapy | dc-host / wrk "
          "| wall s dc-host / Scrapy | CPU s dc-host / Scrapy | pages per CPU s dc-host / Scrapy | load before → after |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['wrk']:.0f} | {r['dc']:.0f} ({r['dc_pages']}) | {r['scrapy']:.0f} ({r['sc_pages']}) "
              f"| {r['dc'] / r['scrapy']:.1f}× | {r['dc'] / r['wrk']:.0%} | {r['dc_wall']:.1f} / {r['sc_wall']:.1f} "
              f"| {r['dc_cpu']:.1f} / {r['sc_cpu']:.1f} | {r['dc_pages'] / r['dc_cpu']:.0f} / "
              f"{r['sc_pages'] / r['sc_cpu'] if SCRAPY else float('nan'):.0f} | {r['before']} → {r['after']} |")
    vs_scrapy = statistics.median(r["dc"] / r["scrapy"] for r in rows) if SCRAPY else float("nan")
    vs_wrk = statistics.median(r["dc"] / r["wrk"] for r in rows)
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    print(f"| median | {med('wrk'):.0f} | {med('dc'):.0f} | {med('scrapy'):.0f} | {vs_scrapy:.1f}× | {vs_wrk:.0%} "
          "| | | | |")
    print()
    scrapy_verdict = ("not measured (DC_BENCH_SCRAPY=0)" if not SCRAPY else
                      f"{vs_scrapy:.1f}× (target ≥ 10×: {'met' if vs_scrapy >= 10 else 'NOT met'})")
    print(f"dc-host / Scrapy: {scrapy_verdict}; "
          f"dc-host / wrk: {vs_wrk:.0%} (target ≥ 50 %: {'met' if vs_wrk >= 0.5 else 'NOT met'}). "
          "Pages/s over each crawl's own start..end (dc-host: the run's started_at..ended_at; Scrapy: its "
          "start_time..finish_time stats), so process start-up does not count; wall s includes it. CPU s: user + system time of the crawler's processes "
          "(dc-host: `run` and its worker), the whole crawl; on a loaded machine pages per CPU second is the "
          "comparison that does not depend on how the scheduler shares the cores.")


if __name__ == "__main__":
    main()
