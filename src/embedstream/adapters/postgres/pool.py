"""Building the asyncpg pool a process uses (never at module level)."""

from __future__ import annotations

import asyncio
import contextlib
import random

import asyncpg

from embedstream.config import PostgresSettings
from embedstream.errors.postgres import is_transient
from embedstream.logging import get_logger

log = get_logger("embedstream.postgres")

APPLICATION_NAME = "embedstream"
COMMAND_TIMEOUT_S = 60.0


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


async def create_pool(settings: PostgresSettings) -> asyncpg.Pool:
    """A pool whose connections resolve unqualified names in ``database_schema``."""
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        command_timeout=COMMAND_TIMEOUT_S,
        server_settings={
            "search_path": quote_ident(settings.database_schema),
            "application_name": APPLICATION_NAME,
        },
    )


async def connect_pool(
    settings: PostgresSettings, stop: asyncio.Event, *, max_delay_s: float = 10.0
) -> asyncpg.Pool | None:
    """``create_pool``, waiting out an unavailable server with backoff until ``stop``
    is set (then None). Errors that waiting cannot fix (bad password, no such database)
    are raised."""
    failures = 0
    while not stop.is_set():
        try:
            return await create_pool(settings)
        except Exception as exc:
            if not is_transient(exc):
                raise
            failures += 1
            delay = min(max_delay_s, 0.1 * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
            log.warning(
                "postgres unavailable, retrying",
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=round(delay, 3),
                failures=failures,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return None
