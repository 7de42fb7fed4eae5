#!/usr/bin/env bash
# L1: the politeness limiter's permit round trip (acquire + release) from a
# worker over the Unix socket to the permit server in another process, vs the
# same limiter in-process, measured in the same run (issue #10 target: p99 ≤
# 50 µs over the socket). Builds dc-net's `permit` bench in release mode and
# prints its markdown table on stdout; progress goes to stderr.
#
# Knobs (environment): DC_BENCH_PERMITS (round trips per pass, 20000),
# DC_BENCH_PASSES (5; the median pass by p99 is reported). See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
load() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) on $(nproc) CPUs"; }
echo "==> building dc-net's permit bench (release); $(load)" >&2
cargo bench --no-run -p dc-net --bench permit >&2
echo "==> permit round trips; $(load)" >&2
cargo bench -q -p dc-net --bench permit
echo "==> end: $(load)" >&2
