-- One tenant syntax everywhere (embedstream.schemas.tenancy.TENANT_REGEX): 1-64 letters,
-- digits, '.', '_' or '-', starting with a letter or digit. Credentials (api_keys) had it
-- already; documents allowed a leading '.', '_' or '-', which no credential could carry.
-- PostgreSQL's `~` is not newline-sensitive: '$' is the end of the string.

ALTER TABLE documents DROP CONSTRAINT documents_tenant_format;
ALTER TABLE documents ADD CONSTRAINT documents_tenant_format
    CHECK (tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$') NOT VALID;

-- Rows written before this migration by a producer other than the API may hold a tenant
-- of the old, wider syntax: they stay (and stay readable); every new write is checked.
DO $$
BEGIN
    ALTER TABLE documents VALIDATE CONSTRAINT documents_tenant_format;
EXCEPTION WHEN check_violation THEN
    RAISE WARNING 'documents holds tenants outside the tenant syntax; they are kept, '
        'but new writes must follow it';
END
$$;
