"""Helpers for runtime tests: producing envelopes, polling with a deadline, reading a
group's pending list, and handlers that record what they saw."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as redis
from pydantic import BaseModel

from embedstream.config import ConsumerSettings
from embedstream.schemas.envelope import Envelope
from embedstream.streams.messages import Ack, Message, Outcome
from embedstream.streams.names import StreamNames


class Item(BaseModel):
    n: int


async def produce(
    client: redis.Redis, stream: str, count: int, start: int = 0, *, at_ms: int | None = None
) -> list[str]:
    """Add ``count`` envelopes carrying ``Item(n)``; returns their entry ids in order.
    With ``at_ms``, the entries get ids of that time (``{at_ms}-{n}``): entries of the
    past without waiting for time to pass."""
    ids: list[str] = []
    for n in range(start, start + count):
        env = Envelope.wrap(
            "test.item.v1", Item(n=n), source="tests", tenant="t1", subject=f"doc-{n}"
        )
        entry_id = await client.xadd(
            stream,
            env.to_fields(),  # type: ignore[arg-type]
            id="*" if at_ms is None else f"{at_ms}-{n}",
        )
        ids.append(entry_id.decode())
    return ids


async def wait_until(
    predicate: Callable[[], Awaitable[bool]],
    *,
    within: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


async def pending_count(client: redis.Redis, stream: str, group: str) -> int:
    summary: dict[str, Any] = await client.xpending(stream, group)
    return int(summary["pending"])


async def pending_rows(client: redis.Redis, stream: str, group: str) -> list[dict[str, Any]]:
    """Every pending entry: message_id (str), consumer (str), idle ms, times_delivered."""
    rows = await client.xpending_range(stream, group, "-", "+", 10_000)
    return [
        {
            "message_id": r["message_id"].decode(),
            "consumer": r["consumer"].decode(),
            "idle": int(r["time_since_delivered"]),
            "times_delivered": int(r["times_delivered"]),
        }
        for r in rows
    ]


async def consumer_names(client: redis.Redis, stream: str, group: str) -> set[str]:
    rows = await client.xinfo_consumers(stream, group)
    return {r["name"].decode() if isinstance(r["name"], bytes) else r["name"] for r in rows}


def acked_key(names: StreamNames, consumer: str) -> str:
    """Hash entry id -> times acknowledged by ``consumer`` (written inside the ack)."""
    return names.key("acked", consumer)


async def acked_counts(client: redis.Redis, names: StreamNames, consumer: str) -> Counter[str]:
    raw = await client.hgetall(acked_key(names, consumer))
    return Counter({k.decode(): int(v) for k, v in raw.items()})


async def dlq_entries(client: redis.Redis, names: StreamNames) -> list[dict[str, str]]:
    rows = await client.xrange(names.dlq)
    return [
        {k.decode(): v.decode(errors="replace") for k, v in fields.items()} for _, fields in rows
    ]


def ack_recording(names: StreamNames, consumer: str, entry_id: str) -> Ack:
    """An Ack whose transaction also counts the ack in ``acked_key``."""
    key = acked_key(names, consumer)
    return Ack(ops=[lambda pipe: pipe.hincrby(key, entry_id, 1)])


class Recorder:
    """A handler that records every delivery (id, attempt) and acks through the
    transaction; ``decide`` may answer another outcome for a message."""

    def __init__(
        self,
        names: StreamNames,
        consumer: str,
        decide: Callable[[Message[Envelope]], Outcome | None] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.names = names
        self.consumer = consumer
        self.decide = decide
        self.delay = delay
        self.deliveries: list[tuple[str, int]] = []
        self.batches: list[list[str]] = []
        self.started = asyncio.Event()

    @property
    def counts(self) -> Counter[str]:
        return Counter(entry_id for entry_id, _ in self.deliveries)

    def attempts(self, entry_id: str) -> list[int]:
        return [a for i, a in self.deliveries if i == entry_id]

    async def __call__(self, messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        self.batches.append([m.id for m in messages])
        self.deliveries.extend((m.id, m.attempt) for m in messages)
        self.started.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        out: list[Outcome] = []
        for m in messages:
            decided = self.decide(m) if self.decide else None
            out.append(decided or ack_recording(self.names, self.consumer, m.id))
        return out


def settings(name: str, base: ConsumerSettings, **changes: Any) -> ConsumerSettings:
    """``base`` with another consumer name and other changes."""
    return base.model_copy(update={"consumer_name": name, **changes})
