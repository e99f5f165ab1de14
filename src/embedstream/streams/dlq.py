"""Reading and replaying the dead-letter stream.

A dead letter holds the original entry's fields plus ``dlq_*`` metadata (stream, id,
group, stage, consumer, attempts, error). Replaying adds the original fields back to the
original stream as a new entry and removes the dead letter, atomically. A replayed
command counts as a new submission (it gets a new stream id, hence a new version).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

from embedstream.streams.consumer import DLQ_META_PREFIX
from embedstream.streams.names import StreamNames, as_text

REPLAY = """
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
fields[#fields + 1] = 'replayed_from'
fields[#fields + 1] = ARGV[1]
local new_id = redis.call('XADD', target, '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
return {target, new_id}
"""


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
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        meta = {
            k.removeprefix(DLQ_META_PREFIX): v
            for k, v in fields.items()
            if k.startswith(DLQ_META_PREFIX)
        }
        original = {k: v for k, v in fields.items() if not k.startswith(DLQ_META_PREFIX)}
        views.append(DeadLetterView(as_text(entry_id), meta, original))
    return views


async def replay_dead_letter(
    client: redis.Redis, names: StreamNames, entry_id: str
) -> tuple[str, str] | None:
    """Move one dead letter back to its stream. Returns (stream, new id) or None."""
    script = client.register_script(REPLAY)
    reply: list[Any] | None = await script(keys=[names.dlq], args=[entry_id])
    if not reply:
        return None
    return as_text(reply[0]), as_text(reply[1])
