"""Replaying and purging dead letters: one entry, a selection of ids, or every entry a
filter matches, each with a dry run. The CLI (``embedstream dlq replay|purge``) and the
admin API (``POST /v1/admin/dead-letters/replay|purge``) both act through here.

- A selection by ids acts on the ids that exist and that the viewer may see (a tenant's
  admin: its tenant's entries); the others are reported ``missing``, so an id of another
  tenant's entry reads exactly like an unknown one.
- A selection by filter acts on the matching entries oldest first, at most
  ``MAX_BULK`` per call (``more`` says whether more matched), and never on entries newer
  than ``through_id`` when given: a dry run returns the newest id it matched, and the
  confirmed call passes it, so what was confirmed is what is acted on, even while new
  dead letters arrive.
- Each replay is atomic (one script: XADD to the original stream, XDEL of the dead
  letter); a purge deletes with XDEL. An entry replayed or purged by someone else
  meanwhile is reported ``missing``, never acted on twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import redis.asyncio as redis

from embedstream.logging import get_logger
from embedstream.streams.dlq import replay_letter
from embedstream.streams.dlq_query import (
    DeadLetter,
    DeadLetterFilter,
    entry_key,
    iter_matches,
    read_dead_letters,
)
from embedstream.streams.names import StreamNames

log = get_logger(__name__)

Action = Literal["replay", "purge"]
#: Entries one call acts on at most (a filter matching more says ``more``: run again).
MAX_BULK = 10_000
#: Ids one selection may name.
MAX_IDS = 1_000
_PURGE_BATCH = 500


@dataclass(frozen=True)
class Selection:
    """What to act on: ``ids``, or every entry ``filter`` matches (up to
    ``through_id``). ``filter.tenant`` also limits ``ids`` to that tenant's entries."""

    filter: DeadLetterFilter
    ids: tuple[str, ...] | None = None
    through_id: str | None = None


@dataclass(frozen=True)
class ItemResult:
    id: str
    outcome: Literal["replayed", "purged", "would_replay", "would_purge", "missing"]
    stream: str | None = None
    new_id: str | None = None


@dataclass
class ActionReport:
    action: Action
    dry_run: bool
    matched: int = 0
    done: int = 0
    through_id: str | None = None
    more: bool = False
    results: list[ItemResult] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        return [r.id for r in self.results if r.outcome == "missing"]


async def select(
    client: redis.Redis, names: StreamNames, selection: Selection
) -> tuple[list[DeadLetter], list[str], bool]:
    """(entries to act on, ids not found or not visible, whether more matched)."""
    if selection.ids is not None:
        found = await read_dead_letters(client, names, list(selection.ids))
        letters, missing = [], []
        for entry_id in dict.fromkeys(selection.ids):
            letter = found.get(entry_id)
            if letter is not None and selection.filter.visible(letter):
                letters.append(letter)
            else:
                missing.append(entry_id)
        return letters, missing, False
    letters = []
    async for letter in iter_matches(
        client, names, selection.filter, through_id=selection.through_id
    ):
        if len(letters) >= MAX_BULK:
            return letters, [], True
        letters.append(letter)
    return letters, [], False


async def act(
    client: redis.Redis,
    names: StreamNames,
    action: Action,
    selection: Selection,
    *,
    dry_run: bool = False,
) -> ActionReport:
    """Replay or purge the selection (or, with ``dry_run``, say what would be)."""
    letters, missing, more = await select(client, names, selection)
    report = ActionReport(
        action=action,
        dry_run=dry_run,
        matched=len(letters),
        more=more,
        through_id=max((letter.id for letter in letters), key=entry_key, default=None),
    )
    if dry_run:
        outcome: Literal["would_replay", "would_purge"] = (
            "would_replay" if action == "replay" else "would_purge"
        )
        report.results = [ItemResult(x.id, outcome, x.stream) for x in letters]
    elif action == "replay":
        report.results = await _replay(client, names, letters)
    else:
        report.results = await _purge(client, names, letters)
    report.results += [ItemResult(entry_id, "missing") for entry_id in missing]
    report.done = sum(r.outcome in ("replayed", "purged") for r in report.results)
    if not dry_run and report.done:
        log.info(
            "dead letters " + ("replayed" if action == "replay" else "purged"),
            count=report.done,
            by_ids=selection.ids is not None,
            filter=selection.filter.describe(),
        )
    return report


async def _replay(
    client: redis.Redis, names: StreamNames, letters: Sequence[DeadLetter]
) -> list[ItemResult]:
    results = []
    for letter in letters:
        moved = await replay_letter(client, names, letter)
        if moved is None:
            results.append(ItemResult(letter.id, "missing", letter.stream))
        else:
            results.append(ItemResult(letter.id, "replayed", moved[0], moved[1]))
    return results


async def _purge(
    client: redis.Redis, names: StreamNames, letters: Sequence[DeadLetter]
) -> list[ItemResult]:
    results = []
    for start in range(0, len(letters), _PURGE_BATCH):
        batch = letters[start : start + _PURGE_BATCH]
        # one XDEL per id in one round trip: each reply says whether that id was there
        async with client.pipeline(transaction=False) as pipe:
            for letter in batch:
                pipe.xdel(names.dlq, letter.id)
            deleted: list[int] = await pipe.execute()
        results += [
            ItemResult(letter.id, "purged" if n else "missing", letter.stream)
            for letter, n in zip(batch, deleted, strict=True)
        ]
    return results
