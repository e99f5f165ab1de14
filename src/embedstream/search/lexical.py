"""The lexical half of hybrid search: PostgreSQL full-text search over ``chunks.tsv``
(migration ``0005``: ``to_tsvector('simple', text)`` with a GIN index).

A query's words become lexemes with the same configuration as the chunks. The half is
for *distinctive* terms, the exact identifiers, codes and names that vectors blur
(``distinctive``): a lexeme found in more chunks than ``max_rows`` (2% of the chunks, at
least 3 and at most 2,000) tells chunks apart too little, costs the most to score, and is
left to the vector half; of the others, the codes (terms with a digit: error codes,
ticket numbers, versions) when the query has any, else the rarest ones (at most twice
as common as the rarest). Only ranks count in the fusion, so a chunk that merely shares
an ordinary word with the query must not stand in the full-text list next to the one
that holds the exact term. The kept lexemes are ORed; a chunk scores the sum of the BM25
inverse document frequency of the lexemes it holds (``ln(1 + (N - df + 0.5) / (df +
0.5))``); ties go to ``ts_rank_cd`` (frequency and proximity), then to the chunk's id.

Document frequencies come from PostgreSQL's own statistics of ``chunks.tsv``
(``pg_stats.most_common_elems``, refreshed by ANALYZE and autovacuum; read at most every
``stats_ttl_s``): a lexeme listed there has its frequency, one that is not is rarer than
every listed one and is counted exactly, up to ``max_rows + 1``, with the GIN index.
These statistics cover every tenant's chunks: how common a word is across the deployment
can shape a ranking (as with BM25 in any shared index); no text, id or count of another
tenant's chunks is ever returned, and every match is the caller's tenant's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from embedstream.search.filters import Where, WhereDocument
from embedstream.search.sql import SqlParams, where_document_sql, where_sql

TEXT_SEARCH_CONFIG: Final = "simple"
DISTINCT_FRACTION: Final = 0.02
MIN_MAX_ROWS: Final = 3
MAX_MAX_ROWS: Final = 2_000
MAX_QUERY_TERMS: Final = 32
RARITY_SPREAD: Final = 2

QUERY_LEXEMES = "SELECT tsvector_to_array(to_tsvector('simple'::regconfig, $1::text))"

TERM_STATS = """
SELECT c.reltuples::float8 AS rows,
       s.most_common_elems::text::text[] AS lexemes,
       s.most_common_elem_freqs AS freqs
FROM pg_class AS c
LEFT JOIN pg_stats AS s
  ON s.schemaname = current_schema() AND s.tablename = 'chunks' AND s.attname = 'tsv'
WHERE c.oid = 'chunks'::regclass
"""

COUNT_CHUNKS = "SELECT count(*) FROM chunks"

COUNT_TERMS = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM chunks WHERE tsv @@ t.q LIMIT $2) AS m)
FROM unnest($1::tsquery[]) WITH ORDINALITY AS t (q, n)
ORDER BY t.n
"""


def tsquery_term(lexeme: str) -> str:
    """``lexeme`` as one quoted tsquery operand: taken as it is, with no parsing or
    normalization (quotes and backslashes doubled as the tsquery syntax asks)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def bm25_idf(rows: float, df: float) -> float:
    return math.log(1.0 + (rows - df + 0.5) / (df + 0.5))


@dataclass(frozen=True)
class TermStats:
    rows: float
    """chunks in the table (the planner's estimate)"""
    frequencies: dict[str, float]
    """the most common lexemes: fraction of chunks holding each"""
    analyzed: bool
    """whether ANALYZE has run (else every lexeme is counted)"""

    @property
    def max_rows(self) -> int:
        """A lexeme in more chunks than this is not distinctive."""
        return int(max(MIN_MAX_ROWS, min(DISTINCT_FRACTION * self.rows, MAX_MAX_ROWS)))


def is_code(lexeme: str) -> bool:
    """An error code, ticket number, version or hash: a term with a digit in it."""
    return any(ch.isdigit() for ch in lexeme)


def distinctive(df: dict[str, float], max_rows: int) -> list[str]:
    """The lexemes the lexical half looks for: found in 1 to ``max_rows`` chunks; of
    those, the codes when the query has any, else the rarest (within ``RARITY_SPREAD``
    times the rarest one's count). A word as common as the query's ordinary ones would
    put chunks that merely share it in the full-text list, where reciprocal rank fusion
    weighs them as much as the chunk holding the exact term."""
    found = {lexeme: count for lexeme, count in df.items() if 0 < count <= max_rows}
    codes = [lexeme for lexeme in found if is_code(lexeme)]
    if codes:
        return codes
    rarest = min(found.values(), default=0.0)
    return [lexeme for lexeme, count in found.items() if count <= RARITY_SPREAD * rarest]


@dataclass(frozen=True)
class LexicalHit:
    document_id: str
    idx: int
    score: float


class LexicalIndex:
    """Term statistics (cached) and the lexical query, on a pool whose search_path names
    the embedstream schema."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        stats_ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.stats_ttl_s = stats_ttl_s
        self.clock = clock
        self._stats: TermStats | None = None
        self._stats_at = -math.inf

    async def stats(self) -> TermStats:
        if self._stats is None or self.clock() - self._stats_at > self.stats_ttl_s:
            row = await self.pool.fetchrow(TERM_STATS)
            rows = float(row["rows"]) if row is not None else 0.0
            lexemes: list[str] = (row["lexemes"] if row is not None else None) or []
            freqs: list[float] = (row["freqs"] if row is not None else None) or []
            analyzed = rows > 0 and bool(lexemes)
            if rows <= 0:  # never analyzed (-1) or empty: count (a small or a fresh table)
                rows = float(await self.pool.fetchval(COUNT_CHUNKS))
            # the frequency array ends with min, max and null fraction: zip stops before
            self._stats = TermStats(rows, dict(zip(lexemes, freqs, strict=False)), analyzed)
            self._stats_at = self.clock()
        return self._stats

    async def weights(self, query: str) -> dict[str, float]:
        """The query's distinctive lexemes with their weight (BM25 idf); empty when it
        has none."""
        lexemes: list[str] = (await self.pool.fetchval(QUERY_LEXEMES, query) or [])[
            :MAX_QUERY_TERMS
        ]
        if not lexemes:
            return {}
        stats = await self.stats()
        limit = stats.max_rows
        df: dict[str, float] = {}
        uncounted: list[str] = []
        for lexeme in lexemes:
            known = stats.frequencies.get(lexeme)
            if known is not None:
                df[lexeme] = known * stats.rows
            else:
                uncounted.append(lexeme)
        if uncounted:
            counts = await self.pool.fetch(
                COUNT_TERMS, [tsquery_term(lexeme) for lexeme in uncounted], limit + 1
            )
            df.update(zip(uncounted, (float(row[0]) for row in counts), strict=True))
        rows = max(stats.rows, max(df.values(), default=0.0))
        return {lexeme: bm25_idf(rows, df[lexeme]) for lexeme in distinctive(df, limit)}

    async def search(
        self,
        tenant: str,
        weights: dict[str, float],
        *,
        limit: int,
        where: Where | None = None,
        where_document: WhereDocument | None = None,
    ) -> list[LexicalHit]:
        """The tenant's live chunks holding any of the weighted lexemes and meeting both
        filters, best first."""
        if not weights:
            return []
        terms = [tsquery_term(lexeme) for lexeme in weights]
        params = SqlParams(tenant, terms, list(weights.values()), " | ".join(terms), limit)
        conditions = ["NOT d.deleted", *filter_conditions(params, where, where_document)]
        # The chunks holding a term first (GIN), then each one's document by its primary
        # key: the plan does not depend on the documents table's statistics (without them
        # PostgreSQL would walk every document of the tenant).
        sql = f"""
WITH c AS MATERIALIZED (
    SELECT document_id, idx, text, tsv FROM chunks
    WHERE tenant = $1 AND tsv @@ $4::tsquery
)
SELECT c.document_id, c.idx,
       (SELECT sum(w.idf) FROM unnest($2::tsquery[], $3::float8[]) AS w (q, idf)
        WHERE c.tsv @@ w.q) AS score
FROM c
CROSS JOIN LATERAL (
    SELECT deleted, metadata FROM documents
    WHERE tenant = $1 AND document_id = c.document_id
) AS d
WHERE {" AND ".join(conditions)}
ORDER BY score DESC, ts_rank_cd(c.tsv, $4::tsquery) DESC, c.document_id, c.idx
LIMIT $5
"""
        rows = await self.pool.fetch(sql, *params.values)
        return [LexicalHit(row["document_id"], row["idx"], float(row["score"])) for row in rows]


def filter_conditions(
    params: SqlParams, where: Where | None, where_document: WhereDocument | None
) -> list[str]:
    """SQL conditions for both filters over ``d.metadata`` and ``c.text``."""
    found: list[str] = []
    if where is not None:
        found.append(where_sql(where, params))
    if where_document is not None:
        found.append(where_document_sql(where_document, params))
    return found


def ranked_keys(hits: Sequence[Any]) -> list[tuple[str, int]]:
    return [(hit.document_id, hit.idx) for hit in hits]
