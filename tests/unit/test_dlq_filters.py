"""Pure pieces of the dead-letter tools and the status checks: time bounds, entry ids,
filters on entries as the runtime writes them, health problems from a report."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from embedstream.streams.dlq_query import (
    DeadLetter,
    DeadLetterFilter,
    InvalidWhen,
    is_entry_id,
    parse_when,
)
from embedstream.streams.status import ConsumerView, GroupView, StatusReport, StreamView
from embedstream.streams.status_checks import HealthBounds, check_status

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "back_s"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("3d", 259_200), ("1w", 604_800), (" 2H ", 7200)],
)
def test_durations_count_back_from_now(text: str, back_s: int) -> None:
    assert parse_when(text, now=NOW) == NOW_MS - back_s * 1000


def test_iso_times_are_utc_without_a_zone() -> None:
    assert parse_when("2026-12-01T12:00:00Z") == NOW_MS
    assert parse_when("2026-12-01T12:00:00") == NOW_MS
    assert parse_when("2026-12-01T13:00:00+01:00") == NOW_MS


@pytest.mark.parametrize("text", ["yesterday", "", "2h ago", "-5m", "999999999w", "1.5h"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(InvalidWhen):
        parse_when(text, now=NOW)


def test_entry_ids_are_what_redis_accepts() -> None:
    assert is_entry_id("1733050000000-0")
    assert is_entry_id(f"{2**64 - 1}-{2**64 - 1}")
    for bad in (f"{2**64}-0", "1-", "-1", "1", "1-1-1", "a-1", " 1-1", "1-1\n", None, 5):
        assert not is_entry_id(bad)


def letter(
    *, tenant: str | None = "acme", stage: str = "embed", error: str = "boom",
    kind: str = "document.upsert.v1", entry_id: str = f"{NOW_MS}-0",
) -> DeadLetter:  # fmt: skip
    raw: dict[bytes, bytes] = {
        b"dlq_stream": b"p:ingest", b"dlq_stage": stage.encode(), b"dlq_error": error.encode(),
        b"dlq_error_type": b"PermanentError", b"dlq_attempts": b"3",
    }  # fmt: skip
    if tenant is not None:
        ce = {"id": "1", "type": kind, "tenant": tenant, "subject": "d1"}
        raw[b"ce"] = json.dumps(ce).encode()
        raw[b"data"] = json.dumps({"job_id": "j1", "document_id": "d1"}).encode()
    else:
        raw[b"junk"] = b"\xff\xfe not text"
    return DeadLetter.from_entry(entry_id.encode(), raw)


def test_a_dead_letter_reads_its_envelope_and_metadata() -> None:
    read = letter()
    assert (read.tenant, read.type, read.stage, read.stream) == (
        "acme", "document.upsert.v1", "embed", "p:ingest"
    )  # fmt: skip
    assert (read.job_id, read.document_id, read.attempts) == ("j1", "d1", 3)
    assert read.dead_at == NOW
    poison = letter(tenant=None)
    assert poison.tenant is None and poison.type is None and poison.payload is None
    assert poison.fields["junk"].endswith("not text")  # undecodable bytes replaced


def test_a_tenant_that_breaks_the_syntax_is_no_tenant() -> None:
    assert letter(tenant="acme\n").tenant is None
    assert letter(tenant="../x").tenant is None


@pytest.mark.parametrize(
    ("filt", "matches"),
    [
        (DeadLetterFilter(), True),
        (DeadLetterFilter(stage="embed"), True),
        (DeadLetterFilter(stage="index"), False),
        (DeadLetterFilter(type="document.upsert"), True),
        (DeadLetterFilter(type="document.upsert.v1"), True),
        (DeadLetterFilter(type="document.ups"), False),
        (DeadLetterFilter(grep="BOOM"), True),
        (DeadLetterFilter(grep="permanenterror"), True),
        (DeadLetterFilter(grep="timeout"), False),
        (DeadLetterFilter(job_id="j1", document_id="d1"), True),
        (DeadLetterFilter(job_id="j2"), False),
        (DeadLetterFilter(since_ms=NOW_MS), True),
        (DeadLetterFilter(since_ms=NOW_MS + 1), False),
        (DeadLetterFilter(until_ms=NOW_MS), False),
        (DeadLetterFilter(until_ms=NOW_MS + 1), True),
        (DeadLetterFilter(tenant="acme"), True),
        (DeadLetterFilter(tenant="globex"), False),
    ],
)
def test_filters(filt: DeadLetterFilter, matches: bool) -> None:
    assert filt.matches(letter()) is matches


def test_an_unreadable_tenant_is_seen_only_without_a_tenant_filter() -> None:
    poison = letter(tenant=None)
    assert DeadLetterFilter().matches(poison)
    assert not DeadLetterFilter(tenant="acme").matches(poison)
    assert not DeadLetterFilter(tenant="acme").visible(poison)


def test_empty_time_ranges() -> None:
    assert DeadLetterFilter(until_ms=0).empty_range
    assert DeadLetterFilter(since_ms=10, until_ms=10).empty_range
    assert not DeadLetterFilter(since_ms=10, until_ms=11).empty_range


def report(*groups: GroupView) -> StatusReport:
    stream = StreamView(stream="p:ingest", length=10, exists=True, groups=list(groups))
    return StatusReport(prefix="p", streams=[stream], dead_letter_stream="p:dlq",
                        dead_letters_total=0)  # fmt: skip


def group(lag: int | None, pending: int, idle: list[int], oldest: int | None = None) -> GroupView:
    return GroupView(
        name="embedder", lag=lag, pending=pending, oldest_pending_age_ms=oldest,
        last_delivered_id="0-0", dead_letters=0,
        consumers=[ConsumerView(name=f"c{i}", pending=0, idle_ms=ms) for i, ms in enumerate(idle)],
    )  # fmt: skip


def test_health_problems() -> None:
    bounds = HealthBounds(max_lag=5, max_oldest_pending_ms=1000, consumer_idle_ms=10_000)
    kinds = lambda g: [p.kind for p in check_status(report(g), bounds)]  # noqa: E731
    assert kinds(group(0, 0, [])) == []  # nothing waits: no consumer needed
    assert kinds(group(3, 0, [])) == ["no_live_consumer"]
    assert kinds(group(0, 2, [50_000])) == ["no_live_consumer"]  # its only consumer is gone
    assert kinds(group(3, 0, [50_000, 20])) == []
    assert kinds(group(6, 0, [20])) == ["lag"]
    assert kinds(group(0, 1, [20], oldest=1001)) == ["oldest_pending"]
    assert kinds(group(None, 0, [])) == []  # an unknown lag is not a problem by itself
    assert check_status(report(group(9, 9, [], oldest=5000)), HealthBounds()) != []
