"""The vector half of search: read-only access to the Chroma collection the index
workers write.

Nothing here imports chromadb until the first search: an API that does not search never
loads it. The client and the collection are found lazily (the first search, or a preload) and
looked up again while the collection does not exist yet. Chroma's client is synchronous:
queries run on a small thread pool of their own, never on the event loop. What the
collection records as its model (``embedding_model``, ``embedding_dim``) is read again
at most every ``guard_ttl_s`` seconds, so a collection rebuilt for another model while
the API runs is noticed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from embedstream.config import ChromaSettings
from embedstream.search.filters import TENANT_KEY, Where, with_tenant

if TYPE_CHECKING:  # numpy: imported by the first search, not by the API's start
    import numpy as np
    import numpy.typing as npt

T = TypeVar("T")


class IndexUnavailable(Exception):
    """Chroma did not answer (the cause is chained; for the log only)."""


@dataclass(frozen=True)
class VectorHit:
    tenant: str
    document_id: str
    idx: int
    distance: float

    @property
    def key(self) -> tuple[str, int]:
        return (self.document_id, self.idx)


def parse_chunk_id(chunk_id: str) -> tuple[str, str, int]:
    """(tenant, document id, chunk index) of ``{tenant}/{document_id}:{index}`` (a tenant
    has no '/', an index is the digits after the last ':')."""
    key, _, index = chunk_id.rpartition(":")
    tenant, _, document_id = key.partition("/")
    return tenant, document_id, int(index)


class VectorIndex:
    def __init__(
        self,
        settings: ChromaSettings,
        *,
        threads: int = 4,
        guard_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.name = settings.chroma_collection
        self.guard_ttl_s = guard_ttl_s
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="search-chroma")
        self._client: Any = None
        self._collection: Any = None
        self._model: tuple[str, int] | None = None
        self._checked_at = -math.inf
        self._lock = asyncio.Lock()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except IndexUnavailable:
            raise
        except Exception as exc:
            raise IndexUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _lookup(self) -> tuple[Any, tuple[str, int] | None]:
        """(collection or None, recorded model) from Chroma (on a pool thread)."""
        # chromadb is imported by the first search, not with the API
        from chromadb.errors import NotFoundError

        from embedstream.adapters.chroma.collection import create_client, recorded_model
        from embedstream.adapters.chroma.folder import open_with_retries

        if self._client is None:
            if self.settings.chroma_url:
                self._client = create_client(self.settings)
            else:  # a folder (the CLI): opened under its open lock, as every process does
                self._client = open_with_retries(
                    self.settings.chroma_path, lambda: create_client(self.settings)
                )
        try:
            collection = self._client.get_collection(self.name, embedding_function=None)
        except NotFoundError:
            return None, None
        return collection, recorded_model(collection)

    async def refresh(self) -> tuple[str, int] | None:
        """The collection and the model it records, looked up again when older than the
        TTL (a collection created meanwhile is found within it); the recorded (model,
        dim) or None."""
        if self.clock() - self._checked_at < self.guard_ttl_s:
            return self._model
        async with self._lock:
            if self.clock() - self._checked_at >= self.guard_ttl_s:
                self._collection, self._model = await self._call(self._lookup)
                self._checked_at = self.clock()
        return self._model

    async def query(
        self,
        vector: npt.NDArray[np.float32],
        *,
        tenant: str | None,
        where: Where | None,
        n: int,
    ) -> list[VectorHit]:
        """The ``n`` nearest chunks, nearest first: the tenant's meeting ``where`` (Chroma
        filters them), or, with ``tenant=None`` (and no ``where``), of every tenant, for the
        caller to filter; none while the collection does not exist.

        Chroma's cost differs: an unfiltered query costs little (~2 ms for 100 of 50,000
        chunks here, ~9 ms for 1,000), a filtered one costs in proportion to the chunks
        the filter keeps (~2 us each: ~100 ms for a tenant holding 45,000)."""
        await self.refresh()
        collection = self._collection
        if collection is None or n <= 0:
            return []
        if tenant is None and where is not None:
            raise ValueError("a filter needs its tenant")
        chroma_where = with_tenant(TENANT_KEY, tenant, where) if tenant is not None else None

        def run() -> Any:
            return collection.query(
                query_embeddings=[vector.tolist()],
                n_results=n,
                where=chroma_where,
                include=["distances"],
            )

        found = await self._call(run)
        hits = []
        for chunk_id, distance in zip(found["ids"][0], found["distances"][0], strict=True):
            owner, document_id, idx = parse_chunk_id(chunk_id)
            if tenant is None or owner == tenant:  # the where says so; checked again
                hits.append(VectorHit(owner, document_id, idx, float(distance)))
        return hits

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
