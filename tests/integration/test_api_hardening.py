"""The ingress against crafted input (issue 10): job ids never name another key (item 5),
clients read stable errors and never internal text (item 8), and nothing is accepted
that a store would refuse (item 9). Real Redis and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from embedstream.errors import PermanentError, PoisonMessage
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import JobFailed
from embedstream.streams.names import StreamNames
from tests.integration.conftest import ApiKeys, create_key, open_client
from tests.integration.test_api import make_settings, validation_errors
from tests.support.builders import apply_ops

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(make_settings(prefix, api_keys), {"X-API-Key": api_keys.full}):
        yield c


async def mark(redis_client: redis.Redis, *ops: Any) -> None:
    await apply_ops(redis_client, ops)


# -- item 5: job ids ----------------------------------------------------------------------


async def test_a_job_key_suffix_is_not_a_job(
    prefix: str, redis_client: redis.Redis, names: StreamNames, pg_schema: str
) -> None:
    """With tenant 'done' and a document named 'tenant', ``{job}:state`` reads
    ``{"tenant": "done"}``: it passed the tenant check as if it were a job record, and
    the missing fields made a 500."""
    _, key = await create_key(pg_schema, "done", "documents:write", "jobs:read")
    settings = make_settings(prefix, ApiKeys(pg_schema, key, key, key, key, key))
    tracker = JobTracker(redis_client, names)
    async for client in open_client(settings, {"X-API-Key": key}):
        job_id = (await client.post("/v1/documents", json={"id": "tenant", "text": "x"})).json()[
            "job_id"
        ]
        await mark(
            redis_client, *(tracker.stage_done(job_id, "tenant", s) for s in ("index", "persist"))
        )
        assert (await client.get(f"/v1/jobs/{job_id}")).json()["state"] == "completed"
        assert await redis_client.hgetall(f"{prefix}:job:{job_id}:state") == {b"tenant": b"done"}

        for suffix in (":state", ":docs", ":failures", ":stage:index", "%0A"):
            response = await client.get(f"/v1/jobs/{job_id}{suffix}")
            assert response.status_code == 404, (suffix, response.text)
            assert response.json()["error"].startswith("job not found")


@pytest.mark.parametrize(
    "job_id",
    [
        "job-1",  # a job record of another producer's making: not reachable by the API
        "0B9F6E0E-8D0C-4C39-9A55-3B7F0C1D2E3F",
        "0b9f6e0e-8d0c-1c39-9a55-3b7f0c1d2e3f",  # a version 1 UUID
        "0b9f6e0e8d0c4c399a553b7f0c1d2e3f",
        "*",
        "x" * 2000,
    ],
)
async def test_anything_but_a_job_id_is_404_without_a_lookup(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames, job_id: str
) -> None:
    await JobTracker(redis_client, names).submit("job-1", [], tenant="acme")
    response = await client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 404
    assert job_id not in response.json()["error"]


async def test_the_tracker_builds_no_key_from_a_malformed_job_id(
    redis_client: redis.Redis, names: StreamNames
) -> None:
    tracker = JobTracker(redis_client, names)
    job_id = "a" * 8 + "-0000-4000-8000-" + "0" * 12
    await tracker.submit(job_id, [], tenant="acme")
    assert await tracker.status(job_id) is not None
    for crafted in (f"{job_id}:docs", f"{job_id}:state", "", "{x}", "a b"):
        assert await tracker.status(crafted) is None
        with pytest.raises(ValueError, match="not a job id"):
            tracker.job_key(crafted)
    # bookkeeping for a message whose job id is not one does nothing
    await mark(redis_client, tracker.stage_done(f"{job_id}:docs", "d", "index"))
    assert not [k async for k in redis_client.scan_iter(match=f"{names.prefix}:job:*:docs:*")]


# -- item 8: clients read stable errors ------------------------------------------------


POSTGRES_TEXT = (
    'postgres refused the document: CheckViolationError: new row for relation "documents" '
    'violates check constraint "documents_tenant_format"\nDETAIL:  Failing row contains '
    "(tA\n, secret-document, 42, the private text)."
)


async def test_a_failed_document_shows_a_stable_code_not_the_database_message(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    accepted = await client.post(
        "/v1/documents", json={"documents": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]}
    )
    job_id = accepted.json()["job_id"]
    tracker = JobTracker(redis_client, names)
    [(_, a_fields), (_, b_fields)] = await redis_client.xrange(names.ingest)
    await mark(
        redis_client,
        *tracker.dead_letter_ops("persist")(a_fields, PermanentError(POSTGRES_TEXT)),
        *tracker.dead_letter_ops("index")(b_fields, PoisonMessage("bad payload: 'x' at 3")),
    )

    job = (await client.get(f"/v1/jobs/{job_id}")).json()
    errors = {d["id"]: d["error"] for d in job["documents"]}
    assert errors == {
        "a": {"stage": "persist", "error": "rejected: the stage refused the document"},
        "b": {
            "stage": "index",
            "error": "invalid_message: the message is malformed or failed validation",
        },
    }
    [(_, event)] = await redis_client.xrange(names.results)
    failed = Envelope.from_fields(event).payload(JobFailed)
    assert {f.error for f in failed.failures} == {e["error"] for e in errors.values()}
    everything = json.dumps(job) + event[b"data"].decode()
    for internal in ("CheckViolation", "documents_tenant_format", "Failing row", "private"):
        assert internal not in everything


async def test_a_body_that_is_not_utf8_is_described_without_python_text(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/documents",
        content=b'{"text": "ok \xc3\x28"}',
        headers={"content-type": "application/json"},
    )
    [error] = validation_errors(response)
    assert error["message"] == "malformed JSON body: it is not valid UTF-8 (byte 13)"
    for python in ("codec", "UnicodeDecodeError", "invalid continuation byte"):
        assert python not in response.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "a",}', "a property name in double quotes is expected (line 1, column 14)"),
        (b'{"text": "a"} trailing', "something follows the JSON value (line 1, column 15)"),
        (b'{"text": "\\q"}', "an escape sequence is invalid (line 1, column 11)"),
        (b'{"text": ', "a value is expected (line 1, column 10)"),
    ],
    ids=["trailing-comma", "extra-data", "bad-escape", "cut-short"],
)
async def test_malformed_json_is_described_in_our_words(
    client: httpx.AsyncClient, content: bytes, message: str
) -> None:
    response = await client.post(
        "/v1/documents", content=content, headers={"content-type": "application/json"}
    )
    [error] = validation_errors(response)
    assert error["message"] == f"malformed JSON body: {message}"
    for parser in ("Expecting", "Extra data", "Invalid \\escape"):
        assert parser not in response.text


# -- item 9: nothing a store would refuse is accepted --------------------------------------


@pytest.mark.parametrize(
    ("document", "kind", "message"),
    [
        (
            {"text": "x", "metadata": {"note": "a\x00b"}},
            "metadata_value",
            "metadata['note'] contains a NUL (U+0000) character at position 1",
        ),
        (
            {"text": "x", "metadata": {"a\x00b": 1}},
            "metadata_key",
            "metadata key #1 contains a NUL (U+0000) character at position 1",
        ),
        (
            {"text": "x", "metadata": {"ok": 1, "chroma:document": "y"}},
            "metadata_key",
            "metadata key #2 must not start with '#', '$' or 'chroma:'",
        ),
        (
            {"text": "x", "metadata": {"$where": 1}},
            "metadata_key",
            "metadata key #1 must not start with '#', '$' or 'chroma:'",
        ),
        (
            {"text": "x", "metadata": {"#tag": 1}},
            "metadata_key",
            "metadata key #1 must not start with '#', '$' or 'chroma:'",
        ),
        (
            {"text": "x\x00y"},
            "text_nul_char",
            "text contains a NUL (U+0000) character at position 1",
        ),
    ],
    ids=["nul-value", "nul-key", "chroma-reserved", "dollar", "hash", "nul-text"],
)
async def test_what_a_store_would_refuse_is_a_422_and_enqueues_nothing(
    client: httpx.AsyncClient,
    redis_client: redis.Redis,
    names: StreamNames,
    document: dict[str, Any],
    kind: str,
    message: str,
) -> None:
    response = await client.post("/v1/documents", json={"documents": [document]})
    [error] = validation_errors(response)
    assert error["type"] == kind
    assert error["message"].startswith(message)
    assert await redis_client.xlen(names.ingest) == 0
