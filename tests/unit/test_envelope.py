"""The envelope: decoding stream fields, and the msgspec struct the runtime decodes with
kept in step with the pydantic model the JSON Schema comes from."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from pydantic import BaseModel, ValidationError

from embedstream.errors import PoisonMessage
from embedstream.schemas.envelope import Envelope, EnvelopeSchema

VALID: dict[str, Any] = {
    "id": "e-1",
    "source": "test",
    "type": "document.upsert.v1",
    "specversion": "1.0",
    "time": "2026-01-01T00:00:00+00:00",
    "datacontenttype": "application/json",
    "tenant": "acme",
    "schemaversion": 1,
}

# (label, change to VALID): None removes the attribute
CASES: list[tuple[str, dict[str, Any]]] = [
    ("valid", {}),
    ("valid with subject and traceparent", {"subject": "doc-1", "traceparent": "00-ab-cd-01"}),
    ("valid with null subject", {"subject": None}),
    ("valid without the defaulted attributes", {"specversion": None, "schemaversion": None}),
    ("valid UTC Z time", {"time": "2026-01-01T00:00:00Z"}),
    ("missing id", {"id": None}),
    ("empty id", {"id": ""}),
    ("empty source", {"source": ""}),
    ("empty type", {"type": ""}),
    ("missing time", {"time": None}),
    ("time not a time", {"time": "yesterday"}),
    ("time a number", {"time": 1767225600}),
    ("missing tenant", {"tenant": None}),
    ("tenant with a slash", {"tenant": "a/b"}),
    ("tenant too long", {"tenant": "x" * 65}),
    ("empty tenant", {"tenant": ""}),
    # Python's '$' matches before a final newline: both must still refuse (issue 10, item 4)
    ("tenant with a trailing newline", {"tenant": "tA\n"}),
    ("tenant with a leading newline", {"tenant": "\ntA"}),
    ("tenant starting with a dot", {"tenant": ".acme"}),
    ("valid tenant of 64 characters", {"tenant": "a" + "-" * 63}),
    ("specversion 2.0", {"specversion": "2.0"}),
    ("other content type", {"datacontenttype": "text/plain"}),
    ("schemaversion as text", {"schemaversion": "1"}),
    ("id a number", {"id": 7}),
    ("unknown attribute", {"colour": "red"}),
]


def attributes(change: dict[str, Any]) -> dict[str, Any]:
    attrs = {**VALID, **change}
    return {k: v for k, v in attrs.items() if v is not None or k == "subject"}


def fields_of(attrs: dict[str, Any], data: bytes = b'{"n":1}') -> dict[bytes, bytes]:
    return {b"ce": json.dumps(attrs).encode(), b"data": data}


def accepted_by_struct(attrs: dict[str, Any]) -> bool:
    try:
        Envelope.from_fields(fields_of(attrs))
    except PoisonMessage:
        return False
    return True


def accepted_by_schema_model(attrs: dict[str, Any]) -> bool:
    try:
        EnvelopeSchema.model_validate_json(json.dumps({**attrs, "data": '{"n":1}'}))
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("label", "change"), CASES, ids=[label for label, _ in CASES])
def test_struct_and_schema_model_accept_the_same_envelopes(
    label: str, change: dict[str, Any]
) -> None:
    attrs = attributes(change)
    expected = label.startswith("valid")
    assert accepted_by_struct(attrs) is expected
    assert accepted_by_schema_model(attrs) is expected


def test_struct_and_schema_model_have_the_same_attributes_and_defaults() -> None:
    struct_fields = {f.name: f for f in msgspec.structs.fields(Envelope)}
    model_fields = EnvelopeSchema.model_fields
    assert set(struct_fields) == set(model_fields)
    for name, model_field in model_fields.items():
        struct_field = struct_fields[name]
        if name == "data":  # a field of its own on the stream, required there
            assert model_field.is_required()
            continue
        assert struct_field.required == model_field.is_required(), name
        if not struct_field.required:
            assert struct_field.default == model_field.default, name


def test_fields_round_trip() -> None:
    class Payload(BaseModel):
        n: int

    envelope = Envelope.wrap(
        "document.upsert.v1", Payload(n=3), source="api", tenant="acme", subject="d"
    )
    raw = {
        k.encode(): v if isinstance(v, bytes) else v.encode()
        for k, v in envelope.to_fields().items()
    }
    decoded = Envelope.from_fields(raw)
    assert decoded == envelope
    assert decoded.payload(Payload) == Payload(n=3)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"data": b"{}"}, "missing stream field(s) ['ce']"),
        ({b"ce": json.dumps(VALID).encode()}, "missing stream field(s) ['data']"),
        ({b"ce": b"{not json", b"data": b"{}"}, "JSON is malformed"),
        ({b"ce": b"[1, 2]", b"data": b"{}"}, "Expected `object`, got `array`"),
        ({b"ce": b"\xff\xfe", b"data": b"{}"}, "undecodable envelope"),
        (fields_of({**VALID, "data": "e30="}), "`ce` holds `data`"),
    ],
)
def test_undecodable_entries_are_poison_with_the_reason(
    fields: dict[bytes, bytes], reason: str
) -> None:
    with pytest.raises(PoisonMessage, match="undecodable envelope") as caught:
        Envelope.from_fields(fields)
    assert reason in str(caught.value)


def test_wrap_refuses_invalid_attributes() -> None:
    class Payload(BaseModel):
        n: int

    with pytest.raises(ValueError, match=r"\$\.type"):
        Envelope.wrap("", Payload(n=1), source="api", tenant="acme")
