"""``POST /v1/search`` and ``GET /v1/documents[/{id}]`` in process, on the real Redis,
PostgreSQL and a Chroma server: credentials and scopes (checked before the body),
tenants, filter refusals naming their field, the model guard, the thin ingress, the
answers when a store is away, pagination and the route shared with ``DELETE``.

The stores are filled directly (``bench.search_data``) with random vectors: what is
checked here does not depend on meaning; the pipeline end to end is tests/e2e."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from bench.search_data import Doc, load_chroma, load_postgres, unit
from structlog.testing import capture_logs

from embedstream.adapters.chroma.collection import create_client
from embedstream.adapters.embedder import PACKAGED_MODEL_NAME
from embedstream.adapters.postgres import DocumentStore, DocumentWrite, create_pool
from embedstream.adapters.postgres.migrate import migrate
from embedstream.api.app import create_app
from embedstream.api.routes.read import encode_cursor
from embedstream.api.security.tokens import issue_token
from embedstream.config import (
    ApiSettings,
    AuthSettings,
    ChromaSettings,
    PostgresSettings,
    RedisSettings,
    SearchSettings,
    Settings,
)
from tests.conftest import REDIS_URL
from tests.integration.conftest import PG_DSN, create_key, drop_schema, with_key_store
from tests.support.chroma_server import chroma_server

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

DIM = 384
JWT_SECRET = "search-api-test-secret-0123456789-abcdefghijk"


@dataclass(frozen=True)
class Env:
    schema: str
    chroma_url: str
    collection: str
    keys: dict[str, str]


def acme_docs() -> list[Doc]:
    rng = np.random.default_rng(5)
    docs = []
    for n in range(7):
        docs.append(
            Doc(
                "acme",
                f"guide/part {n}",
                [f"acme chunk {n}.{i} about consumer groups" for i in range(2)],
                [unit(rng.normal(size=DIM)) for _ in range(2)],
                {"n": n, "lang": "en" if n % 2 else "de"},
            )
        )
    return docs


GLOBEX = [
    Doc(
        "globex",
        "guide/part 1",  # the same id as one of acme's
        ["globex secret chunk about consumer groups"],
        [unit(np.ones(DIM))],
        {"n": 1, "lang": "en"},
    )
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    schema = f"t_search_{uuid.uuid4().hex[:10]}"
    collection = f"search-api-{uuid.uuid4().hex[:8]}"
    with chroma_server(tmp_path_factory.mktemp("chroma")) as url:

        async def setup() -> dict[str, str]:
            await migrate(PG_DSN, schema)
            keys = {}
            for name, tenant, scopes in [
                ("search", "acme", ("search:read",)),
                ("reader", "acme", ("documents:read",)),
                ("writer", "acme", ("documents:write",)),
                ("jobs", "acme", ("jobs:read",)),
                ("admin", "acme", ("admin",)),
                ("globex", "globex", ("search:read", "documents:read")),
            ]:
                keys[name] = (await create_key(schema, tenant, *scopes))[1]
            pool = await create_pool(PostgresSettings(database_url=PG_DSN, database_schema=schema))
            store = DocumentStore(pool)
            await load_postgres(store, acme_docs() + GLOBEX, model=PACKAGED_MODEL_NAME, dim=DIM)
            # a tombstone
            await store.write(
                [DocumentWrite("j", "guide/part 6", 2, "acme", deleted=True, content_hash="x")]
            )
            await pool.close()
            return keys

        keys = asyncio.run(setup())
        client = create_client(ChromaSettings(chroma_url=url))
        load_chroma(client, collection, acme_docs() + GLOBEX, model=PACKAGED_MODEL_NAME, dim=DIM)
        yield Env(schema, url, collection, keys)
    asyncio.run(drop_schema(schema))


def settings_for(env: Env, **changes: Any) -> Settings:
    settings = with_key_store(Settings(), env.schema)
    settings.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=f"t{uuid.uuid4().hex[:12]}")
    settings.chroma = ChromaSettings(
        chroma_url=changes.pop("chroma_url", env.chroma_url),
        chroma_collection=changes.pop("collection", env.collection),
    )
    settings.search = SearchSettings(**changes.pop("search", {}))
    settings.api = ApiSettings(rate_limit="")
    settings.auth = AuthSettings(jwt_secret=JWT_SECRET)
    if "database_url" in changes:
        settings.postgres = PostgresSettings(
            database_url=changes.pop("database_url"), database_schema=env.schema
        )
    assert not changes
    return settings


async def app_client(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield app, client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(env: Env) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """One app for the module (the query model loads once)."""
    async for pair in app_client(settings_for(env)):
        yield pair


def key(env: Env, name: str) -> dict[str, str]:
    return {"X-API-Key": env.keys[name]}


async def search(
    client: httpx.AsyncClient, env: Env, body: Any, who: str = "search"
) -> httpx.Response:
    return await client.post("/v1/search", json=body, headers=key(env, who))


# -- credentials, scopes, tenants ------------------------------------------------------


async def test_search_needs_a_credential_before_the_body_is_read(
    api: tuple[Any, httpx.AsyncClient],
) -> None:
    _, client = api
    response = await client.post(
        "/v1/search", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("who", "method", "path", "status"),
    [
        ("search", "POST", "/v1/search", 200),
        ("admin", "POST", "/v1/search", 200),
        ("reader", "POST", "/v1/search", 403),
        ("writer", "POST", "/v1/search", 403),
        ("jobs", "POST", "/v1/search", 403),
        ("reader", "GET", "/v1/documents", 200),
        ("admin", "GET", "/v1/documents", 200),
        ("search", "GET", "/v1/documents", 403),
        ("writer", "GET", "/v1/documents/guide%2Fpart%201", 403),
        ("reader", "GET", "/v1/documents/guide%2Fpart%201", 200),
    ],
)
async def test_scopes(
    api: tuple[Any, httpx.AsyncClient], env: Env, who: str, method: str, path: str, status: int
) -> None:
    _, client = api
    body = {"query": "consumer groups"} if method == "POST" else None
    response = await client.request(method, path, json=body, headers=key(env, who))
    assert response.status_code == status, response.text
    if status == 403:
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


async def test_a_search_returns_only_the_callers_tenants_chunks(
    api: tuple[Any, httpx.AsyncClient], env: Env
) -> None:
    _, client = api
    for mode in ("vector", "hybrid"):
        response = await search(
            client, env, {"query": "globex secret consumer groups", "limit": 100, "mode": mode}
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        texts = [r["text"] for r in results]
        assert len(results) == 12  # acme's 6 live documents, 2 chunks each; no tombstone
        assert not any("globex" in text for text in texts)
        # globex finds its own (the same document id as one of acme's)
        theirs = await search(client, env, {"query": "consumer groups", "mode": mode}, "globex")
        assert [r["text"] for r in theirs.json()["results"]] == [GLOBEX[0].chunks[0]]


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ({"tenant": "globex"}, "body.where.tenant"),
        ({"$or": [{"n": 1}, {"tenant": {"$in": ["globex"]}}]}, "body.where.$or.1.tenant"),
        ({"$and": [{"document_id": "guide/part 1"}]}, "body.where.$and.0.document_id"),
        ({"n": {"$regex": "1"}}, "body.where.n.$regex"),
        ({"$nor": [{"n": 1}]}, "body.where.$nor"),
        ({"n": {"$gt": "1"}}, "body.where.n.$gt"),
    ],
)
async def test_a_refused_filter_is_a_422_naming_its_field(
    api: tuple[Any, httpx.AsyncClient], env: Env, where: dict[str, Any], field: str
) -> None:
    _, client = api
    response = await search(client, env, {"query": "x", "where": where})
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == [field]
    assert "globex" not in response.text or field.endswith("tenant")


async def test_request_shape_is_checked(api: tuple[Any, httpx.AsyncClient], env: Env) -> None:
    _, client = api
    for body, field in [
        ({"query": "x", "limit": 0}, "body.limit"),
        ({"query": "x", "limit": 101}, "body.limit"),
        ({"query": "x", "limit": "5"}, "body.limit"),
        ({"query": "   "}, "body.query"),
        ({"query": "a\x00b"}, "body.query"),
        ({"query": "x", "mode": "keyword"}, "body.mode"),
        ({"query": "x", "include": ["vectors"]}, "body.include.0"),
        ({"query": "x", "where_document": {"$contains": ""}}, "body.where_document.$contains"),
        ({"query": "x", "tenant": "globex"}, "body.tenant"),
    ]:
        response = await search(client, env, body)
        assert response.status_code == 422, (body, response.text)
        assert field in [e["field"] for e in response.json()["errors"]], (body, response.text)
    response = await client.post(
        "/v1/search",
        content=b"query=x",
        headers={**key(env, "search"), "Content-Type": "text/plain"},
    )
    assert response.status_code == 415


async def test_filters_and_include(api: tuple[Any, httpx.AsyncClient], env: Env) -> None:
    _, client = api
    response = await search(
        client,
        env,
        {
            "query": "consumer groups",
            "limit": 100,
            "where": {"lang": "en", "n": {"$gte": 2}},
            "where_document": {"$contains": ".1 "},
            "include": ["metadata"],
        },
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert {(r["document_id"], r["chunk_index"]) for r in results} == {
        ("guide/part 3", 1),
        ("guide/part 5", 1),
    }
    assert all(set(r) == {"document_id", "chunk_index", "score", "metadata"} for r in results)


# -- documents -------------------------------------------------------------------------


async def test_a_document_with_its_state_and_another_tenants_is_a_404(
    api: tuple[Any, httpx.AsyncClient], env: Env
) -> None:
    _, client = api
    got = await client.get("/v1/documents/guide%2Fpart%203", headers=key(env, "reader"))
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["id"] == "guide/part 3"
    assert (body["state"], body["deleted"], body["chunk_count"]) == ("live", False, 2)
    assert body["metadata"] == {"n": 3, "lang": "en"}
    assert body["version"] == "0-1" and body["model"] == PACKAGED_MODEL_NAME
    assert body["text"] is None  # without include_text
    with_text = await client.get(
        "/v1/documents/guide%2Fpart%203?include_text=true", headers=key(env, "reader")
    )
    assert with_text.json()["text"].startswith("acme chunk 3.0")

    tombstone = await client.get("/v1/documents/guide%2Fpart%206", headers=key(env, "reader"))
    assert tombstone.status_code == 200
    assert tombstone.json()["state"] == "deleted" and tombstone.json()["chunk_count"] == 0

    # globex has 'guide/part 1' too, but not acme's 'guide/part 3'
    theirs = await client.get("/v1/documents/guide%2Fpart%203", headers=key(env, "globex"))
    unknown = await client.get("/v1/documents/no-such-doc", headers=key(env, "globex"))
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"] == unknown.json()["error"]
    own = await client.get("/v1/documents/guide%2Fpart%201", headers=key(env, "globex"))
    assert own.json()["metadata"] == {"n": 1, "lang": "en"}


async def test_the_document_path_is_shared_by_get_and_delete(
    api: tuple[Any, httpx.AsyncClient], env: Env
) -> None:
    _, client = api
    deleted = await client.delete("/v1/documents/guide%2Fpart%205", headers=key(env, "writer"))
    assert deleted.status_code == 202, deleted.text
    read = await client.get("/v1/documents/guide%2Fpart%205", headers=key(env, "reader"))
    assert read.status_code == 200 and read.json()["id"] == "guide/part 5"
    put = await client.put("/v1/documents/guide%2Fpart%205", headers=key(env, "reader"))
    assert put.status_code == 405
    assert put.headers["Allow"] == "DELETE, GET"
    listed = await client.patch("/v1/documents", headers=key(env, "reader"))
    assert listed.headers["Allow"] == "GET, POST"
    searched = await client.get("/v1/search", headers=key(env, "search"))
    assert (searched.status_code, searched.headers["Allow"]) == (405, "POST")
    empty = await client.get("/v1/documents/", headers=key(env, "reader"))
    assert empty.status_code == 422


async def test_pages_follow_the_cursor_in_id_order(
    api: tuple[Any, httpx.AsyncClient], env: Env
) -> None:
    _, client = api
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await client.get("/v1/documents", params=params, headers=key(env, "reader"))
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [d["id"] for d in body["documents"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    live = [f"guide/part {n}" for n in range(6)]
    assert seen == sorted(live) and pages == 3
    everything = await client.get(
        "/v1/documents",
        params={"include_deleted": "true", "limit": 100},
        headers=key(env, "reader"),
    )
    assert [d["id"] for d in everything.json()["documents"]] == sorted([*live, "guide/part 6"])
    assert everything.json()["next_cursor"] is None
    # a cursor is a position, not a grant: another tenant gets its own documents after it
    theirs = await client.get(
        "/v1/documents", params={"cursor": encode_cursor("a")}, headers=key(env, "globex")
    )
    assert [d["id"] for d in theirs.json()["documents"]] == ["guide/part 1"]


@pytest.mark.parametrize("cursor", ["nope", "e30", encode_cursor("x")[:-2] + "!!", "eyJ2IjoyfQ"])
async def test_a_cursor_that_is_not_ours_is_a_422(
    api: tuple[Any, httpx.AsyncClient], env: Env, cursor: str
) -> None:
    _, client = api
    page = await client.get("/v1/documents", params={"cursor": cursor}, headers=key(env, "reader"))
    assert page.status_code == 422
    assert [e["field"] for e in page.json()["errors"]] == ["query.cursor"]


# -- the model, the index and the stores -------------------------------------------------


async def test_the_model_guard_refuses_a_collection_of_another_model(env: Env) -> None:
    collection = f"other-{uuid.uuid4().hex[:8]}"
    client = create_client(ChromaSettings(chroma_url=env.chroma_url))
    load_chroma(client, collection, acme_docs(), model=f"{PACKAGED_MODEL_NAME}+int8", dim=DIM)
    with capture_logs() as logs:
        async for _, api_client in app_client(settings_for(env, collection=collection)):
            response = await search(api_client, env, {"query": "consumer groups"})
    assert response.status_code == 503
    assert response.json()["error"] == (
        "search is unavailable: the index holds vectors of another embedding model than "
        "this server's"
    )
    assert "int8" not in response.text
    refused = [e for e in logs if e["event"].startswith("search refused")]
    assert refused and refused[0]["collection_model"] == f"{PACKAGED_MODEL_NAME}+int8"


async def test_an_embedded_chroma_folder_is_not_searched_from_the_api(env: Env) -> None:
    with capture_logs() as logs:
        async for app, client in app_client(settings_for(env, chroma_url=None)):
            response = await search(client, env, {"query": "consumer groups"})
            assert not app.state.search.loaded
    assert response.status_code == 503
    assert response.json()["error"] == "search is not available on this server"
    assert any("EMBEDSTREAM_CHROMA_URL" in e["event"] for e in logs)


async def test_a_chroma_server_that_does_not_answer_is_a_503_with_retry_after(
    env: Env, api: tuple[Any, httpx.AsyncClient]
) -> None:
    async for _, client in app_client(settings_for(env, chroma_url="http://127.0.0.1:9")):
        response = await search(client, env, {"query": "consumer groups"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "127.0.0.1" not in response.text


async def test_postgres_away_is_a_503_for_reads(env: Env) -> None:
    token = issue_token(
        AuthSettings(jwt_secret=JWT_SECRET), tenant="acme", scopes=["admin"], subject="t", ttl_s=300
    )
    settings = settings_for(env, database_url="postgresql://postgres@127.0.0.1:9/test")
    async for _, client in app_client(settings):
        headers = {"Authorization": f"Bearer {token}"}
        listed = await client.get("/v1/documents", headers=headers)
        one = await client.get("/v1/documents/x", headers=headers)
    for response in (listed, one):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"


async def test_too_many_searches_at_once_get_a_503(
    api: tuple[Any, httpx.AsyncClient], env: Env
) -> None:
    app, client = api
    service = app.state.search
    service._in_flight = service.max_in_flight  # as if that many were running
    try:
        response = await search(client, env, {"query": "consumer groups"})
    finally:
        service._in_flight = 0
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"


async def test_reads_count_against_the_credentials_rate_limit(env: Env) -> None:
    settings = settings_for(env)
    settings.api = ApiSettings(rate_limit="3/minute")
    async for _, client in app_client(settings):
        statuses = [
            (await client.get("/v1/documents", headers=key(env, "admin"))).status_code,
            (await search(client, env, {"query": "consumer groups"}, "admin")).status_code,
            (await client.get("/v1/documents/x", headers=key(env, "admin"))).status_code,
            (await search(client, env, {"query": "consumer groups"}, "admin")).status_code,
        ]
        limited = await client.get("/v1/documents", headers=key(env, "admin"))
    assert statuses == [200, 200, 404, 429]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


async def test_preload_loads_the_model_at_start(env: Env) -> None:
    async for app, _ in app_client(settings_for(env, search={"search_preload": True})):
        assert app.state.search.loaded


THIN_INGRESS = """
import asyncio, json, sys, httpx
from embedstream.api.app import create_app
from embedstream.config import Settings

async def main():
    app = create_app(Settings())
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        headers = {"X-API-Key": sys.argv[1]}
        statuses = [
            (await client.get("/v1/documents", headers=headers)).status_code,
            (await client.get("/v1/documents/guide%2Fpart%201", headers=headers)).status_code,
            (await client.post("/v1/documents", json={"text": "hi"}, headers=headers)).status_code,
        ]
        heavy = [m for m in ("torch", "onnxruntime", "chromadb", "sentence_transformers")
                 if m in sys.modules]
        report = {"statuses": statuses, "heavy": heavy, "loaded": app.state.search.loaded}
        print("REPORT", json.dumps(report), flush=True)

asyncio.run(main())
"""


async def test_an_api_that_does_not_search_loads_no_model(env: Env, tmp_path: Path) -> None:
    """In a fresh process: reads and writes answer, and neither the model's runtime nor
    Chroma's client was imported."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", THIN_INGRESS, env.keys["admin"]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={
            **os.environ,
            "EMBEDSTREAM_DATABASE_URL": PG_DSN,
            "EMBEDSTREAM_DATABASE_SCHEMA": env.schema,
            "EMBEDSTREAM_REDIS_URL": REDIS_URL,
            "EMBEDSTREAM_STREAM_PREFIX": prefix,
            "EMBEDSTREAM_CHROMA_URL": env.chroma_url,
            "EMBEDSTREAM_LOG_LEVEL": "WARNING",
        },
    )
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    assert report == {"statuses": [200, 200, 202], "heavy": [], "loaded": False}


async def test_search_embeds_with_the_workers_embedder(
    api: tuple[Any, httpx.AsyncClient], env: Env
) -> None:
    """The API's query vector is the embed stage's for the same text."""
    from embedstream.adapters.embedder import load_embedder

    app, _ = api
    service = app.state.search
    worker = await load_embedder(Settings().embed)
    try:
        text = "Consumer groups let several workers share one Redis stream."
        ours = await service.embed(text)
        theirs = (await worker.encode([text]))[0]
    finally:
        worker.close()
    assert service.model._embedder.backend == worker.backend
    assert float(np.dot(ours, theirs)) >= 0.99999
