"""The rules a ``document.embedded`` event keeps (v1 and v2), checked by the event
models themselves: every stage that decodes one (index, persist, a subscriber) refuses
the same events, and none re-checks them."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from embedstream.errors import PoisonMessage
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import (
    DocumentEmbedded,
    DocumentEmbeddedV2,
    EmbeddedChunk,
)
from embedstream.schemas.vectors import decode_vector, encode_vector, vector_array, vector_bytes
from embedstream.workers.persist import PERSIST_STAGE
from tests.support.builders import embedded_event, event_envelope

MODELS = [DocumentEmbedded, DocumentEmbeddedV2]


def fields(
    model: type[DocumentEmbedded] | type[DocumentEmbeddedV2], **changes: object
) -> dict[str, object]:
    base = embedded_event("j", "d", 7, ("a", "b", "c"), dim=4)
    data = base.model_dump()
    if model is DocumentEmbeddedV2:
        data["version"] = f"{7:020d}"
    data.update(changes)
    return data


def chunk(index: int, dim: int = 4, vector: str | None = None) -> dict[str, object]:
    return {
        "id": f"acme/d:{index}",
        "index": index,
        "text": f"chunk {index}",
        "vector": vector if vector is not None else encode_vector(np.ones(dim)),
    }


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    ("chunks", "count", "reason"),
    [
        ([chunk(0), chunk(2)], 2, "chunk indexes [0, 2] do not match chunk_count=2"),
        ([chunk(0), chunk(0)], 2, "chunk indexes [0, 0] do not match chunk_count=2"),
        ([chunk(0)], 2, "chunk indexes [0] do not match chunk_count=2"),
        ([chunk(0, dim=3)], 1, "chunk 0: vector has 3 float32 values, expected dim=4"),
        ([chunk(0, vector="not base64!")], 1, "chunk 0: vector is not base64"),
        ([chunk(0, vector=base64.b64encode(b"abc").decode())], 1, "0.75 float32 values"),
    ],
)
def test_an_event_whose_chunks_break_the_rules_is_refused(
    model: type[DocumentEmbedded] | type[DocumentEmbeddedV2],
    chunks: list[dict[str, object]],
    count: int,
    reason: str,
) -> None:
    with pytest.raises(ValidationError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        model.model_validate(fields(model, chunks=chunks, chunk_count=count))


@pytest.mark.parametrize("model", MODELS)
def test_a_full_embedding_in_any_order_and_a_reuse_without_chunks_are_valid(
    model: type[DocumentEmbedded] | type[DocumentEmbeddedV2],
) -> None:
    event = model.model_validate(fields(model, chunks=[chunk(1), chunk(0)], chunk_count=2))
    assert [c.index for c in event.chunks] == [1, 0]
    reused = model.model_validate(fields(model, chunks=[], chunk_count=5, reused=True))
    assert reused.chunk_count == 5


def test_a_refused_event_is_poison_for_the_stage_that_decodes_it() -> None:
    good = embedded_event("j", "d", 7, ("a",), dim=4)
    bad = good.model_construct(**{**dict(good), "dim": 5})  # as another producer could write it
    decode = PERSIST_STAGE.decoder()
    assert decode(_fields(event_envelope(good))).payload == good
    with pytest.raises(PoisonMessage, match="expected dim=5"):
        decode(_fields(event_envelope(bad)))


def _fields(envelope: Envelope) -> dict[bytes, bytes]:
    raw = envelope.to_fields()
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in raw.items()}


def test_one_helper_encodes_and_decodes_vectors() -> None:
    vector = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    text = encode_vector(vector)
    raw = vector_bytes(text, 3)
    assert raw == vector.astype("<f4").tobytes()
    assert np.array_equal(vector_array(raw), vector)
    assert np.array_equal(decode_vector(text, 3), vector)
    with pytest.raises(ValueError, match="expected dim=4"):
        vector_bytes(text, 4)
    piece = EmbeddedChunk(id="x", index=0, text="t", vector=text)
    assert piece.vector_bytes == raw and np.array_equal(piece.vector_array, vector)


def test_both_type_versions_are_the_same_event() -> None:
    event = embedded_event("j", "d", 2**60, ("a", "b"), dim=4)
    twin = DocumentEmbeddedV2.from_v1(event)
    assert twin.version == f"{2**60:020d}" and twin.version_number == 2**60
    assert twin == DocumentEmbeddedV2.model_validate_json(twin.model_dump_json())
    assert twin.to_v1() == event
