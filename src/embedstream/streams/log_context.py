"""What a worker's log lines say about the message they are about: its entry id, type,
tenant, document and trace id, bound in structlog's contextvars by the runtime (handlers
do not pass them by hand)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import structlog

from embedstream.schemas.envelope import Envelope, Fields
from embedstream.tracing import trace_id_of


def envelope_of(body: object) -> Envelope | None:
    """The envelope of a decoded message (a stage's ``Decoded``, a subscriber's
    ``Delivery``, or an ``Envelope`` itself)."""
    if isinstance(body, Envelope):
        return body
    envelope = getattr(body, "envelope", None)
    return envelope if isinstance(envelope, Envelope) else None


def traceparent_of(body: object) -> str | None:
    envelope = envelope_of(body)
    return None if envelope is None else envelope.traceparent


def describe(entry_id: str, body: object = None, fields: Fields | None = None) -> dict[str, Any]:
    """The log keys of one message: from its decoded envelope, else from its raw ``ce``
    field when that still parses (a dead letter's), else its id alone."""
    described: dict[str, Any] = {"message_id": entry_id}
    envelope = envelope_of(body)
    if envelope is not None:
        attrs: dict[str, Any] = {
            "type": envelope.type,
            "tenant": envelope.tenant,
            "subject": envelope.subject,
            "traceparent": envelope.traceparent,
        }
    else:
        attrs = _raw_attributes(fields)
    for key, value in (
        ("type", attrs.get("type")),
        ("tenant", attrs.get("tenant")),
        ("document", attrs.get("subject")),
        ("trace_id", trace_id_of(attrs.get("traceparent"))),
    ):
        if isinstance(value, str) and value:
            described[key] = value
    return described


def _raw_attributes(fields: Fields | None) -> dict[str, Any]:
    raw = fields.get(b"ce") if fields else None
    if raw is None:
        return {}
    try:
        attrs = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return attrs if isinstance(attrs, dict) else {}


@contextlib.contextmanager
def message_context(
    entry_id: str, body: object = None, fields: Fields | None = None
) -> Iterator[None]:
    """Bind the message's log keys for the lines logged inside the block."""
    with structlog.contextvars.bound_contextvars(**describe(entry_id, body, fields)):
        yield
