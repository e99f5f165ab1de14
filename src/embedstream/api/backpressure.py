"""Backpressure: refuse writes while the embedder group lags too far behind.

The lag of group ``embedder`` on ``{prefix}:ingest`` (``XINFO GROUPS``) is read at most
once per ``ttl_s`` per process, however many requests come in; when it passes
``EMBEDSTREAM_MAX_INGEST_LAG`` writes get 503 with ``Retry-After`` until the workers
catch up. Reads are never refused for lag.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError
from starlette.exceptions import HTTPException

from embedstream.errors.redis import is_no_such_stream
from embedstream.streams.names import EMBED, StreamNames, as_text

RETRY_AFTER_S = 5


class Backlogged(HTTPException):
    def __init__(self, lag: int, limit: int, stream: str) -> None:
        super().__init__(
            status_code=503,
            detail=f"the pipeline is backlogged: {lag} commands on {stream} wait for the "
            f"embed workers (the limit is {limit}); nothing was accepted, retry in "
            f"{RETRY_AFTER_S} seconds",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


class IngestLagGauge:
    """The embedder group's lag on the ingest stream, cached for ``ttl_s`` seconds.

    Without the group (no embed worker started yet) every entry counts as lag; when
    Redis cannot compute the lag (entries deleted inside the unread range) the stream
    length is used as an upper bound."""

    def __init__(
        self,
        client: redis.Redis,
        names: StreamNames,
        *,
        ttl_s: float = 1.0,
        group: str = EMBED.group,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.streams = names.ingest_streams()  # every partition's
        self.stream = self.streams[0] if len(self.streams) == 1 else names.key("ingest")
        self.group = group
        self.ttl_s = ttl_s
        self.clock = clock
        self._value = 0
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def lag(self) -> int:
        if self._fresh():
            return self._value
        async with self._lock:  # one reading for every request waiting on it
            if not self._fresh():
                self._value = await self._read()
                self._read_at = self.clock()
        return self._value

    def _fresh(self) -> bool:
        return self._read_at is not None and self.clock() - self._read_at < self.ttl_s

    async def _read(self) -> int:
        """The group's lag summed over the partitions' ingest streams."""
        total = 0
        for stream in self.streams:
            total += await self._read_stream(stream)
        return total

    async def _read_stream(self, stream: str) -> int:
        try:
            groups: list[dict[str, Any]] = await self.client.xinfo_groups(stream)
        except ResponseError as exc:
            if is_no_such_stream(exc):
                return 0
            raise
        for info in groups:
            name = info.get("name")
            if as_text(name) == self.group:
                lag = info.get("lag")
                if lag is not None:
                    return int(lag)
                break
        return int(await self.client.xlen(stream))


class Backpressure:
    def __init__(self, gauge: IngestLagGauge, max_lag: int) -> None:
        self.gauge = gauge
        self.max_lag = max_lag

    async def check(self) -> None:
        """``Backlogged`` (503) when the lag is over the bound; nothing when it is off."""
        if self.max_lag <= 0:
            return
        lag = await self.gauge.lag()
        if lag > self.max_lag:
            raise Backlogged(lag, self.max_lag, self.gauge.stream)
