#!/usr/bin/env bash
# Sets everything up and runs the main job: start the stack (API + one replica of each
# worker, Chroma embedded), ingest the bundled sample corpus, show the results.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

export EMBEDSTREAM_STREAM_PREFIX=${EMBEDSTREAM_STREAM_PREFIX:-demo}
export EMBEDSTREAM_DATABASE_SCHEMA=${EMBEDSTREAM_DATABASE_SCHEMA:-embedstream_demo}
export EMBEDSTREAM_CHROMA_PATH=${EMBEDSTREAM_CHROMA_PATH:-.data/demo-chroma}
export EMBEDSTREAM_PORT=${EMBEDSTREAM_PORT:-8765}
URL="http://127.0.0.1:${EMBEDSTREAM_PORT}"
mkdir -p .data

echo "== migrate"
embedstream migrate
echo "== an API key for the demo (printed once; only its argon2id hash is stored)"
EMBEDSTREAM_API_KEY=$(embedstream keys create --tenant demo --scope admin --name demo)
export EMBEDSTREAM_API_KEY
echo "== start the stack (logs in .data/dev.log)"
embedstream dev > .data/dev.log 2>&1 &
DEV_PID=$!
trap 'kill -INT $DEV_PID 2>/dev/null; wait $DEV_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fsS "$URL/readyz" >/dev/null 2>&1 && break
  kill -0 $DEV_PID 2>/dev/null || { cat .data/dev.log; exit 1; }
  sleep 0.3
done

echo "== ingest samples/corpus"
embedstream ingest samples/corpus --url "$URL" --batch 8 --timeout 600

echo "== pipeline status"
embedstream status
echo "== a query against the index"
embedstream search "how do I parse command line arguments" --tenant demo --limit 3
