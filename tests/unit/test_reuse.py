"""Content-hash reuse and the re-embed fallback, as decisions: when an upsert repeats
its document's stored embedding and may be answered without encoding
(``workers/reuse.may_reuse``), the version a command gets, and what a store does with a
reused embedding it cannot apply (``workers/reembed.decide``)."""

from __future__ import annotations

import dataclasses

import pytest

from embedstream.errors import PoisonMessage
from embedstream.jobs.inflight import InFlight, InFlightState
from embedstream.schemas.commands import DocumentReembed, DocumentUpsert
from embedstream.schemas.events import BIGINT_MAX
from embedstream.streams.names import stream_id_to_version
from embedstream.workers.embed import command_version
from embedstream.workers.reembed import Unapplied, decide
from embedstream.workers.reuse import (
    ReuseCandidate,
    StoredEmbedding,
    content_hash,
    may_reuse,
)

PROFILE = "model:384:254:32"
TEXT_HASH = content_hash("the same text")
ALONE = InFlightState(count=1, counted=True)
STORED = StoredEmbedding(TEXT_HASH, version=10, chunk_count=3, profile=PROFILE)
CANDIDATE = ReuseCandidate("1-0", "acme/doc", TEXT_HASH, version=11)


def test_an_unchanged_text_alone_in_flight_reuses_its_stored_embedding() -> None:
    assert may_reuse(STORED, CANDIDATE, ALONE, PROFILE)


@pytest.mark.parametrize(
    ("stored", "candidate", "in_flight", "profile", "why"),
    [
        (None, CANDIDATE, ALONE, PROFILE, "never embedded"),
        (StoredEmbedding.tombstone(10), CANDIDATE, ALONE, PROFILE, "deleted since"),
        (
            dataclasses.replace(STORED, content_hash=content_hash("other")),
            CANDIDATE,
            ALONE,
            PROFILE,
            "the text changed",
        ),
        (STORED, CANDIDATE, ALONE, "other-model:384:254:32", "another model or chunking"),
        (dataclasses.replace(STORED, chunk_count=0), CANDIDATE, ALONE, PROFILE, "no chunks"),
        (STORED, dataclasses.replace(CANDIDATE, version=10), ALONE, PROFILE, "not older"),
        (STORED, CANDIDATE, InFlightState(2, True), PROFILE, "another command in flight"),
        (STORED, CANDIDATE, InFlightState(1, False), PROFILE, "not counted (a replay)"),
    ],
)
def test_anything_else_is_embedded_again(
    stored: StoredEmbedding | None,
    candidate: ReuseCandidate,
    in_flight: InFlightState,
    profile: str,
    why: str,
) -> None:
    assert not may_reuse(stored, candidate, in_flight, profile), why


def test_a_stored_embedding_reads_back_what_it_wrote_and_nothing_else() -> None:
    assert StoredEmbedding.parse(STORED.value()) == STORED
    assert StoredEmbedding.parse(STORED.value().encode()) == STORED
    assert StoredEmbedding.parse(StoredEmbedding.tombstone(4).value()) == StoredEmbedding(
        "deleted", 4, 0, ""
    )
    for broken in (None, "", "a|b|c", "h|not-a-number|3|p"):
        assert StoredEmbedding.parse(broken) is None


def test_in_flight_states_come_from_the_two_hashes() -> None:
    entries = {"1-0": "acme/a", "1-1": "acme/b", "1-2": "acme/c"}
    states = InFlight.parse(entries, [b"1", b"2", None], [b"acme/a", b"acme/b", None])
    assert states["1-0"].alone
    assert not states["1-1"].alone  # another command of b is in flight
    assert not states["1-2"].alone  # not counted: added by a replay or by hand


def test_a_commands_version_is_its_entry_id_and_a_reembed_names_its_own() -> None:
    upsert = DocumentUpsert(job_id="j", document_id="d", text="t")
    assert command_version("1767225600000-5", upsert) == stream_id_to_version("1767225600000-5")
    with pytest.raises(PoisonMessage, match="beyond the versions stores hold"):
        command_version("9999999999999-0", upsert)
    assert stream_id_to_version("9999999999999-0") > BIGINT_MAX
    reembed = DocumentReembed(
        job_id="j", document_id="d", version=f"{42:020d}", text="t", requested_by="index"
    )
    assert command_version("9999999999999-0", reembed) == 42


@pytest.mark.parametrize(
    ("stored", "base", "attempt", "expected"),
    [
        (5, 5, 1, Unapplied.REEMBED),  # the base is here with other content: it will not come
        (6, 5, 1, Unapplied.REEMBED),  # newer than the base, still not the reused content
        (4, 5, 1, Unapplied.WAIT),  # the base is on its way
        (None, 5, 1, Unapplied.WAIT),  # nothing stored yet
        (None, None, 1, Unapplied.WAIT),  # a v1 event names no base: wait first
        (4, 5, 5, Unapplied.REEMBED),  # the last delivery: re-embed rather than fail
        (None, None, 6, Unapplied.REEMBED),
    ],
)
def test_a_store_waits_for_a_reuses_base_or_asks_for_a_reembed(
    stored: int | None, base: int | None, attempt: int, expected: Unapplied
) -> None:
    assert decide(stored, base, attempt=attempt, max_deliveries=5) is expected
