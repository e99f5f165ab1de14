"""Events: ``document.embedded`` / ``document.removed`` on ``{prefix}:embedded``; job and
document lifecycle events on ``{prefix}:results``.

The events that carry a document version exist in two type versions: ``*.v1`` with the
version as a JSON integer (it exceeds 2**53: readers that parse numbers as doubles, such
as JavaScript's ``JSON.parse``, round it) and ``*.v2`` with the version as exact version
text (``embedstream.schemas.versions``). Both are produced by default, the same event in
two entries; ``EMBEDSTREAM_EMBEDDED_EVENT_VERSIONS`` / ``EMBEDSTREAM_RESULTS_EVENT_VERSIONS``
choose. ``document.embedded.v2`` also names, for a reused embedding, the version it
builds on (``base_version``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator

from embedstream.schemas.commands import MetadataValue
from embedstream.schemas.storable import check_metadata, check_texts
from embedstream.schemas.vectors import vector_array, vector_bytes
from embedstream.schemas.versions import VersionText, parse_version, version_text

if TYPE_CHECKING:
    from embedstream.schemas.vectors import Vector

DOCUMENT_EMBEDDED = "document.embedded.v1"
DOCUMENT_REMOVED = "document.removed.v1"
JOB_COMPLETED = "job.completed.v1"
#: PostgreSQL's bigint and integer: what the persist stage's columns hold.
BIGINT_MAX, INTEGER_MAX = 2**63 - 1, 2**31 - 1
JOB_FAILED = "job.failed.v1"
DOCUMENT_DELETED = "document.deleted.v1"
DOCUMENT_EMBEDDED_V2 = "document.embedded.v2"
DOCUMENT_REMOVED_V2 = "document.removed.v2"
DOCUMENT_DELETED_V2 = "document.deleted.v2"


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# the fields both type versions of document.embedded declare alike
Dim = Annotated[int, Field(gt=0, le=INTEGER_MAX)]
ChunkCount = Annotated[int, Field(ge=0, le=INTEGER_MAX)]
Reused = Annotated[
    bool,
    Field(
        description="the text is unchanged since this document was last embedded: `chunks` "
        "is empty and stores keep their chunks, updating metadata and version only",
    ),
]


class EmbeddedChunk(_Event):
    id: str = Field(description="deterministic: {tenant}/{document_id}:{index}")
    index: int = Field(ge=0, le=INTEGER_MAX)
    text: str
    vector: str = Field(description="base64 of little-endian float32, `dim` values")

    @property
    def vector_bytes(self) -> bytes:
        """The vector's little-endian float32 bytes (what the event checked against its
        ``dim`` when it was validated)."""
        return vector_bytes(self.vector)

    @property
    def vector_array(self) -> Vector:
        return vector_array(self.vector_bytes)


def _check_embedded(event: DocumentEmbedded | DocumentEmbeddedV2) -> None:
    """The rules of a ``document.embedded`` event (both type versions): everything either
    store would refuse is refused (``embedstream.schemas.storable``), so that neither
    stores it without the other; a full embedding carries chunks ``0..chunk_count-1``;
    every vector is base64 of ``dim`` float32 values."""
    check_texts(
        job_id=event.job_id,
        document_id=event.document_id,
        content_hash=event.content_hash,
        model=event.model,
        text=event.text,
    )
    check_metadata(event.metadata)
    if not event.reused:
        indexes = sorted(chunk.index for chunk in event.chunks)
        if indexes != list(range(event.chunk_count)):
            raise ValueError(
                f"chunk indexes {indexes[:10]} do not match chunk_count={event.chunk_count}"
            )
    for chunk in event.chunks:
        check_texts(chunk_id=chunk.id, chunk_text=chunk.text)
        try:
            vector_bytes(chunk.vector, event.dim)
        except ValueError as exc:
            raise ValueError(f"chunk {chunk.index}: {exc}") from None


class DocumentEmbedded(_Event):
    """A document's chunks and vectors, ready for the index and persist workers."""

    job_id: str
    document_id: str
    version: int = Field(
        ge=0, le=BIGINT_MAX, description="monotonic per document: the ingest entry id"
    )
    content_hash: str
    model: str
    dim: Dim
    text: str
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    chunk_count: ChunkCount
    reused: Reused = False
    chunks: list[EmbeddedChunk]

    @model_validator(mode="after")
    def _valid(self) -> Self:
        """Refused alike by every stage that reads it (``_check_embedded``)."""
        _check_embedded(self)
        return self


class DocumentRemoved(_Event):
    """A delete command forwarded, with its version, to the index and persist workers."""

    job_id: str
    document_id: str
    version: int = Field(ge=0, le=BIGINT_MAX)

    @model_validator(mode="after")
    def _storable(self) -> Self:
        check_texts(job_id=self.job_id, document_id=self.document_id)
        return self


class DocumentFailure(_Event):
    document_id: str
    stage: str
    error: str


class JobCompleted(_Event):
    job_id: str
    status: Literal["completed"] = "completed"
    documents: int = Field(ge=0)
    completed_at: datetime


class JobFailed(_Event):
    job_id: str
    status: Literal["failed"] = "failed"
    documents: int = Field(ge=0)
    failures: list[DocumentFailure]
    failed_at: datetime


class DocumentDeleted(_Event):
    job_id: str
    document_id: str
    version: int = Field(ge=0)


# -- v2: versions as exact text ----------------------------------------------------


def _check_versions(*versions: str | None) -> None:
    """Versions beyond what the stores hold (PostgreSQL's bigint) are refused, as v1's
    ``le=BIGINT_MAX`` refuses them."""
    for version in versions:
        if version is not None and parse_version(version) > BIGINT_MAX:
            raise ValueError(f"version {version} is beyond the versions stores hold")


class DocumentEmbeddedV2(_Event):
    """``document.embedded.v1`` with exact version text, and the version a reuse builds on."""

    job_id: str
    document_id: str
    version: VersionText
    content_hash: str
    model: str
    dim: Dim
    text: str
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    chunk_count: ChunkCount
    reused: Reused = False
    base_version: VersionText | None = Field(
        default=None,
        description="with reused=true, the version whose chunks are reused (the document's "
        "previous command); a store that does not hold that content asks the embed stage "
        "to embed the document again at `version` (document.reembed.v1)",
    )
    chunks: list[EmbeddedChunk]

    @model_validator(mode="after")
    def _valid(self) -> Self:
        """What ``DocumentEmbedded`` refuses, refused here too."""
        _check_versions(self.version, self.base_version)
        _check_embedded(self)
        return self

    @property
    def version_number(self) -> int:
        return parse_version(self.version)

    @property
    def base_version_number(self) -> int | None:
        return None if self.base_version is None else parse_version(self.base_version)

    @classmethod
    def from_v1(cls, event: DocumentEmbedded) -> DocumentEmbeddedV2:
        """The same event as v2 (built from a valid v1 event, which meets every rule of v2:
        not validated again)."""
        return cls.model_construct(**{**dict(event), "version": version_text(event.version)})

    def to_v1(self) -> DocumentEmbedded:
        """The same event as v1 (``base_version`` has no v1 field; not validated again)."""
        fields = {name: value for name, value in self if name != "base_version"}
        return DocumentEmbedded.model_construct(**{**fields, "version": self.version_number})


class DocumentRemovedV2(_Event):
    """``document.removed.v1`` with exact version text."""

    job_id: str
    document_id: str
    version: VersionText

    @model_validator(mode="after")
    def _storable(self) -> Self:
        _check_versions(self.version)
        check_texts(job_id=self.job_id, document_id=self.document_id)
        return self

    @property
    def version_number(self) -> int:
        return parse_version(self.version)

    @classmethod
    def from_v1(cls, event: DocumentRemoved) -> DocumentRemovedV2:
        return cls.model_construct(
            job_id=event.job_id, document_id=event.document_id, version=version_text(event.version)
        )

    def to_v1(self) -> DocumentRemoved:
        return DocumentRemoved.model_construct(
            job_id=self.job_id, document_id=self.document_id, version=self.version_number
        )


class DocumentDeletedV2(_Event):
    """``document.deleted.v1`` with exact version text."""

    job_id: str
    document_id: str
    version: VersionText


EMBEDDED_EVENT_TYPES = (DOCUMENT_EMBEDDED, DOCUMENT_EMBEDDED_V2)
REMOVED_EVENT_TYPES = (DOCUMENT_REMOVED, DOCUMENT_REMOVED_V2)

EmbeddedStreamEvent: TypeAlias = (
    DocumentEmbedded | DocumentEmbeddedV2 | DocumentRemoved | DocumentRemovedV2
)
DocumentEvent: TypeAlias = DocumentEmbeddedV2 | DocumentRemovedV2
"""An ``{prefix}:embedded`` event in its v2 form, whichever type version it came in."""

EMBEDDED_STREAM_EVENTS: dict[str, type[EmbeddedStreamEvent]] = {
    DOCUMENT_EMBEDDED: DocumentEmbedded,
    DOCUMENT_EMBEDDED_V2: DocumentEmbeddedV2,
    DOCUMENT_REMOVED: DocumentRemoved,
    DOCUMENT_REMOVED_V2: DocumentRemovedV2,
}
"""The events on ``{prefix}:embedded`` by type: what the index and persist stages read."""


def as_v2(event: EmbeddedStreamEvent) -> DocumentEvent:
    """``event`` in its v2 form (the same event; v1 carries the version as a number)."""
    if isinstance(event, DocumentEmbedded):
        return DocumentEmbeddedV2.from_v1(event)
    if isinstance(event, DocumentRemoved):
        return DocumentRemovedV2.from_v1(event)
    return event
