"""Fixtures for the HTTP ingress on the real services: a PostgreSQL schema holding API
keys, and apps that run their real lifespan."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI

from embedstream.adapters.postgres import create_pool
from embedstream.adapters.postgres.migrate import migrate
from embedstream.adapters.postgres.pool import quote_ident
from embedstream.api.app import create_app
from embedstream.api.security.apikeys import ApiKeyRecord, ApiKeyStore
from embedstream.config import PostgresSettings, Settings
from embedstream.jobs.tracker import JobTracker
from embedstream.streams.names import StreamNames

PG_DSN = os.environ.get(
    "EMBEDSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
JWT_SECRET = "test-only-jwt-secret-0123456789-abcdefghijklmnop"


@dataclass(frozen=True)
class ApiKeys:
    """Keys of tenant ``acme`` (and one of tenant ``globex``) in one schema, shared by a
    test session (read-only)."""

    schema: str
    full: str  # documents:write + jobs:read
    writer: str  # documents:write
    reader: str  # jobs:read
    admin: str  # admin
    other: str  # tenant globex: documents:write + jobs:read


async def create_key(
    schema: str, tenant: str, *scopes: str, name: str = "test"
) -> tuple[ApiKeyRecord, str]:
    pool = await asyncpg.create_pool(
        PG_DSN, min_size=1, max_size=1, server_settings={"search_path": quote_ident(schema)}
    )
    try:
        return await ApiKeyStore(pool).create(tenant=tenant, name=name, scopes=scopes)
    finally:
        await pool.close()


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def api_keys() -> Iterator[ApiKeys]:
    schema = f"t_keys_{uuid.uuid4().hex[:10]}"

    async def setup() -> ApiKeys:
        await migrate(PG_DSN, schema)
        keys = [
            (await create_key(schema, "acme", *scopes))[1]
            for scopes in (
                ("documents:write", "jobs:read"),
                ("documents:write",),
                ("jobs:read",),
                ("admin",),
            )
        ]
        other = await create_key(schema, "globex", "documents:write", "jobs:read")
        return ApiKeys(schema, *keys, other=other[1])

    keys = asyncio.run(setup())
    yield keys
    asyncio.run(drop_schema(schema))


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh schema name of this test's own (not migrated), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    await drop_schema(name)


@pytest.fixture
async def pool(schema: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on ``schema``, migrated to the latest version."""
    await migrate(PG_DSN, schema)
    pg = await create_pool(PostgresSettings(database_url=PG_DSN, database_schema=schema))
    yield pg
    await pg.close()


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A fresh, migrated schema of this test's own (for keys it creates or revokes)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    await migrate(PG_DSN, schema)
    yield schema
    await drop_schema(schema)


def with_key_store(settings: Settings, schema: str) -> Settings:
    settings.postgres = PostgresSettings(database_url=PG_DSN, database_schema=schema)
    return settings


async def open_client(
    settings: Settings,
    headers: dict[str, str] | None = None,
    *,
    started: Callable[[FastAPI], None] | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on ``create_app(settings)`` with its lifespan running; ``started``
    sees the app once its lifespan has started (to reach what it built)."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers=headers,
        ) as client,
    ):
        if started is not None:
            started(app)
        yield client


@pytest.fixture
def tracker(redis_client: redis.Redis, names: StreamNames) -> JobTracker:
    """The job bookkeeping of the test's prefix."""
    return JobTracker(redis_client, names)
