"""The persist stage's write planning, without PostgreSQL: which of a document's writes
in a batch take effect (``adapters/postgres/model.plan_document``), and the row an event
stands for (``workers/persist.to_write``)."""

from __future__ import annotations

import dataclasses
import json

from embedstream.adapters.postgres.model import StoredState, WriteResult, plan_document
from embedstream.schemas.events import as_v2
from embedstream.workers.persist import to_write
from tests.support.builders import (
    TENANT,
    embedded_event,
    embedded_v2,
    removed_event,
    row_delete,
    row_upsert,
)


def test_plan_resolves_a_batch_like_one_message_at_a_time() -> None:
    full = row_upsert("d", 2, text="a")
    reused = row_upsert("d", 3, text="a", reused=True, meta='{"x":1}')
    plan = plan_document(None, [(0, reused), (1, full)])
    assert plan.results == {0: WriteResult.APPLIED, 1: WriteResult.APPLIED}
    assert plan.write is not None
    assert not plan.write.reused
    assert (plan.write.version, plan.write.metadata_json, plan.write.chunks) == (
        3,
        '{"x":1}',
        full.chunks,
    )
    stored = StoredState(5, False, "h:a")
    plan = plan_document(stored, [(0, full), (1, row_delete("d", 4)), (2, row_delete("d", 6))])
    assert plan.results == {0: WriteResult.STALE, 1: WriteResult.STALE, 2: WriteResult.APPLIED}
    assert plan.write == row_delete("d", 6)


def test_an_equal_version_is_stale_so_both_type_versions_apply_once() -> None:
    stored = StoredState(4, False, "h:a")
    plan = plan_document(stored, [(0, row_upsert("d", 4, text="a"))])
    assert plan == type(plan)(None, {0: WriteResult.STALE})


def test_a_reuse_that_cannot_apply_conflicts_or_waits_for_its_base() -> None:
    reuse = row_upsert("d", 3, reused=True)
    deleted_at_1 = StoredState(1, True, None)
    for base, expected in ((1, WriteResult.CONFLICT), (2, WriteResult.WAITING)):
        plan = plan_document(deleted_at_1, [(0, dataclasses.replace(reuse, base_version=base))])
        assert plan == type(plan)(None, {0: expected})
    assert plan_document(deleted_at_1, [(0, reuse)]).results == {0: WriteResult.WAITING}
    assert plan_document(None, [(0, reuse)]).results == {0: WriteResult.WAITING}
    other_content = StoredState(2, False, "h:other")
    plan = plan_document(other_content, [(0, dataclasses.replace(reuse, base_version=2))])
    assert plan.results == {0: WriteResult.CONFLICT}
    live = StoredState(2, False, reuse.content_hash)
    applied = plan_document(live, [(0, reuse)])
    assert applied.results == {0: WriteResult.APPLIED} and applied.write == reuse


def test_an_embedded_event_becomes_its_row_with_chunks_as_bytes() -> None:
    event = embedded_v2("j", "d", 5, ("one", "two"), metadata={"page": 3, "ok": True})
    write = to_write(TENANT, event)
    assert (write.job_id, write.document_id, write.version, write.tenant) == ("j", "d", 5, TENANT)
    assert not write.deleted and not write.reused
    assert json.loads(write.metadata_json) == {"page": 3, "ok": True}
    assert [row.chunk_id for row in write.chunks] == [f"{TENANT}/d:0", f"{TENANT}/d:1"]
    assert [row.embedding for row in write.chunks] == [c.vector_bytes for c in event.chunks]
    assert all(len(row.embedding) == 4 * event.dim for row in write.chunks)


def test_a_reused_event_names_its_base_in_v2_only_and_a_removal_is_a_tombstone() -> None:
    reused = embedded_event("j", "d", 6, ("one",), reused=True)
    assert to_write(TENANT, as_v2(reused)).base_version is None  # v1 cannot name it
    named = embedded_v2("j", "d", 6, ("one",), reused=True, base_version=5)
    write = to_write(TENANT, named)
    assert (write.reused, write.chunks, write.base_version) == (True, (), 5)
    gone = to_write("t-b", as_v2(removed_event("j", "d", 7)))
    assert (gone.deleted, gone.version, gone.tenant, gone.chunks) == (True, 7, "t-b", ())
