-- Tenants: a document is (tenant, document_id). Rows stored before tenants existed
-- belong to the tenant 'default' (their chunk ids get its '{tenant}/' prefix).

ALTER TABLE chunks DROP CONSTRAINT chunks_document_id_fkey;

ALTER TABLE documents ADD COLUMN tenant text NOT NULL DEFAULT 'default'
    CONSTRAINT documents_tenant_format CHECK (tenant ~ '^[A-Za-z0-9._-]{1,64}$');
ALTER TABLE documents ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE documents DROP CONSTRAINT documents_pkey;
ALTER TABLE documents ADD PRIMARY KEY (tenant, document_id);

ALTER TABLE chunks ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE chunks ALTER COLUMN tenant DROP DEFAULT;
UPDATE chunks SET chunk_id = tenant || '/' || chunk_id;
ALTER TABLE chunks DROP CONSTRAINT chunks_pkey;
ALTER TABLE chunks ADD PRIMARY KEY (tenant, document_id, idx);
ALTER TABLE chunks ADD CONSTRAINT chunks_document_fkey FOREIGN KEY (tenant, document_id)
    REFERENCES documents (tenant, document_id) ON DELETE CASCADE;

COMMENT ON COLUMN chunks.chunk_id IS 'deterministic: {tenant}/{document_id}:{idx}';

ALTER TABLE job_documents ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE job_documents ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE job_documents DROP CONSTRAINT job_documents_pkey;
ALTER TABLE job_documents ADD PRIMARY KEY (tenant, job_id, document_id);

DROP INDEX job_documents_document_id_idx;
CREATE INDEX job_documents_document_idx ON job_documents (tenant, document_id);
