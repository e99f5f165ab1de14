"""Commands in flight per document: ingest entries the embed stage has not settled yet.

The embed stage may reuse a document's stored embedding only when no other command for
that document can still change it, whichever replica holds that command. Two hashes in
Redis keep that count exact across replicas:

- ``{prefix}:ingest:inflight``: document key (``{tenant}/{document_id}``) -> number of its
  commands on ``{prefix}:ingest`` not yet settled by the embed stage;
- ``{prefix}:ingest:inflight:entries``: ingest entry id -> document key, for each of them.

A command is counted by the script that adds it to the stream (the ingress's SUBMIT, a
store's re-embed request), in the same atomic call as its XADD; it is settled in the
MULTI/EXEC that acknowledges or dead-letters it (``settle_op``), which removes its entry
id and decrements its document once: settling twice (two replicas finishing the same
reclaimed entry) changes nothing. A dead letter replayed to the ingest stream is counted
by the replay script (``embedstream.streams.dlq``). Entries added by anything else (a
hand-written XADD) are not counted and never reused for. A count that leaks (an entry
deleted by hand) only turns reuse off for that document: the safe side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from embedstream.adapters.redis_client import queue_script
from embedstream.streams.messages import TransactionOp
from embedstream.streams.names import StreamNames, as_text

# Forget settled entries. KEYS: counts, entries; ARGV: entry ids.
SETTLE = """
for i = 1, #ARGV do
  local doc = redis.call('HGET', KEYS[2], ARGV[i])
  if doc then
    redis.call('HDEL', KEYS[2], ARGV[i])
    if redis.call('HINCRBY', KEYS[1], doc, -1) <= 0 then redis.call('HDEL', KEYS[1], doc) end
  end
end
return 0
"""

# Lua that counts a command just added with XADD; used inside other scripts, where `id`
# is the new entry id and `doc` its document key. KEYS of the caller: counts, entries.
COUNT_LUA = """
local function count_in_flight(counts_key, entries_key, id, doc)
  redis.call('HSET', entries_key, id, doc)
  redis.call('HINCRBY', counts_key, doc, 1)
end
"""


@dataclass(frozen=True)
class InFlightState:
    """One document's in-flight count, and whether a given entry is one of them."""

    count: int
    counted: bool

    @property
    def alone(self) -> bool:
        """The entry is counted and no other command of its document is in flight."""
        return self.counted and self.count == 1


class InFlight:
    """The two hashes of ``names``' deployment."""

    def __init__(self, client: redis.Redis, names: StreamNames) -> None:
        self.counts_key = names.key("ingest", "inflight")
        self.entries_key = names.key("ingest", "inflight", "entries")
        self._settle = client.register_script(SETTLE)

    @property
    def keys(self) -> list[str]:
        return [self.counts_key, self.entries_key]

    def settle_ops(self, entry_id: str) -> Sequence[TransactionOp]:
        """For ``StreamWorker(settle_ops=...)``: forget the entry in its ack or dead letter."""
        keys, args = self.keys, [entry_id]

        def op(pipe: Pipeline) -> Any:
            return queue_script(self._settle, keys, args, pipe)

        return (op,)

    def queue_read(self, pipe: Pipeline, entries: Mapping[str, str]) -> None:
        """Queue the reads for ``entries`` (entry id -> document key) on a MULTI pipeline;
        ``parse`` turns their two replies into states."""
        pipe.hmget(self.counts_key, list(entries.values()))
        pipe.hmget(self.entries_key, list(entries))

    @staticmethod
    def parse(
        entries: Mapping[str, str], counts: Sequence[Any], owners: Sequence[Any]
    ) -> dict[str, InFlightState]:
        """Entry id -> state, from the replies of ``queue_read``."""
        states: dict[str, InFlightState] = {}
        for (entry_id, doc), count, owner in zip(entries.items(), counts, owners, strict=True):
            counted = owner is not None and as_text(owner) == doc
            states[entry_id] = InFlightState(int(count or 0), counted)
        return states
