#!/usr/bin/env bash
# Makes sure the services the test suite needs are up: PostgreSQL on
# 127.0.0.1:5432 (trust auth) and RabbitMQ on 127.0.0.1:5672 (guest/guest).
# Starts an installed but stopped server; installs it from Debian packages when
# absent and apt is usable (as on CI); otherwise says how to install it. Also
# makes sure the e-mail tests' SMTP server can run: python3 with aiosmtpd
# (pinned, from PyPI) and openssl.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "==> installing PostgreSQL (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "error: PostgreSQL is not installed; install it (Debian: apt-get install postgresql) and allow trust auth on 127.0.0.1" >&2
    exit 1
  fi
fi

if ! pg_up; then
  echo "==> starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 50); do pg_up && break; sleep 0.2; done
fi
pg_up || { echo "error: PostgreSQL does not answer on 127.0.0.1:5432; check /var/log/postgresql/" >&2; exit 1; }

# the tests connect as postgres without a password
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  echo "error: cannot connect as postgres@127.0.0.1 without a password; set 'host all all 127.0.0.1/32 trust' in pg_hba.conf" >&2
  exit 1
fi
echo "==> PostgreSQL is up on 127.0.0.1:5432"

# RabbitMQ: the broker tests (tests/e2e/broker.rs) connect as guest/guest, which
# RabbitMQ allows from loopback only
mq_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "==> installing RabbitMQ (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  else
    echo "error: RabbitMQ is not installed; install it (Debian: apt-get install rabbitmq-server) so it listens on 127.0.0.1:5672" >&2
    exit 1
  fi
fi

if ! mq_up; then
  echo "==> starting RabbitMQ"
  # an installed node whose application was stopped (rabbitmqctl stop_app) only needs start_app
  if ! rabbitmqctl -q start_app >/dev/null 2>&1; then
    rabbitmq-server -detached || true
  fi
  rabbitmqctl -q --timeout 60 await_startup >/dev/null 2>&1 || true
  for _ in $(seq 1 100); do mq_up && break; sleep 0.3; done
fi
mq_up || { echo "error: RabbitMQ does not answer on 127.0.0.1:5672; check /var/log/rabbitmq/" >&2; exit 1; }
echo "==> RabbitMQ is up on 127.0.0.1:5672"

# the e-mail channel's tests (tests/e2e/email.rs) run an SMTP server in Python
# (aiosmtpd) with a certificate made by openssl
AIOSMTPD_VERSION=1.4.6
can_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    if can_apt; then
      echo "==> installing python3 and pip (apt)"
      apt_install python3 python3-pip
    else
      echo "error: the e-mail tests need python3 with pip (to install aiosmtpd==$AIOSMTPD_VERSION); install them (Debian: apt-get install python3 python3-pip)" >&2
      exit 1
    fi
  fi
  echo "==> installing aiosmtpd $AIOSMTPD_VERSION (pip)"
  # Debian's python3 refuses to install outside a venv unless told (PEP 668)
  python3 -m pip install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "aiosmtpd==$AIOSMTPD_VERSION"
  python3 -c 'import aiosmtpd' || { echo "error: aiosmtpd did not install; see pip's output above" >&2; exit 1; }
fi
if ! command -v openssl >/dev/null 2>&1; then
  if can_apt; then
    echo "==> installing openssl (apt)"
    apt_install openssl
  else
    echo "error: openssl is not installed; the e-mail tests make their certificate with it (Debian: apt-get install openssl)" >&2
    exit 1
  fi
fi
echo "==> python3 with aiosmtpd and openssl are there for the e-mail tests"

# the OpenAPI conformance test (tests/e2e/schemathesis.rs) runs schemathesis'
# CLI `st` against a real `dc-host serve`
SCHEMATHESIS_VERSION=4.32.5
if [ "$(st --version 2>/dev/null)" != "st, version $SCHEMATHESIS_VERSION" ]; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION (pip)"
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
  command -v st >/dev/null 2>&1 || { echo "error: schemathesis did not install (no \`st\` on PATH); see pip's output above" >&2; exit 1; }
fi
echo "==> schemathesis $SCHEMATHESIS_VERSION is there for the OpenAPI test"

# the dashboard's browser test (tests/e2e/dashboard.rs) drives Debian's
# chromium, headless, with playwright-core (pinned in tests/browser/package.json
# and package-lock.json) under node
root="$(cd "$(dirname "$0")/.." && pwd)"
# install only what is missing: a machine may have Node.js from NodeSource,
# whose `nodejs` package ships npm and conflicts with Debian's `npm`
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  if can_apt; then
    echo "==> installing ${missing[*]} (apt)"
    apt_install "${missing[@]}"
  else
    echo "error: the dashboard test needs ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
if [ ! -f "$root/tests/browser/node_modules/playwright-core/package.json" ]; then
  echo "==> installing playwright-core (npm ci in tests/browser)"
  (cd "$root/tests/browser" && npm ci --no-audit --no-fund --silent) \
    || { echo "error: npm ci in tests/browser failed; see npm's output above" >&2; exit 1; }
fi
echo "==> chromium $(chromium --version 2>/dev/null | awk '{print $2}') and playwright-core are there for the dashboard test"
