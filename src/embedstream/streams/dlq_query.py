"""Finding dead letters: one entry's fields read as a ``DeadLetter``, filters (stage, type,
stream, error text, job, document, age, tenant) and a bounded, paginated scan.

The CLI (``embedstream dlq``) and the admin API (``/v1/admin/dead-letters``) both read
the dead-letter stream through this module, and act on what it finds through
``embedstream.streams.dlq_actions``.

Who sees an entry: a dead letter carries its tenant in the envelope's ``ce`` field. A
filter with ``tenant`` set (a tenant's admin) matches only entries whose ``ce`` names
that tenant; an entry whose tenant cannot be read (poison: ``ce`` missing or not JSON)
matches only a filter without ``tenant`` (the operator).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as redis

from embedstream.schemas.envelope import ATTRIBUTES_FIELD, DATA_FIELD
from embedstream.schemas.tenancy import is_tenant
from embedstream.streams.consumer import DLQ_META_PREFIX
from embedstream.streams.names import StreamNames, as_text

#: A stream entry id, as Redis writes them (``<ms>-<seq>``).
ENTRY_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"
_ENTRY_ID = re.compile(ENTRY_ID_PATTERN)
#: Entries read per XRANGE call while scanning.
SCAN_BATCH = 500
#: Entries a single page may look at before it answers with what it found (and a cursor).
MAX_SCAN = 20_000
MAX_FILTER_TEXT = 200
_DURATION = re.compile(r"^\s*(\d{1,9})\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
WHEN_HELP = (
    "a duration back from now (30s, 15m, 2h, 3d, 1w) or an ISO 8601 time "
    "(2026-12-01T10:00:00Z; without a zone: UTC)"
)


class InvalidWhen(ValueError):
    """A time bound that is neither a duration nor an ISO 8601 time."""


MAX_ID_PART = 2**64 - 1


def is_entry_id(value: object) -> bool:
    """A stream entry id Redis accepts: ``<ms>-<seq>``, each part an unsigned 64-bit
    integer."""
    if not isinstance(value, str) or _ENTRY_ID.fullmatch(value) is None:
        return False
    ms, _, seq = value.partition("-")
    return int(ms) <= MAX_ID_PART and int(seq) <= MAX_ID_PART


_LAST = (MAX_ID_PART, MAX_ID_PART)


def entry_key(entry_id: str) -> tuple[int, int]:
    """An entry id as a tuple that sorts as Redis orders ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def parse_when(value: str, *, now: datetime | None = None) -> int:
    """A time bound as epoch milliseconds: ``2h`` is two hours before ``now``; an ISO
    8601 time is that time (UTC when it names no zone). ``InvalidWhen`` otherwise."""
    now = now or datetime.now(UTC)
    try:
        if match := _DURATION.fullmatch(value):
            seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
            return int((now - timedelta(seconds=seconds)).timestamp() * 1000)
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)
    except (ValueError, OverflowError):  # not a time, or one no clock reaches
        raise InvalidWhen(f"not a time: use {WHEN_HELP}") from None


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter stream: the runtime's ``dlq_*`` metadata, the
    original entry's fields, and what can be read from its envelope."""

    id: str
    meta: dict[str, str]
    fields: dict[str, str]
    attributes: dict[str, Any] | None
    payload: Any

    @classmethod
    def from_entry(cls, entry_id: object, raw: Mapping[Any, Any]) -> DeadLetter:
        text = {as_text(k): as_text(v) for k, v in raw.items()}
        meta = {
            k.removeprefix(DLQ_META_PREFIX): v
            for k, v in text.items()
            if k.startswith(DLQ_META_PREFIX)
        }
        original = {k: v for k, v in text.items() if not k.startswith(DLQ_META_PREFIX)}
        return cls(
            id=as_text(entry_id),
            meta=meta,
            fields=original,
            attributes=_json_object(original.get(ATTRIBUTES_FIELD)),
            payload=_json_value(original.get(DATA_FIELD)),
        )

    @property
    def dead_at_ms(self) -> int:
        return entry_key(self.id)[0]

    @property
    def dead_at(self) -> datetime:
        return datetime.fromtimestamp(self.dead_at_ms / 1000, UTC)

    @property
    def tenant(self) -> str | None:
        """The tenant its envelope names, or None when that cannot be read."""
        tenant = (self.attributes or {}).get("tenant")
        return tenant if is_tenant(tenant) else None

    @property
    def type(self) -> str | None:
        value = (self.attributes or {}).get("type")
        return value if isinstance(value, str) else None

    @property
    def stage(self) -> str | None:
        return self.meta.get("stage")

    @property
    def stream(self) -> str | None:
        """The stream the entry was dead-lettered from (where a replay puts it back)."""
        return self.meta.get("stream")

    @property
    def error(self) -> str:
        return self.meta.get("error", "")

    @property
    def attempts(self) -> int | None:
        value = self.meta.get("attempts", "")
        return int(value) if value.isdigit() else None

    def _payload_text(self, name: str) -> str | None:
        value = self.payload.get(name) if isinstance(self.payload, dict) else None
        return value if isinstance(value, str) else None

    @property
    def job_id(self) -> str | None:
        return self._payload_text("job_id")

    @property
    def document_id(self) -> str | None:
        return self._payload_text("document_id") or (
            subject if isinstance(subject := (self.attributes or {}).get("subject"), str) else None
        )


def _json_value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _json_object(text: str | None) -> dict[str, Any] | None:
    value = _json_value(text)
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters to show or act on; every field set must match.

    - ``stage``, ``stream``: exact; ``type``: exact, or a type without its version
      (``document.upsert`` matches ``document.upsert.v1``);
    - ``grep``: case-insensitive text in the error (message or exception type);
    - ``job_id``, ``document_id``: exact, from the payload;
    - ``since_ms`` / ``until_ms``: dead-lettered at or after / before (epoch ms);
    - ``tenant``: only that tenant's entries (None: every entry, unreadable ones too).
    """

    stage: str | None = None
    type: str | None = None
    stream: str | None = None
    grep: str | None = None
    job_id: str | None = None
    document_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    tenant: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.tenant is not None and letter.tenant != self.tenant:
            return False
        if self.stage is not None and letter.stage != self.stage:
            return False
        if self.stream is not None and letter.stream != self.stream:
            return False
        if self.type is not None and not _type_matches(letter.type, self.type):
            return False
        if self.grep is not None:
            needle = self.grep.casefold()
            haystack = f"{letter.meta.get('error_type', '')}: {letter.error}".casefold()
            if needle not in haystack:
                return False
        if self.job_id is not None and letter.job_id != self.job_id:
            return False
        if self.document_id is not None and letter.document_id != self.document_id:
            return False
        if self.since_ms is not None and letter.dead_at_ms < self.since_ms:
            return False
        return self.until_ms is None or letter.dead_at_ms < self.until_ms

    def visible(self, letter: DeadLetter) -> bool:
        """Whether the filter's viewer may see this entry at all (its tenant)."""
        return self.tenant is None or letter.tenant == self.tenant

    @property
    def lower_id(self) -> str:
        return "-" if self.since_ms is None else f"{min(max(0, self.since_ms), MAX_ID_PART)}-0"

    @property
    def upper_id(self) -> str:
        return "+" if self.until_ms is None else f"({min(self.until_ms, MAX_ID_PART)}-0"

    @property
    def empty_range(self) -> bool:
        """Nothing can match: before the first possible id, or an empty interval."""
        if self.until_ms is not None and self.until_ms <= 0:
            return True
        return (
            self.since_ms is not None
            and self.until_ms is not None
            and (self.since_ms >= self.until_ms)
        )

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _type_matches(actual: str | None, wanted: str) -> bool:
    if actual is None:
        return False
    return actual == wanted or actual.rpartition(".")[0] == wanted


@dataclass
class DeadLetterPage:
    """Matching entries, and ``next_cursor`` (the last id looked at) while the stream
    has entries beyond what this page looked at."""

    items: list[DeadLetter] = field(default_factory=list)
    next_cursor: str | None = None
    scanned: int = 0


async def read_dead_letter(
    client: redis.Redis, names: StreamNames, entry_id: str
) -> DeadLetter | None:
    if not is_entry_id(entry_id):
        return None
    found: Any = await client.xrange(names.dlq, min=entry_id, max=entry_id)
    if not found:
        return None
    return DeadLetter.from_entry(*found[0])


async def read_dead_letters(
    client: redis.Redis, names: StreamNames, entry_ids: list[str]
) -> dict[str, DeadLetter]:
    """The entries among ``entry_ids`` that exist (one round trip)."""
    wanted = [i for i in dict.fromkeys(entry_ids) if is_entry_id(i)]
    if not wanted:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for entry_id in wanted:
            pipe.xrange(names.dlq, min=entry_id, max=entry_id)
        replies: list[Any] = await pipe.execute()
    return {
        entry_id: DeadLetter.from_entry(*reply[0])
        for entry_id, reply in zip(wanted, replies, strict=True)
        if reply
    }


async def _entries(
    client: redis.Redis,
    names: StreamNames,
    filt: DeadLetterFilter,
    *,
    after: str | None,
    newest_first: bool,
) -> AsyncIterator[tuple[str, DeadLetter]]:
    """Every entry within the filter's time bounds, after the cursor ``after``."""
    low, high = filt.lower_id, filt.upper_id
    if filt.empty_range or (
        after is not None and entry_key(after) == ((0, 0) if newest_first else _LAST)
    ):
        return  # an exclusive bound past the first or the last id Redis can hold
    if after is not None:
        if newest_first:
            high = f"({after}"
        else:
            low = f"({after}"
    while True:
        batch: Any
        if newest_first:
            batch = await client.xrevrange(names.dlq, max=high, min=low, count=SCAN_BATCH)
        else:
            batch = await client.xrange(names.dlq, min=low, max=high, count=SCAN_BATCH)
        for entry_id, raw in batch:
            yield as_text(entry_id), DeadLetter.from_entry(entry_id, raw)
        if len(batch) < SCAN_BATCH:
            return
        last = as_text(batch[-1][0])
        if newest_first:
            high = f"({last}"
        else:
            low = f"({last}"


async def find_dead_letters(
    client: redis.Redis,
    names: StreamNames,
    filt: DeadLetterFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    newest_first: bool = True,
    max_scan: int = MAX_SCAN,
) -> DeadLetterPage:
    """A page of matching entries. A page stops at ``limit`` matches or after looking
    at ``max_scan`` entries, so a filter that matches little cannot make one request
    read the whole stream; ``next_cursor`` continues where it stopped."""
    page = DeadLetterPage()
    last: str | None = None
    async for entry_id, letter in _entries(
        client, names, filt, after=cursor, newest_first=newest_first
    ):
        if len(page.items) >= limit or page.scanned >= max_scan:
            page.next_cursor = last
            break
        page.scanned += 1
        last = entry_id
        if filt.matches(letter):
            page.items.append(letter)
    return page


async def iter_matches(
    client: redis.Redis,
    names: StreamNames,
    filt: DeadLetterFilter,
    *,
    through_id: str | None = None,
) -> AsyncIterator[DeadLetter]:
    """Every matching entry, oldest first, up to ``through_id`` (inclusive) if given."""
    bound = entry_key(through_id) if through_id is not None else None
    async for entry_id, letter in _entries(client, names, filt, after=None, newest_first=False):
        if bound is not None and entry_key(entry_id) > bound:
            return
        if filt.matches(letter):
            yield letter
