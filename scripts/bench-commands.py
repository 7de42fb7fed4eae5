#!/usr/bin/env python3
"""Command latency: from `dc-host apps start APP` to the worker spawned (the
`started` event of `dc-host serve --json`), through database polling (serve's
default 1 s tick) and through RabbitMQ (broker.url set: the CLI publishes with
confirms, serve consumes and wakes at once). Prints a markdown table with
median, p90, min and max per path and the ratio of the medians.

    scripts/bench-commands.py            # 20 commands per path
    DC_BENCH_COMMANDS=50 scripts/bench-commands.py

Needs RabbitMQ on 127.0.0.1:5672 (scripts/services.sh) and builds dc-host and
the misbehave fixture plugin (debug profile, as the tests use; DC_BENCH_RELEASE=1
for release). Each command waits a random part of a tick before it is issued,
so the polling path is sampled over the whole tick, not at one phase of it.
The latency includes the `apps start` process itself (start-up, database
write and, with the broker, the publish and its confirm): that is what an
operator waits for.
"""

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import queue
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = "test/fixtures/misbehave"
URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
NAME = "dc.bench.commands"
N = int(os.environ.get("DC_BENCH_COMMANDS", "20"))
RELEASE = os.environ.get("DC_BENCH_RELEASE") == "1"
TICK = 1.0
LIMIT = 60.0  # bounds a broken run only


def build():
    args = ["cargo", "build", "-p", "dc-host", "-p", "dc-plugin-misbehave"] + (["--release"] if RELEASE else [])
    print("==> " + " ".join(args), file=sys.stderr)
    subprocess.run(args, cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / ("release" if RELEASE else "debug")
    return target / "dc-host", target / "libdc_plugin_misbehave.so"


def run(exe, env, *args):
    return subprocess.run([str(exe), *args], env=env, check=True, capture_output=True, text=True)


class Serve:
    def __init__(self, exe, env):
        self.p = subprocess.Popen([str(exe), "serve", "--json", "--tick", str(TICK), "--grace", "0"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                self.events.put((time.monotonic(), json.loads(line)))
            except ValueError:
                pass

    def wait_for(self, name):
        while True:
            at, e = self.events.get(timeout=LIMIT)
            if e.get("event") == name:
                return at, e

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=LIMIT)


def measure(exe, env, broker):
    serve = Serve(exe, env)
    serve.wait_for("serving")
    if broker:
        serve.wait_for("broker_connected")
    out = []
    for _ in range(N):
        time.sleep(random.uniform(0, TICK))  # a random phase of the tick
        t0 = time.monotonic()
        r = run(exe, env, "apps", "start", APP)
        if "warning" in r.stderr:
            sys.exit(f"apps start warned: {r.stderr}")
        t1, _ = serve.wait_for("started")
        out.append((t1 - t0) * 1000)
        serve.wait_for("ended")
    serve.stop()
    return out


def row(name, xs):
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return f"| {name} | {len(xs)} | {statistics.median(xs):.0f} | {p90:.0f} | {xs[0]:.0f} | {xs[-1]:.0f} |"


def main():
    exe, plugin = build()
    with tempfile.TemporaryDirectory() as d:
        # only this run's settings reach dc-host (no DC_BENCH_* or broker from the caller)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DC_")}
        env.update(DC_DATA_DIR=d, DC_LOG="error")
        (Path(d) / "plugins").mkdir()
        (Path(d) / "plugins" / "misbehave.so").write_bytes(plugin.read_bytes())
        run(exe, env, "reload")
        run(exe, env, "apps", "args", APP, json.dumps({"mode": "ok", "items": 1}))
        print(f"==> database polling (tick {TICK} s), {N} commands", file=sys.stderr)
        db = measure(exe, env, False)
        mq_env = dict(env, DC_BROKER_URL=URL, DC_BROKER_EXCHANGE=NAME, DC_BROKER_QUEUE=NAME)
        subprocess.run(["rabbitmqctl", "-q", "purge_queue", NAME], capture_output=True)
        print(f"==> RabbitMQ, {N} commands", file=sys.stderr)
        mq = measure(exe, mq_env, True)
        for q in (NAME, NAME + ".dead"):
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", q], capture_output=True)
    print(f"Command latency, `apps start` to worker spawned ({'release' if RELEASE else 'debug'} build), ms\n")
    print("| path | commands | median | p90 | min | max |")
    print("|---|---|---|---|---|---|")
    print(row(f"database polling (tick {TICK:g} s)", db))
    print(row("RabbitMQ", mq))
    print(f"\nmedian ratio database / RabbitMQ: {statistics.median(db) / statistics.median(mq):.1f}x")


if __name__ == "__main__":
    main()
