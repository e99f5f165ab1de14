"""Reading and replaying the dead-letter stream.

A dead letter holds the original entry's fields plus ``dlq_*`` metadata (stream, id,
group, stage, consumer, attempts, error). Replaying adds the original fields back to the
original stream as a new entry and removes the dead letter, atomically. A replayed
command counts as a new submission (it gets a new stream id, hence a new version); one
replayed to the ingest stream is counted in flight for its document like the ingress's
commands. Finding entries: ``embedstream.streams.dlq_query``; acting on a selection
(ids or a filter, with a dry run): ``embedstream.streams.dlq_actions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

from embedstream.adapters.redis_client import is_cluster_client
from embedstream.jobs.inflight import COUNT_LUA, InFlight
from embedstream.schemas.tenancy import document_key
from embedstream.streams.dlq_query import DeadLetter, read_dead_letter
from embedstream.streams.names import StreamNames, as_text

#: Move one dead letter back to its stream, atomically. Every key it touches is declared
#: (it writes KEYS[2] only after checking that the letter's stream is that key), so it
#: runs on a Redis Cluster, where every key of a deployment shares one hash tag:
#: KEYS: dead-letter stream, target stream (the entry's ``dlq_stream``), then the ingest
#: stream's in-flight counts and entries (``embedstream.adapters.inflight``)
#: ARGV: dead letter id, document key to count in flight ("" for none)
#: Returns {target, new id}; false when the entry is gone; {"", "moved"} when its
#: ``dlq_stream`` is not KEYS[2].
REPLAY = (
    COUNT_LUA
    + """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return false end
local fields, target = {}, nil
local flat = entry[1][2]
for i = 1, #flat, 2 do
  local k, v = flat[i], flat[i + 1]
  if k == 'dlq_stream' then target = v end
  if string.sub(k, 1, 4) ~= 'dlq_' then
    fields[#fields + 1] = k
    fields[#fields + 1] = v
  end
end
if not target or #fields == 0 then return false end
if target ~= KEYS[2] then return {'', 'moved'} end
fields[#fields + 1] = 'replayed_from'
fields[#fields + 1] = ARGV[1]
local new_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
if ARGV[2] ~= '' then count_in_flight(KEYS[3], KEYS[4], new_id, ARGV[2]) end
redis.call('XDEL', KEYS[1], ARGV[1])
return {target, new_id}
"""
)


@dataclass
class DeadLetterView:
    id: str
    meta: dict[str, str]
    fields: dict[str, str]


async def list_dead_letters(
    client: redis.Redis, names: StreamNames, *, count: int = 20, start: str = "-"
) -> list[DeadLetterView]:
    entries: Any = await client.xrange(names.dlq, min=start, count=count)
    views = []
    for entry_id, raw in entries:
        letter = DeadLetter.from_entry(entry_id, raw)
        views.append(DeadLetterView(letter.id, letter.meta, letter.fields))
    return views


#: With partitions on a cluster, the letter's stream is in another hash slot than the
#: dead-letter stream: the replay is two steps. This one adds the entry to its stream,
#: once per dead letter (a marker keeps the new id: a second call answers it).
#: KEYS: marker, target stream, its in-flight counts, its in-flight entries
#: ARGV: ttl_s, document key to count in flight ("" for none), then field, value, ...
REPLAY_TO_PARTITION = (
    COUNT_LUA
    + """
local done = redis.call('GET', KEYS[1])
if done then return done end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local new_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
if ARGV[2] ~= '' then count_in_flight(KEYS[3], KEYS[4], new_id, ARGV[2]) end
redis.call('SET', KEYS[1], new_id, 'EX', ARGV[1])
return new_id
"""
)
REPLAY_MARKER_TTL_S = 7 * 24 * 3600


def in_flight_key(names: StreamNames, letter: DeadLetter) -> str:
    """The document key a replay to an ingest stream counts in flight (as the ingress
    counts what it adds), so the embed stage's reuse check sees the replayed command;
    "" when the entry goes elsewhere or names no (tenant, document)."""
    if (
        letter.stream not in names.ingest_streams()
        or letter.tenant is None
        or letter.document_id is None
    ):
        return ""
    return document_key(letter.tenant, letter.document_id)


async def replay_letter(
    client: redis.Redis, names: StreamNames, letter: DeadLetter
) -> tuple[str, str] | None:
    """Move one dead letter back to the stream it came from. Returns (stream, new id),
    or None when it is gone (replayed or purged meanwhile) or names no stream."""
    if not letter.stream:
        return None
    view = names.view_of_stream(letter.stream) or names
    in_flight = InFlight(client, view)
    if names.partitioned and is_cluster_client(client) and view.partition_base() != names.base:
        return await _replay_in_two_steps(client, names, view, in_flight, letter)
    script = client.register_script(REPLAY)
    reply: list[Any] | None = await script(
        keys=[names.dlq, letter.stream, *in_flight.keys],
        args=[letter.id, in_flight_key(names, letter)],
    )
    if not reply or not as_text(reply[0]):
        return None
    return as_text(reply[0]), as_text(reply[1])


async def _replay_in_two_steps(
    client: redis.Redis,
    names: StreamNames,
    view: StreamNames,
    in_flight: InFlight,
    letter: DeadLetter,
) -> tuple[str, str] | None:
    """Add the entry to its partition's stream once (``REPLAY_TO_PARTITION``), then
    delete the dead letter. A crash in between leaves the dead letter, whose replay
    again finds the marker and adds nothing."""
    target = letter.stream
    if not target or not await client.xrange(names.dlq, min=letter.id, max=letter.id):
        return None
    args: list[Any] = [REPLAY_MARKER_TTL_S, in_flight_key(names, letter)]
    for key, value in letter.fields.items():
        args.extend((key, value))
    args.extend(("replayed_from", letter.id))
    marker = view.key("ingest", "replayed", letter.id)
    script = client.register_script(REPLAY_TO_PARTITION)
    new_id = await script(keys=[marker, target, *in_flight.keys], args=args)
    await client.xdel(names.dlq, letter.id)
    return target, as_text(new_id)


async def replay_dead_letter(
    client: redis.Redis, names: StreamNames, entry_id: str
) -> tuple[str, str] | None:
    """Move one dead letter back to its stream. Returns (stream, new id) or None."""
    letter = await read_dead_letter(client, names, entry_id)
    return None if letter is None else await replay_letter(client, names, letter)
