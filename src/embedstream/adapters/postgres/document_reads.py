"""Reading a tenant's documents for the API (``GET /v1/documents[/{id}]``): one document,
or a page of them in document id order (keyset pagination: each page is one short index
range scan on the primary key, whatever the page's depth)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_COLUMNS = """document_id, version, deleted, content_hash, model, dim, chunk_count, updated_at,
              metadata::text AS metadata_json"""

GET_DOCUMENT = f"""
SELECT {_COLUMNS}, CASE WHEN $3 THEN text END AS text
FROM documents WHERE tenant = $1 AND document_id = $2
"""

LIST_DOCUMENTS = f"""
SELECT {_COLUMNS}, NULL::text AS text
FROM documents
WHERE tenant = $1 AND ($2::text IS NULL OR document_id > $2) AND ($3 OR NOT deleted)
ORDER BY document_id
LIMIT $4
"""


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    document_id: str
    version: int
    deleted: bool
    content_hash: str | None
    model: str | None
    dim: int | None
    chunk_count: int
    updated_at: datetime
    metadata: dict[str, Any]
    text: str | None = None


def _info(row: asyncpg.Record) -> DocumentInfo:
    fields = dict(row)
    fields["metadata"] = json.loads(fields.pop("metadata_json"))
    return DocumentInfo(**fields)


class DocumentReader:
    """Reads on a pool whose search_path names the embedstream schema."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(
        self, tenant: str, document_id: str, *, with_text: bool = False
    ) -> DocumentInfo | None:
        """The tenant's document (a tombstone included); None when the tenant never had it."""
        row = await self.pool.fetchrow(GET_DOCUMENT, tenant, document_id, with_text)
        return _info(row) if row is not None else None

    async def page(
        self, tenant: str, *, after: str | None, limit: int, include_deleted: bool = False
    ) -> list[DocumentInfo]:
        """Up to ``limit`` documents with ids after ``after`` (None: from the first), in
        id order."""
        rows = await self.pool.fetch(LIST_DOCUMENTS, tenant, after, include_deleted, limit)
        return [_info(row) for row in rows]
