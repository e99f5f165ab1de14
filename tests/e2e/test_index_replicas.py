"""Issue 9, item 2: several index workers started together on a fresh embedded Chroma
folder. None dies at start; exactly one writes the folder (two writers lose each other's
vectors), the others wait as standbys, and one of them takes over when the writer is
killed. Real ``embedstream worker index`` processes; events are written directly on
``{prefix}:embedded``."""

from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as redis

from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DOCUMENT_EMBEDDED, DocumentEmbedded, EmbeddedChunk
from embedstream.schemas.tenancy import chunk_id
from embedstream.schemas.vectors import encode_vector
from tests.e2e.conftest import Stack
from tests.e2e.stores import chroma_records
from tests.support.streams import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TENANT = "bench"
REPLICAS = 3


def log_of(stack: Stack, name: str) -> str:
    path = stack.log_dir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def roles(stack: Stack, names: list[str]) -> dict[str, str]:
    """Each worker's role so far: "active", "standby" or "" (not decided yet)."""
    found: dict[str, str] = {}
    for name in names:
        text = log_of(stack, name)
        found[name] = (
            "active" if "chroma collection open" in text else "standby" if "standby" in text else ""
        )
    return found


async def publish(client: redis.Redis, stack: Stack, document_id: str, version: int) -> None:
    vector = np.random.default_rng(version).standard_normal(8).astype(np.float32)
    event = DocumentEmbedded(
        job_id="job",
        document_id=document_id,
        version=version,
        content_hash=f"h{version}",
        model="test-model",
        dim=8,
        text="text",
        chunk_count=1,
        chunks=[
            EmbeddedChunk(
                id=chunk_id(TENANT, document_id, 0), index=0, text="t", vector=encode_vector(vector)
            )
        ],
    )
    envelope = Envelope.wrap(
        DOCUMENT_EMBEDDED, event, source="tests", tenant=TENANT, subject=document_id
    )
    await client.xadd(stack.names.embedded, envelope.to_fields())  # type: ignore[arg-type]


async def indexed(client: redis.Redis, stack: Stack, *document_ids: str) -> bool:
    register = await client.hgetall(stack.names.key("index", "versions"))
    return all(f"{TENANT}/{d}".encode() in register for d in document_ids)


async def test_index_replicas_on_one_fresh_embedded_folder(
    stack: Stack, results_reader: redis.Redis
) -> None:
    names = [f"index-{n}" for n in range(REPLICAS)]
    for name in names:
        stack.start_worker("index", name)

    async def all_started() -> bool:
        for name in names:
            code = stack.procs[name].poll()
            assert code is None, f"{name} exited with {code} at start:\n{stack.logs()}"
        return all(roles(stack, names).values())

    await wait_until(all_started, within=120, what="every index worker to start")
    started = roles(stack, names)
    active = [n for n, role in started.items() if role == "active"]
    assert len(active) == 1, (started, stack.logs())
    standbys = [n for n in names if n not in active]

    await publish(results_reader, stack, "before", 1)
    await wait_until(
        lambda: indexed(results_reader, stack, "before"), within=60, what="the first event"
    )

    # the writer dies: a standby takes over, the others keep waiting
    stack.kill(active[0])

    async def taken_over() -> bool:
        return any("took over" in log_of(stack, n) for n in standbys)

    await wait_until(taken_over, within=60, what="a standby to take over")
    await publish(results_reader, stack, "after", 2)
    await wait_until(
        lambda: indexed(results_reader, stack, "after"), within=60, what="the second event"
    )
    took_over = [n for n in standbys if "took over" in log_of(stack, n)]
    assert len(took_over) == 1, stack.logs()

    codes = stack.stop_all()
    assert set(codes) == set(standbys) and all(c == 0 for c in codes.values()), (
        codes,
        stack.logs(),
    )
    assert "Traceback" not in "".join(log_of(stack, n) for n in names), stack.logs()
    assert set(chroma_records(stack.chroma_path, "embedstream")) == {
        chunk_id(TENANT, "before", 0),
        chunk_id(TENANT, "after", 0),
    }
