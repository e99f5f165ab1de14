"""One search from the command line (``embedstream search``): the service the API uses,
on a pool and an index opened for this search alone (which may be an embedded Chroma
folder: it is read as it is now)."""

from __future__ import annotations

import asyncio

from embedstream.config import Settings
from embedstream.schemas.tenancy import check_tenant
from embedstream.search.service import SearchQuery, SearchResults, SearchService


async def search_once(settings: Settings, tenant: str, query: SearchQuery) -> SearchResults:
    from embedstream.adapters.postgres import create_pool

    check_tenant(tenant)  # InvalidTenant before any model is loaded
    pool = await create_pool(settings.postgres)
    service = SearchService(settings, pool, live_index=False)
    try:
        return await service.search(tenant, query)
    finally:
        await asyncio.to_thread(service.close)
        await pool.close()
