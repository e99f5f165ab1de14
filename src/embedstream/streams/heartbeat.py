"""Loop progress of a stream worker, for its liveness probe.

The run loop beats once per turn (``Heartbeat.loop``); each batch gets a
``BatchProgress`` while its handler runs, refreshed by ``report_progress()`` from the
handler (the embed stage calls it after every encode sub-batch, from any thread). The
health endpoint (``embedstream.workers.health``) reads ``Heartbeat.stall()`` from its own
thread: the answer says for how long nothing has moved, when that is longer than the
bound, or None.

Writes are plain attribute stores (a float each), so the loop pays a clock read per turn
and two set operations per batch; readers take a snapshot under a lock that only batch
start and end share.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


class BatchProgress:
    """One batch in flight: when it started and when it last made progress."""

    __slots__ = ("at", "clock", "started")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started = self.at = clock()

    def beat(self) -> None:
        self.at = self.clock()


_current: contextvars.ContextVar[BatchProgress | None] = contextvars.ContextVar(
    "embedstream_batch_progress", default=None
)


def report_progress() -> None:
    """Tell the liveness probe that the batch being handled has moved on (a sub-batch
    encoded, a page written). A no-op outside a batch. Safe from worker threads that run
    in a copy of the batch's context (``asyncio.to_thread``, ``contextvars.copy_context``)."""
    progress = _current.get()
    if progress is not None:
        progress.beat()


@dataclass(frozen=True)
class Stall:
    """Why the worker is not live: what has not moved, for how long."""

    what: str
    seconds: float

    def __str__(self) -> str:
        return f"{self.what} has not moved for {self.seconds:.1f}s"


class Heartbeat:
    """Progress marks of one worker loop (see the module doc)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.running = False  # the loop has started and not yet ended
        self.loop_at = clock()
        self.slots = 1  # batches the loop may run at once (max_in_flight)
        self._batches: set[BatchProgress] = set()
        self._lock = threading.Lock()

    # -- written by the run loop ---------------------------------------------------

    def start(self, slots: int) -> None:
        self.slots = slots
        self.loop_at = self.clock()
        self.running = True

    def stop(self) -> None:
        self.running = False

    def loop(self) -> None:
        """One turn of the loop."""
        self.loop_at = self.clock()

    def batch_started(self) -> BatchProgress:
        """Track a batch; the handler's ``report_progress()`` refreshes it."""
        progress = BatchProgress(self.clock)
        with self._lock:
            self._batches.add(progress)
        _current.set(progress)
        return progress

    def batch_ended(self, progress: BatchProgress) -> None:
        with self._lock:
            self._batches.discard(progress)
        self.loop_at = self.clock()  # the loop is woken by a batch's end

    # -- read by the probe (any thread) --------------------------------------------

    def in_flight(self) -> int:
        with self._lock:
            return len(self._batches)

    def stall(self, bound_s: float) -> Stall | None:
        """What has not moved for longer than ``bound_s`` seconds, or None.

        Progress is any of: a turn of the loop, a batch starting or ending, a handler's
        ``report_progress()``. A worker is stalled when none of these happened within the
        bound: every slot is held by a batch that does not move (a stuck handler), or the
        loop itself does not turn (a blocked event loop, a hung connection). One batch
        stuck while the others go on is not a stall: the loop still makes progress."""
        if not self.running:
            return None
        now = self.clock()
        with self._lock:
            marks = [batch.at for batch in self._batches]
        idle = now - max([self.loop_at, *marks])
        if idle <= bound_s:
            return None
        if len(marks) >= self.slots:
            return Stall(f"every batch in flight ({len(marks)})", idle)
        return Stall("the worker loop", idle)
