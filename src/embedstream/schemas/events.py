"""Events: ``document.embedded`` on ``{prefix}:embedded``; job and document lifecycle
events on ``{prefix}:results``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from embedstream.schemas.commands import MetadataValue

DOCUMENT_EMBEDDED = "document.embedded.v1"
DOCUMENT_REMOVED = "document.removed.v1"
JOB_COMPLETED = "job.completed.v1"
JOB_FAILED = "job.failed.v1"
DOCUMENT_DELETED = "document.deleted.v1"


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmbeddedChunk(_Event):
    id: str = Field(description="deterministic: {tenant}/{document_id}:{index}")
    index: int = Field(ge=0)
    text: str
    vector: str = Field(description="base64 of little-endian float32, `dim` values")


class DocumentEmbedded(_Event):
    """A document's chunks and vectors, ready for the index and persist workers."""

    job_id: str
    document_id: str
    version: int = Field(ge=0, description="monotonic per document: the ingest entry id")
    content_hash: str
    model: str
    dim: int = Field(gt=0)
    text: str
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    chunk_count: int = Field(ge=0)
    reused: bool = Field(
        default=False,
        description="the text is unchanged since this document was last embedded: `chunks` "
        "is empty and stores keep their chunks, updating metadata and version only",
    )
    chunks: list[EmbeddedChunk]


class DocumentRemoved(_Event):
    """A delete command forwarded, with its version, to the index and persist workers."""

    job_id: str
    document_id: str
    version: int = Field(ge=0)


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
