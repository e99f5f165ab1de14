"""Content-hash reuse: when an upsert may be answered with its document's stored
embedding instead of encoding it again.

``{prefix}:embed:hashes`` maps a document key ``{tenant}/{document_id}`` to
``<sha256>|<version>|<chunk_count>|<profile>`` after its last embedding (or
``deleted|<version>|0|`` after a delete); the embed stage's ack advances it with a Lua
script that never moves a document's entry backwards. An upsert is answered with
``reused=True``, no chunks and ``base_version`` = the stored version, without encoding,
only when all of these hold, read in one atomic snapshot (``may_reuse``):

- its text, model and chunking are those of the stored embedding, not deleted since;
- the stored embedding is older than the upsert;
- the upsert is the only command of its document in flight on ``{prefix}:ingest``
  (``embedstream.jobs.inflight``): no other replica, and no other batch of this one,
  holds a newer or older command for it, so the stored embedding is the previous
  command's, and that command's event is already on ``{prefix}:embedded``.

A re-embed request is never answered with a reuse (``embedstream.workers.reembed``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from embedstream.adapters.redis_client import queue_script
from embedstream.jobs.inflight import InFlight, InFlightState
from embedstream.streams.messages import TransactionOp
from embedstream.streams.names import StreamNames, as_text

TOMBSTONE = "deleted"

# Set a document's entry in the hashes key unless the stored version is the same or newer.
# Versions are compared as decimal strings (they exceed a Lua double's exact range).
# KEYS: hashes key. ARGV: document id, version, new value. Returns 1 when written.
SET_IF_NEWER = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local v = string.match(cur, '^[^|]*|(%d+)')
  if v and (#v > #ARGV[2] or (#v == #ARGV[2] and v >= ARGV[2])) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredEmbedding:
    """A document's entry in the hashes key."""

    content_hash: str
    version: int
    chunk_count: int
    profile: str

    @property
    def deleted(self) -> bool:
        return self.content_hash == TOMBSTONE

    def value(self) -> str:
        return f"{self.content_hash}|{self.version}|{self.chunk_count}|{self.profile}"

    @classmethod
    def tombstone(cls, version: int) -> StoredEmbedding:
        return cls(TOMBSTONE, version, 0, "")

    @classmethod
    def parse(cls, raw: bytes | str | None) -> StoredEmbedding | None:
        if raw is None:
            return None
        parts = as_text(raw).split("|", 3)
        if len(parts) != 4:
            return None
        digest, version, count, profile = parts
        try:
            return cls(digest, int(version), int(count), profile)
        except ValueError:
            return None


@dataclass(frozen=True)
class ReuseCandidate:
    """An upsert that might be answered with its document's stored embedding."""

    entry_id: str
    key: str
    """the document key ``{tenant}/{document_id}``"""
    content_hash: str
    version: int


def may_reuse(
    stored: StoredEmbedding | None,
    candidate: ReuseCandidate,
    in_flight: InFlightState,
    profile: str,
) -> bool:
    """Whether ``candidate`` may be answered with ``stored`` (see the module doc)."""
    return (
        stored is not None
        and not stored.deleted
        and stored.content_hash == candidate.content_hash
        and stored.profile == profile
        and stored.chunk_count > 0
        and stored.version < candidate.version
        and in_flight.alone
    )


class EmbeddingRegister:
    """The hashes key of a deployment, read with the in-flight counts."""

    def __init__(self, client: redis.Redis, names: StreamNames) -> None:
        self.client = client
        self.key = names.key("embed", "hashes")
        self.in_flight = InFlight(client, names)
        self._set_if_newer = client.register_script(SET_IF_NEWER)

    async def reusable(
        self, candidates: Sequence[ReuseCandidate], profile: str
    ) -> dict[str, StoredEmbedding]:
        """The candidates (by entry id) that may reuse their stored embedding. The stored
        embeddings and the in-flight counts are read in one MULTI, so the answer holds
        for one moment of the whole deployment."""
        if not candidates:
            return {}
        entries: Mapping[str, str] = {c.entry_id: c.key for c in candidates}
        pipe: Any
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(self.key, [c.key for c in candidates])
            self.in_flight.queue_read(pipe, entries)
            raw, counts, owners = await pipe.execute()
        states = InFlight.parse(entries, counts, owners)
        found: dict[str, StoredEmbedding] = {}
        for candidate, value in zip(candidates, raw, strict=True):
            stored = StoredEmbedding.parse(value)
            if stored is not None and may_reuse(
                stored, candidate, states[candidate.entry_id], profile
            ):
                found[candidate.entry_id] = stored
        return found

    def advance(self, key: str, stored: StoredEmbedding) -> TransactionOp:
        """The op advancing a document's entry to ``stored`` (never backwards)."""
        keys = [self.key]
        args = [key, str(stored.version), stored.value()]

        def op(pipe: Pipeline) -> Any:
            return queue_script(self._set_if_newer, keys, args, pipe)

        return op
