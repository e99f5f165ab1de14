#!/usr/bin/env bash
# Sets up a fresh machine of this kind: checks (or starts) Redis and PostgreSQL, creates
# .venv and installs embedstream with its dev extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  log "Redis does not answer on 127.0.0.1:6379; starting it"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return; sleep 0.2; done
  echo "Redis did not start; see /var/log/redis/ci.log" >&2; exit 1
}

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q; then return; fi
  log "PostgreSQL does not answer on 127.0.0.1:5432; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 50); do pg_isready -h 127.0.0.1 -p 5432 -q && return; sleep 0.2; done
  echo "PostgreSQL did not start; check 'pg_lsclusters'" >&2; exit 1
}

# Debian packages some tests and benchmarks need; `apt-get update` runs once, before the
# first install. Usage: apt_install "what is lost without them" package...
APT_UPDATED=""
apt_install() {
  local without=$1; shift
  if ! command -v apt-get >/dev/null 2>&1; then
    log "no apt-get: install $* yourself, or $without"
    return 1
  fi
  log "installing Debian's $*"
  if [ -z "$APT_UPDATED" ]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The console's browser tests (tests/e2e/test_console.py) drive Debian's Chromium with
# Playwright (never `playwright install`: nothing is downloaded at run time).
ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return; fi
  apt_install "the console's browser tests are skipped" chromium chromium-driver || true
}

# The ingress benchmark (python -m bench.ingress) loads the API with Debian's wrk, a
# compiled HTTP load generator, so the load generator is not what is measured.
ensure_wrk() {
  if command -v wrk >/dev/null 2>&1; then return; fi
  apt_install "bench.ingress cannot run" wrk || true
}

# The alert and recording rules are checked with promtool, and an integration test runs a
# real Prometheus against the API's /metrics (tests/deploy/test_prometheus.py): Debian's
# prometheus package brings both.
ensure_prometheus() {
  if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then return; fi
  apt_install "its rule checks are skipped" prometheus || return 0
  # the package starts a service on Debian; the tests run their own on free ports
  if command -v service >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi
}

ensure_redis
ensure_postgres
ensure_chromium
ensure_wrk
ensure_prometheus

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.embedstream-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing dependencies (torch CPU wheel first, then the project)"
  pip install -q --upgrade pip
  # The CPU build of torch must come first: any other resolution pulls a CUDA build.
  pip install -q torch==2.13.0
  pip install -q -e '.[workers,dev]'
  echo "$want" > "$stamp"
fi
# The JavaScript subscriber test (tests/js: JSON.parse + Ajv against schemas/json) needs
# its npm packages, pinned by tests/js/package-lock.json.
if command -v npm >/dev/null 2>&1; then
  if [ ! -d tests/js/node_modules/ajv ] \
    || [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
    log "installing the JavaScript test's npm packages (tests/js)"
    (cd tests/js && npm ci --no-audit --no-fund --silent)
  fi
else
  log "npm not found: the JavaScript subscriber test will be skipped"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False PACT_DO_NOT_TRACK=true
log "ready: $(python --version), Redis and PostgreSQL answer"
