"""Dead letters made by the real runtime: commands of chosen tenants added to the ingest
stream, then refused by a StreamWorker (or, for poison, undecodable), so the entries in
``{p}:dlq`` carry exactly the fields the workers write."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as redis

from embedstream.api.commands import build_upsert
from embedstream.config import ConsumerSettings
from embedstream.errors import PermanentError
from embedstream.jobs.inflight import InFlight
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.api import DocumentIn
from embedstream.streams.messages import DeadLetter, Message, Outcome
from embedstream.streams.names import EMBED, StreamNames
from embedstream.streams.runner import StreamWorker


async def add_command(
    client: redis.Redis,
    names: StreamNames,
    *,
    tenant: str,
    document_id: str,
    job_id: str = "job-1",
    text: str = "some text to embed",
) -> str:
    """One ``document.upsert.v1`` command on the ingest stream; its entry id."""
    envelope = build_upsert(job_id, DocumentIn(id=document_id, text=text), tenant=tenant)
    entry_id = await client.xadd(names.ingest, envelope.to_fields())  # type: ignore[arg-type]
    return str(entry_id.decode())


async def add_poison(client: redis.Redis, names: StreamNames, n: int = 0) -> str:
    """An entry without an envelope: nobody can tell whose it is."""
    entry_id = await client.xadd(names.ingest, {"junk": f"not an envelope {n}"})
    return str(entry_id.decode())


async def dead_letter_all(
    client: redis.Redis,
    names: StreamNames,
    settings: ConsumerSettings,
    *,
    error: str = "cannot use this one",
    stage: str = "embed",
    bookkeeping: bool = False,
) -> list[str]:
    """Run a worker of the embedder group that refuses everything on the ingest stream
    (poison is dead-lettered by the runtime itself); the new dead letters' ids. With
    ``bookkeeping``, as the embed worker does: each document's job is marked failed at
    the stage and its command settled in flight, in the dead letter's transaction."""
    before = {entry_id for entry_id, _ in await client.xrange(names.dlq)}

    async def refuse(messages: Sequence[Message[object]]) -> Sequence[Outcome]:
        return [DeadLetter(PermanentError(error)) for _ in messages]

    extra: dict[str, object] = {}
    if bookkeeping:
        extra = {
            "dead_letter_ops": JobTracker(client, names).dead_letter_ops(stage),
            "settle_ops": InFlight(client, names).settle_ops,
        }
    worker: StreamWorker[object] = StreamWorker(
        client,
        names,
        names.ingest,
        EMBED.group,
        refuse,
        settings,
        stage=stage,
        **extra,  # type: ignore[arg-type]
    )
    await asyncio.wait_for(worker.run(burst=True), 30)
    return [
        entry_id.decode()
        for entry_id, _ in await client.xrange(names.dlq)
        if entry_id not in before
    ]
