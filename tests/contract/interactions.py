"""The interactions of every pact: description, provider state, message type, body and
the stream it is on. Consumer tests declare them; provider tests answer them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pact import Pact

from embedstream.contracts.catalog import channel, message_type
from embedstream.contracts.codec import CONTENT_TYPE, STREAM_METADATA
from embedstream.schemas import commands, events
from tests.contract import bodies


@dataclass(frozen=True)
class Interaction:
    description: str
    state: str
    type: str
    body: Callable[[], dict[str, Any]]

    @property
    def address(self) -> str:
        return channel(message_type(self.type).channel).address


UPSERT = Interaction(
    "a document.upsert.v1 command",
    "a request to upsert a document with metadata and a traceparent",
    commands.DOCUMENT_UPSERT,
    bodies.document_upsert,
)
DELETE = Interaction(
    "a document.delete.v1 command",
    "a request to delete a document",
    commands.DOCUMENT_DELETE,
    bodies.document_delete,
)
EMBEDDED = Interaction(
    "a document.embedded.v1 event with chunks and vectors",
    "a new document was upserted",
    events.DOCUMENT_EMBEDDED,
    bodies.document_embedded,
)
EMBEDDED_REUSED = Interaction(
    "a document.embedded.v1 event reusing the stored chunks",
    "a document was upserted again with unchanged text",
    events.DOCUMENT_EMBEDDED,
    lambda: bodies.document_embedded(reused=True),
)
REMOVED = Interaction(
    "a document.removed.v1 event",
    "a document was deleted",
    events.DOCUMENT_REMOVED,
    bodies.document_removed,
)
COMPLETED = Interaction(
    "a job.completed.v1 event",
    "a job whose documents all succeeded",
    events.JOB_COMPLETED,
    bodies.job_completed,
)
FAILED = Interaction(
    "a job.failed.v1 event",
    "a job with a failed document",
    events.JOB_FAILED,
    bodies.job_failed,
)
DELETED = Interaction(
    "a document.deleted.v1 event",
    "a job that deleted a document",
    events.DOCUMENT_DELETED,
    bodies.document_deleted,
)

INGEST = (UPSERT, DELETE)
EMBEDDED_STREAM = (EMBEDDED, EMBEDDED_REUSED, REMOVED)
RESULTS = (COMPLETED, FAILED, DELETED)


def build_pact(consumer: str, provider: str, interactions: Sequence[Interaction]) -> Pact:
    """A V4 pact of asynchronous messages, one per interaction."""
    pact = Pact(consumer, provider).with_specification("V4")
    for item in interactions:
        (
            pact.upon_receiving(item.description, "Async")
            .given(item.state)
            .with_body(item.body(), content_type=CONTENT_TYPE)
            .with_metadata({STREAM_METADATA: item.address})
        )
    return pact
