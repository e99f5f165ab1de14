"""What keeps a batch safe while it runs: its lease (entries stay owned while a slow
handler works), the backoff of Redis calls that are retried, and writes that finish even
when the batch is cancelled."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

from embedstream.logging import get_logger
from embedstream.streams.consumer import StreamConsumer

log = get_logger("embedstream.worker")

CANCEL_GRACE_S = 5.0
"""How long a drain keeps cancelling batches that do not end (see ``CANCEL_NOTE``)."""

# CANCEL_NOTE: with redis-py's default socket_timeout, every command is sent through
# asyncio.wait_for, which on Python 3.11 drops a cancellation that arrives as the send
# completes: the cancelled task just carries on. The runtime therefore never relies on a
# single cancel() to stop its own tasks.


class Backoff:
    """Exponential backoff with jitter for reconnecting; reset after a success."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next_delay(self) -> float:
        self.failures += 1
        delay: float = min(self.cap, self.base * 2.0 ** (self.failures - 1))
        jitter: float = random.uniform(0.5, 1.0)
        return delay * jitter

    def reset(self) -> None:
        self.failures = 0


class BatchLease:
    """Keeps a batch's entries owned (idle reset to 0) while its handler runs, so that a
    slow but alive consumer is not robbed. Costs one timer per batch; a renewal task only
    exists for batches that outlive a renewal interval (a third of the visibility
    timeout)."""

    def __init__(
        self,
        consumer: StreamConsumer,
        ids: list[str],
        visibility_ms: int,
        *,
        renewed: Callable[[], None] | None = None,
    ) -> None:
        """``renewed``: called after each renewal that succeeded (for the metrics)."""
        self._consumer = consumer
        self._renewed = renewed
        self._ids = ids
        self._interval = visibility_ms / 3000
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            self._interval, self._renew_now
        )
        self._renewal: asyncio.Task[None] | None = None

    def _renew_now(self) -> None:
        self._renewal = self._loop.create_task(self._renew())

    async def _renew(self) -> None:
        try:
            await self._consumer.set_idle(self._ids, 0)
            if self._renewed is not None:
                self._renewed()
        except Exception as exc:  # a missed renewal must not end the next ones
            log.warning(
                "lease renewal failed",
                stream=self._consumer.stream,
                group=self._consumer.group,
                error=f"{type(exc).__name__}: {exc}",
            )
        if self._timer is not None:  # not released meanwhile
            self._timer = self._loop.call_later(self._interval, self._renew_now)

    async def release(self) -> None:
        """Stop renewing; returns once no renewal can land after this point (a hand-back
        or an ack that follows is not overtaken by a late renewal)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._renewal is not None and not self._renewal.done():
            # one command, bounded by the client's timeouts; waited for, not cancelled
            # (a cancel can be lost inside redis-py, see CANCEL_NOTE)
            await asyncio.wait({self._renewal})


async def complete(write: Coroutine[Any, Any, None]) -> None:
    """Run a write (acks, dead letters, hand-backs, retry schedules) to its end even when
    the batch is cancelled (end of a drain), then re-raise the cancellation. Each write
    is bounded by its own deadline; finishing it keeps a handled batch from being handled
    again."""
    task = asyncio.ensure_future(write)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        break
    if cancelled:
        raise asyncio.CancelledError
