#!/usr/bin/env python3
"""Scheduling lateness and idle cost of `dc-host serve` with many apps.

One plugin (the misbehave fixture) is registered; its app row is then copied
into N apps in the database (default 1000), each with its own 6-field cron
schedule, so the manager plans N schedules as it would for N plugins. Two
phases on one SQLite database:

1. idle: every schedule fires once a year (not during the phase); serve runs
   for DC_BENCH_IDLE_SECS (default 60) and the CPU time it used (utime +
   stime from /proc) is scaled to an hour;
2. lateness: the N apps fire spread over DC_BENCH_SPREAD_SECS (default 100,
   so 10 per second for 1000 apps); for
   each app, the time from its fire time to serve's decision event for it
   (`started`, or `skipped` when its run could not be created) is measured
   on receipt of the event line. The copies share the original app's plugin,
   whose tables another app owns, so their runs may end early; what is
   measured is the manager's on-time start, not the plugin.

    scripts/bench-schedule.py                      # release build, 1000 apps
    DC_BENCH_APPS=200 DC_BENCH_IDLE_SECS=20 scripts/bench-schedule.py
"""

import json
import os
import queue
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = int(os.environ.get("DC_BENCH_APPS", "1000"))
IDLE = float(os.environ.get("DC_BENCH_IDLE_SECS", "60"))
SPREAD = int(os.environ.get("DC_BENCH_SPREAD_SECS", "100"))
LIMIT = 300.0  # bounds a broken run only


def run(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf(os.sysconf_names["SC_CLK_TCK"])
    return (int(fields[11]) + int(fields[12])) / ticks


def serve(host, env):
    p = subprocess.Popen([host, "serve", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events = queue.Queue()

    def read():
        for line in p.stdout:
            try:
                events.put((time.time(), json.loads(line)))
            except ValueError:
                pass
        events.put(None)

    threading.Thread(target=read, daemon=True).start()
    return p, events


def wait(events, pred):
    deadline = time.time() + LIMIT
    while time.time() < deadline:
        item = events.get(timeout=LIMIT)
        if item is None:
            raise SystemExit("serve ended early")
        if pred(item[1]):
            return item
    raise SystemExit("timed out waiting for serve")


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "dc-host", "-p", "dc-plugin-misbehave"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    host = str(target / "dc-host")
    with tempfile.TemporaryDirectory() as d:
        # room for every run (runs.max_runs_per_host): the bench measures when the
        # manager starts a due run, not how long a full host makes it wait
        env = dict(
            os.environ,
            DC_GENERAL_DATA_DIR=d,
            DC_RUNS_MAX_CONSECUTIVE_FAILURES="0",
            DC_LOGGING_LEVEL="warn",
            DC_RUNS_MAX_RUNS_PER_HOST=str(N),
        )
        (Path(d) / "plugins").mkdir()
        (Path(d) / "plugins" / "misbehave.so").write_bytes((target / "libdc_plugin_misbehave.so").read_bytes())
        run([host, "reload"], env)
        db = sqlite3.connect(Path(d) / "dc-host.db")
        cols = [r[1] for r in db.execute("PRAGMA table_info(apps)")]
        row = dict(zip(cols, db.execute("SELECT * FROM apps").fetchone()))
        for i in range(N):
            r = dict(row, app_id=f"bench{i:05d}" + "0" * 54, app_name=f"bench{i:05d}")
            db.execute(f"INSERT INTO apps ({','.join(r)}) VALUES ({','.join('?' * len(r))})", list(r.values()))

        def schedule(fire_of):
            for i in range(N):
                db.execute("UPDATE apps SET schedule_cron = ?, interval_secs = NULL, next_run = NULL, schedule_tz = NULL "
                           "WHERE app_id = ?", (fire_of(i), f"bench{i:05d}" + "0" * 54))
            db.commit()

        # phase 1: idle (a yearly fire time far from now)
        schedule(lambda i: f"{i % 60} {i // 60 % 60} 3 1 1 *")
        p, events = serve(host, env)
        wait(events, lambda e: e.get("event") == "serving")
        c0, t0 = cpu_seconds(p.pid), time.time()
        time.sleep(IDLE)  # the measured phase itself, not a wait for a state
        c1, t1 = cpu_seconds(p.pid), time.time()
        p.send_signal(signal.SIGTERM)
        p.wait()
        idle_per_hour = (c1 - c0) / (t1 - t0) * 3600

        # phase 2: lateness (each app once, N/SPREAD per second)
        base = (datetime.now(timezone.utc) + timedelta(seconds=20)).replace(microsecond=0)
        fires = {}

        def fire_of(i):
            t = base + timedelta(seconds=i % SPREAD)
            fires[f"bench{i:05d}"] = t.timestamp()
            return f"{t.second} {t.minute} {t.hour} {t.day} {t.month} *"

        schedule(fire_of)
        p, events = serve(host, env)
        late = []
        seen = set()
        kinds = {"started": 0, "skipped": 0}
        deadline = time.time() + LIMIT
        while len(seen) < N and time.time() < deadline:
            item = events.get(timeout=LIMIT)
            if item is None:
                break
            at, e = item
            if e.get("event") in ("started", "skipped") and "app" in e:
                name = e["app"].rsplit("/", 1)[-1]
                if name in fires and name not in seen:
                    seen.add(name)
                    kinds[e["event"]] += 1
                    late.append((at - fires[name]) * 1000)
        p.send_signal(signal.SIGTERM)
        p.wait()
        late.sort()
        q = lambda f: late[min(len(late) - 1, int(f * len(late)))]
        print(f"| apps | decisions | lateness p50 | p99 | max | idle CPU per hour |")
        print(f"|---|---|---|---|---|---|")
        print(f"| {N} | {len(late)} | {q(0.5):.0f} ms | {q(0.99):.0f} ms | {late[-1]:.0f} ms | {idle_per_hour:.1f} s |")
        print(f"({kinds['started']} started, {kinds['skipped']} skipped; load average at the end: {open('/proc/loadavg').read().split()[:3]}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
