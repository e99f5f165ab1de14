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
echo "== compose.yaml"
docker-compose -f compose.yaml config --quiet
echo "== pytest"
pytest -q -p no:cacheprovider "$@"
