"""What both stores can hold (issue 10, item 9): the commands and events every stage
decodes refuse what Chroma or PostgreSQL would refuse, so a stage dead-letters such a
message before either store sees it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from embedstream.errors import PoisonMessage
from embedstream.schemas.commands import DOCUMENT_UPSERT, DocumentDelete, DocumentUpsert
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DocumentEmbedded, DocumentRemoved
from embedstream.schemas.storable import metadata_problem, text_problem

UPSERT: dict[str, Any] = {"job_id": "j", "document_id": "d", "text": "t", "metadata": {}}
EMBEDDED: dict[str, Any] = {
    "job_id": "j",
    "document_id": "d",
    "version": 1,
    "content_hash": "h",
    "model": "m",
    "dim": 2,
    "text": "t",
    "metadata": {},
    "chunk_count": 1,
    "chunks": [{"id": "c", "index": 0, "text": "t", "vector": "AAAAAAAAAAA="}],
}

UNSTORABLE: list[tuple[str, dict[str, Any]]] = [
    ("nul in a metadata value", {"metadata": {"k": "a\x00"}}),
    ("nul in a metadata key", {"metadata": {"k\x00": 1}}),
    ("lone surrogate in a metadata value", {"metadata": {"k": "\ud800"}}),
    ("reserved chroma key", {"metadata": {"chroma:document": "x"}}),
    ("key starting with $", {"metadata": {"$in": 1}}),
    ("key starting with #", {"metadata": {"#x": 1}}),
    ("empty key", {"metadata": {"": 1}}),
    ("integer beyond 64 bits", {"metadata": {"n": 2**64}}),
    ("nul in the text", {"text": "a\x00b"}),
    ("nul in the document id", {"document_id": "a\x00"}),
    ("nul in the job id", {"job_id": "j\x00"}),
]


@pytest.mark.parametrize(("label", "change"), UNSTORABLE, ids=[u[0] for u in UNSTORABLE])
def test_commands_and_events_refuse_what_a_store_would_refuse(
    label: str, change: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        DocumentUpsert.model_validate({**UPSERT, **change})
    with pytest.raises(ValidationError):
        DocumentEmbedded.model_validate({**EMBEDDED, **change})


def test_deletes_and_chunks_too() -> None:
    with pytest.raises(ValidationError):
        DocumentDelete(job_id="j", document_id="d\x00")
    with pytest.raises(ValidationError):
        DocumentRemoved(job_id="j", document_id="d\x00", version=1)
    with pytest.raises(ValidationError):
        DocumentRemoved(job_id="j", document_id="d", version=2**63)
    chunk = {**EMBEDDED["chunks"][0], "text": "t\x00"}
    with pytest.raises(ValidationError):
        DocumentEmbedded.model_validate({**EMBEDDED, "chunks": [chunk]})


def test_a_stage_decoding_such_a_command_gets_poison() -> None:
    envelope = Envelope.wrap(
        DOCUMENT_UPSERT, DocumentUpsert.model_validate(UPSERT), source="t", tenant="acme"
    )
    raw = envelope.data.replace(b'"metadata":{}', b'"metadata":{"k":"a\\u0000"}')
    poisoned = Envelope(**{**_attributes(envelope), "data": raw})
    with pytest.raises(PoisonMessage, match="NUL"):
        poisoned.payload(DocumentUpsert)


def _attributes(envelope: Envelope) -> dict[str, Any]:
    return {name: getattr(envelope, name) for name in envelope.__struct_fields__}


def test_what_stores_hold_passes() -> None:
    fine = {"s": "é ü 日本 \t\n", "i": -(2**63), "f": 1e308, "b": True, "chroma": "x"}
    assert metadata_problem(fine) is None
    assert text_problem("any text\r\n\u2028 at all") is None
    DocumentEmbedded.model_validate({**EMBEDDED, "metadata": fine})
    problem = metadata_problem({"ok": 1, "secret\x00key": 2})
    assert problem == "metadata key #2 contains a NUL (U+0000) character at position 6"
