"""The HTTP ingress on the real Redis: what a 202 puts on the ingest stream, idempotency,
validation errors with their fields, body limits, job status, probes and Redis outages.

Every test uses its own key prefix (fixtures in tests/conftest.py); the app runs its
real lifespan."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from structlog.testing import capture_logs

from embedstream.api.commands import SOURCE
from embedstream.config import ApiSettings, RedisSettings, Settings
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.commands import DocumentDelete, DocumentUpsert
from embedstream.schemas.envelope import Envelope
from embedstream.streams.names import StreamNames
from tests.conftest import REDIS_URL
from tests.integration.conftest import ApiKeys, open_client, with_key_store
from tests.support.builders import apply_ops

pytestmark = pytest.mark.integration

MAX_BODY = 64 * 1024
MAX_DOCS = 100
MAX_CHARS = 2_000
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def make_settings(prefix: str, keys: ApiKeys, redis_url: str = REDIS_URL) -> Settings:
    settings = with_key_store(Settings(), keys.schema)
    settings.redis = RedisSettings(redis_url=redis_url, stream_prefix=prefix)
    settings.api = ApiSettings(
        max_body_bytes=MAX_BODY,
        max_documents_per_request=MAX_DOCS,
        max_document_chars=MAX_CHARS,
    )
    return settings


@pytest.fixture
async def client(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> AsyncIterator[httpx.AsyncClient]:
    # redis_client first: its teardown removes this test's keys after the app stops
    async for c in open_client(make_settings(prefix, api_keys), {"X-API-Key": api_keys.full}):
        yield c


async def ingest(redis_client: redis.Redis, names: StreamNames) -> list[Envelope]:
    return [Envelope.from_fields(f) for _, f in await redis_client.xrange(names.ingest)]


async def ingest_len(redis_client: redis.Redis, names: StreamNames) -> int:
    return int(await redis_client.xlen(names.ingest))


def assert_error(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    for fragment in fragments:
        assert fragment in body["error"]
    return body


def validation_errors(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"] == "Validation failed"
    assert body["request_id"] == response.headers["x-request-id"]
    errors: list[dict[str, str]] = body["errors"]
    assert all(set(e) == {"field", "message", "type"} for e in errors)
    return errors


# -- accepting ---------------------------------------------------------------------------


async def test_upsert_puts_the_command_on_the_ingest_stream(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    document = {
        "id": "doc-1",
        "text": "Redis Streams",
        "metadata": {"a": "x", "n": 2, "f": 1.5, "b": True},
    }
    response = await client.post(
        "/v1/documents", json={"documents": [document]}, headers={"traceparent": TRACEPARENT}
    )

    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["job_id"]
    assert uuid.UUID(job_id)
    assert body == {
        "job_id": job_id,
        "status": "queued",
        "documents": [{"id": "doc-1", "kind": "upsert"}],
        "status_url": f"/v1/jobs/{job_id}",
    }
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    [envelope] = await ingest(redis_client, names)
    assert envelope.type == "document.upsert.v1"
    assert envelope.source == SOURCE
    assert envelope.subject == "doc-1"
    assert envelope.traceparent == TRACEPARENT
    payload = envelope.payload(DocumentUpsert)
    assert payload == DocumentUpsert(
        job_id=job_id, document_id="doc-1", text="Redis Streams", metadata=document["metadata"]
    )
    assert type(payload.metadata["b"]) is bool
    assert type(payload.metadata["n"]) is int
    # the job keeps the request's trace context for its result (job.completed/job.failed)
    assert await redis_client.hget(names.key("job", job_id), "traceparent") == TRACEPARENT.encode()


async def test_a_job_without_a_valid_traceparent_keeps_none(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    for headers in ({}, {"traceparent": "00-bad"}):
        response = await client.delete("/v1/documents/d", headers=headers)
        job_id = response.json()["job_id"]
        assert await redis_client.hexists(names.key("job", job_id), "traceparent") is False


async def test_a_single_document_without_the_wrapper_gets_a_generated_id(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    response = await client.post(
        "/v1/documents", json={"text": "alone"}, headers={"traceparent": "not-a-traceparent"}
    )

    assert response.status_code == 202, response.text
    [accepted] = response.json()["documents"]
    assert uuid.UUID(accepted["id"])
    [envelope] = await ingest(redis_client, names)
    assert envelope.subject == accepted["id"]
    assert envelope.traceparent is None
    assert envelope.payload(DocumentUpsert).document_id == accepted["id"]


async def test_many_documents_are_one_job_in_submission_order(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    documents = [{"id": f"d{i:03}", "text": f"text {i}"} for i in range(MAX_DOCS)]

    response = await client.post("/v1/documents", json={"documents": documents})

    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert [d["id"] for d in response.json()["documents"]] == [d["id"] for d in documents]
    envelopes = await ingest(redis_client, names)
    payloads = [e.payload(DocumentUpsert) for e in envelopes]
    assert [p.document_id for p in payloads] == [d["id"] for d in documents]
    assert {p.job_id for p in payloads} == {job_id}
    status = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert status["total"] == MAX_DOCS
    assert [d["id"] for d in status["documents"]] == [d["id"] for d in documents]


async def test_delete_puts_a_delete_command_on_the_stream(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    response = await client.delete(
        "/v1/documents/handbook/intro.md", headers={"traceparent": TRACEPARENT}
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["documents"] == [{"id": "handbook/intro.md", "kind": "delete"}]
    assert response.headers["location"] == f"/v1/jobs/{body['job_id']}"
    [envelope] = await ingest(redis_client, names)
    assert envelope.type == "document.delete.v1"
    assert envelope.subject == "handbook/intro.md"
    assert envelope.traceparent == TRACEPARENT
    assert envelope.payload(DocumentDelete) == DocumentDelete(
        job_id=body["job_id"], document_id="handbook/intro.md"
    )


async def test_delete_refuses_a_bad_id(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/documents/a%7Cb")

    [error] = validation_errors(response)
    assert error["field"] == "path.document_id"
    assert error["message"] == "document id must not contain '|' (found at position 1)"


# -- idempotency -------------------------------------------------------------------------


async def test_an_idempotent_repeat_returns_the_same_job_and_enqueues_nothing(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post(
        "/v1/documents", json={"documents": [{"text": "a"}, {"text": "b"}]}, headers=headers
    )
    # the same request, written differently: key order and whitespace do not matter
    repeat = await client.post(
        "/v1/documents",
        content=b'{ "documents" : [ {"text":"a"},\n {"text":"b"} ] }',
        headers={**headers, "content-type": "application/json"},
    )

    assert first.status_code == repeat.status_code == 202
    assert repeat.json()["job_id"] == first.json()["job_id"]
    assert repeat.json()["documents"] == first.json()["documents"]  # the generated ids
    assert repeat.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert repeat.headers["location"] == first.headers["location"]
    assert await ingest_len(redis_client, names) == 2


async def test_a_replay_lists_the_documents_in_submission_order(
    client: httpx.AsyncClient,
) -> None:
    body = _docs(*({"text": f"t{i}"} for i in range(12)))  # ids generated; entries -0..-11
    headers = {"Idempotency-Key": "many"}
    first = await client.post("/v1/documents", json=body, headers=headers)
    repeat = await client.post("/v1/documents", json=body, headers=headers)

    assert repeat.json()["documents"] == first.json()["documents"]


async def test_an_idempotency_key_reused_with_another_body_is_a_conflict(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    headers = {"Idempotency-Key": "order-43"}
    first = await client.post("/v1/documents", json={"text": "a"}, headers=headers)
    job_id = first.json()["job_id"]

    changed = await client.post("/v1/documents", json={"text": "b"}, headers=headers)
    as_delete = await client.delete("/v1/documents/x", headers=headers)

    for response in (changed, as_delete):
        assert_error(response, 409, f"already used for job {job_id}", "different request body")
    assert await ingest_len(redis_client, names) == 1


async def test_an_idempotent_delete_repeat_returns_the_same_job(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    headers = {"Idempotency-Key": "delete-x"}
    first = await client.delete("/v1/documents/x", headers=headers)
    repeat = await client.delete("/v1/documents/x", headers=headers)

    assert repeat.status_code == 202
    assert repeat.json() == first.json()
    assert await ingest_len(redis_client, names) == 1


async def test_a_malformed_idempotency_key_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/documents", json={"text": "a"}, headers={"Idempotency-Key": "has spaces"}
    )

    [error] = validation_errors(response)
    assert error["field"] == "header.Idempotency-Key"
    assert "printable ASCII" in error["message"]


# -- validation --------------------------------------------------------------------------


def _docs(*documents: dict[str, Any]) -> dict[str, Any]:
    return {"documents": list(documents)}


INVALID = [
    pytest.param(
        _docs({"id": "a"}), "body.documents.0.text", "missing", "Field required", id="missing-text"
    ),
    pytest.param(
        _docs({"text": ""}),
        "body.documents.0.text",
        "blank_text",
        "text must contain at least one non-whitespace character",
        id="empty-text",
    ),
    pytest.param(
        _docs({"text": " \n\t "}),
        "body.documents.0.text",
        "blank_text",
        "text must contain at least one non-whitespace character",
        id="whitespace-text",
    ),
    pytest.param(
        _docs({"text": "x" * (MAX_CHARS + 1)}),
        "body.documents.0.text",
        "text_too_long",
        f"text has {MAX_CHARS + 1} characters; the limit is {MAX_CHARS}",
        id="text-too-long",
    ),
    pytest.param(
        _docs(*({"text": "x"} for _ in range(MAX_DOCS + 1))),
        "body.documents",
        "too_many_documents",
        f"too many documents: {MAX_DOCS + 1} in one request; the limit is {MAX_DOCS}",
        id="too-many-documents",
    ),
    pytest.param(
        _docs(), "body.documents", "too_short", "at least one document is required", id="none"
    ),
    pytest.param(
        _docs({"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}),
        "body.documents.2.id",
        "duplicate_id",
        "document id 'a' appears more than once in this request (first at documents.0)",
        id="duplicate-ids",
    ),
    pytest.param(
        _docs({"text": "x", "metadata": {"tags": ["a", "b"]}}),
        "body.documents.0.metadata",
        "metadata_value",
        "metadata['tags'] must be a string, number or boolean (got array)",
        id="metadata-array",
    ),
    pytest.param(
        _docs({"text": "x", "metadata": {"nested": {"a": 1}}}),
        "body.documents.0.metadata",
        "metadata_value",
        "metadata['nested'] must be a string, number or boolean (got object)",
        id="metadata-object",
    ),
    pytest.param(
        _docs({"text": "x", "metadata": {"n": None}}),
        "body.documents.0.metadata",
        "metadata_value",
        "metadata['n'] must be a string, number or boolean (got null)",
        id="metadata-null",
    ),
    pytest.param(
        _docs({"text": "x", "metadata": {"big": 2**64}}),
        "body.documents.0.metadata",
        "metadata_value",
        "metadata['big'] is out of range: integers must fit in 64 bits",
        id="metadata-int-range",
    ),
    pytest.param(
        _docs({"id": "a|b", "text": "x"}),
        "body.documents.0.id",
        "document_id_pipe",
        "document id must not contain '|' (found at position 1)",
        id="id-pipe",
    ),
    pytest.param(
        _docs({"id": "a\nb", "text": "x"}),
        "body.documents.0.id",
        "document_id_control_char",
        "document id must not contain control characters (found U+000A at position 1)",
        id="id-control-char",
    ),
    pytest.param(
        _docs({"id": "x" * 513, "text": "x"}),
        "body.documents.0.id",
        "string_too_long",
        "String should have at most 512 characters",
        id="id-too-long",
    ),
    pytest.param(
        _docs({"id": "", "text": "x"}),
        "body.documents.0.id",
        "string_too_short",
        "String should have at least 1 character",
        id="id-empty",
    ),
    pytest.param(
        _docs({"id": 7, "text": "x"}),
        "body.documents.0.id",
        "string_type",
        "Input should be a valid string",
        id="id-not-a-string",
    ),
    pytest.param(
        _docs({"text": "x", "metdata": {}}),
        "body.documents.0.metdata",
        "extra_forbidden",
        "Extra inputs are not permitted",
        id="unknown-field",
    ),
    pytest.param(
        "just a string",
        "body",
        "model_attributes_type",
        "the request body must be a JSON object with a 'documents' array",
        id="not-an-object",
    ),
]


@pytest.mark.parametrize(("body", "field", "kind", "message"), INVALID)
async def test_invalid_documents_are_refused_with_their_field(
    client: httpx.AsyncClient,
    redis_client: redis.Redis,
    names: StreamNames,
    body: Any,
    field: str,
    kind: str,
    message: str,
) -> None:
    response = await client.post("/v1/documents", json=body)

    errors = validation_errors(response)
    assert {"field": field, "type": kind} == {k: errors[0][k] for k in ("field", "type")}
    assert errors[0]["message"].startswith(message), errors[0]["message"]
    assert await ingest_len(redis_client, names) == 0


async def test_every_invalid_document_is_reported(client: httpx.AsyncClient) -> None:
    body = _docs({"text": ""}, {"text": "ok"}, {"id": "a|", "text": "x"})

    errors = validation_errors(await client.post("/v1/documents", json=body))

    assert [e["field"] for e in errors] == ["body.documents.0.text", "body.documents.2.id"]


async def test_malformed_json_is_a_clear_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/documents",
        content=b'{"documents": [\n  {"text": "a",}\n]}',
        headers={"content-type": "application/json"},
    )

    [error] = validation_errors(response)
    assert error["field"] == "body"
    assert error["type"] == "json_invalid"
    assert error["message"] == (
        "malformed JSON body: a property name in double quotes is expected (line 2, column 16)"
    )


async def test_a_body_that_is_not_utf8_is_a_clear_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/documents", content=b'{"text": "\xff"}', headers={"content-type": "application/json"}
    )

    [error] = validation_errors(response)
    assert (error["field"], error["type"]) == ("body", "json_invalid")
    # our words, not Python's exception text ("'utf-8' codec can't decode byte...")
    assert error["message"] == "malformed JSON body: it is not valid UTF-8 (byte 10)"


async def test_non_finite_numbers_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/documents",
        content=b'{"text": "a", "metadata": {"score": NaN}}',
        headers={"content-type": "application/json"},
    )

    [error] = validation_errors(response)
    assert error["message"] == "metadata['score'] must be a finite number (got nan)"


async def test_a_body_that_is_not_json_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/documents", content=b"text=a", headers={"content-type": "text/plain"}
    )

    assert_error(response, 415, "Content-Type: application/json", "'text/plain'")


# -- body size ---------------------------------------------------------------------------


async def test_a_declared_body_over_the_limit_is_413(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    response = await client.post("/v1/documents", json={"text": "x" * MAX_BODY})

    assert_error(response, 413, "Content-Length is", f"the limit is {MAX_BODY} bytes")
    assert await ingest_len(redis_client, names) == 0


async def test_a_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(8):
            yield b"x" * (MAX_BODY // 4)
        yield b'"}'

    response = await client.post(
        "/v1/documents", content=chunks(), headers={"content-type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert_error(response, 413, f"exceeds the limit of {MAX_BODY} bytes")
    assert await ingest_len(redis_client, names) == 0


async def test_a_streamed_body_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": '
        yield b'"streamed"}'

    response = await client.post(
        "/v1/documents", content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 202, response.text


# -- jobs ------------------------------------------------------------------------------------


async def test_an_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/jobs/0b9f6e0e-8d0c-4c39-9a55-3b7f0c1d2e3f")

    assert_error(response, 404, "job not found (unknown, another tenant's, or older than")


async def test_job_status_follows_the_stage_marks(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    response = await client.post(
        "/v1/documents", json=_docs({"id": "a", "text": "x"}, {"id": "b", "text": "y"})
    )
    job_id = response.json()["job_id"]
    tracker = JobTracker(redis_client, names)

    async def mark(*ops: Any) -> None:
        await apply_ops(redis_client, ops)

    queued = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert queued["state"] == "queued"
    assert [d["stages"] for d in queued["documents"]] == [
        {"embed": "pending", "index": "pending", "persist": "pending"}
    ] * 2

    await mark(
        *(tracker.stage_done(job_id, "a", stage) for stage in ("embed", "index", "persist")),
        tracker.stage_done(job_id, "b", "embed"),
    )
    partial = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert (partial["state"], partial["done"], partial["failed"]) == ("queued", 1, 0)
    a, b = partial["documents"]
    assert (a["id"], a["state"], a["kind"]) == ("a", "done", "upsert")
    assert a["stages"] == {"embed": "done", "index": "done", "persist": "done"}
    assert (b["id"], b["state"]) == ("b", "pending")
    assert b["stages"] == {"embed": "done", "index": "pending", "persist": "pending"}

    await mark(tracker.stage_failed(job_id, "b", "index", "chroma refused it"))
    failed = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert (failed["state"], failed["done"], failed["failed"]) == ("failed", 1, 1)
    assert failed["finished_at"] is not None
    b = failed["documents"][1]
    assert b["state"] == "failed"
    assert b["stages"]["index"] == "failed"
    assert b["error"] == {"stage": "index", "error": "chroma refused it"}


# -- probes, request context, outages -----------------------------------------------------


async def test_probes_answer_when_redis_is_up(client: httpx.AsyncClient) -> None:
    healthz = await client.get("/healthz")
    readyz = await client.get("/readyz")

    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    assert (readyz.status_code, readyz.json()) == (
        200,
        {"status": "ready", "checks": {"redis": "ok"}},
    )


async def test_redis_down_is_503_with_retry_after(
    closed_port: int, prefix: str, api_keys: ApiKeys
) -> None:
    settings = make_settings(prefix, api_keys, redis_url=f"redis://127.0.0.1:{closed_port}/0")
    async for client in open_client(settings, {"X-API-Key": api_keys.full}):
        healthz = await client.get("/healthz")
        readyz = await client.get("/readyz")
        post = await client.post("/v1/documents", json={"text": "x"})
        job = await client.get("/v1/jobs/some-job")

    assert healthz.status_code == 200
    assert_error(readyz, 503, "not ready: Redis does not answer")
    assert_error(post, 503, "Redis", "could not be accepted", "Idempotency-Key")
    assert_error(job, 503, "Redis")
    assert {r.headers["retry-after"] for r in (readyz, post, job)} == {"5"}


async def test_request_id_timing_and_access_log(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        chosen = await client.get("/v1/jobs/x", headers={"X-Request-ID": "req-123"})
        insane = await client.get("/v1/jobs/x", headers={"X-Request-ID": "bad id\twith tab"})

    assert chosen.headers["x-request-id"] == "req-123"
    assert chosen.json()["request_id"] == "req-123"
    assert insane.headers["x-request-id"] != "bad id\twith tab"
    assert len(insane.headers["x-request-id"]) == 32
    assert chosen.headers["server-timing"].startswith("app;dur=")
    access = [e for e in logs if e["event"] == "request"]
    assert [(e["method"], e["path"], e["status"], e["request_id"]) for e in access] == [
        ("GET", "/v1/jobs/x", 404, "req-123"),
        ("GET", "/v1/jobs/x", 404, insane.headers["x-request-id"]),
    ]
    assert all(isinstance(e["duration_ms"], float) for e in access)
