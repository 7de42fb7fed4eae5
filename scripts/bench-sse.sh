#!/usr/bin/env bash
# SSE fan-out benchmark (issue #11): one run's live log streamed to 1, 10 and
# 100 clients on loopback through the real API server (host/api/examples/
# sse_fanout.rs). The 1-client run is the baseline of the ratios. Release
# build; pass --debug for a quick debug-build run, other arguments go to the
# example (--clients 1,10,100 --rate 200 --seconds 10).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
if [ "${1:-}" = "--debug" ]; then profile=(); shift; fi
cargo run -q "${profile[@]}" -p dc-api --example sse_fanout -- "$@"
