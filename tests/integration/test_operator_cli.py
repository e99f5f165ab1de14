"""The operator commands on the real Redis: `embedstream status` and `embedstream dlq`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

import redis.asyncio as redis

from embedstream.config import ConsumerSettings
from embedstream.errors import PermanentError
from embedstream.streams.messages import DeadLetter, Message, Outcome
from embedstream.streams.names import StreamNames
from embedstream.streams.runner import StreamWorker
from tests.conftest import REDIS_URL
from tests.support.streams import produce


def run_cli(prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMBEDSTREAM_STREAM_PREFIX": prefix, "EMBEDSTREAM_REDIS_URL": REDIS_URL}
    return subprocess.run(
        [sys.executable, "-m", "embedstream", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def dead_letter_all(
    client: redis.Redis, names: StreamNames, settings: ConsumerSettings
) -> None:
    async def refuse(messages: Sequence[Message[object]]) -> Sequence[Outcome]:
        return [DeadLetter(PermanentError("cannot use this one")) for _ in messages]

    worker: StreamWorker[object] = StreamWorker(
        client, names, names.ingest, "embedder", refuse, settings, stage="embed"
    )
    await asyncio.wait_for(worker.run(burst=True), 30)


async def test_status_reports_length_lag_pending_consumers_and_dead_letters(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    a_minute_ago = int(time.time() * 1000) - 60_000  # entries of the past: ages without waiting
    await produce(redis_client, names.ingest, 2, at_ms=a_minute_ago)
    await dead_letter_all(redis_client, names, fast_settings)  # 2 dead letters, group made
    await produce(redis_client, names.ingest, 5, start=2, at_ms=a_minute_ago)
    # a consumer takes 3 and sits on them; 2 stay unread (lag)
    await redis_client.xreadgroup("embedder", "slowpoke", {names.ingest: ">"}, count=3)

    result = run_cli(names.prefix, "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    [ingest] = [s for s in report["streams"] if s["stream"] == names.ingest]
    [group] = ingest["groups"]
    assert group["name"] == "embedder"
    assert group["pending"] == 3
    assert group["lag"] == 2
    assert group["oldest_pending_age_ms"] >= 60_000
    assert group["dead_letters"] == 2
    consumers = {c["name"]: c for c in group["consumers"]}
    assert consumers["slowpoke"]["pending"] == 3
    assert consumers["slowpoke"]["idle_ms"] >= 0
    assert report["dead_letters_total"] == 2
    embedded = next(s for s in report["streams"] if s["stream"] == names.embedded)
    assert embedded["exists"] is False

    table = run_cli(names.prefix, "status")
    assert table.returncode == 0, table.stderr
    assert names.ingest in table.stdout
    assert "slowpoke" in table.stdout


async def test_dlq_list_shows_why_and_replay_moves_the_entry_back(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    [original] = await produce(redis_client, names.ingest, 1)
    await dead_letter_all(redis_client, names, fast_settings)

    listed = run_cli(names.prefix, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [letter] = json.loads(listed.stdout)
    assert letter["meta"]["stream"] == names.ingest
    assert letter["meta"]["id"] == original
    assert letter["meta"]["stage"] == "embed"
    assert letter["meta"]["error"] == "cannot use this one"
    assert letter["meta"]["attempts"] == "1"

    [(_, dead_fields)] = await redis_client.xrange(names.dlq)
    replayed = run_cli(names.prefix, "dlq", "replay", letter["id"])
    assert replayed.returncode == 0, replayed.stderr
    assert await redis_client.xlen(names.dlq) == 0
    entries = await redis_client.xrange(names.ingest)
    [(new_id, fields)] = [(i, f) for i, f in entries if b"replayed_from" in f]
    assert new_id.decode() != original
    assert fields[b"replayed_from"] == letter["id"].encode()
    assert not any(key.startswith(b"dlq_") for key in fields)
    assert fields[b"ce"] == dead_fields[b"ce"]  # the original message, unchanged
    assert fields[b"data"] == dead_fields[b"data"]

    unknown = run_cli(names.prefix, "dlq", "replay", "0-1")
    assert unknown.returncode == 1
    assert "no such dead letter" in unknown.stdout
