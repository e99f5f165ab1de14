"""What a handler receives: each entry's envelope and its payload, validated against the
model its type names.

The runtime decodes every entry before a handler sees it (``StreamWorker(decode=...)``),
for the pipeline's stages as for subscribers: an entry that is not a valid envelope, whose
type the reader does not read, or whose payload does not validate, is poison and goes to
the dead-letter stream at once with the reason (``PoisonMessage``). A handler gets only
messages it can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from embedstream.errors import PoisonMessage
from embedstream.schemas.envelope import Envelope, Fields

P = TypeVar("P", bound=BaseModel)
P_co = TypeVar("P_co", bound=BaseModel, covariant=True)


@dataclass(frozen=True, slots=True)
class Decoded(Generic[P_co]):
    """An entry's envelope and its validated payload."""

    envelope: Envelope
    payload: P_co


def payload_of(envelope: Envelope, types: Mapping[str, type[P]]) -> P | None:
    """The envelope's payload validated against the model of its type; None when its type
    is not one of ``types``; ``PoisonMessage`` when it does not validate."""
    model = types.get(envelope.type)
    return None if model is None else envelope.payload(model)


def unexpected_type(envelope: Envelope, types: Mapping[str, object], reader: str) -> PoisonMessage:
    """The error for an entry of a type ``reader`` does not read."""
    expected = list(types)
    listed = (
        ", ".join(expected[:-1]) + f" or {expected[-1]}" if len(expected) > 1 else "".join(expected)
    )
    return PoisonMessage(f"unknown type {envelope.type!r}: {reader} reads {listed or 'nothing'}")


def payload_decoder(types: Mapping[str, type[P]], *, reader: str) -> Callable[[Fields], Decoded[P]]:
    """The runtime's decoder for a reader of ``types`` (type -> payload model): anything
    else is poison (see the module doc). ``reader`` names it in the reason."""

    def decode(fields: Fields) -> Decoded[P]:
        envelope = Envelope.from_fields(fields)
        payload = payload_of(envelope, types)
        if payload is None:
            raise unexpected_type(envelope, types, reader)
        return Decoded(envelope, payload)

    return decode
