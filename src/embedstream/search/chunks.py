"""What search reads from PostgreSQL besides the lexical half: the chunks a text filter
selects (``where_document`` is applied here: Chroma does not hold chunk text unless
``EMBEDSTREAM_CHROMA_STORE_DOCUMENTS`` is on), and the text, metadata and vectors of the
hits, which also confirms that the system of record holds them."""

from __future__ import annotations

import json
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from embedstream.search.filters import Where, WhereDocument
from embedstream.search.lexical import filter_conditions
from embedstream.search.sql import SqlParams

if TYPE_CHECKING:  # numpy: imported by the first search, not by the API's start
    import numpy as np
    import numpy.typing as npt

ChunkKey = tuple[str, int]
"""(document id, chunk index) within one tenant"""

#: a chunk's document, by primary key, for each chunk (a LATERAL join: the plan follows the
#: chunks, whatever the planner knows of the documents table)
DOCUMENT_OF_CHUNK = (
    "SELECT deleted, metadata FROM documents "
    "WHERE tenant = c.tenant AND document_id = c.document_id"
)


@dataclass(frozen=True)
class ChunkDetails:
    text: str
    metadata: dict[str, Any]
    vector: npt.NDArray[np.float32] | None


def _keys(keys: Sequence[ChunkKey]) -> tuple[list[str], list[int]]:
    return [d for d, _ in keys], [i for _, i in keys]


class ChunkReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def matching(
        self,
        tenant: str,
        where: Where | None,
        where_document: WhereDocument | None,
        *,
        limit: int,
        among: Sequence[ChunkKey] | None = None,
    ) -> list[ChunkKey]:
        """The tenant's live chunks meeting both filters (at most ``limit``; only those of
        ``among`` when given, in no particular order)."""
        params = SqlParams(tenant, limit)
        conditions = ["c.tenant = $1", "NOT d.deleted"]
        source = "chunks AS c"
        if among is not None:
            documents, indexes = _keys(among)
            source = (
                f"unnest({params.add(documents)}::text[], {params.add(indexes)}::int[]) "
                "AS k (document_id, idx) JOIN chunks AS c "
                "ON c.document_id = k.document_id AND c.idx = k.idx"
            )
        conditions.extend(filter_conditions(params, where, where_document))
        rows = await self.pool.fetch(
            f"""SELECT c.document_id, c.idx FROM {source}
                CROSS JOIN LATERAL ({DOCUMENT_OF_CHUNK}) AS d
                WHERE {" AND ".join(conditions)} LIMIT $2""",
            *params.values,
        )
        return [(row["document_id"], row["idx"]) for row in rows]

    async def vectors(
        self, tenant: str, keys: Sequence[ChunkKey]
    ) -> dict[ChunkKey, npt.NDArray[np.float32]]:
        """The stored vectors of the tenant's chunks among ``keys``."""
        import numpy as np

        if not keys:
            return {}
        documents, indexes = _keys(keys)
        rows = await self.pool.fetch(
            """SELECT c.document_id, c.idx, c.embedding
               FROM unnest($2::text[], $3::int[]) AS k (document_id, idx)
               JOIN chunks AS c
                 ON c.tenant = $1 AND c.document_id = k.document_id AND c.idx = k.idx""",
            tenant,
            documents,
            indexes,
        )
        return {
            (row["document_id"], row["idx"]): np.frombuffer(row["embedding"], dtype="<f4")
            for row in rows
        }

    async def details(
        self,
        tenant: str,
        keys: Sequence[ChunkKey],
        *,
        vectors_for: Set[ChunkKey] = frozenset(),
    ) -> dict[ChunkKey, ChunkDetails]:
        """Text and user metadata of the tenant's live chunks among ``keys`` (the
        vector too, for those in ``vectors_for``); a key PostgreSQL does not hold (not
        persisted yet, or deleted) is absent."""
        if not keys:
            return {}
        documents, indexes = _keys(keys)
        rows = await self.pool.fetch(
            f"""SELECT c.document_id, c.idx, c.text, d.metadata::text AS metadata,
                      CASE WHEN k.vector THEN c.embedding END AS embedding
               FROM unnest($2::text[], $3::int[], $4::bool[]) AS k (document_id, idx, vector)
               JOIN chunks AS c
                 ON c.tenant = $1 AND c.document_id = k.document_id AND c.idx = k.idx
               CROSS JOIN LATERAL ({DOCUMENT_OF_CHUNK}) AS d
               WHERE NOT d.deleted""",
            tenant,
            documents,
            indexes,
            [key in vectors_for for key in keys],
        )
        import numpy as np

        found: dict[ChunkKey, ChunkDetails] = {}
        for row in rows:
            raw = row["embedding"]
            vector = np.frombuffer(raw, dtype="<f4").astype(np.float32) if raw else None
            found[(row["document_id"], row["idx"])] = ChunkDetails(
                row["text"], json.loads(row["metadata"]), vector
            )
        return found
