"""The producers' side of the pacts: each provider state is set up by running the code
that really writes the message, on the real Redis under a fresh prefix per interaction.

- ingress: the command builders (``api/commands.py``) submitted with ``JobTracker.submit``
  (the ingress's one Lua call: job record + XADD), read back from ``{prefix}:ingest``;
- embed worker: the real worker (``build_embed_worker``; the ``Embedder`` over a fake
  model) run in burst mode on real commands, read back from ``{prefix}:embedded``;
- re-embed requests: the real index worker, on a Chroma folder of its own, given a
  reused embedding it cannot apply, read back from ``{prefix}:ingest``;
- result publisher: ``JobTracker`` stage marks (the MARK_STAGE Lua the index and persist
  workers run in the MULTI/EXEC of their acks, and their dead-letter ops), read back from
  ``{prefix}:results``.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from pact import Verifier

from embedstream.adapters.chroma.index import ChromaIndex
from embedstream.adapters.embedder import Embedder
from embedstream.api.commands import build_delete, build_upsert
from embedstream.config import ChromaSettings, ConsumerSettings
from embedstream.contracts.codec import fields_to_body
from embedstream.errors import PoisonMessage
from embedstream.jobs.tracker import JobTracker, Submission
from embedstream.schemas.api import DocumentIn
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DOCUMENT_EMBEDDED_V2, DocumentEmbeddedV2, EmbeddedChunk
from embedstream.schemas.vectors import encode_vector
from embedstream.schemas.versions import version_text
from embedstream.streams.names import StreamNames, stream_id_to_version
from embedstream.workers.embed import build_embed_worker
from embedstream.workers.index import build_index_worker
from tests.contract.interactions import Interaction
from tests.contract.support import drop_prefix, pact_message, run_with_redis
from tests.support.builders import apply_ops

Entry = dict[bytes, bytes]
Scenario = Callable[[redis.Redis, StreamNames], Awaitable[None]]
MessageProducer = Callable[[str, "dict[str, Any] | None"], dict[str, Any]]

TENANT = "acme"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TEXT = "Redis Streams deliver commands to consumer groups. " * 3
METADATA: dict[str, str | int | float | bool] = {"source": "handbook", "page": 3}
DOC = "handbook/intro.md"


class Provider:
    """States run scenarios under a fresh prefix; messages return what they wrote on
    ``stream`` (the newest entry of the interaction's type); teardown drops the prefix."""

    def __init__(
        self, name: str, stream: Callable[[StreamNames], str], scenarios: Mapping[str, Scenario]
    ) -> None:
        self.name = name
        self.stream = stream
        self.scenarios = scenarios
        self.names: StreamNames | None = None
        self.entries: list[Entry] = []

    def state(self, state: str, action: str, parameters: dict[str, Any] | None = None) -> None:
        if action == "setup":
            names = StreamNames(f"pact{uuid.uuid4().hex[:10]}")
            self.names = names
            self.entries = run_with_redis(lambda client: self._setup(client, names, state))
        elif self.names is not None:
            prefix = self.names.prefix
            run_with_redis(lambda client: drop_prefix(client, prefix))
            self.names, self.entries = None, []

    async def _setup(self, client: redis.Redis, names: StreamNames, state: str) -> list[Entry]:
        if state not in self.scenarios:
            raise KeyError(f"{self.name} has no provider state {state!r}")
        await self.scenarios[state](client, names)
        return [dict(fields) for _, fields in await client.xrange(self.stream(names))]

    def produce(self, interaction: Interaction) -> MessageProducer:
        def message(name: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
            typed = [f for f in self.entries if fields_to_body(f).get("type") == interaction.type]
            if not typed:
                raise AssertionError(f"state {interaction.state!r} wrote no {interaction.type}")
            return pact_message(typed[-1], interaction.address)

        return message

    def verifier(self, interactions: Sequence[Interaction], source: Path) -> Verifier:
        return (
            Verifier(self.name)
            .message_handler({i.description: self.produce(i) for i in interactions})
            .state_handler(self.state, teardown=True)
            .set_coloured_output(enabled=False)
            .add_source(source)
        )


# -- the ingress ------------------------------------------------------------------------


def upsert(job_id: str, document_id: str, text: str = TEXT, tenant: str = TENANT) -> Submission:
    doc = DocumentIn(id=document_id, text=text, metadata=METADATA)
    envelope = build_upsert(job_id, doc, tenant=tenant, traceparent=TRACEPARENT)
    return Submission(document_id, "upsert", envelope)


def delete(job_id: str, document_id: str, tenant: str = TENANT) -> Submission:
    return Submission(document_id, "delete", build_delete(job_id, document_id, tenant=tenant))


async def submit_upserts(
    client: redis.Redis, names: StreamNames, *documents: str, tenant: str = TENANT
) -> str:
    job_id = str(uuid.uuid4())
    await JobTracker(client, names).submit(
        job_id, [upsert(job_id, d, tenant=tenant) for d in documents], tenant=tenant
    )
    return job_id


async def submit_delete(
    client: redis.Redis, names: StreamNames, document: str, tenant: str = TENANT
) -> str:
    job_id = str(uuid.uuid4())
    await JobTracker(client, names).submit(
        job_id, [delete(job_id, document, tenant=tenant)], tenant=tenant
    )
    return job_id


async def _ingress_upsert(client: redis.Redis, names: StreamNames) -> None:
    await submit_upserts(client, names, DOC)


async def _ingress_delete(client: redis.Redis, names: StreamNames) -> None:
    await submit_delete(client, names, DOC)


def ingress_provider(name: str) -> Provider:
    return Provider(
        name,
        lambda names: names.ingest,
        {
            "a request to upsert a document with metadata and a traceparent": _ingress_upsert,
            "a request to delete a document": _ingress_delete,
        },
    )


# -- the embed worker -------------------------------------------------------------------

FAST = ConsumerSettings(consumer_name="pact", batch_size=10, block_ms=50, trim=False)


def embed_worker_provider(name: str, embedder: Embedder) -> Provider:
    async def run_worker(client: redis.Redis, names: StreamNames) -> None:
        worker = build_embed_worker(client, names, embedder, FAST)
        await asyncio.wait_for(worker.run(burst=True), 60)

    async def new_document(client: redis.Redis, names: StreamNames) -> None:
        await submit_upserts(client, names, DOC)
        await run_worker(client, names)

    async def unchanged_document(client: redis.Redis, names: StreamNames) -> None:
        await new_document(client, names)
        await new_document(client, names)

    async def deleted_document(client: redis.Redis, names: StreamNames) -> None:
        await submit_delete(client, names, DOC)
        await run_worker(client, names)

    return Provider(
        name,
        lambda names: names.embedded,
        {
            "a new document was upserted": new_document,
            "a document was upserted again with unchanged text": unchanged_document,
            "a document was deleted": deleted_document,
        },
    )


# -- re-embed requests (index and persist workers) -------------------------------------


def reembed_provider(name: str) -> Provider:
    """The index worker (a real one, on a Chroma folder of its own) receives a reused
    embedding whose base version it indexed with other content: it asks for a re-embed
    (``embedstream.workers.reembed``, the code the persist worker uses as well)."""

    async def store_cannot_apply(client: redis.Redis, names: StreamNames) -> None:
        job_id = await submit_upserts(client, names, DOC)
        with tempfile.TemporaryDirectory() as folder:
            index = ChromaIndex(
                ChromaSettings(chroma_path=Path(folder), chroma_url=None, chroma_collection="pact")
            )
            try:
                await index.open()
                base = _embedded_v2(job_id, 1, "Other text.", reused=False)
                reuse = _embedded_v2(job_id, 2, TEXT, reused=True, base_version=1)
                for event in (base, reuse):
                    envelope = Envelope.wrap(
                        DOCUMENT_EMBEDDED_V2,
                        event,
                        source="embedstream.embed",
                        tenant=TENANT,
                        subject=DOC,
                        traceparent=TRACEPARENT,
                    )
                    await client.xadd(names.embedded, envelope.to_fields())  # type: ignore[arg-type]
                    worker = build_index_worker(client, names, FAST, index)
                    await asyncio.wait_for(worker.run(burst=True), 60)
            finally:
                index.close()

    return Provider(
        name,
        lambda names: names.ingest,
        {"a store could not apply a reused embedding": store_cannot_apply},
    )


def _embedded_v2(
    job_id: str, version: int, text: str, *, reused: bool, base_version: int | None = None
) -> DocumentEmbeddedV2:
    vector = encode_vector([0.5, 0.5, 0.5, 0.5])
    return DocumentEmbeddedV2(
        job_id=job_id,
        document_id=DOC,
        version=version_text(version),
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        model="fake",
        dim=4,
        text=text,
        metadata=METADATA,
        chunk_count=1,
        reused=reused,
        base_version=None if base_version is None else version_text(base_version),
        chunks=[]
        if reused
        else [EmbeddedChunk(id=f"{TENANT}/{DOC}:0", index=0, text=text, vector=vector)],
    )


# -- the result publisher (job bookkeeping) ---------------------------------------------


async def ingest_entries(client: redis.Redis, names: StreamNames) -> dict[str, tuple[int, Entry]]:
    """Document id -> (version, fields) of the commands on the ingest stream."""
    return {
        fields_to_body(fields)["subject"]: (stream_id_to_version(entry_id), dict(fields))
        for entry_id, fields in await client.xrange(names.ingest)
    }


async def all_succeeded(client: redis.Redis, names: StreamNames) -> None:
    tracker = JobTracker(client, names)
    job_id = await submit_upserts(client, names, "handbook/a.md", "handbook/b.md")
    for document in ("handbook/a.md", "handbook/b.md"):
        for stage in ("index", "persist"):
            await apply_ops(client, [tracker.stage_done(job_id, document, stage)])


async def one_failed(client: redis.Redis, names: StreamNames) -> None:
    tracker = JobTracker(client, names)
    job_id = await submit_upserts(client, names, "handbook/a.md", "handbook/broken.md")
    for stage in ("index", "persist"):
        await apply_ops(client, [tracker.stage_done(job_id, "handbook/a.md", stage)])
    await apply_ops(client, [tracker.stage_done(job_id, "handbook/broken.md", "index")])
    _, fields = (await ingest_entries(client, names))["handbook/broken.md"]
    error = PoisonMessage("text contains a NUL character")
    await apply_ops(client, tracker.dead_letter_ops("persist")(fields, error))


async def deleted(client: redis.Redis, names: StreamNames) -> None:
    tracker = JobTracker(client, names)
    job_id = await submit_delete(client, names, DOC)
    version, _ = (await ingest_entries(client, names))[DOC]
    await apply_ops(client, [tracker.stage_done(job_id, DOC, "index", deleted_version=version)])
    await apply_ops(client, [tracker.stage_done(job_id, DOC, "persist", deleted_version=version)])


def results_provider(name: str) -> Provider:
    return Provider(
        name,
        lambda names: names.results,
        {
            "a job whose documents all succeeded": all_succeeded,
            "a job with a failed document": one_failed,
            "a job that deleted a document": deleted,
        },
    )
