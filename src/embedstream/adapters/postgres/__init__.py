"""PostgreSQL, the system of record: pool, migrations and the documents store."""

from embedstream.adapters.postgres.migrate import (
    Migration,
    MigrationError,
    available_migrations,
    migrate,
)
from embedstream.adapters.postgres.model import ChunkRow, DocumentWrite, WriteResult
from embedstream.adapters.postgres.pool import (
    connect_pool,
    create_pool,
    quote_ident,
)
from embedstream.adapters.postgres.repository import DocumentStore, StoredChunk, StoredDocument

__all__ = [
    "ChunkRow",
    "DocumentStore",
    "DocumentWrite",
    "Migration",
    "MigrationError",
    "StoredChunk",
    "StoredDocument",
    "WriteResult",
    "available_migrations",
    "connect_pool",
    "create_pool",
    "migrate",
    "quote_ident",
]
