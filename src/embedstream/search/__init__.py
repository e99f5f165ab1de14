"""Search over what the pipeline indexed: vector (Chroma) and hybrid (with PostgreSQL
full-text search) with metadata and text filters, for the API and the CLI."""

from embedstream.search.filters import FilterError, parse_where, parse_where_document
from embedstream.search.query_model import SearchUnavailable
from embedstream.search.service import SearchHit, SearchQuery, SearchResults, SearchService

__all__ = [
    "FilterError",
    "SearchHit",
    "SearchQuery",
    "SearchResults",
    "SearchService",
    "SearchUnavailable",
    "parse_where",
    "parse_where_document",
]
