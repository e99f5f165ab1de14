"""Rate limits per credential, counted in the real Redis under the stream prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis
from pydantic import ValidationError

from embedstream.api.security.tokens import issue_token
from embedstream.config import ApiSettings, AuthSettings, RedisSettings, Settings
from tests.conftest import REDIS_URL
from tests.integration.conftest import JWT_SECRET, ApiKeys, open_client, with_key_store

pytestmark = pytest.mark.integration


def limited(prefix: str, schema: str, rate_limit: str) -> Settings:
    settings = with_key_store(Settings(), schema)
    settings.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix)
    settings.api = ApiSettings(rate_limit=rate_limit)
    settings.auth = AuthSettings(jwt_secret=JWT_SECRET)
    return settings


@pytest.fixture
async def client(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(limited(prefix, api_keys.schema, "3/minute")):
        yield c


async def test_a_credential_over_its_limit_gets_429_with_retry_after(
    client: httpx.AsyncClient, api_keys: ApiKeys, redis_client: redis.Redis, prefix: str
) -> None:
    key = {"X-API-Key": api_keys.full}
    statuses = [
        (await client.get("/v1/jobs/x", headers=key)).status_code,
        (await client.post("/v1/documents", json={"text": "a"}, headers=key)).status_code,
        (await client.delete("/v1/documents/a", headers=key)).status_code,
    ]
    refused = await client.get("/v1/jobs/x", headers=key)

    assert statuses == [404, 202, 202]  # every endpoint counts against the same limit
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"] == (
        "rate limit exceeded: this credential is allowed 3 per 1 minute requests; "
        f"retry in {refused.headers['retry-after']} seconds"
    )
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    keys = [k.decode() async for k in redis_client.scan_iter(match=f"{prefix}:ratelimit*")]
    assert keys and all(k.startswith(f"{prefix}:ratelimit:") for k in keys)
    assert any(api_keys.full[3:19] in k for k in keys)  # the key id, never the secret
    assert not any(api_keys.full in k for k in keys)


async def test_limits_are_per_credential(client: httpx.AsyncClient, api_keys: ApiKeys) -> None:
    token = issue_token(
        AuthSettings(jwt_secret=JWT_SECRET),
        tenant="acme",
        scopes=["jobs:read"],
        subject="svc",
        ttl_s=60,
    )
    for _ in range(3):
        await client.get("/v1/jobs/x", headers={"X-API-Key": api_keys.full})
    spent = await client.get("/v1/jobs/x", headers={"X-API-Key": api_keys.full})
    other_key = await client.get("/v1/jobs/x", headers={"X-API-Key": api_keys.reader})
    by_jwt = await client.get("/v1/jobs/x", headers={"Authorization": f"Bearer {token}"})

    assert spent.status_code == 429
    assert other_key.status_code == 404
    assert by_jwt.status_code == 404


async def test_processes_share_the_count_through_redis(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    settings = limited(prefix, api_keys.schema, "2/minute")
    headers = {"X-API-Key": api_keys.reader}
    async for first in open_client(settings, headers):
        async for second in open_client(settings, headers):
            answers = [
                (await first.get("/v1/jobs/x")).status_code,
                (await second.get("/v1/jobs/x")).status_code,
                (await first.get("/v1/jobs/x")).status_code,
                (await second.get("/v1/jobs/x")).status_code,
            ]
    assert answers == [404, 404, 429, 429]


async def test_unauthenticated_and_probe_requests_are_not_counted(
    client: httpx.AsyncClient, api_keys: ApiKeys
) -> None:
    for _ in range(5):
        await client.get("/healthz")
        await client.get("/v1/jobs/x")  # 401: no credential id to count
    assert (await client.get("/v1/jobs/x", headers={"X-API-Key": api_keys.full})).status_code == 404


async def test_several_limits_and_off(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    headers = {"X-API-Key": api_keys.reader}
    async for client in open_client(limited(prefix, api_keys.schema, "1/second;100/hour"), headers):
        assert [(await client.get("/v1/jobs/x")).status_code for _ in range(2)] == [404, 429]
    async for client in open_client(limited(prefix + "off", api_keys.schema, ""), headers):
        assert {(await client.get("/v1/jobs/x")).status_code for _ in range(20)} == {404}


def test_a_malformed_rate_limit_is_refused_with_the_variable_name() -> None:
    with pytest.raises(ValidationError, match="EMBEDSTREAM_RATE_LIMIT is not a rate") as caught:
        ApiSettings(rate_limit="lots")
    assert "lots" not in str(caught.value)  # the rule, never the value
