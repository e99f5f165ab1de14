"""Backpressure: writes get 503 while the embedder group lags too far on the ingest
stream; reads still work; the lag is read at most once per cache period (on a clock the
tests move)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI

from embedstream.api.backpressure import IngestLagGauge
from embedstream.config import ApiSettings, AuthSettings, RedisSettings, Settings
from embedstream.streams.names import EMBED, StreamNames
from tests.conftest import REDIS_URL
from tests.integration.conftest import JWT_SECRET, ApiKeys, open_client, with_key_store
from tests.support.clock import FakeClock

pytestmark = pytest.mark.integration


CACHE_S = 1.0


def bounded(prefix: str, schema: str, max_lag: int, cache_s: float = CACHE_S) -> Settings:
    settings = with_key_store(Settings(), schema)
    settings.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix)
    settings.api = ApiSettings(
        max_ingest_lag=max_lag, ingest_lag_cache_s=cache_s, rate_limit="1000/minute"
    )
    settings.auth = AuthSettings(jwt_secret=JWT_SECRET)
    return settings


def on(clock: FakeClock) -> Callable[[FastAPI], None]:
    """Puts the API's lag gauge on ``clock``."""

    def started(app: FastAPI) -> None:
        app.state.guards.backpressure.gauge.clock = clock

    return started


async def post(client: httpx.AsyncClient, count: int = 1) -> httpx.Response:
    return await client.post("/v1/documents", json=[{"text": f"d{i}"} for i in range(count)])


async def test_writes_get_503_past_the_bound_and_resume_when_workers_catch_up(
    prefix: str, redis_client: redis.Redis, names: StreamNames, api_keys: ApiKeys
) -> None:
    await redis_client.xgroup_create(names.ingest, EMBED.group, id="0", mkstream=True)
    clock = FakeClock()
    async for client in open_client(
        bounded(prefix, api_keys.schema, max_lag=3),
        {"X-API-Key": api_keys.full},
        started=on(clock),
    ):
        accepted = await post(client, 4)  # lag 0 before: accepted, lag 4 after
        assert accepted.status_code == 202
        clock.advance(CACHE_S)
        refused_post = await post(client)
        refused_delete = await client.delete("/v1/documents/d0")
        read = await client.get(accepted.headers["location"])
        length = await redis_client.xlen(names.ingest)

        assert read.status_code == 200  # reads never wait for the workers
        for refused in (refused_post, refused_delete):
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "5"
            assert refused.json()["error"] == (
                f"the pipeline is backlogged: 4 commands on {names.ingest} wait for the embed "
                "workers (the limit is 3); nothing was accepted, retry in 5 seconds"
            )
        assert length == 4  # nothing was added by the refused writes

        await redis_client.xreadgroup(EMBED.group, "w1", {names.ingest: ">"}, count=10)
        clock.advance(CACHE_S)
        assert (await post(client)).status_code == 202


async def test_without_an_embedder_group_every_entry_counts(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    clock = FakeClock()
    async for client in open_client(
        bounded(prefix, api_keys.schema, max_lag=2),
        {"X-API-Key": api_keys.full},
        started=on(clock),
    ):
        assert (await post(client, 3)).status_code == 202
        clock.advance(CACHE_S)
        assert (await post(client)).status_code == 503


async def test_a_bound_of_zero_turns_backpressure_off(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    clock = FakeClock()
    async for client in open_client(
        bounded(prefix, api_keys.schema, max_lag=0),
        {"X-API-Key": api_keys.full},
        started=on(clock),
    ):
        for _ in range(3):
            assert (await post(client, 5)).status_code == 202
            clock.advance(CACHE_S)


async def test_the_lag_is_read_at_most_once_per_period(
    redis_client: redis.Redis, names: StreamNames
) -> None:
    clock = FakeClock()
    gauge = IngestLagGauge(redis_client, names, ttl_s=1.0, clock=clock)
    await redis_client.xgroup_create(names.ingest, EMBED.group, id="0", mkstream=True)
    assert await gauge.lag() == 0
    await redis_client.xadd(names.ingest, {"k": "v"})
    clock.advance(0.9)
    assert await gauge.lag() == 0  # the cached reading
    clock.advance(0.2)
    assert await gauge.lag() == 1


async def test_a_missing_stream_has_no_lag(redis_client: redis.Redis, names: StreamNames) -> None:
    assert await IngestLagGauge(redis_client, names).lag() == 0
