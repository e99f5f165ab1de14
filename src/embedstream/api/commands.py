"""Builders of the commands the ingress puts on ``{prefix}:ingest``.

Pure functions: no I/O, no clock other than the envelope's own timestamp. They are the
provider side of the ``document.upsert.v1`` and ``document.delete.v1`` message
contracts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
from pydantic_core import to_json

from embedstream.ids import random_uuid
from embedstream.schemas.api import DocumentIn
from embedstream.schemas.commands import (
    DOCUMENT_DELETE,
    DOCUMENT_UPSERT,
    DocumentDelete,
    DocumentUpsert,
)
from embedstream.schemas.envelope import Envelope

SOURCE = "embedstream.api"

_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<parent>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-[\x21-\x7e]*)?"
)


def valid_traceparent(value: str | None) -> str | None:
    """The W3C ``traceparent`` header if it is well formed, else None.

    Version ``ff`` and all-zero trace or parent ids are invalid; version ``00`` allows
    nothing after the flags, later versions may append fields (W3C Trace Context)."""
    if value is None:
        return None
    value = value.strip()
    match = _TRACEPARENT.fullmatch(value)
    if match is None or match["version"] == "ff":
        return None
    if match["version"] == "00" and match["rest"]:
        return None
    if set(match["trace"]) == {"0"} or set(match["parent"]) == {"0"}:
        return None
    return value


def build_upsert(
    job_id: str, doc: DocumentIn, *, tenant: str, traceparent: str | None = None
) -> Envelope:
    """The ``document.upsert.v1`` command for one of ``tenant``'s documents; ``doc.id``
    must be set."""
    if doc.id is None:
        raise ValueError("the document has no id: assign one before building its command")
    payload = DocumentUpsert(
        job_id=job_id, document_id=doc.id, text=doc.text, metadata=dict(doc.metadata)
    )
    return Envelope.wrap(
        DOCUMENT_UPSERT,
        payload,
        source=SOURCE,
        tenant=tenant,
        subject=doc.id,
        traceparent=valid_traceparent(traceparent),
    )


def build_upserts(
    job_id: str,
    documents: Sequence[DocumentIn],
    *,
    tenant: str,
    traceparent: str | None = None,
) -> list[Envelope]:
    """``build_upsert`` for every document of a request, in one pass: the envelope's
    attributes are checked once (the tenant's syntax) and the commands share the
    request's time. Each ``doc.id`` must be set.

    A ``DocumentIn`` has passed every check ``DocumentUpsert`` makes (the same id and
    text rules, what both stores can hold), so the payload is serialized directly, by the
    serializer ``DocumentUpsert.model_dump_json`` uses, to the same JSON text
    (``tests/unit/test_api_commands.py`` compares the two)."""
    template = Envelope.new(
        DOCUMENT_UPSERT,
        data=b"",
        source=SOURCE,
        tenant=tenant,
        traceparent=valid_traceparent(traceparent),
        time=datetime.now(UTC),
    )
    envelopes: list[Envelope] = []
    replace = msgspec.structs.replace
    for doc in documents:
        if doc.id is None:
            raise ValueError("the document has no id: assign one before building its command")
        payload = {
            "job_id": job_id,
            "document_id": doc.id,
            "kind": "upsert",
            "text": doc.text,
            "metadata": doc.metadata,
        }
        envelopes.append(replace(template, id=random_uuid(), subject=doc.id, data=to_json(payload)))
    return envelopes


def build_delete(
    job_id: str, document_id: str, *, tenant: str, traceparent: str | None = None
) -> Envelope:
    """The ``document.delete.v1`` command for one of ``tenant``'s documents."""
    payload = DocumentDelete(job_id=job_id, document_id=document_id)
    return Envelope.wrap(
        DOCUMENT_DELETE,
        payload,
        source=SOURCE,
        tenant=tenant,
        subject=document_id,
        traceparent=valid_traceparent(traceparent),
    )
