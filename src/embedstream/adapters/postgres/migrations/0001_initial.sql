-- Documents, their chunks with vectors, and which job persisted which document version.
-- Runs with search_path set to the configured schema: names stay unqualified.

CREATE TABLE documents (
    document_id  text        PRIMARY KEY,
    version      bigint      NOT NULL CHECK (version >= 0),
    deleted      boolean     NOT NULL DEFAULT false,
    content_hash text,
    text         text,
    metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    model        text,
    dim          integer     CHECK (dim > 0),
    chunk_count  integer     NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- a tombstone keeps its version (so older upserts stay refused) and nothing else
    CONSTRAINT documents_live_has_text CHECK (deleted OR text IS NOT NULL),
    CONSTRAINT documents_tombstone_is_empty CHECK (NOT deleted OR (text IS NULL AND chunk_count = 0))
);

COMMENT ON COLUMN documents.version IS
    'monotonic per document (the ingest entry id as ms * 2^20 + seq); writes never go backwards';
COMMENT ON COLUMN documents.deleted IS 'tombstone: the document was deleted at `version`';

CREATE TABLE chunks (
    document_id text    NOT NULL REFERENCES documents (document_id) ON DELETE CASCADE,
    idx         integer NOT NULL CHECK (idx >= 0),
    chunk_id    text    NOT NULL,
    text        text    NOT NULL,
    embedding   bytea   NOT NULL,
    PRIMARY KEY (document_id, idx)
);

-- vectors do not compress: skip the compression attempt (about +30% write throughput)
ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE EXTERNAL;

COMMENT ON COLUMN chunks.embedding IS
    'little-endian float32, documents.dim values: the vector Chroma is rebuilt from';

CREATE TABLE job_documents (
    job_id       text        NOT NULL,
    document_id  text        NOT NULL,
    version      bigint      NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('upsert', 'delete')),
    applied      boolean     NOT NULL,
    persisted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, document_id)
);

COMMENT ON COLUMN job_documents.applied IS
    'false when a newer version of the document was already stored (the write was refused)';

-- "which jobs touched this document"
CREATE INDEX job_documents_document_id_idx ON job_documents (document_id);
