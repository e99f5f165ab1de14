"""Tenants at the HTTP ingress on the real Redis: commands carry the caller's tenant, and
one tenant can neither see another's jobs nor collide with its idempotency keys."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis

from embedstream.streams.names import StreamNames
from tests.integration.conftest import ApiKeys, open_client
from tests.integration.test_api import make_settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def clients(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(acme, globex) on one app."""
    async for acme in open_client(make_settings(prefix, api_keys), {"X-API-Key": api_keys.full}):
        globex = httpx.AsyncClient(
            transport=acme._transport, base_url=acme.base_url, headers={"X-API-Key": api_keys.other}
        )
        async with globex:
            yield acme, globex


async def tenants_on_the_stream(client: redis.Redis, names: StreamNames) -> list[str]:
    return [json.loads(f[b"ce"])["tenant"] for _, f in await client.xrange(names.ingest)]


async def test_commands_carry_the_callers_tenant(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    redis_client: redis.Redis,
    names: StreamNames,
) -> None:
    acme, globex = clients
    assert (await acme.post("/v1/documents", json={"id": "x", "text": "a"})).status_code == 202
    assert (await globex.post("/v1/documents", json={"id": "x", "text": "b"})).status_code == 202
    assert (await globex.delete("/v1/documents/x")).status_code == 202

    assert await tenants_on_the_stream(redis_client, names) == ["acme", "globex", "globex"]


async def test_another_tenants_job_is_not_found(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    acme, globex = clients
    job_id = (await acme.post("/v1/documents", json={"id": "x", "text": "a"})).json()["job_id"]

    assert (await acme.get(f"/v1/jobs/{job_id}")).status_code == 200
    theirs = await globex.get(f"/v1/jobs/{job_id}")
    unknown = await globex.get("/v1/jobs/0b9f6e0e-8d0c-4c39-9a55-3b7f0c1d2e3f")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"] == unknown.json()["error"]


async def test_a_delete_of_an_id_the_tenant_does_not_own_is_accepted_for_its_own_copy(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    redis_client: redis.Redis,
    names: StreamNames,
) -> None:
    acme, globex = clients
    await acme.post("/v1/documents", json={"id": "only-acme", "text": "a"})
    response = await globex.delete("/v1/documents/only-acme")

    assert response.status_code == 202
    assert response.json()["documents"] == [{"id": "only-acme", "kind": "delete"}]
    assert await tenants_on_the_stream(redis_client, names) == ["acme", "globex"]


async def test_idempotency_keys_are_scoped_per_tenant(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    redis_client: redis.Redis,
    names: StreamNames,
) -> None:
    acme, globex = clients
    headers = {"Idempotency-Key": "same-key"}
    first = await acme.post("/v1/documents", json={"id": "x", "text": "a"}, headers=headers)
    # another body under the same key: for another tenant this is no conflict, a new job
    other = await globex.post("/v1/documents", json={"id": "y", "text": "b"}, headers=headers)
    same = await globex.post("/v1/documents", json={"id": "x", "text": "a"}, headers=headers)
    replay = await acme.post("/v1/documents", json={"id": "x", "text": "a"}, headers=headers)

    assert (first.status_code, other.status_code, replay.status_code) == (202, 202, 202)
    assert same.status_code == 409  # globex's own key, reused with another body
    assert first.json()["job_id"] != other.json()["job_id"]
    assert "Idempotent-Replayed" not in other.headers
    assert replay.json()["job_id"] == first.json()["job_id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert await tenants_on_the_stream(redis_client, names) == ["acme", "globex"]
    assert (
        await redis_client.exists(
            names.key("idem", "acme", "same-key"), names.key("idem", "globex", "same-key")
        )
        == 2
    )
