"""The command builders of the ingress: pure functions, the provider side of the
document.upsert.v1 / document.delete.v1 contracts."""

from __future__ import annotations

import pytest

from embedstream.api.commands import SOURCE, build_delete, build_upsert, valid_traceparent
from embedstream.schemas.api import DocumentIn
from embedstream.schemas.commands import DocumentDelete, DocumentUpsert
from embedstream.schemas.envelope import Envelope

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_build_upsert_wraps_the_document() -> None:
    doc = DocumentIn(id="doc-1", text="hello", metadata={"lang": "en", "page": 3})

    envelope = build_upsert("job-1", doc, traceparent=TRACEPARENT)

    assert (envelope.type, envelope.source, envelope.subject) == (
        "document.upsert.v1",
        SOURCE,
        "doc-1",
    )
    assert envelope.traceparent == TRACEPARENT
    assert envelope.payload(DocumentUpsert) == DocumentUpsert(
        job_id="job-1", document_id="doc-1", text="hello", metadata={"lang": "en", "page": 3}
    )
    assert (
        Envelope.from_fields(
            {
                k.encode(): v if isinstance(v, bytes) else v.encode()
                for k, v in envelope.to_fields().items()
            }
        )
        == envelope
    )


def test_build_upsert_needs_an_id() -> None:
    with pytest.raises(ValueError, match="no id"):
        build_upsert("job-1", DocumentIn(text="hello"))


def test_build_delete() -> None:
    envelope = build_delete("job-2", "a/b")

    assert (envelope.type, envelope.subject, envelope.traceparent) == (
        "document.delete.v1",
        "a/b",
        None,
    )
    assert envelope.payload(DocumentDelete) == DocumentDelete(job_id="job-2", document_id="a/b")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (TRACEPARENT, TRACEPARENT),
        (f" {TRACEPARENT} ", TRACEPARENT),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", None),
        (None, None),
        ("", None),
        ("garbage", None),
        (TRACEPARENT.upper(), None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        (f"{TRACEPARENT}-extra", None),
    ],
)
def test_valid_traceparent(header: str | None, expected: str | None) -> None:
    if header and header.startswith("01-"):
        expected = header  # a later version may append fields
    assert valid_traceparent(header) == expected
