"""Where one stream entry is in each consumer group of its stream: waiting (not
delivered yet), pending (delivered, not acknowledged) or done, and whether it was
dead-lettered. Works after the entry has been trimmed: a group's position and pending
list are enough. The console follows a replayed dead letter with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as redis
from redis.exceptions import ResponseError

from embedstream.errors.redis import is_no_such_stream
from embedstream.schemas.envelope import attributes_of
from embedstream.streams.dlq_query import DeadLetter, entry_key
from embedstream.streams.names import StreamNames, as_text

#: Dead letters looked at after the entry's time, when looking for ones made from it.
DEAD_LETTER_LOOKAHEAD = 1_000


@dataclass(frozen=True)
class GroupState:
    group: str
    state: Literal["waiting", "pending", "done"]
    consumer: str | None = None
    deliveries: int | None = None


@dataclass
class EntryState:
    stream: str
    id: str
    exists: bool
    tenant: str | None
    type: str | None
    groups: list[GroupState] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)


async def entry_state(
    client: redis.Redis, names: StreamNames, stream: str, entry_id: str
) -> EntryState:
    """The entry's state in every group of ``stream``."""
    found: Any = await client.xrange(stream, min=entry_id, max=entry_id)
    attributes: dict[str, object] = attributes_of(found[0][1]) if found else {}
    tenant, kind = attributes.get("tenant"), attributes.get("type")
    state = EntryState(
        stream=stream,
        id=entry_id,
        exists=bool(found),
        tenant=tenant if isinstance(tenant, str) else None,
        type=kind if isinstance(kind, str) else None,
    )
    try:
        groups: list[dict[str, Any]] = await client.xinfo_groups(stream)
    except ResponseError as exc:
        if not is_no_such_stream(exc):
            raise
        groups = []
    position = entry_key(entry_id)
    for info in groups:
        name = as_text(info["name"])
        if entry_key(as_text(info["last-delivered-id"])) < position:
            state.groups.append(GroupState(name, "waiting"))
            continue
        rows: list[dict[str, Any]] = await client.xpending_range(
            stream, name, min=entry_id, max=entry_id, count=1
        )
        if rows:
            row = rows[0]
            state.groups.append(
                GroupState(
                    name,
                    "pending",
                    consumer=as_text(row["consumer"]),
                    deliveries=int(row["times_delivered"]),
                )
            )
        else:
            state.groups.append(GroupState(name, "done"))
    state.dead_letters = await _dead_letters_of(client, names, stream, entry_id)
    return state


async def _dead_letters_of(
    client: redis.Redis, names: StreamNames, stream: str, entry_id: str
) -> list[str]:
    """Ids of dead letters made from this entry (they are newer than the entry)."""
    after = f"{entry_key(entry_id)[0]}-0"
    rows: Any = await client.xrange(names.dlq, min=after, count=DEAD_LETTER_LOOKAHEAD)
    made = []
    for dead_id, raw in rows:
        letter = DeadLetter.from_entry(dead_id, raw)
        if letter.stream == stream and letter.meta.get("id") == entry_id:
            made.append(letter.id)
    return made
