"""Runtime enforcement of the contracts.

Publishers build every message through the pydantic models (validated before XADD);
the job events the MARK_STAGE Lua writes are checked here against the models and the
JSON Schemas (and by the result publisher's provider verification). Consumers validate
what they read: every worker and the subscriber kit dead-letter what does not fit, with
the validation error, and go on."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis.asyncio as redis
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from embedstream.adapters.chroma.index import ChromaIndex
from embedstream.adapters.embedder import Embedder
from embedstream.api.commands import build_delete, build_upsert
from embedstream.config import ConsumerSettings
from embedstream.contracts.catalog import message_type
from embedstream.contracts.codec import body_to_fields, fields_to_body
from embedstream.contracts.json_schemas import schema_file
from embedstream.errors import PoisonMessage
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.api import DocumentIn
from embedstream.schemas.commands import DOCUMENT_UPSERT
from embedstream.schemas.envelope import Envelope, attributes_of
from embedstream.schemas.events import (
    DOCUMENT_EMBEDDED,
    JOB_COMPLETED,
    JobCompleted,
)
from embedstream.streams.names import StreamNames
from embedstream.streams.runner import StreamWorker
from embedstream.subscribe import Subscriber
from embedstream.workers.embed import build_embed_worker
from embedstream.workers.index import build_index_worker
from embedstream.workers.persist import build_persist_worker
from tests.contract.providers import ingest_entries, submit_delete, submit_upserts
from tests.contract.support import SCHEMAS
from tests.support.builders import apply_ops

# -- publishers --------------------------------------------------------------------------


def test_ingress_builders_validate_before_anything_is_written() -> None:
    doc = DocumentIn(id="a", text="some text")
    with pytest.raises(ValidationError, match="job_id"):
        build_upsert("", doc, tenant="acme")
    with pytest.raises(ValidationError, match="document_id"):
        build_delete("job", "x" * 513, tenant="acme")


async def test_job_tracker_validates_the_document_deleted_it_prepares(
    redis_client: redis.Redis, names: StreamNames
) -> None:
    with pytest.raises(ValidationError, match="version"):
        JobTracker(redis_client, names).stage_done("job", "doc", "persist", deleted_version=-1)


async def test_every_job_event_the_lua_writes_fits_its_model_and_schema(
    redis_client: redis.Redis, names: StreamNames
) -> None:
    tracker = JobTracker(redis_client, names)
    ok = await submit_upserts(redis_client, names, "a", "b", "c")
    failing = await submit_upserts(redis_client, names, "d", "e", "f")
    removing = await submit_delete(redis_client, names, "g")
    entries = await ingest_entries(redis_client, names)
    for doc in ("a", "b", "c", "d"):
        job = ok if doc != "d" else failing
        for stage in ("index", "persist"):
            await apply_ops(redis_client, [tracker.stage_done(job, doc, stage)])
    # "e": a failure text with quotes, a newline and non-ASCII must survive the Lua's
    # JSON; "f": a dead letter, whose failure clients read as a stable code
    await apply_ops(
        redis_client, [tracker.stage_failed(failing, "e", "index", 'bad "e"\n\u00e9\\')]
    )
    error = PoisonMessage("bad f: the database said no")
    await apply_ops(redis_client, tracker.dead_letter_ops("persist")(entries["f"][1], error))
    for stage in ("index", "persist"):
        op = tracker.stage_done(removing, "g", stage, deleted_version=entries["g"][0])
        await apply_ops(redis_client, [op])

    seen: list[str] = []
    for _, fields in await redis_client.xrange(names.results):
        envelope = Envelope.from_fields(fields)
        spec = message_type(envelope.type)
        payload = envelope.payload(spec.model)
        schema = json.loads((SCHEMAS / "json" / schema_file(spec.type)).read_text())
        errors = [
            e.message for e in Draft202012Validator(schema).iter_errors(fields_to_body(fields))
        ]
        assert not errors, (envelope.type, errors)
        seen.append(envelope.type)
        if envelope.type == "job.failed.v1":
            failures = {f.document_id: f for f in payload.failures}  # type: ignore[attr-defined]
            assert failures["e"].error == 'bad "e"\n\u00e9\\'
            assert failures["f"].error == (
                "invalid_message: the message is malformed or failed validation"
            )
    assert sorted(seen) == sorted(
        [
            "job.completed.v1",
            "job.failed.v1",
            "document.deleted.v1",
            "document.deleted.v2",
            "job.completed.v1",
        ]
    )


# -- consumers ---------------------------------------------------------------------------


def envelope_body(type_: str, data: dict[str, Any] | str, subject: str = "doc") -> dict[str, Any]:
    """The contract body of an envelope whose payload is not checked by any model."""
    return {
        "id": str(uuid.uuid4()),
        "source": "tests",
        "type": type_,
        "specversion": "1.0",
        "time": "2025-03-01T10:15:30+00:00",
        "subject": subject,
        "tenant": "acme",
        "datacontenttype": "application/json",
        "schemaversion": 1,
        "data": data,
    }


class _Guard:
    settings = SimpleNamespace(chroma_store_documents=False)

    async def require_model(self, model: str, dim: int) -> None:
        return None


WorkerFactory = Callable[[redis.Redis, StreamNames, ConsumerSettings], StreamWorker[Any]]


def _embed(embedder: Embedder) -> WorkerFactory:
    return lambda client, names, settings: build_embed_worker(client, names, embedder, settings)


def _index(
    client: redis.Redis, names: StreamNames, settings: ConsumerSettings
) -> StreamWorker[Any]:
    return build_index_worker(client, names, settings, cast(ChromaIndex, _Guard()))


def _persist(
    client: redis.Redis, names: StreamNames, settings: ConsumerSettings
) -> StreamWorker[Any]:
    return build_persist_worker(client, cast(Any, None), names, settings)


def _subscriber(
    client: redis.Redis, names: StreamNames, settings: ConsumerSettings
) -> StreamWorker[Any]:
    sub = Subscriber(client, names.prefix, "svc", settings=settings, unknown="dead_letter")
    sub.on(JobCompleted)(lambda event, envelope: None)
    return sub.worker(client)


# stream, a valid type of that stream with a payload missing a field, the missing field
CASES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "embed": ("ingest", DOCUMENT_UPSERT, {"job_id": "j", "document_id": "d"}, "text"),
    "index": ("embedded", DOCUMENT_EMBEDDED, {"job_id": "j", "document_id": "d"}, "version"),
    "persist": ("embedded", DOCUMENT_EMBEDDED, {"job_id": "j", "document_id": "d"}, "version"),
    "subscriber": ("results", JOB_COMPLETED, {"job_id": "j", "documents": 1}, "completed_at"),
}


@pytest.mark.parametrize("kind", list(CASES))
async def test_consumers_dead_letter_what_does_not_fit(
    kind: str,
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    embedder: Embedder,
) -> None:
    factories: dict[str, WorkerFactory] = {
        "embed": _embed(embedder),
        "index": _index,
        "persist": _persist,
        "subscriber": _subscriber,
    }
    stream_key, type_, invalid, missing = CASES[kind]
    stream = f"{names.prefix}:{stream_key}"
    undecodable = envelope_body(type_, {})
    del undecodable["time"]
    bad = {
        "invalid payload": envelope_body(type_, invalid),
        "unknown type": envelope_body("document.renamed.v9", {"job_id": "j"}),
        "not an envelope": undecodable,
        "payload not JSON": envelope_body(type_, "{not json"),
    }
    for body in bad.values():
        await redis_client.xadd(stream, cast(Any, body_to_fields(body)))

    worker = factories[kind](redis_client, names, fast_settings)
    stats = await asyncio.wait_for(worker.run(burst=True), 30)

    assert stats.dead_lettered == len(bad)
    letters = {
        attributes_of(fields).get("id", ""): fields
        for _, fields in await redis_client.xrange(names.dlq)
    }
    errors = {label: letters[f["id"]][b"dlq_error"].decode() for label, f in bad.items()}
    assert f"{missing}: Field required" in errors["invalid payload"]
    assert "document.renamed.v9" in errors["unknown type"]
    assert "missing required field `time`" in errors["not an envelope"]
    assert "Invalid JSON" in errors["payload not JSON"]
    assert all(f[b"dlq_error_type"] == b"PoisonMessage" for f in letters.values())
    pending = await redis_client.xpending(stream, worker.consumer.group)
    assert pending["pending"] == 0
    assert await redis_client.xlen(names.results) == 0 or kind == "subscriber"
