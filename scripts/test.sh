#!/usr/bin/env bash
# The whole test suite: starts the services it needs, checks formatting and
# lints, builds the host and the plugin cdylibs the end-to-end tests load, then
# runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh

echo "==> checking formatting and lints"
if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
else
  echo "WARNING: rustfmt or clippy is not installed: format and lint checks SKIPPED (rustup component add rustfmt clippy)" >&2
fi

echo "==> building the host, the fixture plugins and the fixture site server"
cargo build -p dc-host -p dc-plugin-catalogue -p dc-plugin-crawl -p dc-plugin-misbehave -p dc-fixture-site

echo "==> running the tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
