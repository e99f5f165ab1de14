"""Request and response models of the admin endpoints (``/v1/admin/...``): stream status,
dead letters (list, read, replay, purge), jobs across tenants, stream entries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from embedstream.schemas.api import JobOut
from embedstream.streams.dlq_query import (
    ENTRY_ID_PATTERN,
    MAX_FILTER_TEXT,
    WHEN_HELP,
    is_entry_id,
)


def _check_entry_id(value: str) -> str:
    if not is_entry_id(value):
        raise PydanticCustomError("entry_id", "each part of an entry id is at most 2**64 - 1")
    return value


EntryId = Annotated[
    str,
    StringConstraints(pattern=ENTRY_ID_PATTERN, max_length=41),
    AfterValidator(_check_entry_id),
    Field(description="a stream entry id (`<ms>-<seq>`)", examples=["1733050000000-0"]),
]
FilterText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_FILTER_TEXT)]
When = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    Field(description=WHEN_HELP, examples=["2h", "2026-12-01T10:00:00Z"]),
]


class SessionOut(BaseModel):
    """Who is signed in, and what the admin endpoints show it."""

    tenant: str = Field(description="the credential's tenant")
    scopes: list[str]
    operator: bool = Field(description="true: every tenant; false: `tenant` only")
    credential_id: str


# -- status --------------------------------------------------------------------------------


class ConsumerOut(BaseModel):
    name: str
    pending: int = Field(description="entries delivered to it and not yet acknowledged")
    idle_ms: int = Field(description="since it last talked to Redis")


class GroupOut(BaseModel):
    name: str
    lag: int | None = Field(description="entries not yet delivered (null: Redis cannot tell)")
    pending: int = Field(description="entries delivered and not yet acknowledged")
    oldest_pending_age_ms: int | None
    last_delivered_id: str
    entries_read: int | None = Field(
        default=None, description="entries delivered so far: its growth is the read rate"
    )
    dead_letters: int = Field(description="entries dead-lettered from this group, in total")
    live_consumers: int = Field(description="consumers seen within the liveness bound")
    consumers: list[ConsumerOut]


class StreamOut(BaseModel):
    stream: str
    length: int
    exists: bool
    groups: list[GroupOut]


class ProblemOut(BaseModel):
    stream: str
    group: str
    kind: Literal["lag", "oldest_pending", "no_live_consumer"]
    message: str


class StatusOut(BaseModel):
    """Every embedstream stream of this deployment and its consumer groups."""

    prefix: str
    time_ms: int = Field(description="when it was read (Redis' clock, epoch ms)")
    streams: list[StreamOut]
    dead_letter_stream: str
    dead_letters_total: int = Field(description="entries in the dead-letter stream now")
    consumer_idle_ms: int = Field(description="a consumer idle longer than this is not live")
    problems: list[ProblemOut] = Field(description="groups with work waiting and no live consumer")


# -- dead letters --------------------------------------------------------------------------


class DeadLetterSummary(BaseModel):
    id: EntryId
    dead_at: datetime = Field(description="when it was dead-lettered")
    stream: str | None = Field(description="the stream it came from (a replay goes back there)")
    original_id: str | None = Field(description="its entry id on that stream")
    group: str | None
    stage: str | None
    attempts: int | None
    type: str | None = Field(description="the message type (from its envelope)")
    tenant: str | None = Field(description="null: the envelope cannot be read")
    job_id: str | None
    document_id: str | None
    error_type: str | None
    error: str = Field(description="why it was dead-lettered (the first 300 characters)")


class DeadLetterDetail(DeadLetterSummary):
    error: str = Field(description="why it was dead-lettered, in full")
    meta: dict[str, str] = Field(description="every `dlq_*` field, without the prefix")
    attributes: dict[str, Any] | None = Field(
        description="the envelope's attributes (`ce`); null when they cannot be read"
    )
    data: Any = Field(default=None, description="the payload as JSON; null when not JSON")
    fields: dict[str, str] = Field(description="the original entry's fields as text")


class DeadLetterPage(BaseModel):
    items: list[DeadLetterSummary] = Field(description="matching entries, newest first")
    next_cursor: str | None = Field(
        description="pass as `cursor` to go on; null when the stream has no more entries"
    )
    scanned: int = Field(description="entries this page looked at")
    total: int = Field(description="entries in the dead-letter stream (every tenant's)")


class DeadLetterFilterIn(BaseModel):
    """Every field given must match; none given matches every entry the caller sees."""

    model_config = ConfigDict(extra="forbid")

    stage: FilterText | None = Field(default=None, examples=["embed"])
    type: FilterText | None = Field(
        default=None,
        description="message type; without its version it matches every version",
        examples=["document.upsert"],
    )
    stream: FilterText | None = None
    grep: FilterText | None = Field(
        default=None, description="text in the error (case-insensitive)"
    )
    job_id: FilterText | None = None
    document_id: FilterText | None = None
    since: When | None = Field(default=None, description=f"dead-lettered at or after: {WHEN_HELP}")
    until: When | None = Field(default=None, description=f"dead-lettered before: {WHEN_HELP}")
    tenant: FilterText | None = Field(
        default=None, description="operator only: one tenant's entries"
    )


class DeadLetterListQuery(DeadLetterFilterIn):
    """The query of ``GET /v1/admin/dead-letters``: the filter, and the page."""

    cursor: EntryId | None = Field(default=None, description="`next_cursor` of the last page")
    limit: int = Field(default=50, ge=1, le=500, description="entries per page")
    order: Literal["newest", "oldest"] = Field(
        default="newest", description="newest first (default) or oldest first"
    )


class DeadLetterSelection(BaseModel):
    """`ids`, or `filter` (every matching entry, oldest first, at most 10,000 a call);
    `dry_run` changes nothing and answers what would be done, with `through_id`: pass it
    back to act on exactly what was counted, not on entries dead-lettered since."""

    model_config = ConfigDict(extra="forbid")

    ids: list[EntryId] | None = Field(default=None, min_length=1, max_length=1_000)
    filter: DeadLetterFilterIn | None = None
    through_id: EntryId | None = Field(
        default=None, description="with `filter`: act on no entry newer than this"
    )
    dry_run: bool = False


class ActionItemOut(BaseModel):
    id: str
    outcome: Literal["replayed", "purged", "would_replay", "would_purge", "missing"]
    stream: str | None = Field(default=None, description="where it was (or would be) replayed")
    new_id: str | None = Field(default=None, description="its new entry id there")


class ActionOut(BaseModel):
    action: Literal["replay", "purge"]
    dry_run: bool
    matched: int = Field(description="entries selected (visible and existing)")
    done: int = Field(description="entries replayed or purged by this call")
    through_id: str | None = Field(description="the newest entry selected")
    more: bool = Field(description="the filter matched more than one call acts on")
    results: list[ActionItemOut] = Field(description="one per entry; `missing`: not found")


# -- jobs and entries ----------------------------------------------------------------------


class AdminJobOut(JobOut):
    tenant: str


class GroupEntryState(BaseModel):
    group: str
    state: Literal["waiting", "pending", "done"] = Field(
        description="waiting: not delivered yet; pending: delivered, not acknowledged; "
        "done: acknowledged (or dead-lettered)"
    )
    consumer: str | None = Field(default=None, description="who holds it (pending)")
    deliveries: int | None = Field(default=None, description="attempts so far (pending)")


class EntryOut(BaseModel):
    """Where one stream entry is in each consumer group of its stream."""

    stream: str
    id: str
    exists: bool = Field(description="still in the stream (consumed entries are trimmed)")
    type: str | None = None
    groups: list[GroupEntryState]
    dead_letters: list[str] = Field(
        description="dead letters made from this entry (ids in the dead-letter stream)"
    )
