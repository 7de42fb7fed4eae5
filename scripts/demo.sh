#!/usr/bin/env bash
# The main job on embedded defaults: build dc-host and the example plugin, serve
# the bundled catalogue site on loopback (with dc-fixture-site, a small server
# kept out of dc-host), register the plugin, run it against an embedded SQLite
# database and show what was stored; then let `dc-host serve` run it on a
# schedule until its first scheduled run ends. Needs only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

export DC_DATA_DIR="${DC_DATA_DIR:-var/demo}"
target="${CARGO_TARGET_DIR:-target}"
host="$target/debug/dc-host"
site="$target/debug/dc-fixture-site"

echo "==> building dc-host, the example plugin and the fixture site server (first build takes a few minutes)"
cargo build -p dc-host -p dc-plugin-catalogue -p dc-fixture-site

echo "==> serving tests/fixtures/catalogue on loopback"
port_file="$(mktemp)"
rm -f "$port_file"
"$site" --dir tests/fixtures/catalogue --port-file "$port_file" 2>/dev/null &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$port_file" ] && break; sleep 0.1; done
[ -s "$port_file" ] || { echo "error: the fixture server did not start" >&2; exit 1; }
port="$(cat "$port_file")"
echo "    http://127.0.0.1:$port/"

echo "==> registering the plugin (data dir $DC_DATA_DIR, database sqlite)"
mkdir -p "$DC_DATA_DIR/plugins"
# a demo directory left by an older dc-host is brought up to this one's schema
"$host" db migrate >/dev/null
cp "$target/debug/libdc_plugin_catalogue.so" "$DC_DATA_DIR/plugins/"
if ! "$host" reload; then
  # a rebuilt example plugin with the same version number is refused (as it
  # should be); for the demo, start over with a fresh data directory
  echo "==> the example plugin changed without a version bump; starting a fresh demo data directory"
  rm -rf "$DC_DATA_DIR"
  mkdir -p "$DC_DATA_DIR/plugins"
  cp "$target/debug/libdc_plugin_catalogue.so" "$DC_DATA_DIR/plugins/"
  "$host" reload
fi

echo "==> running demo/fixtures/catalogue in a worker process"
"$host" run demo/fixtures/catalogue --args "{\"base_url\": \"http://127.0.0.1:$port/\"}"

echo
echo "==> what was stored"
"$host" data tables
echo
"$host" data head catalogue_items --limit 5
echo
"$host" runs list --limit 5
echo
echo
echo "==> dc-host serve: the same app on a schedule (every 5 s), until its first scheduled run ends"
"$host" apps args demo/fixtures/catalogue "{\"base_url\": \"http://127.0.0.1:$port/\"}" >/dev/null
"$host" apps schedule demo/fixtures/catalogue --every 5s
serve_log="$(mktemp)"
"$host" serve --tick 0.5 >"$serve_log" 2>/dev/null &
serving=$!
trap 'kill "$server" 2>/dev/null || true; kill "$serving" 2>/dev/null || true' EXIT
# the manager prints one line per event: wait for the first scheduled run's end
for _ in $(seq 1 600); do grep -q ": run .* ended " "$serve_log" && break; sleep 0.1; done
if ! grep -q ": run .* ended " "$serve_log"; then
  echo "error: no scheduled run ended within 60 s; the manager said:" >&2
  cat "$serve_log" >&2
  exit 1
fi
kill -TERM "$serving" && wait "$serving" || true
sed 's/^/    /' "$serve_log"
"$host" apps schedule demo/fixtures/catalogue --off >/dev/null
echo
"$host" runs list --limit 3
echo
echo "Run it again: unchanged rows cause no writes. More: $host --help"
