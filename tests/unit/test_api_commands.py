"""The command builders of the ingress: pure functions, the provider side of the
document.upsert.v1 / document.delete.v1 contracts."""

from __future__ import annotations

import json
import uuid
from typing import cast

import pytest

from embedstream.api.commands import (
    SOURCE,
    build_delete,
    build_upsert,
    build_upserts,
    valid_traceparent,
)
from embedstream.errors import PoisonMessage
from embedstream.ids import random_uuid
from embedstream.schemas.api import DocumentIn, is_job_id
from embedstream.schemas.commands import DocumentDelete, DocumentUpsert
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.tenancy import chunk_id, document_key, split_document_key

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_build_upsert_wraps_the_document() -> None:
    doc = DocumentIn(id="doc-1", text="hello", metadata={"lang": "en", "page": 3})

    envelope = build_upsert("job-1", doc, tenant="acme", traceparent=TRACEPARENT)

    assert (envelope.type, envelope.source, envelope.subject, envelope.tenant) == (
        "document.upsert.v1",
        SOURCE,
        "doc-1",
        "acme",
    )
    assert json.loads(envelope.to_fields()["ce"])["tenant"] == "acme"
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
        build_upsert("job-1", DocumentIn(text="hello"), tenant="acme")


def test_build_delete() -> None:
    envelope = build_delete("job-2", "a/b", tenant="t-2")

    assert (envelope.type, envelope.subject, envelope.traceparent, envelope.tenant) == (
        "document.delete.v1",
        "a/b",
        None,
        "t-2",
    )
    assert envelope.payload(DocumentDelete) == DocumentDelete(job_id="job-2", document_id="a/b")


@pytest.mark.parametrize("tenant", ["", "a/b", "a:b", "x" * 65, "sp ace"])
def test_an_envelope_refuses_a_bad_tenant(tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant"):
        build_delete("job-2", "a/b", tenant=tenant)


def test_an_entry_without_a_tenant_is_poison() -> None:
    fields = build_delete("job-2", "a", tenant="acme").to_fields()
    attrs = json.loads(fields["ce"])
    del attrs["tenant"]
    raw = {b"ce": json.dumps(attrs).encode(), b"data": cast(bytes, fields["data"])}
    with pytest.raises(PoisonMessage, match="tenant"):
        Envelope.from_fields(raw)


def test_document_keys_split_at_the_first_slash() -> None:
    key = document_key("acme", "a/b:c")
    assert key == "acme/a/b:c"
    assert split_document_key(key) == ("acme", "a/b:c")
    assert chunk_id("acme", "a/b", 2) == "acme/a/b:2"
    with pytest.raises(ValueError, match="invalid tenant"):
        document_key("a/b", "c")


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


@pytest.mark.parametrize(
    "doc",
    [
        DocumentIn(id="doc-1", text="hello", metadata={"lang": "en", "page": 3}),
        DocumentIn(id="dé/jà", text='café ☕ "quoted" \\ \n\t', metadata={}),
        DocumentIn(
            id="n",
            text="numbers",
            metadata={
                "big": 2**63 - 1,
                "small": -(2**63),
                "f": 0.1,
                "e": 1e300,
                "tiny": 5e-324,
                "neg0": -0.0,
                "t": True,
                "u": "\u2028\U0001f600",
            },
        ),
    ],
)
def test_build_upserts_writes_what_build_upsert_writes(doc: DocumentIn) -> None:
    """The one-pass builder serializes payloads itself: the same JSON text as the
    ``DocumentUpsert`` model, the same attributes but for the id and time."""
    one = build_upsert("job-1", doc, tenant="acme", traceparent=TRACEPARENT)
    [many] = build_upserts("job-1", [doc], tenant="acme", traceparent=TRACEPARENT)

    assert many.data == one.data
    assert DocumentUpsert.model_validate_json(many.data) == one.payload(DocumentUpsert)
    attributes = {k: v for k, v in json.loads(many.attributes()).items() if k not in ("id", "time")}
    expected = {k: v for k, v in json.loads(one.attributes()).items() if k not in ("id", "time")}
    assert attributes == expected
    decoded = Envelope.from_fields({b"ce": many.attributes().encode(), b"data": many.data})
    assert decoded == many


def test_build_upserts_gives_each_command_its_own_id_and_checks_the_tenant() -> None:
    docs = [DocumentIn(id=f"d{n}", text="t") for n in range(3)]

    envelopes = build_upserts("job-1", docs, tenant="acme")

    assert [e.subject for e in envelopes] == ["d0", "d1", "d2"]
    assert len({e.id for e in envelopes}) == 3
    assert all(e.traceparent is None for e in envelopes)
    with pytest.raises(ValueError, match="invalid envelope"):
        build_upserts("job-1", docs, tenant="Not A Tenant")
    with pytest.raises(ValueError, match="no id"):
        build_upserts("job-1", [DocumentIn(text="no id")], tenant="acme")


def test_random_uuid_is_a_version_4_uuid_and_a_job_id() -> None:
    ids = {random_uuid() for _ in range(1000)}

    assert len(ids) == 1000
    for value in ids:
        parsed = uuid.UUID(value)
        assert (str(parsed), parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)
        assert is_job_id(value)
