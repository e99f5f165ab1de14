"""Events: ``document.embedded`` on ``{prefix}:embedded``; job and document lifecycle
events on ``{prefix}:results``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from embedstream.schemas.commands import MetadataValue
from embedstream.schemas.storable import check_metadata, check_texts

DOCUMENT_EMBEDDED = "document.embedded.v1"
DOCUMENT_REMOVED = "document.removed.v1"
JOB_COMPLETED = "job.completed.v1"
#: PostgreSQL's bigint and integer: what the persist stage's columns hold.
BIGINT_MAX, INTEGER_MAX = 2**63 - 1, 2**31 - 1
JOB_FAILED = "job.failed.v1"
DOCUMENT_DELETED = "document.deleted.v1"


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmbeddedChunk(_Event):
    id: str = Field(description="deterministic: {tenant}/{document_id}:{index}")
    index: int = Field(ge=0, le=INTEGER_MAX)
    text: str
    vector: str = Field(description="base64 of little-endian float32, `dim` values")


class DocumentEmbedded(_Event):
    """A document's chunks and vectors, ready for the index and persist workers."""

    job_id: str
    document_id: str
    version: int = Field(
        ge=0, le=BIGINT_MAX, description="monotonic per document: the ingest entry id"
    )
    content_hash: str
    model: str
    dim: int = Field(gt=0, le=INTEGER_MAX)
    text: str
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    chunk_count: int = Field(ge=0, le=INTEGER_MAX)
    reused: bool = Field(
        default=False,
        description="the text is unchanged since this document was last embedded: `chunks` "
        "is empty and stores keep their chunks, updating metadata and version only",
    )
    chunks: list[EmbeddedChunk]

    @model_validator(mode="after")
    def _storable(self) -> Self:
        """Refused alike by the index and the persist stage when either store would refuse
        it (``embedstream.schemas.storable``), so neither stores it without the other."""
        check_texts(
            job_id=self.job_id,
            document_id=self.document_id,
            content_hash=self.content_hash,
            model=self.model,
            text=self.text,
        )
        check_metadata(self.metadata)
        for chunk in self.chunks:
            check_texts(chunk_id=chunk.id, chunk_text=chunk.text)
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
