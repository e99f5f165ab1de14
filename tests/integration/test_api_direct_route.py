"""``DirectRoute`` (``POST``/``DELETE /v1/documents``): the direct handler answers the
common case, the generic FastAPI handler everything else, and either way a request is
checked, counted and answered as before: one rate-limit hit per request, the same
refusals in the same order, the same 202."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis

from embedstream.api.routes import documents
from embedstream.api.security.fast_route import DirectRoute
from embedstream.config import ApiSettings, RedisSettings, Settings
from embedstream.schemas.commands import DocumentDelete, DocumentUpsert
from embedstream.schemas.envelope import Envelope
from embedstream.streams.names import StreamNames
from tests.conftest import REDIS_URL
from tests.integration.conftest import ApiKeys, open_client, with_key_store

pytestmark = pytest.mark.integration


def settings_for(prefix: str, keys: ApiKeys, rate_limit: str = "") -> Settings:
    settings = with_key_store(Settings(), keys.schema)
    settings.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix)
    settings.api = ApiSettings(rate_limit=rate_limit, max_documents_per_request=3)
    return settings


@pytest.fixture
async def client(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(settings_for(prefix, api_keys), {"X-API-Key": api_keys.full}):
        yield c


async def ingest(redis_client: redis.Redis, names: StreamNames) -> list[Envelope]:
    return [Envelope.from_fields(f) for _, f in await redis_client.xrange(names.ingest)]


def test_the_document_writes_are_direct_routes() -> None:
    direct = {
        (method, route.path)
        for route in documents.router.routes
        if isinstance(route, DirectRoute)
        for method in route.methods
    }
    assert direct == {
        ("POST", "/v1/documents"),
        ("DELETE", "/v1/documents/{document_id:document_id}"),
    }


def dependency_names(route: DirectRoute) -> set[str]:
    """Every dependency FastAPI would solve for the route (the credential schemes by
    class), recursively."""
    names: set[str] = set()
    stack = list(route.dependant.dependencies)
    while stack:
        dependency = stack.pop()
        call = dependency.call
        names.add(getattr(call, "__qualname__", type(call).__name__))
        stack.extend(dependency.dependencies)
    return names


def test_the_direct_handlers_do_what_every_dependency_of_their_routes_does() -> None:
    """The direct handlers run these dependencies' checks by hand (credential, scope,
    rate limit, backlog, JSON body, trace context, idempotency key): a dependency added
    to one of these routes would be skipped on the direct path. This list fails first:
    when it changes, make ``direct_upsert`` / ``direct_delete`` do the same."""
    routes = {
        method: route
        for route in documents.router.routes
        if isinstance(route, DirectRoute)
        for method in route.methods
    }
    common = {
        "APIKeyHeader", "HTTPBearer", "authenticate", "authorize", "check_backpressure",
        "get_guards", "get_traceparent", "get_tracker",
    }  # fmt: skip
    assert dependency_names(routes["POST"]) == common | {"get_api_settings", "require_json"}
    assert dependency_names(routes["DELETE"]) == common


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",  # direct
        "Application/JSON; charset=utf-8",  # direct
        "application/merge-patch+json",  # generic: both paths accept JSON media types
    ],
)
async def test_a_json_upsert_is_accepted_whichever_handler_answers(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames, content_type: str
) -> None:
    key = "k-" + content_type.replace(" ", "")
    response = await client.post(
        "/v1/documents",
        content=b'{"documents": [{"id": "d\\u00e9j\\u00e0", "text": "caf\\u00e9 \\u2615", '
        b'"metadata": {"n": 9007199254740993, "f": 0.1, "b": false, "s": "x"}}, '
        b'{"text": "no id"}]}',
        headers={"content-type": content_type, "Idempotency-Key": key},
    )

    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    job_id = body["job_id"]
    assert set(body) == {"job_id", "status", "documents", "status_url"}
    assert body["status"] == "queued"
    assert body["status_url"] == response.headers["location"] == f"/v1/jobs/{job_id}"
    assert body["documents"][0] == {"id": "déjà", "kind": "upsert"}
    generated = body["documents"][1]["id"]
    first, second = await ingest(redis_client, names)
    assert first.payload(DocumentUpsert) == DocumentUpsert(
        job_id=job_id,
        document_id="déjà",
        text="café ☕",
        metadata={"n": 9007199254740993, "f": 0.1, "b": False, "s": "x"},
    )
    assert (second.subject, second.payload(DocumentUpsert).document_id) == (generated, generated)
    assert first.id != second.id and first.tenant == second.tenant == "acme"


async def test_an_idempotent_repeat_answers_the_same_job_on_both_paths(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    body = b'{"documents": [{"id": "a", "text": "x"}]}'
    key = {"Idempotency-Key": "same-key"}
    direct = await client.post(
        "/v1/documents", content=body, headers={**key, "content-type": "application/json"}
    )
    generic = await client.post(
        "/v1/documents",
        content=body,
        headers={**key, "content-type": "application/vnd.api+json"},
    )

    assert direct.status_code == generic.status_code == 202, generic.text
    assert generic.json() == direct.json()
    assert generic.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in direct.headers
    assert len(await ingest(redis_client, names)) == 1


async def test_refusals_keep_their_status_and_shape(client: httpx.AsyncClient) -> None:
    json_type = {"content-type": "application/json"}
    too_many = b'{"documents": [' + b",".join([b'{"text": "a"}'] * 4) + b"]}"
    cases = [
        (b"", json_type, 422, "body"),
        (b"{", json_type, 422, "body"),
        (b'{"documents": []}', json_type, 422, "body.documents"),
        (b'{"text": " "}', json_type, 422, "body.documents.0.text"),
        (b'{"text": "a"}', {**json_type, "Idempotency-Key": "has space"}, 422, "header"),
        (too_many, json_type, 422, "body.documents"),
        (b'{"text": "a"}', {"content-type": "text/plain"}, 415, None),
        (b'{"text": "a"}', {"content-type": "application/jsonx"}, 415, None),
    ]
    for content, headers, status, field in cases:
        response = await client.post("/v1/documents", content=content, headers=headers)
        assert response.status_code == status, (content, headers, response.text)
        if field is not None:
            assert response.json()["errors"][0]["field"].startswith(field), response.text


async def test_deletes_refused_or_accepted_as_before(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    refused = await client.delete("/v1/documents/a%7Cb")
    bad_key = await client.delete("/v1/documents/a", headers={"Idempotency-Key": ""})
    accepted = await client.delete("/v1/documents/dir/a%20b")

    assert refused.status_code == 422
    assert refused.json()["errors"][0]["type"] == "document_id_pipe"
    assert bad_key.status_code == 422
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["documents"] == [{"id": "dir/a b", "kind": "delete"}]
    [envelope] = await ingest(redis_client, names)
    assert envelope.payload(DocumentDelete).document_id == "dir/a b"


async def test_credential_and_scope_come_first(
    client: httpx.AsyncClient, api_keys: ApiKeys
) -> None:
    body = {"text": "a"}
    no_key = await client.post("/v1/documents", json=body, headers={"X-API-Key": ""})
    reader = await client.post("/v1/documents", json=body, headers={"X-API-Key": api_keys.reader})
    reader_delete = await client.delete("/v1/documents/a", headers={"X-API-Key": api_keys.reader})

    assert no_key.status_code == 401
    assert reader.status_code == reader_delete.status_code == 403


async def test_a_request_the_generic_handler_answers_is_rate_limited_once(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    settings = settings_for(prefix, api_keys, rate_limit="3/minute")
    async for client in open_client(settings, {"X-API-Key": api_keys.full}):
        statuses = [
            (await client.post("/v1/documents", json={"text": " "})).status_code,  # generic
            (await client.post("/v1/documents", json={"text": "a"})).status_code,  # direct
            (await client.delete("/v1/documents/a")).status_code,  # direct
            (await client.post("/v1/documents", json={"text": "a"})).status_code,
        ]
        assert statuses == [422, 202, 202, 429]
