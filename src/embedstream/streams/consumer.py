"""One consumer of one stream in one group: the Redis operations of the runtime.

Read, reclaim, renew, ack-with-publish and dead-letter. The loop that drives these
lives in ``embedstream.streams.runner``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError, SlotNotCoveredError

from embedstream.adapters.redis_client import NO_REPLICA_ACK, ReplicaAck, is_cluster_client
from embedstream.errors import GroupMissingError
from embedstream.errors.redis import is_busygroup
from embedstream.schemas.envelope import Fields
from embedstream.streams import scripts
from embedstream.streams.messages import (
    Ack,
    DeadLetter,
    Message,
    Outcome,
    Retry,
    TransactionOp,
)
from embedstream.streams.names import StreamNames, as_text

RawEntry = tuple[str, Fields, int]
"""(entry id, fields, delivery count)"""

DLQ_META_PREFIX = "dlq_"

T = TypeVar("T")


def _fields(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """A flat [field, value, ...] reply as a dict."""
    if len(flat) == 4:  # an envelope (ce, data): a dict display is 2.5x faster than zip
        return {flat[0]: flat[1], flat[2]: flat[3]}
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=False))


@dataclass(frozen=True)
class Dead:
    """A message on its way to the dead-letter stream."""

    entry_id: str
    fields: Fields
    attempts: int
    error: BaseException
    extra: Mapping[str, str]
    ops: Sequence[TransactionOp] = ()


class StreamConsumer:
    """Redis operations for ``consumer`` in ``group`` on ``stream``."""

    def __init__(
        self,
        client: redis.Redis,
        names: StreamNames,
        stream: str,
        group: str,
        consumer: str,
        *,
        stage: str | None = None,
        start_id: str = "0",
        replica_ack: ReplicaAck = NO_REPLICA_ACK,
    ) -> None:
        """``replica_ack``: after a transaction that acks entries and writes their
        follow-ups, wait for that many replicas (``finish``)."""
        self.client = client
        self.names = names
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.stage = stage or group
        self.start_id = start_id
        # XREADGROUP is read through a view of the same connection pool without redis-py's
        # reply conversion (a dict per entry, built twice over, and a metrics hook): on
        # ~1 KB entries that conversion cost as much as decoding the envelopes.
        # (A cluster client has a pool per node; ``create_redis`` drops the conversion
        # from the cluster client itself.)
        self._reader: Any = client  # Any: redis-py leaves execute_command untyped
        self._cluster: RedisCluster | None = client if isinstance(client, RedisCluster) else None
        if self._cluster is None:
            reader = redis.Redis(connection_pool=client.connection_pool)
            reader.response_callbacks.pop("XREADGROUP", None)
            self._reader = reader
        self.replica_ack = replica_ack
        self.split_by_slot = names.partitioned and is_cluster_client(client)
        self._claim_idle = client.register_script(scripts.CLAIM_IDLE)
        self._claim_own = client.register_script(scripts.CLAIM_OWN)
        self._set_idle = client.register_script(scripts.SET_IDLE_IF_OWNER)
        self._reap = client.register_script(scripts.REAP_CONSUMERS)
        self._trim = client.register_script(scripts.TRIM_ACKED)

    # -- group -----------------------------------------------------------------------

    async def ensure_group(self) -> bool:
        """Create the group (and the stream) if missing. True when it was created."""
        try:
            await self.client.xgroup_create(self.stream, self.group, self.start_id, mkstream=True)
        except ResponseError as exc:
            if is_busygroup(exc):
                return False
            raise
        return True

    def group_missing(self) -> GroupMissingError:
        return GroupMissingError(self.stream, self.group)

    # -- reading ---------------------------------------------------------------------

    async def read_new(self, count: int, block_ms: int | None) -> list[RawEntry]:
        block = () if block_ms is None else ("BLOCK", block_ms)
        command = (
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count, *block,
            "STREAMS", self.stream, ">",
        )  # fmt: skip
        reply: Any
        if self._cluster is not None:
            # straight to the node serving the stream: XREADGROUP's keys are "movable",
            # and redis-py would ask a node (COMMAND GETKEYS, twice) where to send every
            # read. After a failover or a resharding the node is wrong once: that call
            # fails (MOVED, or the connection), redis-py refreshes its slot map, the
            # runner waits the error out and the next read goes to the new node.
            node = self._cluster.get_node_from_key(self.stream)
            if node is None:
                raise SlotNotCoveredError(f"no node serves the slot of {self.stream!r} (yet)")
            reply = await self._cluster.execute_command(*command, target_nodes=node)
        else:
            reply = await self._reader.execute_command(*command)
        if not reply:
            return []
        # RESP3 answers {stream: entries}, RESP2 [[stream, entries]]
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return [
            (as_text(entry_id), flat if isinstance(flat, dict) else _fields(flat), 1)
            for entry_id, flat in entries
            if flat
        ]

    async def claim_own(self, count: int, after: str | None = None) -> list[RawEntry]:
        """Take back up to ``count`` of this consumer's own pending entries with ids above
        ``after`` (all of them from the start when None). Page with the last id returned:
        entries already taken stay pending under this consumer while they are handled."""
        start = "-" if after is None else f"({after}"
        rows = await self._claim_own(
            keys=[self.stream], args=[self.group, self.consumer, count, start]
        )
        return [(as_text(r[0]), _fields(r[1]), int(r[2])) for r in rows]

    async def claim_idle(
        self, min_idle_ms: int, count: int, cursor: str = "0-0"
    ) -> tuple[str, list[RawEntry]]:
        next_cursor: bytes
        rows: list[Any]
        next_cursor, rows = await self._claim_idle(
            keys=[self.stream],
            args=[self.group, self.consumer, min_idle_ms, cursor, count],
        )
        entries: list[RawEntry] = [(as_text(r[0]), _fields(r[1]), int(r[2])) for r in rows]
        return as_text(next_cursor), entries

    async def set_idle(self, entry_ids: Sequence[str], idle_ms: int) -> int:
        """Renew (0), postpone or hand back entries this consumer still owns."""
        if not entry_ids:
            return 0
        args: list[Any] = [self.group, self.consumer, max(0, idle_ms), *entry_ids]
        owned: int = await self._set_idle(keys=[self.stream], args=args)
        return owned

    async def own_pending(self) -> int:
        rows = await self.client.xpending_range(
            self.stream, self.group, "-", "+", 1, consumername=self.consumer
        )
        return len(rows)

    # -- finishing -------------------------------------------------------------------

    async def finish(
        self,
        done: Sequence[tuple[str, Ack]],
        dead: Sequence[Dead],
        *,
        replicated: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """One MULTI/EXEC: publish follow-ups, run extra ops, dead-letter, then XACK.

        Every key involved shares the deployment's hash tag (``StreamNames``), so on a
        Redis Cluster this is one transaction on one node too. ``replicated(key)``: how
        the writes to another slot are waited for on the replicas before the XACK (see
        below); ``replica_ack.wait`` once by default."""
        if not done and not dead:
            return
        if not dead and not any(ack.publish or ack.ops for _, ack in done):
            # Nothing to write but acks: one XACK is atomic on its own.
            await self.client.xack(self.stream, self.group, *[entry_id for entry_id, _ in done])
            return
        writes: list[tuple[str | None, TransactionOp]] = []  # (a key of its slot, op)
        for _, ack in done:
            for pub in ack.publish:
                writes.append((pub.stream, _xadd(pub.stream, dict(pub.fields))))
            for op in ack.ops:
                writes.append((getattr(op, "key", None), op))
        for item in dead:
            writes.append((self.names.dlq, _xadd(self.names.dlq, self.dead_letter_fields(item))))
            writes.append((self.names.dlq, _count_dead_letter(self.names, self.stream, self.group)))
            writes.extend((getattr(op, "key", None), op) for op in item.ops)
        ids = [entry_id for entry_id, _ in done] + [item.entry_id for item in dead]
        if not self.split_by_slot:
            await self._transaction(writes, ids)
            return
        # A cluster with partitions: the writes in other hash slots than the stream's
        # (job bookkeeping, dead letters, on the deployment's slot) go first, one
        # transaction per slot, each waited for on the replicas; then the stream's slot
        # with its follow-ups and the XACK. Those other writes are idempotent (a stage
        # mark counts once; a dead letter may be written again if the XACK is lost, the
        # only duplicate this allows), so a crash between the steps leaves the entry
        # pending, to be handled again, never acked without its writes.
        own = key_slot(self.stream.encode())
        by_slot: dict[int, list[TransactionOp]] = {}
        by_key: dict[int, str] = {}
        for key, op in writes:
            slot = own if key is None else key_slot(key.encode())
            by_slot.setdefault(slot, []).append(op)
            by_key.setdefault(slot, key or self.stream)
        confirm = replicated or self._replicated_once
        for slot, ops in by_slot.items():
            if slot != own:
                await self._transaction([(None, op) for op in ops], [])
                await confirm(by_key[slot])
        await self._transaction([(None, op) for op in by_slot.get(own, [])], ids)

    async def _replicated_once(self, key: str) -> None:
        await self.replica_ack.wait(self.client, key)

    async def _transaction(
        self, writes: Sequence[tuple[str | None, TransactionOp]], ack_ids: Sequence[str]
    ) -> None:
        pipe: Any
        async with self.client.pipeline(transaction=True) as pipe:
            for _, op in writes:
                await _queue(op, pipe)
            if ack_ids:
                pipe.xack(self.stream, self.group, *ack_ids)
            await pipe.execute()

    async def confirm_replicated(self) -> None:
        """With ``replica_ack``: wait until this consumer's writes (its last ``finish``)
        are on that many replicas; ``ReplicationTimeout`` when they are not in time.

        A transaction replicates as one unit, so a failover before that loses the
        follow-ups and the ack together: the entries come back (pending or new on the
        promoted replica) and are handled again, their effects idempotent; never acked
        without their follow-ups. Waiting keeps a replica from taking more work while
        its last writes are only on the primary."""
        await self.replica_ack.wait(self.client, self.stream)

    def dead_letter_fields(self, item: Dead) -> dict[bytes | str, bytes | str]:
        fields: dict[bytes | str, bytes | str] = {
            k: v for k, v in item.fields.items() if not k.startswith(DLQ_META_PREFIX.encode())
        }
        meta = {
            "stream": self.stream,
            "id": item.entry_id,
            "group": self.group,
            "stage": self.stage,
            "consumer": self.consumer,
            "attempts": str(item.attempts),
            "error_type": type(item.error).__name__,
            "error": str(item.error)[:2000] or type(item.error).__name__,
            "failed_at": datetime.now(UTC).isoformat(),
            **item.extra,
        }
        fields.update({f"{DLQ_META_PREFIX}{k}": v for k, v in meta.items()})
        return fields

    # -- housekeeping ----------------------------------------------------------------

    async def reap_idle_consumers(
        self, idle_threshold_ms: int, visibility_ms: int, max_entries: int = 1000
    ) -> list[tuple[str, int]]:
        rows = await self._reap(
            keys=[self.stream],
            args=[self.group, self.consumer, idle_threshold_ms, visibility_ms, max_entries],
        )
        return [(as_text(name), int(moved)) for name, moved in rows]

    async def trim_acked(self, stream: str | None = None, *, retain_ms: int | None = None) -> int:
        """Trim ``stream`` (this consumer's by default) of what every group on it has
        acknowledged; with ``retain_ms``, only of such entries older than that (and a
        stream without groups of everything older). Returns the number removed."""
        cutoff = "" if retain_ms is None else f"{max(0, int(time.time() * 1000) - retain_ms)}-0"
        removed: int = await self._trim(keys=[stream or self.stream], args=[cutoff])
        return removed


Outcomes: TypeAlias = tuple[
    list[tuple[str, Ack]], list[Dead], list[tuple[Message[T], BaseException]]
]
"""A batch's outcomes sorted: (entry id, ack)s, dead letters, (message, error)s to retry."""


def split_outcomes(messages: Sequence[Message[T]], outcomes: Sequence[Outcome]) -> Outcomes[T]:
    """Sort per-message outcomes into acks, dead letters and retries; anything else than
    an outcome raises ``TypeError``."""
    done: list[tuple[str, Ack]] = []
    dead: list[Dead] = []
    retry: list[tuple[Message[T], BaseException]] = []
    for message, outcome in zip(messages, outcomes, strict=True):
        if isinstance(outcome, Ack):
            done.append((message.id, outcome))
        elif isinstance(outcome, Retry):
            retry.append((message, outcome.error))
        elif isinstance(outcome, DeadLetter):
            dead.append(
                Dead(message.id, message.fields, message.attempt, outcome.error, outcome.extra)
            )
        else:
            raise TypeError(f"handler returned {outcome!r}, not Ack, Retry or DeadLetter")
    return done, dead, retry


def _xadd(stream: str, fields: dict[Any, Any]) -> TransactionOp:
    return lambda pipe: pipe.xadd(stream, fields)


def _count_dead_letter(names: StreamNames, stream: str, group: str) -> TransactionOp:
    return lambda pipe: pipe.hincrby(names.dlq_counts, f"{stream}|{group}", 1)


async def _queue(op: TransactionOp, pipe: Any) -> None:
    """Queue an op's commands on the pipeline (script calls are coroutines there).

    Only a coroutine is awaited: a queued command returns the pipeline, and awaiting a
    cluster pipeline re-initializes it, dropping what was queued."""
    queued = op(pipe)
    if inspect.iscoroutine(queued):
        await queued
