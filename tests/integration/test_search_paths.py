"""The vector half's plans on the real stores, each against a brute-force answer over the
vectors PostgreSQL holds: the collection's nearest chunks filtered in PostgreSQL (the
filters keep many), a deeper pass of them (they keep fewer, or the tenant is small),
Chroma's filtered query (too few for that), a text filter's chunks ranked by their
stored vectors (few), and the nearest chunks of Chroma's filtered query checked for the
text (many)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from bench.search_data import Doc, load_chroma, load_postgres, unit

from embedstream.adapters.chroma.collection import create_client
from embedstream.adapters.embedder import PACKAGED_MODEL_NAME
from embedstream.adapters.postgres import DocumentStore
from embedstream.config import ChromaSettings, PostgresSettings, Settings
from embedstream.search import service as service_module
from embedstream.search.filters import parse_where, parse_where_document
from embedstream.search.service import SearchQuery, SearchService
from tests.integration.conftest import PG_DSN
from tests.support.filter_reference import matches_text, matches_where

pytestmark = pytest.mark.integration

DIM = 384
QUERY = "how do consumer groups share the work"


def corpus() -> list[Doc]:
    rng = np.random.default_rng(21)
    docs = []
    for d in range(300):
        tenant = "tiny" if d % 100 == 7 else "acme"
        texts = []
        for i in range(5):
            words = ["common"] if (d + i) % 2 else ["plain"]
            if d % 37 == 0 and i == 2:
                words.append("needle")
            texts.append(" ".join([*words, f"chunk {d}.{i}"]))
        docs.append(
            Doc(
                tenant,
                f"d{d}",
                texts,
                [unit(rng.normal(size=DIM)) for _ in texts],
                {"k": d % 50, "half": d % 2 == 0, "d": d},
            )
        )
    return docs


DOCS = corpus()


@pytest.fixture
async def service(pool: asyncpg.Pool, schema: str, tmp_path: Path) -> AsyncIterator[SearchService]:
    chroma = ChromaSettings(chroma_path=tmp_path / "chroma", chroma_collection="paths")
    await load_postgres(DocumentStore(pool), DOCS, model=PACKAGED_MODEL_NAME, dim=DIM)
    load_chroma(create_client(chroma), "paths", DOCS, model=PACKAGED_MODEL_NAME, dim=DIM)
    settings = Settings()
    settings.chroma = chroma
    settings.postgres = PostgresSettings(database_url=PG_DSN, database_schema=schema)
    searching = SearchService(settings, pool, live_index=False)
    yield searching
    searching.close()


def brute_force(
    vector: np.ndarray[Any, Any],
    tenant: str,
    where: dict[str, Any] | None,
    text: dict[str, Any] | None,
    limit: int,
) -> list[tuple[str, int]]:
    scored = [
        (1.0 - float(np.dot(vector, v)), (doc.document_id, n))
        for doc in DOCS
        if doc.tenant == tenant and (where is None or matches_where(where, doc.metadata))
        for n, (chunk, v) in enumerate(zip(doc.chunks, doc.vectors, strict=True))
        if text is None or matches_text(text, chunk)
    ]
    return [key for _, key in sorted(scored)[:limit]]


NO_SECOND_PASS = {"SECOND_PASS_MAX": 10}
CASES: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None, str, dict[str, int]]] = [
    ("acme", None, None, "nearest", {}),
    ("acme", {"half": True}, None, "nearest", {}),  # filtered in PostgreSQL
    ("acme", {"k": {"$lt": 40}}, {"$contains": "common"}, "nearest", {}),
    ("acme", {"k": 10}, None, "deeper", {}),  # a few more nearest chunks
    ("tiny", None, None, "deeper", {}),  # a small tenant: the same
    ("acme", {"d": {"$in": [103, 153]}}, None, "filtered", NO_SECOND_PASS),  # Chroma filters
    ("tiny", None, None, "filtered", NO_SECOND_PASS),
    ("acme", None, {"$contains": "needle"}, "stored_vectors", NO_SECOND_PASS),
]


@pytest.mark.parametrize(("tenant", "where", "text", "plan", "limits"), CASES)
async def test_each_plan_finds_the_nearest_matching_chunks(
    service: SearchService,
    monkeypatch: pytest.MonkeyPatch,
    tenant: str,
    where: dict[str, Any] | None,
    text: dict[str, Any] | None,
    plan: str,
    limits: dict[str, int],
) -> None:
    for name, value in limits.items():
        monkeypatch.setattr(service_module, name, value)
    vector = await service.embed(QUERY)
    query = SearchQuery(
        QUERY, limit=10, where=parse_where(where), where_document=parse_where_document(text)
    )
    found = await service.search(tenant, query)
    assert found.plan == plan
    hits = found.hits
    want = brute_force(vector, tenant, where, text, 10)
    got = [(hit.document_id, hit.chunk_index) for hit in hits]
    assert len(got) == len(want)
    # every hit is the tenant's and meets the filters (a strict rule), nearest first
    assert set(got) <= set(brute_force(vector, tenant, where, text, 10_000))
    distances = [hit.distance for hit in hits]
    assert distances == sorted(distances)
    # the nearest ones: exactly, up to the approximation of an HNSW search
    assert len(set(got) & set(want)) >= 9, (got, want)


async def test_the_fallbacks_for_text_filters_agree_with_brute_force(
    service: SearchService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny first pass, a text filter that keeps many chunks takes the last plan
    (Chroma's filtered query, checked for the text), one that keeps few the stored
    vectors: both give the brute-force answer."""
    monkeypatch.setattr(service_module, "FIRST_PASS", 5)
    monkeypatch.setattr(service_module, "FIRST_PASS_MAX", 5)
    monkeypatch.setattr(service_module, "SECOND_PASS_MAX", 10)
    vector = await service.embed(QUERY)
    for where, text, prefilter_max, plan in [
        ({"half": False}, {"$not_contains": "needle"}, 10, "filtered_then_text"),
        (None, {"$contains": "needle"}, 2_000, "stored_vectors"),
    ]:
        monkeypatch.setattr(service_module, "PREFILTER_MAX", prefilter_max)
        query = SearchQuery(
            QUERY, limit=10, where=parse_where(where), where_document=parse_where_document(text)
        )
        found = await service.search("acme", query)
        assert found.plan == plan
        got = [(h.document_id, h.chunk_index) for h in found.hits]
        want = brute_force(vector, "acme", where, text, 10)
        assert len(set(got) & set(want)) >= 9, (where, text, got, want)
        assert set(got) <= set(brute_force(vector, "acme", where, text, 10_000))
