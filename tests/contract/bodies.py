"""What each consumer expects of a message: the pact bodies, built with matchers.

A body is the envelope as one JSON object (``embedstream.contracts.codec``): the
attributes of ``ce`` as keys, ``schemaversion`` an integer, ``data`` the payload object. Values that
vary (ids, times, hashes, vectors) are matched by type or pattern; the message type,
``specversion``, ``datacontenttype`` and the payload's discriminators are literal.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import numpy as np
from pact import match

from embedstream.schemas import commands, events
from embedstream.schemas.versions import VERSION_PATTERN, version_text

RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$"
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
SHA256 = r"^[0-9a-f]{64}$"
TENANT = r"^[A-Za-z0-9._-]{1,64}$"

EXAMPLE_TIME = "2025-03-01T10:15:30.123456+00:00"
EXAMPLE_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
EXAMPLE_JOB = "0b9f6e0e-8d0c-4c39-9a55-3b7f0c1d2e3f"
EXAMPLE_DOC = "handbook/intro.md"
EXAMPLE_TENANT = "acme"
EXAMPLE_TEXT = "Redis Streams deliver commands to consumer groups."
EXAMPLE_METADATA: dict[str, Any] = {"source": "handbook", "page": 3}
EXAMPLE_VERSION = 1_816_133_304_320_000_000  # ms << 20 of an ingest entry id
EXAMPLE_VERSION_TEXT = version_text(EXAMPLE_VERSION)
EXAMPLE_BASE_TEXT = version_text(EXAMPLE_VERSION - 5)
EXAMPLE_DIM = 4
EXAMPLE_VECTOR = base64.b64encode(np.asarray([0.5, 0.5, 0.5, 0.5], dtype="<f4").tobytes()).decode()
EXAMPLE_HASH = "a" * 64


def envelope(
    type_: str,
    *,
    source: str,
    subject: str,
    data: dict[str, Any],
    traceparent: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": match.uuid(str(uuid.uuid5(uuid.NAMESPACE_URL, f"embedstream:{type_}"))),
        "source": match.str(source),
        "type": type_,
        "specversion": "1.0",
        "time": match.regex(EXAMPLE_TIME, regex=RFC3339),
        "subject": match.str(subject),
        "tenant": match.regex(EXAMPLE_TENANT, regex=TENANT),
        "datacontenttype": "application/json",
        "schemaversion": match.int(1),
        "data": data,
    }
    if traceparent:
        body["traceparent"] = match.regex(EXAMPLE_TRACEPARENT, regex=TRACEPARENT)
    return body


# -- {prefix}:ingest --------------------------------------------------------------------


def document_upsert() -> dict[str, Any]:
    return envelope(
        commands.DOCUMENT_UPSERT,
        source="embedstream.api",
        subject=EXAMPLE_DOC,
        traceparent=True,
        data={
            "job_id": match.str(EXAMPLE_JOB),
            "document_id": match.str(EXAMPLE_DOC),
            "kind": "upsert",
            "text": match.str(EXAMPLE_TEXT),
            "metadata": match.like(EXAMPLE_METADATA),
        },
    )


def document_reembed() -> dict[str, Any]:
    return envelope(
        commands.DOCUMENT_REEMBED,
        source="embedstream.persist",
        subject=EXAMPLE_DOC,
        traceparent=True,
        data={
            "job_id": match.str(EXAMPLE_JOB),
            "document_id": match.str(EXAMPLE_DOC),
            "kind": "reembed",
            "version": match.regex(EXAMPLE_VERSION_TEXT, regex=VERSION_PATTERN),
            "text": match.str(EXAMPLE_TEXT),
            "metadata": match.like(EXAMPLE_METADATA),
            "requested_by": match.regex("persist", regex=r"^(index|persist)$"),
        },
    )


def document_delete() -> dict[str, Any]:
    return envelope(
        commands.DOCUMENT_DELETE,
        source="embedstream.api",
        subject=EXAMPLE_DOC,
        data={
            "job_id": match.str(EXAMPLE_JOB),
            "document_id": match.str(EXAMPLE_DOC),
            "kind": "delete",
        },
    )


# -- {prefix}:embedded ------------------------------------------------------------------


def _embedded_data(*, reused: bool) -> dict[str, Any]:
    chunks: Any = (
        []
        if reused
        else match.each_like(
            {
                "id": match.str(f"{EXAMPLE_TENANT}/{EXAMPLE_DOC}:0"),
                "index": match.int(0),
                "text": match.str(EXAMPLE_TEXT),
                "vector": match.regex(EXAMPLE_VECTOR, regex=BASE64),
            }
        )
    )
    return {
        "job_id": match.str(EXAMPLE_JOB),
        "document_id": match.str(EXAMPLE_DOC),
        "version": match.int(EXAMPLE_VERSION),
        "content_hash": match.regex(EXAMPLE_HASH, regex=SHA256),
        "model": match.str("all-MiniLM-L6-v2"),
        "dim": match.int(EXAMPLE_DIM),
        "text": match.str(EXAMPLE_TEXT),
        "metadata": match.like(EXAMPLE_METADATA),
        "chunk_count": match.int(1),
        "reused": reused,
        "chunks": chunks,
    }


def document_embedded(*, reused: bool = False) -> dict[str, Any]:
    return envelope(
        events.DOCUMENT_EMBEDDED,
        source="embedstream.embed",
        subject=EXAMPLE_DOC,
        traceparent=True,
        data=_embedded_data(reused=reused),
    )


def document_embedded_v2(*, reused: bool = False) -> dict[str, Any]:
    data = _embedded_data(reused=reused)
    data["version"] = match.regex(EXAMPLE_VERSION_TEXT, regex=VERSION_PATTERN)
    # a reuse names the version it builds on; a full embedding names none
    data["base_version"] = match.regex(EXAMPLE_BASE_TEXT, regex=VERSION_PATTERN) if reused else None
    return envelope(
        events.DOCUMENT_EMBEDDED_V2,
        source="embedstream.embed",
        subject=EXAMPLE_DOC,
        traceparent=True,
        data=data,
    )


def document_removed() -> dict[str, Any]:
    return envelope(
        events.DOCUMENT_REMOVED,
        source="embedstream.embed",
        subject=EXAMPLE_DOC,
        data={
            "job_id": match.str(EXAMPLE_JOB),
            "document_id": match.str(EXAMPLE_DOC),
            "version": match.int(EXAMPLE_VERSION),
        },
    )


def document_removed_v2() -> dict[str, Any]:
    return envelope(
        events.DOCUMENT_REMOVED_V2,
        source="embedstream.embed",
        subject=EXAMPLE_DOC,
        data={
            "job_id": match.str(EXAMPLE_JOB),
            "document_id": match.str(EXAMPLE_DOC),
            "version": match.regex(EXAMPLE_VERSION_TEXT, regex=VERSION_PATTERN),
        },
    )


# -- {prefix}:results -------------------------------------------------------------------


def job_completed() -> dict[str, Any]:
    return envelope(
        events.JOB_COMPLETED,
        source="embedstream",
        subject=EXAMPLE_JOB,
        data={
            "job_id": match.str(EXAMPLE_JOB),
            "status": "completed",
            "documents": match.int(2),
            "completed_at": match.regex(EXAMPLE_TIME, regex=RFC3339),
        },
    )


def job_failed() -> dict[str, Any]:
    return envelope(
        events.JOB_FAILED,
        source="embedstream",
        subject=EXAMPLE_JOB,
        data={
            "job_id": match.str(EXAMPLE_JOB),
            "status": "failed",
            "documents": match.int(2),
            "failures": match.each_like(
                {
                    "document_id": match.str("handbook/broken.md"),
                    "stage": match.str("persist"),
                    "error": match.str("PoisonMessage: text contains a NUL character"),
                }
            ),
            "failed_at": match.regex(EXAMPLE_TIME, regex=RFC3339),
        },
    )


def document_deleted() -> dict[str, Any]:
    return envelope(
        events.DOCUMENT_DELETED,
        source="embedstream",
        subject=EXAMPLE_DOC,
        data={
            "job_id": match.str(EXAMPLE_JOB),
            "document_id": match.str(EXAMPLE_DOC),
            "version": match.int(EXAMPLE_VERSION),
        },
    )


def document_deleted_v2() -> dict[str, Any]:
    return envelope(
        events.DOCUMENT_DELETED_V2,
        source="embedstream",
        subject=EXAMPLE_DOC,
        data={
            "job_id": match.str(EXAMPLE_JOB),
            "document_id": match.str(EXAMPLE_DOC),
            "version": match.regex(EXAMPLE_VERSION_TEXT, regex=VERSION_PATTERN),
        },
    )
