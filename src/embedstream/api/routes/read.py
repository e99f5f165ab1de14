"""``GET /v1/documents/{id}`` and ``GET /v1/documents``: what PostgreSQL, the system of
record, holds for the caller's tenant's documents.

The single-document route shares its path with ``DELETE /v1/documents/{id}``
(``embedstream.api.routes.documents``) and its ``document_id`` convertor, which matches
ids with '/' in them: routing picks the route by method, so both answer on one path.
Another tenant's document is a 404 exactly like an unknown one.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError

from embedstream.adapters.postgres.document_reads import DocumentInfo, DocumentReader
from embedstream.api.errors import AUTH_ERRORS, RETRY_AFTER_S, error_responses, with_description
from embedstream.api.routes.documents import PathDocumentId
from embedstream.api.security.guards import require
from embedstream.api.security.principal import DOCUMENTS_READ, Principal
from embedstream.api.security.route import AuthenticatedRoute
from embedstream.errors.postgres import is_transient
from embedstream.logging import get_logger
from embedstream.schemas.api import DOCUMENT_ID_MAX_CHARS
from embedstream.schemas.search_api import MAX_PAGE_LIMIT, DocumentOut, DocumentPage

log = get_logger(__name__)
T = TypeVar("T")
router = APIRouter(prefix="/v1/documents", tags=["documents"], route_class=AuthenticatedRoute)

Reader = Annotated[Principal, require(DOCUMENTS_READ)]

NOT_FOUND = "document not found (unknown, or another tenant's)"
STORE_AWAY = with_description(503, "PostgreSQL (documents, or the API key store) unavailable")
_CURSOR_VERSION = 1


async def get_reader(request: Request) -> DocumentReader:
    reader: DocumentReader = request.app.state.documents
    return reader


ReaderDep = Annotated[DocumentReader, Depends(get_reader)]


class StoreUnavailable(HTTPException):
    def __init__(self) -> None:
        super().__init__(
            status_code=503,
            detail=f"the document store is unavailable; retry in {RETRY_AFTER_S} seconds",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


async def _read(call: Awaitable[T]) -> T:
    """``call``, with PostgreSQL being away answered as 503 (details to the log)."""
    try:
        return await call
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("document store unavailable", error=f"{type(exc).__name__}: {exc}")
        raise StoreUnavailable() from None


def version_to_stream_id(version: int) -> str:
    """The ingest entry id a stored version came from (``stream_id_to_version``'s
    inverse)."""
    return f"{version >> 20}-{version & 0xFFFFF}"


def document_out(info: DocumentInfo) -> DocumentOut:
    return DocumentOut(
        id=info.document_id,
        state="deleted" if info.deleted else "live",
        deleted=info.deleted,
        version=version_to_stream_id(info.version),
        updated_at=info.updated_at,
        chunk_count=info.chunk_count,
        metadata=info.metadata,
        content_hash=info.content_hash,
        model=info.model,
        text=info.text,
    )


def encode_cursor(after: str) -> str:
    """An opaque cursor: the position after which the next page starts."""
    raw = json.dumps({"v": _CURSOR_VERSION, "after": after}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The position in a cursor of ours; ``ValueError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor") from None
    after = data.get("after") if isinstance(data, dict) else None
    if data.get("v") != _CURSOR_VERSION or not isinstance(after, str):
        raise ValueError("not a cursor")
    if not 0 < len(after) <= DOCUMENT_ID_MAX_CHARS or "\x00" in after:
        raise ValueError("not a cursor")
    return after


@router.get(
    "",
    response_model=DocumentPage,
    responses={**error_responses(*AUTH_ERRORS, 422), **STORE_AWAY},
    summary="List documents",
)
async def list_documents(
    reader: ReaderDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT, description="documents per page")] = 100,
    cursor: Annotated[
        str | None,
        Query(
            max_length=2_048,
            description="`next_cursor` of the previous page; absent for the first page",
        ),
    ] = None,
    include_deleted: Annotated[
        bool, Query(description="also list tombstones (deleted documents)")
    ] = False,
) -> DocumentPage:
    """The caller's tenant's documents in id order, a page at a time (keyset pagination:
    a page is as cheap at the end as at the start, and documents written meanwhile are
    seen if their id is after the cursor). Needs the scope `documents:read`."""
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor)
        except ValueError:
            raise RequestValidationError(
                [
                    {
                        "type": "invalid_cursor",
                        "loc": ("query", "cursor"),
                        "msg": "cursor is not one this API issued: pass next_cursor as it "
                        "was returned",
                        "input": None,
                    }
                ]
            ) from None
    found = await _read(
        reader.page(principal.tenant, after=after, limit=limit + 1, include_deleted=include_deleted)
    )
    page = found[:limit]
    more = len(found) > limit
    return DocumentPage(
        documents=[document_out(info) for info in page],
        next_cursor=encode_cursor(page[-1].document_id) if more else None,
    )


@router.get(
    "/{document_id:document_id}",
    response_model=DocumentOut,
    responses={**error_responses(*AUTH_ERRORS, 404, 422), **STORE_AWAY},
    summary="Get a document",
)
async def get_document(
    document_id: PathDocumentId,
    reader: ReaderDep,
    principal: Reader,
    include_text: Annotated[bool, Query(description="also return the full text")] = False,
) -> DocumentOut:
    """What is stored for one of the caller's tenant's documents: its state (`live`, or
    `deleted`: a tombstone), version, metadata, chunk count and last update. Writes
    accepted but not yet persisted are not visible here (see the job's status). Needs
    the scope `documents:read`; an id the tenant does not own is a 404."""
    info = await _read(reader.get(principal.tenant, document_id, with_text=include_text))
    if info is None:
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    return document_out(info)
