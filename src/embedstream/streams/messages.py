"""What a handler receives (``Message``) and what it answers per message (outcomes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar

from redis.asyncio.client import Pipeline

from embedstream.errors import PermanentError
from embedstream.schemas.envelope import Envelope, Fields

T = TypeVar("T")


@dataclass(slots=True)
class Message(Generic[T]):
    """One stream entry, decoded, with the number of times it has been delivered.

    Read-only by convention: not frozen, because a frozen dataclass costs three times as
    much to create, and one is created per message on the hot path."""

    id: str
    stream: str
    fields: Fields
    body: T
    attempt: int


@dataclass(frozen=True, slots=True)
class Publish:
    """An entry to add to a stream in the same transaction as the ack."""

    stream: str
    fields: Mapping[str, str | bytes]

    @classmethod
    def event(cls, stream: str, envelope: Envelope) -> Publish:
        return cls(stream, envelope.to_fields())


TransactionOp: TypeAlias = Callable[[Pipeline], Any]
"""Queues commands on the ack's MULTI/EXEC pipeline; may return a coroutine (a Lua
script call does), which the runtime awaits before EXEC. Call scripts through
``embedstream.adapters.redis_client.queue_script`` (a cluster pipeline needs EVAL)."""


@dataclass(frozen=True, slots=True)
class KeyedOp:
    """A ``TransactionOp`` that says which hash slot it writes: ``key`` is one of its
    keys. An op without one writes the slot of the stream being acked. On a cluster with
    partitions, the ack's writes are grouped by slot (``StreamConsumer.finish``)."""

    key: str
    op: TransactionOp

    def __call__(self, pipe: Pipeline) -> Any:
        return self.op(pipe)


@dataclass(slots=True)
class Ack:
    """Done: acknowledge, publishing ``publish`` and running ``ops`` in the same MULTI/EXEC.

    Not frozen, like ``Message``: handlers create one per message."""

    publish: Sequence[Publish] = ()
    ops: Sequence[TransactionOp] = ()


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after a backoff (dead-lettered once ``max_deliveries`` is reached)."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Move to the dead-letter stream now."""

    error: BaseException
    extra: Mapping[str, str] = field(default_factory=dict)


Outcome: TypeAlias = Ack | Retry | DeadLetter
Handler: TypeAlias = Callable[[Sequence[Message[T]]], Awaitable[Sequence[Outcome]]]
Decoder: TypeAlias = Callable[[Fields], T]
DeadLetterOps: TypeAlias = Callable[[Fields, BaseException], Sequence[TransactionOp]]
"""Extra writes (e.g. job bookkeeping) to run in the transaction that dead-letters an entry.
Called with the entry's raw fields, so it must cope with undecodable ones."""
SettleOps: TypeAlias = Callable[[str], Sequence[TransactionOp]]
"""Writes to run, by entry id, in the transaction that acks or dead-letters an entry."""


def outcome_for(error: BaseException) -> Outcome:
    """The outcome an exception stands for: permanent ones dead-letter, the rest retry."""
    if isinstance(error, PermanentError):
        return DeadLetter(error)
    return Retry(error)


def decode_envelope(fields: Fields) -> Envelope:
    """The default decoder."""
    return Envelope.from_fields(fields)
