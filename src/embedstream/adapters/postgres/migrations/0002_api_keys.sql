-- API keys of the HTTP ingress. The secret is never stored: `hash` is its argon2id hash
-- (PHC string). `id` is the public part of the key (`es_<id>_<secret>`), so checking a
-- key costs one lookup and one hash.

CREATE TABLE api_keys (
    id           text        PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    tenant       text        NOT NULL CHECK (tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scopes       text[]      NOT NULL CHECK (cardinality(scopes) > 0),
    hash         text        NOT NULL CHECK (hash LIKE '$argon2id$%'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);

CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);

COMMENT ON COLUMN api_keys.hash IS 'argon2id hash of the whole key; the key itself is shown once, at creation';
COMMENT ON COLUMN api_keys.revoked_at IS 'set by `embedstream keys revoke`; API processes stop accepting the key within api_key_cache_ttl_s';
