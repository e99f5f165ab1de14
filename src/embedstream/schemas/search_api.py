"""Request and response models of the read side of the API: ``POST /v1/search`` and
``GET /v1/documents[/{id}]``.

The filter grammar itself is checked by ``embedstream.search.filters`` (so its errors
name the exact path); here ``where`` and ``where_document`` are JSON objects, described
for the OpenAPI document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from embedstream.schemas.commands import MetadataValue
from embedstream.schemas.storable import text_problem

Include = Literal["text", "metadata", "distances"]
INCLUDE_ALL: Final[tuple[Include, ...]] = ("text", "metadata", "distances")

MAX_QUERY_CHARS: Final = 4_096
MAX_SEARCH_LIMIT: Final = 100
MAX_PAGE_LIMIT: Final = 1_000

WHERE_DESCRIPTION = """\
Metadata filter (Chroma's syntax). `{"key": value}` means `$eq`; operators: `$eq`, `$ne`
(string, number, boolean), `$gt`, `$gte`, `$lt`, `$lte` (numbers), `$in`, `$nin` (a list
of up to 100 values), `$and`, `$or` (lists of filters). Several keys, or
several operators on one key, are ANDed. Numbers compare as numbers; `$ne`/`$nin` also
match chunks without the key. embedstream's own keys (`tenant`, `document_id`,
`chunk_index`, `version`, `job_id`, `content_hash`) cannot be named: the caller's tenant
is always applied. At most 6 levels and 64 conditions; a refused filter is a 422 naming
the path of the problem (`body.where.$and.1.year.$gt`)."""

WHERE_DOCUMENT_DESCRIPTION = """\
Chunk text filter: `{"$contains": "text"}`, `{"$not_contains": "text"}` (case-sensitive
substring, up to 1,000 characters), or `$and`/`$or` lists of those."""


def _check_query(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError(
            "blank_query", "query must contain at least one non-whitespace character"
        )
    if (problem := text_problem(value)) is not None:
        raise PydanticCustomError("query_text", "query {problem}", {"problem": problem})
    return value


class SearchRequest(BaseModel):
    """A search of the caller's tenant's chunks."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    query: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            description="What to look for, in words (embedded with the workers' model; "
            "beyond the model's 256 tokens it is truncated).",
            examples=["how do consumer groups share a stream"],
        ),
        AfterValidator(_check_query),
    ]
    limit: int = Field(default=10, ge=1, le=MAX_SEARCH_LIMIT, description="chunks to return")
    mode: Literal["vector", "hybrid"] = Field(
        default="vector",
        description="`vector`: nearest chunks by meaning. `hybrid`: also PostgreSQL "
        "full-text search for the query's distinctive terms (identifiers, codes, names), "
        "fused with the vector list by reciprocal rank fusion (k=60).",
    )
    where: dict[str, Any] | None = Field(
        default=None,
        description=WHERE_DESCRIPTION,
        examples=[{"source": "handbook", "year": {"$gte": 2020}}],
    )
    where_document: dict[str, Any] | None = Field(
        default=None,
        description=WHERE_DOCUMENT_DESCRIPTION,
        examples=[{"$contains": "XAUTOCLAIM"}],
    )
    include: list[Include] = Field(
        default_factory=lambda: list(INCLUDE_ALL),
        description="what each result carries besides its ids and score",
    )


class SearchResult(BaseModel):
    document_id: str
    chunk_index: int = Field(description="the chunk's position in its document, from 0")
    score: float = Field(
        description="vector: cosine similarity (1 - distance); hybrid: the fused "
        "reciprocal rank fusion score (sum of 1/(60 + rank))"
    )
    distance: float | None = Field(
        default=None, description="cosine distance to the query (with include 'distances')"
    )
    text: str | None = Field(default=None, description="the chunk's text (include 'text')")
    metadata: dict[str, MetadataValue] | None = Field(
        default=None, description="the document's metadata (include 'metadata')"
    )
    vector_rank: int | None = Field(
        default=None, description="hybrid: rank in the vector list (absent: not in it)"
    )
    lexical_rank: int | None = Field(
        default=None, description="hybrid: rank in the full-text list (absent: not in it)"
    )


class SearchResponse(BaseModel):
    mode: Literal["vector", "hybrid"]
    results: list[SearchResult] = Field(description="best first")


class DocumentOut(BaseModel):
    """What is stored for a document (PostgreSQL, the system of record)."""

    id: str
    state: Literal["live", "deleted"]
    deleted: bool = Field(
        description="a tombstone: the document was deleted at `version` (which keeps "
        "older writes out); it has no text, metadata or chunks"
    )
    version: str = Field(
        description="the ingest stream entry id of the write now stored",
        examples=["1718000000000-0"],
    )
    updated_at: datetime
    chunk_count: int
    metadata: dict[str, MetadataValue]
    content_hash: str | None = None
    model: str | None = Field(default=None, description="the model of its vectors")
    text: str | None = Field(default=None, description="the full text (with include_text)")


class DocumentPage(BaseModel):
    documents: list[DocumentOut] = Field(description="in document id order")
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )
