"""Commands on ``{prefix}:ingest``, written by the ingress and read by the embed worker.

Besides their shape, commands hold only what both stores can store
(``embedstream.schemas.storable``): a command that does not is refused when it is
decoded, before anything is embedded or stored.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from embedstream.schemas.storable import check_metadata, check_texts
from embedstream.schemas.versions import VersionText, parse_version

DOCUMENT_UPSERT = "document.upsert.v1"
DOCUMENT_DELETE = "document.delete.v1"
DOCUMENT_REEMBED = "document.reembed.v1"

MetadataValue = str | int | float | bool
DocumentId = str


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(min_length=1)
    document_id: DocumentId = Field(min_length=1, max_length=512)

    @model_validator(mode="after")
    def _ids_storable(self) -> Self:
        check_texts(job_id=self.job_id, document_id=self.document_id)
        return self


class DocumentUpsert(_Command):
    """Create or replace a document. Its version is the ingest stream entry id."""

    kind: Literal["upsert"] = "upsert"
    text: str = Field(min_length=1)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _content_storable(self) -> Self:
        check_texts(text=self.text)
        check_metadata(self.metadata)
        return self


class DocumentDelete(_Command):
    """Remove a document and all of its chunks."""

    kind: Literal["delete"] = "delete"


class DocumentReembed(_Command):
    """Embed a document again at the given version, never reusing stored chunks. Sent by
    the index or persist stage when it cannot apply a reused embedding (it does not hold
    the content the reuse builds on); the embed stage answers with a full
    ``document.embedded`` at the same version, which both stores apply or skip as equal."""

    kind: Literal["reembed"] = "reembed"
    version: VersionText
    text: str = Field(min_length=1)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    requested_by: Literal["index", "persist"] = Field(
        description="the stage that could not apply the reuse (it records the document's "
        "outcome for the job when the re-embedded event reaches it)"
    )

    @model_validator(mode="after")
    def _content_storable(self) -> Self:
        if parse_version(self.version) > 2**63 - 1:  # PostgreSQL's bigint
            raise ValueError(f"version {self.version} is beyond the versions stores hold")
        check_texts(text=self.text)
        check_metadata(self.metadata)
        return self
