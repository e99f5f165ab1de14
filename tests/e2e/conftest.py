"""End-to-end fixtures: the real API and workers as separate processes, on the real
Redis, PostgreSQL and an embedded Chroma, isolated by a fresh prefix, schema and folder."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from bench.stack import Stack, create_stack, remove_stack_data

PG_DSN = os.environ.get(
    "EMBEDSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("EMBEDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

__all__ = ["PG_DSN", "REDIS_URL", "Stack"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = create_stack(
        tmp_path,
        redis_url=REDIS_URL,
        database_url=PG_DSN,
        EMBEDSTREAM_BLOCK_MS="200",
        EMBEDSTREAM_VISIBILITY_TIMEOUT_MS="4000",
        EMBEDSTREAM_CLAIM_INTERVAL_MS="500",
        EMBEDSTREAM_RETRY_BACKOFF_MS="100",
        EMBEDSTREAM_DRAIN_TIMEOUT_S="10",
    )
    try:
        yield s
    finally:
        s.stop_all()
        asyncio.run(remove_stack_data(s))


@pytest.fixture
async def results_reader(stack: Stack) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()
