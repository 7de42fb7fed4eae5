#!/usr/bin/env bash
# How long a merge holds SQLite's write lock: a staged merge (dc_core::stage,
# what a run does) against a direct merge (merge::merge, which holds the lock
# for all of it) on the same rows in the same run, release build. Prints a
# markdown table on stdout (docs/benchmarks.md); load and progress on stderr.
#
#   scripts/bench-staged-merge.sh            # 1,000,000 rows of ~200 B
#   DC_BENCH_ROWS=100000 scripts/bench-staged-merge.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo bench --no-run -p dc-core --bench stage >&2
cargo bench -q -p dc-core --bench stage
