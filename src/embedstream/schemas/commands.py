"""Commands on ``{prefix}:ingest``, written by the ingress and read by the embed worker.

Besides their shape, commands hold only what both stores can store
(``embedstream.schemas.storable``): a command that does not is refused when it is
decoded, before anything is embedded or stored.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from embedstream.schemas.storable import check_metadata, check_texts

DOCUMENT_UPSERT = "document.upsert.v1"
DOCUMENT_DELETE = "document.delete.v1"

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
