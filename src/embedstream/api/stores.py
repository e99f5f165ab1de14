"""The API's read side: a PostgreSQL pool for document reads and searches, the
``DocumentReader`` and the ``SearchService``, built by the lifespan and kept on
``app.state`` (``documents``, ``search``).

The pool connects lazily (``min_size=0``), so the ingress starts while PostgreSQL is
away. The search service loads no model and opens no Chroma client until the first
search, unless ``EMBEDSTREAM_SEARCH_PRELOAD`` asks for it at start (a failed preload is
logged and the API serves on: searches then answer 503).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI

from embedstream.adapters.postgres.document_reads import DocumentReader
from embedstream.adapters.postgres.pool import APPLICATION_NAME, quote_ident
from embedstream.config import Settings
from embedstream.logging import get_logger
from embedstream.search.query_model import SearchUnavailable
from embedstream.search.service import SearchService

log = get_logger(__name__)

READ_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0


async def create_read_pool(settings: Settings) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.postgres.database_url,
        min_size=0,
        max_size=settings.postgres.pool_max_size,
        command_timeout=READ_TIMEOUT_S,
        timeout=CONNECT_TIMEOUT_S,
        server_settings={
            "search_path": quote_ident(settings.postgres.database_schema),
            "application_name": f"{APPLICATION_NAME}-api-read",
        },
    )


@dataclass
class ReadSide:
    pool: asyncpg.Pool
    search: SearchService

    async def aclose(self) -> None:
        await asyncio.to_thread(self.search.close)
        try:
            await asyncio.wait_for(self.pool.close(), 10.0)
        except TimeoutError:
            self.pool.terminate()


async def open_read_side(app: FastAPI, settings: Settings) -> ReadSide:
    pool = await create_read_pool(settings)
    service = SearchService(settings, pool, live_index=True)
    app.state.documents = DocumentReader(pool)
    app.state.search = service
    if settings.search.search_preload:
        try:
            await service.start()
        except SearchUnavailable as exc:
            log.error("search preload failed; searches answer 503", reason=exc.code)
    return ReadSide(pool, service)
