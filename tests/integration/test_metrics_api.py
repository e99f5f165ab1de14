"""The ingress' GET /metrics on the real Redis: requests by route template, method and
status, documents and bytes accepted, and the queue gauges read from Redis, parsed with
prometheus-client's parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis

from embedstream.config import MetricsSettings, RedisSettings, Settings
from embedstream.streams.init import init_streams
from embedstream.streams.names import StreamNames
from tests.integration.conftest import ApiKeys, open_client, with_key_store
from tests.support.metrics import ALLOWED_LABELS, Scrape
from tests.support.streams import wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"


def metrics_settings(prefix: str, keys: ApiKeys, **metrics: object) -> Settings:
    settings = with_key_store(Settings(), keys.schema)
    settings.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix)
    settings.metrics = MetricsSettings(**metrics)  # type: ignore[arg-type]
    return settings


@pytest.fixture
async def client(
    prefix: str, redis_client: redis.Redis, names: StreamNames, api_keys: ApiKeys
) -> AsyncIterator[httpx.AsyncClient]:
    await init_streams(redis_client, names)  # the groups exist, as after `embedstream init`
    # a long cache: every scrape of a test sees the reading of its first scrape
    settings = metrics_settings(prefix, api_keys, metrics_cache_s=60)
    async for c in open_client(settings, {"X-API-Key": api_keys.full}):
        yield c


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape.parse(response.text)


async def test_requests_are_counted_by_route_template_method_and_status(
    client: httpx.AsyncClient,
) -> None:
    before = await scrape(client)
    body = json.dumps({"documents": [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}]})
    headers = {"Content-Type": "application/json"}
    accepted = await client.post("/v1/documents", content=body, headers=headers)
    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 200
    no_key = {**headers, "X-API-Key": ""}
    assert (await client.post("/v1/documents", content=body, headers=no_key)).status_code == 401
    bad = await client.post("/v1/documents", json={"documents": [{"text": ""}]})
    assert bad.status_code == 422
    assert (await client.get(f"/no/such/path/{job_id}")).status_code == 404
    # answered by the body limit before routing, from the declared Content-Length
    too_large = json.dumps({"documents": [{"text": "x" * 11 * 1024 * 1024}]})
    assert (
        await client.post("/v1/documents", content=too_large, headers=headers)
    ).status_code == 413
    changed = (await scrape(client)).minus(before)

    requests = "embedstream_http_requests_total"
    post = {"route": "/v1/documents", "method": "POST"}
    assert changed.value(requests, **post, status="202") == 1
    assert changed.value(requests, **post, status="401") == 1
    assert changed.value(requests, **post, status="422") == 1
    assert changed.value(requests, route="other", method="POST", status="413") == 1
    assert changed.value(requests, route="/v1/jobs/{job_id}", method="GET", status="200") == 1
    # a path no route matches is counted under one label value, not under its path
    assert changed.value(requests, route="other", method="GET", status="404") == 1
    routes = (await scrape(client)).label_values(requests, "route")
    assert not any(job_id in route for route in routes)
    assert changed.value("embedstream_http_request_duration_seconds_count", **post) == 3
    assert changed.value("embedstream_documents_accepted_total", operation="upsert") == 2
    assert changed.value("embedstream_request_bytes_accepted_total") == len(body)


async def test_queue_gauges_read_the_streams_once_per_cache_period(
    client: httpx.AsyncClient, redis_client: redis.Redis, names: StreamNames
) -> None:
    documents = [{"id": f"d{n}", "text": f"text {n}"} for n in range(3)]
    assert (await client.post("/v1/documents", json={"documents": documents})).status_code == 202
    scrape_1 = await scrape(client)
    ingest = {"stream": names.ingest, "group": "embedder"}
    assert scrape_1.value("embedstream_queue_up") == 1
    assert scrape_1.value("embedstream_stream_length", stream=names.ingest) == 3
    assert scrape_1.value("embedstream_group_lag", **ingest) == 3
    assert scrape_1.value("embedstream_group_pending", **ingest) == 0
    assert scrape_1.value("embedstream_group_consumers", **ingest) == 0
    assert scrape_1.value("embedstream_dead_letters", stream=names.dlq) == 0
    # every stage's group is there
    groups = scrape_1.label_values("embedstream_group_lag", "group")
    assert {"embedder", "indexer", "persister"} <= groups
    # within the cache period, a scrape answers the same reading without asking Redis
    await redis_client.xadd(names.ingest, {"ce": "{}", "data": "{}"})
    scrape_2 = await scrape(client)
    assert scrape_2.value("embedstream_group_lag", **ingest) == 3
    assert scrape_2.label_names() <= ALLOWED_LABELS


async def test_metrics_off_serves_no_endpoint(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    settings = metrics_settings(prefix, api_keys, metrics=False)
    async for client in open_client(settings, {"X-API-Key": api_keys.full}):
        assert (await client.get("/metrics")).status_code == 404


async def test_queue_gauges_off_leaves_them_to_the_exporter(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    settings = metrics_settings(prefix, api_keys, metrics_queues=False)
    async for client in open_client(settings, {"X-API-Key": api_keys.full}):
        await scrape(client)
        scraped = await scrape(client)  # the first scrape is counted by now
        assert "embedstream_http_requests_total" in scraped.names()
        assert not any(name.startswith("embedstream_group_") for name in scraped.names())


async def test_the_exporter_serves_the_queue_gauges(
    prefix: str, redis_client: redis.Redis, names: StreamNames
) -> None:
    from bench.stack import free_port

    await init_streams(redis_client, names)
    await redis_client.xadd(names.ingest, {"ce": "{}", "data": "{}"})
    port = free_port()
    env = {**os.environ, "EMBEDSTREAM_REDIS_URL": REDIS_URL, "EMBEDSTREAM_STREAM_PREFIX": prefix}
    proc = subprocess.Popen(  # noqa: ASYNC220 - a server for the test, not awaited
        [sys.executable, "-m", "embedstream", "exporter", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    scraped: list[Scrape] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def answered() -> bool:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                try:
                    response = await http.get("/metrics")
                except httpx.TransportError:
                    return False
                scraped.append(Scrape.parse(response.text))
                return True

            await wait_until(answered, within=30, interval=0.2, what="the exporter")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    ingest = {"stream": names.ingest, "group": "embedder"}
    assert scraped[-1].value("embedstream_group_lag", **ingest) == 1
    assert scraped[-1].value("embedstream_queue_up") == 1
