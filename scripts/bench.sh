#!/usr/bin/env bash
# Builds and runs every benchmark in release mode and prints their result
# tables (markdown) on stdout; progress goes to stderr. Starts the local
# PostgreSQL cluster if it is stopped (the PostgreSQL parts are skipped, with
# the reason, if it still cannot be reached).
#
#   scripts/bench.sh            # all: dc-core merge + dc-runtime spawn/swap
#   scripts/bench.sh merge      # only the data-layer benchmarks
#   scripts/bench.sh spawn      # only the runtime benchmarks
#
# The data-layer benchmarks measure baseline and subject pair by pair and
# repeat the pairs until the median ratio is stable (or a maximum is reached);
# a result that did not stabilise, or was taken while the rest of the machine
# kept more than DC_BENCH_NOISE_LOAD cores busy, is printed as "noisy".
#
# Knobs (environment): DC_BENCH_ROWS (default 1000000), DC_BENCH_REPS (minimum
# pairs, 3), DC_BENCH_MAX_REPS (10), DC_BENCH_STABLE_WINDOW (3),
# DC_BENCH_STABLE_SPREAD (percent, 10), DC_BENCH_NOISE_LOAD (cores, 0.3),
# DC_BENCH_ONLY (pg,sqlite,hash), DC_BENCH_SPAWN_REPS (30), DC_BENCH_SWAPS (200),
# DC_BENCH_REGISTRATIONS (30), DC_BENCH_RUN_LOOPS (2), DC_BENCH_SPAWN_DB
# (sqlite|postgres|both). See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
case "$what" in all|merge|spawn) ;; *) echo "usage: $0 [all|merge|spawn]" >&2; exit 2 ;; esac
target="${CARGO_TARGET_DIR:-target}"

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if command -v pg_isready >/dev/null 2>&1 && ! pg_up; then
  echo "==> starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start >&2 || true
  for _ in $(seq 1 50); do pg_up && break; sleep 0.2; done
fi
pg_up 2>/dev/null || echo "warning: PostgreSQL does not answer on 127.0.0.1:5432; its benchmarks will be skipped" >&2

load() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) on $(nproc) CPUs"; }
{
  echo "==> start: $(load)"
  echo "==> machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/^Mem:/ {print $2 " GiB RAM"}')"
  echo "==> building (release)"
} >&2
if [ "$what" != merge ]; then
  cargo build --release -p dc-host >&2
  cargo bench --no-run -p dc-runtime --bench spawn >&2
fi
if [ "$what" != spawn ]; then
  cargo bench --no-run -p dc-core --bench merge >&2
fi

if [ "$what" != spawn ]; then
  echo "==> dc-core merge benchmarks (N=${DC_BENCH_ROWS:-1000000}, pairs ${DC_BENCH_REPS:-3}..${DC_BENCH_MAX_REPS:-10}); $(load)" >&2
  cargo bench -q -p dc-core --bench merge
fi
if [ "$what" != merge ]; then
  echo "==> dc-runtime spawn / swap benchmarks (builds the misbehave plugin versions first)" >&2
  DC_BENCH_HOST_BIN="${DC_BENCH_HOST_BIN:-$PWD/$target/release/dc-host}" cargo bench -q -p dc-runtime --bench spawn
fi
echo "==> end: $(load)" >&2
