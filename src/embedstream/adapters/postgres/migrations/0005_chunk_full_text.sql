-- Full-text search over chunks: the exact-term half of hybrid search (POST /v1/search
-- with "mode": "hybrid"; embedstream.search.lexical).
--
-- Text search configuration 'simple': it lower-cases and splits words, with no stemming
-- and no stop words, the same for every language. A corpus may mix languages, and the
-- lexical half is there for exact terms the vectors miss (identifiers, codes, names), which
-- a language's stemmer would mangle ("ERR_4711", "kubectl", "Müller"); meaning, across
-- word forms and languages, is the vector half's job. Words too common to tell chunks
-- apart are left out at query time from PostgreSQL's own statistics, not from a stop list.
--
-- On a populated table: adding a STORED generated column computes it for every existing
-- row (the table is rewritten under an ACCESS EXCLUSIVE lock: persist workers wait, then
-- go on; nothing is lost), and the GIN index is built on what is there. `ANALYZE` gives
-- the planner and the query-time term statistics their first figures at once. The
-- statistics target of `tsv` is raised from 100 to 1000: PostgreSQL then keeps the
-- frequencies of up to 10,000 common lexemes (instead of 1,000), so search counts only
-- the rare ones itself.

ALTER TABLE chunks ADD COLUMN tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, text)) STORED;

CREATE INDEX chunks_tsv_idx ON chunks USING gin (tsv);

COMMENT ON COLUMN chunks.tsv IS
    'to_tsvector(''simple'', text): the lexical half of hybrid search (GIN chunks_tsv_idx)';

ALTER TABLE chunks ALTER COLUMN tsv SET STATISTICS 1000;

ANALYZE chunks, documents;
