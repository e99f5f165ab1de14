"""``SearchService``: one tenant's chunks nearest to a query, filtered, in ``vector`` or
``hybrid`` mode. The API (``POST /v1/search``) and ``embedstream search`` both use it.

- The query is embedded with the workers' embedder (``load_embedder`` with the same
  settings: model, backend (``EMBEDSTREAM_BACKEND``), so the same vector the embed stage
  makes for that text), loaded on the first search (or by ``start``), off the event loop,
  once however many searches wait for it; encoding runs on the embedder's own thread.
- Model guard: the collection records the model its vectors came from; a search whose
  embedder is another model (or dimension) is refused (``SearchUnavailable``,
  ``model_mismatch``), never answered with meaningless neighbours.
- vector: the tenant's nearest chunks meeting the filters (``_vector_half``: the
  collection's nearest chunks filtered by PostgreSQL when the filters keep many, Chroma's
  filtered query when they keep few; ``where_document`` always by PostgreSQL, which
  holds the text).
- hybrid: the vector list and the lexical list (``embedstream.search.lexical``), each
  ``max(limit, HYBRID_DEPTH)`` deep and under the same filters, fused by reciprocal rank
  fusion (k = 60).
- Every hit is confirmed in PostgreSQL, the system of record, which gives its text and
  metadata: a chunk is found once both stores hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import asyncpg

from embedstream.config import Settings
from embedstream.errors.postgres import is_transient
from embedstream.logging import get_logger
from embedstream.search.chunks import ChunkDetails, ChunkKey, ChunkReader
from embedstream.search.filters import Where, WhereDocument
from embedstream.search.fusion import reciprocal_rank_fusion
from embedstream.search.lexical import LexicalIndex
from embedstream.search.query_model import RETRY_AFTER_S, QueryModel, SearchUnavailable
from embedstream.search.vector import IndexUnavailable, VectorHit, VectorIndex

if TYPE_CHECKING:  # numpy: imported by the first search, not by the API's start
    import numpy as np
    import numpy.typing as npt

log = get_logger("embedstream.search")
T = TypeVar("T")

Mode = Literal["vector", "hybrid"]
Include = Literal["text", "metadata", "distances"]
INCLUDE_ALL: Final[frozenset[Include]] = frozenset({"text", "metadata", "distances"})

HYBRID_DEPTH: Final = 50
FIRST_PASS: Final = 300
FIRST_PASS_MAX: Final = 1_000
SECOND_PASS_MAX: Final = 4_000
PREFILTER_MAX: Final = 2_000
POSTFILTER_DEPTH: Final = 1_000


@dataclass(frozen=True)
class SearchQuery:
    text: str
    limit: int = 10
    mode: Mode = "vector"
    where: Where | None = None
    where_document: WhereDocument | None = None
    include: frozenset[Include] = INCLUDE_ALL


@dataclass(frozen=True)
class SearchHit:
    document_id: str
    chunk_index: int
    score: float
    """vector: cosine similarity (1 - distance); hybrid: the fused RRF score"""
    distance: float | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None
    vector_rank: int | None = None
    lexical_rank: int | None = None


Plan = Literal["nearest", "deeper", "filtered", "stored_vectors", "filtered_then_text"]


@dataclass
class SearchResults:
    hits: list[SearchHit]
    plan: Plan
    """how the vector half found its chunks (``_vector_half``), for the log"""


@dataclass
class _Candidates:
    vector: list[VectorHit] = field(default_factory=list)
    lexical: list[ChunkKey] = field(default_factory=list)
    plan: Plan = "nearest"


A = TypeVar("A")
B = TypeVar("B")


async def _both(first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]) -> tuple[A, B]:
    """Both results; when one fails the other is cancelled and the first error raised as
    it is (not as an exception group)."""
    try:
        async with asyncio.TaskGroup() as group:
            one = group.create_task(first)
            two = group.create_task(second)
    except* Exception as failed:
        raise failed.exceptions[0] from None
    return one.result(), two.result()


def cosine_distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    import numpy as np

    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 - float(np.dot(a, b)) / norms if norms else 1.0


class SearchService:
    """Built by the API's lifespan (or the CLI) with a PostgreSQL pool on the embedstream
    schema; creates nothing until the first search (or ``start``).

    ``live_index``: the API reads an index other processes write, which an embedded
    Chroma folder does not allow (a process sees the vectors that were there when it
    opened it): the API then refuses to search, with the reason in its log. The CLI
    opens the index for one search and may read a folder."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, *, live_index: bool = True) -> None:
        self.settings = settings
        self.max_in_flight = settings.search.search_max_in_flight
        self.index = VectorIndex(settings.chroma)
        self.lexical = LexicalIndex(pool)
        self.chunks = ChunkReader(pool)
        self.model = QueryModel(settings, live_index=live_index)
        self._in_flight = 0

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self.model.loaded

    async def start(self) -> None:
        """Load the model and open the index now (``EMBEDSTREAM_SEARCH_PRELOAD``)."""
        await self.model.embedder()
        with contextlib.suppress(SearchUnavailable):
            await self.check_model()

    def close(self) -> None:
        self.index.close()
        self.model.close()

    async def embed(self, text: str) -> npt.NDArray[np.float32]:
        """The query's vector, as the embed stage would make it for this text."""
        return await self.model.embed(text)

    async def check_model(self) -> None:
        """``SearchUnavailable`` (model_mismatch) unless the collection is empty of any
        model or records the query embedder's model and dimension."""
        embedder = await self.model.embedder()
        recorded = await self._index(self.index.refresh())
        if recorded is not None and recorded != (embedder.name, embedder.dim):
            log.error(
                "search refused: the collection holds vectors of another model; point "
                "EMBEDSTREAM_MODEL (and the backend) of the API at the workers' model",
                collection=self.index.name,
                collection_model=recorded[0],
                collection_dim=recorded[1],
                query_model=embedder.name,
                query_dim=embedder.dim,
            )
            raise SearchUnavailable(
                "model_mismatch",
                "search is unavailable: the index holds vectors of another embedding "
                "model than this server's",
            )

    # -- searching -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._in_flight >= self.max_in_flight:
            raise SearchUnavailable(
                "busy",
                "search is busy: too many searches at once on this server; retry in 1 second",
                retry_after_s=1,
            )
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    async def search(self, tenant: str, query: SearchQuery) -> SearchResults:
        async with self._slot():
            return await self._search(tenant, query)

    async def _search(self, tenant: str, query: SearchQuery) -> SearchResults:
        hybrid = query.mode == "hybrid"
        depth = max(query.limit, HYBRID_DEPTH) if hybrid else query.limit

        async def vector_list() -> tuple[npt.NDArray[np.float32], Plan, list[VectorHit]]:
            vector = await self.embed(query.text)
            await self.check_model()
            plan, hits = await self._vector_half(tenant, vector, query, depth)
            return vector, plan, hits

        async def lexical_list() -> list[ChunkKey]:
            weights = await self._store(self.lexical.weights(query.text))
            hits = await self._store(
                self.lexical.search(
                    tenant,
                    weights,
                    limit=depth,
                    where=query.where,
                    where_document=query.where_document,
                )
            )
            return [(hit.document_id, hit.idx) for hit in hits]

        found = _Candidates()
        if hybrid:  # the halves run at once: one waits on the model and Chroma, one on SQL
            (vector, found.plan, found.vector), found.lexical = await _both(
                vector_list(), lexical_list()
            )
        else:
            vector, found.plan, found.vector = await vector_list()
        return SearchResults(await self._hits(tenant, vector, query, found), found.plan)

    async def _vector_half(
        self, tenant: str, vector: npt.NDArray[np.float32], query: SearchQuery, depth: int
    ) -> tuple[Plan, list[VectorHit]]:
        """The tenant's ``depth`` nearest chunks meeting both filters, nearest first.

        Chroma's unfiltered query is cheap, and its filtered one costs in proportion to
        the chunks the filter keeps. So: the nearest chunks of the whole collection,
        filtered in PostgreSQL (``nearest``); when they hold too few matches, as many more
        as the share of matches found says are needed, up to ``SECOND_PASS_MAX``
        (``deeper``). Only filters that keep too few chunks for that are selective enough
        for Chroma's filtered query (tenant AND ``where``: ``filtered``). A
        ``where_document`` is PostgreSQL's (it holds the text): its chunks, when few, are
        ranked by their stored vectors (``stored_vectors``); else the nearest
        ``POSTFILTER_DEPTH`` chunks meeting ``where`` are checked for the text."""
        size = min(max(FIRST_PASS, 10 * depth), FIRST_PASS_MAX)
        plan: Plan = "nearest"
        while True:
            nearest = await self._index(self.index.query(vector, tenant=None, where=None, n=size))
            kept = await self._keep(tenant, [h for h in nearest if h.tenant == tenant], query)
            if len(kept) >= depth or len(nearest) < size:
                return plan, kept[:depth]
            if plan == "deeper" or not kept:
                break
            plan, size = "deeper", math.ceil(1.5 * depth * size / len(kept))
            if size > SECOND_PASS_MAX:
                break
        if query.where_document is None:
            return "filtered", await self._index(
                self.index.query(vector, tenant=tenant, where=query.where, n=depth)
            )
        selected = await self._store(
            self.chunks.matching(tenant, query.where, query.where_document, limit=PREFILTER_MAX + 1)
        )
        if len(selected) <= PREFILTER_MAX:
            stored = await self._store(self.chunks.vectors(tenant, selected))
            ranked = [
                VectorHit(tenant, key[0], key[1], cosine_distance(vector, stored_vector))
                for key, stored_vector in stored.items()
            ]
            return "stored_vectors", sorted(ranked, key=lambda h: (h.distance, h.key))[:depth]
        candidates = await self._index(
            self.index.query(vector, tenant=tenant, where=query.where, n=POSTFILTER_DEPTH)
        )
        return "filtered_then_text", (await self._keep(tenant, candidates, query))[:depth]

    async def _keep(
        self, tenant: str, hits: list[VectorHit], query: SearchQuery
    ) -> list[VectorHit]:
        """``hits`` (the tenant's) that meet the query's filters in PostgreSQL, in order."""
        if not hits or (query.where is None and query.where_document is None):
            return hits
        keep = set(
            await self._store(
                self.chunks.matching(
                    tenant,
                    query.where,
                    query.where_document,
                    limit=len(hits),
                    among=[hit.key for hit in hits],
                )
            )
        )
        return [hit for hit in hits if hit.key in keep]

    async def _hits(
        self,
        tenant: str,
        vector: npt.NDArray[np.float32],
        query: SearchQuery,
        found: _Candidates,
    ) -> list[SearchHit]:
        distances = {(hit.document_id, hit.idx): hit.distance for hit in found.vector}
        vector_keys = list(distances)
        if query.mode == "hybrid":
            fused = reciprocal_rank_fusion([found.lexical, vector_keys])[: query.limit]
            ranked = [(item.key, item.score, item.ranks[1], item.ranks[0]) for item in fused]
        else:
            ranked = [(key, 1.0 - distances[key], None, None) for key in vector_keys[: query.limit]]
        keys = [key for key, *_ in ranked]
        need_vectors = (
            {key for key in keys if key not in distances} if "distances" in query.include else set()
        )
        details: dict[ChunkKey, ChunkDetails] = await self._store(
            self.chunks.details(tenant, keys, vectors_for=need_vectors)
        )
        hits = []
        for key, score, vector_rank, lexical_rank in ranked:
            detail = details.get(key)
            if detail is None:  # not (or no longer) in the system of record
                continue
            distance = distances.get(key)
            if distance is None and detail.vector is not None:
                distance = cosine_distance(vector, detail.vector)
            hits.append(
                SearchHit(
                    document_id=key[0],
                    chunk_index=key[1],
                    score=score,
                    distance=distance if "distances" in query.include else None,
                    text=detail.text if "text" in query.include else None,
                    metadata=detail.metadata if "metadata" in query.include else None,
                    vector_rank=vector_rank,
                    lexical_rank=lexical_rank,
                )
            )
        return hits

    # -- store failures ------------------------------------------------------------------

    async def _index(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except IndexUnavailable as exc:
            log.warning("search: the vector index (Chroma) did not answer", error=str(exc))
            raise SearchUnavailable(
                "index_unavailable",
                f"search is unavailable: the vector index did not answer; retry in "
                f"{RETRY_AFTER_S} seconds",
                retry_after_s=RETRY_AFTER_S,
            ) from None

    async def _store(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning(
                "search: the document store (PostgreSQL) did not answer",
                error=f"{type(exc).__name__}: {exc}",
            )
            raise SearchUnavailable(
                "store_unavailable",
                f"search is unavailable: the document store did not answer; retry in "
                f"{RETRY_AFTER_S} seconds",
                retry_after_s=RETRY_AFTER_S,
            ) from None
