"""``POST /v1/search``: vector or hybrid search over the caller's tenant's chunks.

The credential and scope are checked before the body is read (``AuthenticatedRoute``),
the rate limit counts the request like any other; ingest backpressure does not apply
(a backlog of writes does not make reads wrong), but search has its own bound: more than
``EMBEDSTREAM_SEARCH_MAX_IN_FLIGHT`` searches at once in a process get 503.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from embedstream.api.deps import require_json
from embedstream.api.errors import AUTH_ERRORS, error_responses, with_description
from embedstream.api.security.guards import require
from embedstream.api.security.principal import SEARCH_READ, Principal
from embedstream.api.security.route import AuthenticatedRoute
from embedstream.logging import get_logger
from embedstream.schemas.search_api import SearchRequest, SearchResponse, SearchResult
from embedstream.search.filters import FilterError, parse_where, parse_where_document
from embedstream.search.query_model import SearchUnavailable
from embedstream.search.service import SearchQuery, SearchService

log = get_logger(__name__)
router = APIRouter(prefix="/v1", tags=["search"], route_class=AuthenticatedRoute)


SEARCH_REFUSED = with_description(
    503,
    "Search cannot answer: not available on this server, the index holds another "
    "model's vectors, a store (Chroma, PostgreSQL, the API key store) is unavailable, or "
    "too many searches run at once (see Retry-After when it is worth retrying)",
)


async def get_search(request: Request) -> SearchService:
    service: SearchService = request.app.state.search
    return service


class SearchRefused(HTTPException):
    """503 with the service's stable message (the details are in the log)."""

    def __init__(self, exc: SearchUnavailable) -> None:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
        super().__init__(status_code=503, detail=exc.public, headers=headers)


def _filter_error(exc: FilterError) -> RequestValidationError:
    return RequestValidationError(
        [{"type": exc.kind, "loc": ("body", *exc.loc), "msg": exc.message, "input": None}]
    )


def to_query(body: SearchRequest) -> SearchQuery:
    """The request as a ``SearchQuery``; ``RequestValidationError`` (422) naming the path
    of a refused filter."""
    try:
        where = parse_where(body.where)
        where_document = parse_where_document(body.where_document)
    except FilterError as exc:
        raise _filter_error(exc) from None
    return SearchQuery(
        text=body.query,
        limit=body.limit,
        mode=body.mode,
        where=where,
        where_document=where_document,
        include=frozenset(body.include),
    )


@router.post(
    "/search",
    response_model=SearchResponse,
    response_model_exclude_none=True,
    responses={**error_responses(400, *AUTH_ERRORS, 413, 415, 422), **SEARCH_REFUSED},
    dependencies=[require(SEARCH_READ), Depends(require_json)],
    summary="Search chunks",
)
async def search(
    body: SearchRequest,
    service: Annotated[SearchService, Depends(get_search)],
    principal: Annotated[Principal, require(SEARCH_READ)],
) -> Any:
    """The caller's tenant's chunks nearest to `query`, best first, with `where`
    (metadata) and `where_document` (chunk text) filters. `vector` ranks by cosine
    distance; `hybrid` fuses that list with PostgreSQL full-text search over the query's
    distinctive terms (reciprocal rank fusion, k=60), for exact identifiers that vectors
    blur. Needs the scope `search:read`. 503 when search cannot answer: the index holds
    another model's vectors, a store does not answer, or too many searches run at once
    (with Retry-After)."""
    query = to_query(body)
    try:
        found = await service.search(principal.tenant, query)
    except SearchUnavailable as exc:
        raise SearchRefused(exc) from None
    hits = found.hits
    log.info("search", mode=query.mode, plan=found.plan, limit=query.limit, results=len(hits))
    return SearchResponse(
        mode=query.mode,
        results=[
            SearchResult(
                document_id=hit.document_id,
                chunk_index=hit.chunk_index,
                score=hit.score,
                distance=hit.distance,
                text=hit.text,
                metadata=hit.metadata,
                vector_rank=hit.vector_rank,
                lexical_rank=hit.lexical_rank,
            )
            for hit in hits
        ],
    )
