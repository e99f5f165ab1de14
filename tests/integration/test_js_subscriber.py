"""Issue 9, item 3: a subscriber in JavaScript reads embedstream's events exactly.

Real workers (embed over a fake model, index on a Chroma folder of its own, persist on
PostgreSQL) write real events; the test hands the raw stream fields, as Redis returns
them, to ``tests/js/check_events.mjs``, which parses them with ``JSON.parse``, validates
each message against ``schemas/json`` with Ajv and compares every version with the exact
one. ``*.v2`` versions arrive exact and order as strings the way they do as numbers;
``*.v1`` versions (JSON integers beyond 2**53) are rounded, which is why v2 exists.

Node.js and npm come with the machine; ``scripts/setup.sh`` installs the test's npm
packages (``npm ci`` in ``tests/js``), and the test does too when they are missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis

from embedstream.adapters.chroma.index import ChromaIndex
from embedstream.config import ChromaSettings, ConsumerSettings
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.versions import parse_version
from embedstream.streams.names import StreamNames, as_text
from embedstream.workers.embed import build_embed_worker
from embedstream.workers.index import build_index_worker
from embedstream.workers.persist import build_persist_worker
from tests.contract.providers import submit_delete, submit_upserts, upsert
from tests.contract.support import SCHEMAS, fake_embedder

pytestmark = pytest.mark.integration

JS = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed: the JavaScript subscriber test needs Node.js 18+")
    if not (JS / "node_modules" / "ajv").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is needed to install tests/js (scripts/setup.sh does)"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300)
    return binary


def expected_version(data: str) -> str | None:
    """The exact version of an entry's payload, read with Python's exact integers."""
    payload = json.loads(data)
    version = payload.get("version")
    if version is None:
        return None
    return str(parse_version(version) if isinstance(version, str) else int(version))


async def stream_lines(client: redis.Redis, *streams: str) -> list[dict[str, Any]]:
    lines = []
    for stream in streams:
        for entry_id, fields in await client.xrange(stream):
            ce, data = as_text(fields[b"ce"]), as_text(fields[b"data"])
            lines.append(
                {
                    "stream": stream,
                    "id": as_text(entry_id),
                    "ce": ce,
                    "data": data,
                    "expected_version": expected_version(data),
                }
            )
    return lines


async def test_a_javascript_subscriber_reads_versions_exactly(
    node: str,
    tmp_path: Path,
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    pool: asyncpg.Pool,
) -> None:
    settings = fast_settings.model_copy(update={"trim": False})  # keep what was read
    embedder = fake_embedder()
    index = ChromaIndex(
        ChromaSettings(
            chroma_path=tmp_path / "chroma", chroma_url=None, chroma_collection="js-subscriber"
        )
    )
    await index.open()
    try:

        async def run_all() -> None:
            for worker in (
                build_embed_worker(redis_client, names, embedder, settings),
                build_index_worker(redis_client, names, settings, index),
                build_persist_worker(redis_client, pool, names, settings),
            ):
                await asyncio.wait_for(worker.run(burst=True), 60)

        # one request of three documents: one Lua call, so one millisecond and stream
        # sequence numbers 0, 1, 2 (versions beyond 2**53 that differ in the last bits)
        await submit_upserts(redis_client, names, "a", "b", "c")
        await run_all()
        # b again, unchanged: a reuse; then c deleted
        tracker = JobTracker(redis_client, names)
        await tracker.submit("again", [upsert("again", "b")], tenant="acme")
        await submit_delete(redis_client, names, "c")
        await run_all()
    finally:
        index.close()
        embedder.close()

    lines = await stream_lines(redis_client, names.embedded, names.results)
    entries = tmp_path / "entries.jsonl"
    entries.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = subprocess.run(
        [node, str(JS / "check_events.mjs"), str(entries), str(SCHEMAS / "json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)

    assert summary["entries"] == len(lines)
    assert summary["invalid"] == []
    types = summary["types"]
    for name in (
        "document.embedded.v2",
        "document.removed.v2",
        "document.deleted.v2",
        "job.completed.v1",
    ):
        assert types.get(name, 0) >= 1, types
    versioned_v2 = sum(
        1
        for line in lines
        if line["expected_version"]
        and '"type":"document.' in line["ce"]
        and json.loads(line["ce"])["type"].endswith(".v2")
    )
    assert summary["v2"] == {"exact": versioned_v2, "inexact": []}
    assert summary["v2_order_is_numeric_order"] is True
    reuse = [json.loads(line["data"]) for line in lines if '"reused":true' in line["data"]]
    assert any(r.get("base_version") for r in reuse)  # a v2 reuse names its base exactly
    # the same events in v1: JSON numbers beyond 2**53, which JavaScript cannot hold
    # exactly; JSON.parse rounded those whose stream sequence number is not a multiple of
    # 256 (b and c of the three-document request), as the outside run saw
    assert summary["v1"]["safe"] == 0 and summary["v1"]["unsafe"] == versioned_v2
    assert summary["v1"]["rounded"] >= 2, summary["v1"]
