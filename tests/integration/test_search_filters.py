"""The filter grammar on the real stores: for each operator (and their combinations) the
chunks Chroma selects (the vector half) and the chunks PostgreSQL selects (the lexical
half and the where_document prefilter) are exactly those a plain reading of the grammar
says (``tests.support.filter_reference``), and only the caller's tenant's."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from bench.search_data import Doc, load_chroma, load_postgres, unit

from embedstream.adapters.chroma.collection import create_client
from embedstream.adapters.postgres import DocumentStore
from embedstream.config import ChromaSettings
from embedstream.search.chunks import ChunkReader
from embedstream.search.filters import parse_where, parse_where_document
from embedstream.search.vector import VectorIndex
from tests.support.filter_reference import matches_text, matches_where

pytestmark = pytest.mark.integration

MODEL, DIM = "test-model", 8
WORDS = ["alpha", "beta", "gamma", "Alpha", "delta", "100%_x", "o'clock", "Straße"]
COLORS = ["red", "green", "blue", None]
N_VALUES: list[Any] = [0, 1, 2, 3, 3.0, 2.5, 7, 9, "3", True, False, None, -4, -2, -2.5, -3]
NAMES = ["Müller", 'O\'Brien "quoted"', "東京", "plain", None]

WHERE_CASES: list[dict[str, Any]] = [
    {"color": "red"},
    {"color": {"$eq": "red"}},
    {"color": {"$ne": "red"}},
    {"n": 3},
    {"n": 3.0},
    {"n": "3"},
    {"n": True},
    {"n": {"$ne": 3}},
    {"n": {"$gt": 2}},
    {"n": {"$gte": 3}},
    {"n": {"$lt": 2.5}},
    {"n": {"$lte": 0}},
    {"n": {"$gte": 2, "$lt": 7}},
    {"n": {"$lte": 2.5}},
    {"n": {"$gt": 2.5}},
    {"n": {"$gte": 2.5}},
    {"n": {"$eq": 2.5}},
    {"n": {"$ne": 2.5}},
    {"n": {"$lt": -2.5}},
    {"n": {"$lte": -2.5}},
    {"n": {"$gt": -2.5}},
    {"n": {"$gte": -2.5}},
    {"n": -2.5},
    {"n": {"$ne": -2.5}},
    {"n": {"$in": [-2.5, 3.0, "x"]}},
    {"n": {"$nin": [-2.5, 3.0]}},
    {"color": {"$in": ["red", "blue"]}},
    {"color": {"$nin": ["red"]}},
    {"n": {"$in": [1, 2.5]}},
    {"n": {"$nin": [1, 2.5]}},
    {"n": {"$in": [True]}},
    {"n": {"$in": ["3", "x"]}},
    {"n": {"$in": [3.0, 7]}},
    {"flag": True},
    {"flag": {"$ne": True}},
    {"flag": {"$in": [False]}},
    {"price": {"$gt": 9.99}},
    {"price": {"$lte": 0.1}},
    {"big": 9007199254740993},
    {"big": {"$gt": 9007199254740992}},
    {"name": "Müller"},
    {"name": 'O\'Brien "quoted"'},
    {"name": "東京"},
    {"absent": {"$ne": 1}},
    {"absent": {"$nin": ["a"]}},
    {"absent": 1},
    {"color": "green", "flag": True},
    {"$or": [{"color": "red"}, {"n": {"$gt": 7}}]},
    {"$and": [{"color": {"$ne": "red"}}, {"flag": False}]},
    {"$or": [{"$and": [{"n": {"$gte": 1}}, {"n": {"$lte": 3}}]}, {"color": {"$in": ["blue"]}}]},
    {"$and": [{"$or": [{"flag": True}, {"name": "plain"}]}, {"color": {"$nin": ["blue", "red"]}}]},
]

TEXT_CASES: list[dict[str, Any]] = [
    {"$contains": "alpha"},
    {"$contains": "Alpha"},
    {"$not_contains": "alpha"},
    {"$contains": "100%_x"},
    {"$contains": "%"},
    {"$contains": "o'clock"},
    {"$contains": "Straße gamma"},
    {"$and": [{"$contains": "alpha"}, {"$not_contains": "beta"}]},
    {"$or": [{"$contains": "delta"}, {"$contains": "Straße"}]},
]


def corpus(tenant: str, seed: int) -> list[Doc]:
    rng = random.Random(seed)
    docs = []
    for n in range(48):
        metadata: dict[str, Any] = {}
        for key, choices in (("color", COLORS), ("n", N_VALUES), ("name", NAMES)):
            value = rng.choice(choices)
            if value is not None:
                metadata[key] = value
        if rng.random() < 0.7:
            metadata["flag"] = rng.random() < 0.5
        if rng.random() < 0.6:
            metadata["price"] = rng.choice([0.1, 9.99, 10.0, 25.5, 0.05])
        if n % 8 == 0:
            metadata["big"] = 9007199254740992 + n % 16 // 8  # 2**53 and 2**53 + 1
        chunks = [" ".join(rng.choices(WORDS, k=6)) for _ in range(rng.randint(1, 2))]
        vectors = [
            unit(np.random.default_rng(seed * 1000 + n * 10 + i).normal(size=DIM))
            for i in range(len(chunks))
        ]
        docs.append(Doc(tenant, f"{tenant}-doc/{n}", chunks, vectors, metadata))
    return docs


ACME = corpus("acme", 1)
GLOBEX = corpus("globex", 1)  # the same metadata and texts, another tenant


@pytest.fixture
async def stores(
    pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[tuple[VectorIndex, ChunkReader]]:
    settings = ChromaSettings(chroma_path=tmp_path / "chroma", chroma_collection="filters")
    await load_postgres(DocumentStore(pool), ACME + GLOBEX, model=MODEL, dim=DIM)
    load_chroma(
        create_client(settings), settings.chroma_collection, ACME + GLOBEX, model=MODEL, dim=DIM
    )
    index = VectorIndex(settings)
    yield index, ChunkReader(pool)
    index.close()


def expected(where: dict[str, Any] | None, text: dict[str, Any] | None) -> set[tuple[str, int]]:
    return {
        (doc.document_id, n)
        for doc in ACME
        for n, chunk in enumerate(doc.chunks)
        if (where is None or matches_where(where, doc.metadata))
        and (text is None or matches_text(text, chunk))
    }


async def test_each_operator_selects_exactly_the_matching_chunks_in_both_stores(
    stores: tuple[VectorIndex, ChunkReader],
) -> None:
    index, reader = stores
    query = unit(np.ones(DIM))
    wrong: list[str] = []
    for raw in WHERE_CASES:
        want = expected(raw, None)
        where = parse_where(raw)
        chroma = {
            (hit.document_id, hit.idx)
            for hit in await index.query(query, tenant="acme", where=where, n=500)
        }
        postgres = set(await reader.matching("acme", where, None, limit=500))
        if chroma != want:
            wrong.append(f"chroma {raw}: extra {chroma - want}, missing {want - chroma}")
        if postgres != want:
            wrong.append(f"postgres {raw}: extra {postgres - want}, missing {want - postgres}")
    assert not wrong, "\n".join(wrong)
    # the cases are not vacuous: most select some chunks and leave others out
    sizes = [len(expected(raw, None)) for raw in WHERE_CASES]
    assert sum(0 < size < 70 for size in sizes) >= len(WHERE_CASES) - 4


async def test_text_filters_select_exactly_the_chunks_holding_the_text(
    stores: tuple[VectorIndex, ChunkReader],
) -> None:
    _, reader = stores
    wrong = []
    for raw in TEXT_CASES:
        for where_raw in (None, {"color": {"$ne": "red"}}):
            want = expected(where_raw, raw)
            got = set(
                await reader.matching(
                    "acme", parse_where(where_raw), parse_where_document(raw), limit=500
                )
            )
            if got != want:
                wrong.append(f"{raw} with {where_raw}: extra {got - want}, missing {want - got}")
        assert expected(None, raw), f"{raw} selects nothing in the corpus: a vacuous case"
    assert not wrong, "\n".join(wrong)


async def test_the_other_tenants_identical_chunks_are_never_selected(
    stores: tuple[VectorIndex, ChunkReader],
) -> None:
    index, reader = stores
    query = unit(np.ones(DIM))
    everything = await index.query(query, tenant="acme", where=None, n=500)
    assert {hit.document_id.split("-")[0] for hit in everything} == {"acme"}
    assert len(everything) == len(expected(None, None))
    globex = await reader.matching("globex", parse_where({"color": "red"}), None, limit=500)
    assert globex and all(doc.startswith("globex-") for doc, _ in globex)
