"""One reading of the streams' status shared by every caller of a process for a short
while: the console polls it every second or two per open tab, and each reading costs a
few commands per group; finding the streams costs a SCAN of every key under the prefix,
done far less often."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as redis

from embedstream.streams.names import StreamNames
from embedstream.streams.status import StatusReport, collect_status, discover_streams


class StatusCache:
    """``read()`` returns a report at most ``ttl_s`` old (one reading at a time, shared by
    concurrent callers); the list of streams is found again every ``discover_every_s``."""

    def __init__(
        self,
        client: redis.Redis,
        names: StreamNames,
        *,
        ttl_s: float = 1.0,
        discover_every_s: float = 30.0,
    ) -> None:
        self.client = client
        self.names = names
        self.ttl_s = ttl_s
        self.discover_every_s = discover_every_s
        self._lock = asyncio.Lock()
        self._report: StatusReport | None = None
        self._read_at = 0.0
        self._streams: list[str] | None = None
        self._found_at = 0.0

    async def read(self) -> StatusReport:
        async with self._lock:
            now = time.monotonic()
            if self._report is not None and now - self._read_at < self.ttl_s:
                return self._report
            if self._streams is None or now - self._found_at >= self.discover_every_s:
                self._streams = await discover_streams(self.client, self.names)
                self._found_at = now
            self._report = await collect_status(self.client, self.names, self._streams)
            self._read_at = time.monotonic()
            return self._report
