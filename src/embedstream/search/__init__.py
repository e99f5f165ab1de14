"""Search over what the pipeline indexed: vector (Chroma) and hybrid (with PostgreSQL
full-text search) with metadata and text filters, for the API and the CLI."""

from embedstream.search.filters import FilterError, parse_where, parse_where_document
from embedstream.search.service import (
    SearchHit,
    SearchQuery,
    SearchService,
    SearchUnavailable,
)

__all__ = [
    "FilterError",
    "SearchHit",
    "SearchQuery",
    "SearchService",
    "SearchUnavailable",
    "parse_where",
    "parse_where_document",
]
