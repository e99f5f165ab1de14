"""Metrics after a real run: the API and each worker as processes on the real Redis,
PostgreSQL and an embedded Chroma; every /metrics scraped and parsed with
prometheus-client's parser. The counters say what the run did: every document acked once
per stage, every poison entry dead-lettered by the group that read it."""

from __future__ import annotations

import json

import httpx
import pytest
import redis.asyncio as redis
from bench.stack import free_port

from embedstream.schemas.envelope import Envelope
from tests.e2e.conftest import Stack
from tests.e2e.stores import wait_for_results
from tests.support.metrics import ALLOWED_LABELS, Scrape
from tests.support.streams import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DOCUMENTS = 6
STAGES = {"embed": "embedder", "index": "indexer", "persist": "persister"}


def scrape(url: str) -> Scrape:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return Scrape.parse(response.text)


async def test_counters_match_what_the_run_did(stack: Stack, results_reader: redis.Redis) -> None:
    names = stack.names
    # The workers trim what every group on a stream has acknowledged, in their
    # housekeeping (each second): read after the job completed, the embedded stream was
    # sometimes empty already, so the expected counts came out 0 and the counters never
    # "matched" (a timeout under load, when that read comes later). A group of the
    # test's own, like a downstream subscriber's, holds every embedded event until the
    # end: the counters are compared with every event the run wrote.
    await results_reader.xgroup_create(names.embedded, "metrics-test", id="0", mkstream=True)
    workers = {}
    stack.start("api", "api")
    for stage in STAGES:
        port = free_port()
        stack.start(f"{stage}-0", "worker", stage, EMBEDSTREAM_HEALTH_PORT=str(port))
        workers[stage] = f"http://127.0.0.1:{port}"
    stack.wait_ready()

    poison_ingest = [{"ce": "not json", "data": "{}"}, {"garbage": "no envelope at all"}]
    for fields in poison_ingest:
        await results_reader.xadd(names.ingest, fields)  # type: ignore[arg-type]
    poison_embedded = await results_reader.xadd(
        names.embedded, {"ce": json.dumps({"type": "document.embedded.v1"}), "data": "{"}
    )
    documents = [{"id": f"m{n}", "text": f"metrics document {n} " * (5 + 40 * n)}
                 for n in range(DOCUMENTS)]  # fmt: skip
    response = httpx.post(
        f"{stack.url}/v1/documents", json={"documents": documents}, headers=stack.headers
    )
    assert response.status_code == 202, response.text
    job = response.json()["job_id"]
    events = await wait_for_results(results_reader, names, {job}, timeout=300)
    assert next(e.type for e in events[job] if e.type.startswith("job.")) == "job.completed.v1"

    embedded = [
        Envelope.from_fields(fields)
        for entry_id, fields in await results_reader.xrange(names.embedded)
        if entry_id != poison_embedded
    ]
    events_written = len(embedded)
    assert events_written >= DOCUMENTS  # an embedded event (or two versions) per document
    chunks = sum(
        json.loads(e.data)["chunk_count"] for e in embedded if e.type == "document.embedded.v2"
    )

    async def settled() -> bool:
        """Every stage acked and dead-lettered all it will (counted after the XACK)."""
        s = {stage: scrape(url) for stage, url in workers.items()}

        def count(stage: str, outcome: str) -> float:
            return s[stage].value(
                "embedstream_messages_total", stage=stage, group=STAGES[stage], outcome=outcome
            )

        return (
            count("embed", "acked") == DOCUMENTS
            and count("embed", "dead_lettered") == 2
            and count("index", "acked") + count("index", "dead_lettered") == events_written + 1
            and count("persist", "acked") + count("persist", "dead_lettered") == events_written + 1
        )

    await wait_until(settled, within=60, interval=0.5, what="every stage's counters")
    scraped = {stage: scrape(url) for stage, url in workers.items()}

    for stage, group in STAGES.items():
        s = scraped[stage]
        messages = {
            outcome: s.value(
                "embedstream_messages_total", stage=stage, group=group, outcome=outcome
            )
            for outcome in ("acked", "retried", "dead_lettered")
        }
        poison = 2 if stage == "embed" else 1
        acked = DOCUMENTS if stage == "embed" else events_written
        assert messages == {"acked": acked, "retried": 0, "dead_lettered": poison}, stage
        # every entry read went through a batch
        read = s.value("embedstream_batch_messages_sum", stage=stage, group=group)
        assert read == acked + poison, stage
        assert s.value("embedstream_batch_duration_seconds_count", stage=stage, group=group) >= 1
        assert s.value("embedstream_batches_in_flight", stage=stage, group=group) == 0
        assert s.label_names() <= ALLOWED_LABELS, stage

    embed = scraped["embed"]
    model = next(iter(embed.label_values("embedstream_embed_chunks_total", "model")))
    assert embed.value("embedstream_embed_chunks_total", model=model) == chunks
    tokens = embed.value("embedstream_embed_tokens_total", model=model)
    assert 0 < tokens <= embed.value("embedstream_embed_padded_tokens_total", model=model)
    assert embed.value("embedstream_embed_encode_seconds_total", model=model) > 0
    assert scraped["index"].total("embedstream_store_write_duration_seconds_count", store="chroma")
    assert scraped["persist"].total(
        "embedstream_store_write_duration_seconds_count", store="postgres"
    )
    # a worker reports what it does, never the queue gauges
    assert not any(n.startswith("embedstream_group_") for n in embed.names())

    api = scrape(stack.url)
    assert api.value("embedstream_documents_accepted_total", operation="upsert") == DOCUMENTS
    requests = "embedstream_http_requests_total"
    assert api.value(requests, route="/v1/documents", method="POST", status="202") == 1

    async def drained() -> bool:
        s = scrape(stack.url)
        return all(
            s.value("embedstream_group_lag", stream=stream, group=group) == 0
            and s.value("embedstream_group_pending", stream=stream, group=group) == 0
            for stream, group in names.stage_groups()
        )

    await wait_until(drained, within=30, interval=0.5, what="lag and pending at 0")
    api = scrape(stack.url)
    dead = "embedstream_group_dead_letters_total"
    assert api.value(dead, stream=names.ingest, group="embedder") == 2
    assert api.value(dead, stream=names.embedded, group="indexer") == 1
    assert api.value(dead, stream=names.embedded, group="persister") == 1
    assert api.value("embedstream_dead_letters", stream=names.dlq) == 4
    # the one job completed; the poison entries had no job to fail
    assert api.value("embedstream_jobs_total", status="completed") == 1
    assert api.value("embedstream_jobs_total", status="failed") == 0
    for stream, group in names.stage_groups():
        assert api.value("embedstream_group_consumers_active", stream=stream, group=group) == 1
