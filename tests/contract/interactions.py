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

REEMBED = Interaction(
    "a document.reembed.v1 command",
    "a store could not apply a reused embedding",
    commands.DOCUMENT_REEMBED,
    bodies.document_reembed,
)
EMBEDDED_V2 = Interaction(
    "a document.embedded.v2 event with chunks and vectors",
    "a new document was upserted",
    events.DOCUMENT_EMBEDDED_V2,
    bodies.document_embedded_v2,
)
EMBEDDED_V2_REUSED = Interaction(
    "a document.embedded.v2 event reusing the stored chunks",
    "a document was upserted again with unchanged text",
    events.DOCUMENT_EMBEDDED_V2,
    lambda: bodies.document_embedded_v2(reused=True),
)
REMOVED_V2 = Interaction(
    "a document.removed.v2 event",
    "a document was deleted",
    events.DOCUMENT_REMOVED_V2,
    bodies.document_removed_v2,
)
DELETED_V2 = Interaction(
    "a document.deleted.v2 event",
    "a job that deleted a document",
    events.DOCUMENT_DELETED_V2,
    bodies.document_deleted_v2,
)

INGEST = (UPSERT, DELETE)
REEMBED_REQUESTS = (REEMBED,)
EMBEDDED_STREAM = (EMBEDDED, EMBEDDED_REUSED, REMOVED, EMBEDDED_V2, EMBEDDED_V2_REUSED, REMOVED_V2)
RESULTS = (COMPLETED, FAILED, DELETED_V2)
"""What the sample subscriber reads: document.deleted in v2 (v1 is produced too, for the
consumers of the released v1 pact)."""
RESULTS_ALL = (COMPLETED, FAILED, DELETED, DELETED_V2)


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
