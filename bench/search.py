"""Search over HTTP at 100,000 chunks: latency of vector and hybrid searches with
filters, throughput with 8 concurrent clients, and the API's memory with search on.

How the chunks get there (minutes, not hours): the stores are filled directly with the
adapter functions the workers use (``bench.search_data``), not through the model.
``--bases`` (2,000) chunk-sized passages of the Python documentation are encoded once
with the configured embedder (the API's own model and backend; cached in ``.data/``);
each of the 100,000 chunks takes one passage's text plus a sentence of its own and a
ticket number (``TK012345``: a rare exact term), and that passage's vector plus Gaussian
noise, renormalized (cosine ~0.9 to its passage): clustered, like real chunks, rather
than uniform random vectors. Five chunks make a document; documents carry ``source``
(10 values), ``year``, ``score`` (float), ``public`` and ``lang`` metadata; 90% belong to
the tenant that searches, 10% to another.

PostgreSQL is filled at migration 0004 and migration 0005 (the full-text column and its
GIN index) is applied to the populated table and timed. Chroma runs as a server
(``chroma run``), as in Compose and Kubernetes, and the API as its own process
(``embedstream api``), searched over HTTP with keep-alive.

Queries (``--queries`` 500, the same for both modes): documentation sentences; 40% with
no filter, 25% ``source`` equality, 15% a ``year`` range, 10% ``$and``/``$or`` of
several keys, 5% ``$in``, 5% ``where_document`` ``$contains``; in hybrid mode half of
them also name a ticket number. Each mode runs them one at a time (after 20 warm-up
searches) for p50/p99, then all 1,000 run over 8 concurrent clients for searches/s.
The API's RSS is read from /proc before the first search and after the last (VmRSS, and
the high-water mark VmHWM).

    python -m bench.search [--chunks 100000] [--queries 500] [--clients 8]

The last line is ``RESULT vector_p50_ms=... vector_p99_ms=... hybrid_p50_ms=...
search_rps=... api_rss_mb=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.corpus import _paragraphs
from bench.search_data import Doc, load_chroma, load_postgres, unit
from bench.stack import Stack, create_api_key, remove_stack_data, stack_env
from embedstream.adapters.chroma.collection import create_client
from embedstream.adapters.postgres import DocumentStore, available_migrations, create_pool
from embedstream.adapters.postgres.migrate import migrate
from embedstream.config import ChromaSettings, PostgresSettings, Settings

REDIS_URL = os.environ.get("EMBEDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get(
    "EMBEDSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CACHE = Path(__file__).resolve().parents[1] / ".data" / "bench-search"
TENANT, OTHER = "bench", "other"
SOURCES = [f"src{n}" for n in range(10)]
CHUNKS_PER_DOC = 5


def sentences() -> list[str]:
    found = []
    for paragraph in _paragraphs():
        found.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+", paragraph))
    return [s for s in dict.fromkeys(found) if 6 <= len(s.split()) <= 40]


def passages(count: int) -> list[str]:
    """``count`` chunk-sized (80-120 words) windows of the documentation."""
    words = " ".join(_paragraphs()).split()
    rng = random.Random(3)
    out = []
    for _ in range(count):
        start = rng.randrange(len(words) - 150)
        out.append(" ".join(words[start : start + rng.randint(80, 120)]))
    return out


def encode_once(texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The embedder's vectors for ``texts``, cached by content."""
    from embedstream.adapters.embedder import load_embedder

    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    settings = Settings().embed
    path = CACHE / f"vectors-{settings.resolved_backend}-{digest}.npy"
    if path.exists():
        return np.load(path)  # type: ignore[no-any-return]

    async def run() -> np.ndarray[Any, np.dtype[np.float32]]:
        embedder = await load_embedder(settings)
        try:
            return await embedder.encode(texts)
        finally:
            embedder.close()

    started = time.perf_counter()
    vectors = asyncio.run(run())
    print(f"encoded {len(texts)} passages once in {time.perf_counter() - started:.1f}s")
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def build_corpus(chunks: int, bases: int) -> tuple[list[Doc], int]:
    texts = passages(bases)
    vectors = encode_once(texts)
    extra = sentences()
    rng = random.Random(7)
    noise = np.random.default_rng(7)
    docs = []
    for d in range(chunks // CHUNKS_PER_DOC):
        tenant = OTHER if d % 10 == 9 else TENANT
        chunk_texts, chunk_vectors = [], []
        for i in range(CHUNKS_PER_DOC):
            n = d * CHUNKS_PER_DOC + i
            base = rng.randrange(bases)
            chunk_texts.append(f"{texts[base]} {rng.choice(extra)} See ticket TK{n:06d}.")
            chunk_vectors.append(unit(vectors[base] + noise.normal(0, 0.02, vectors.shape[1])))
        metadata = {
            "source": rng.choice(SOURCES),
            "year": 2015 + d % 10,
            "score": round(rng.uniform(0, 5), 2),
            "public": d % 3 == 0,
            "lang": ("en", "de", "fr")[d % 3],
        }
        docs.append(Doc(tenant, f"doc-{d:06d}", chunk_texts, chunk_vectors, metadata))
    return docs, int(vectors.shape[1])


def queries(count: int, chunks: int, *, hybrid: bool) -> list[dict[str, Any]]:
    rng = random.Random(11 if hybrid else 13)
    pool = sentences()
    out = []
    for n in range(count):
        text = rng.choice(pool)
        body: dict[str, Any] = {
            "query": text,
            "limit": 10,
            "mode": "hybrid" if hybrid else "vector",
        }
        if hybrid and n % 2 == 0:
            body["query"] = f"ticket TK{rng.randrange(chunks):06d} {text}"
        kind = n % 20
        if 8 <= kind < 13:
            body["where"] = {"source": rng.choice(SOURCES)}
        elif 13 <= kind < 16:
            body["where"] = {"year": {"$gte": rng.randint(2015, 2022)}}
        elif 16 <= kind < 18:
            body["where"] = {
                "$or": [{"lang": "de"}, {"$and": [{"public": True}, {"score": {"$gt": 2.5}}]}]
            }
        elif kind == 18:
            body["where"] = {"source": {"$in": rng.sample(SOURCES, 3)}}
        elif kind == 19:
            body["where_document"] = {"$contains": rng.choice(text.split()[:6])}
        out.append(body)
    return out


def kind_of(body: dict[str, Any]) -> str:
    """What a query filters on, for the per-kind figures."""
    where = body.get("where") or {}
    if "where_document" in body:
        return "where_document"
    if "$or" in where:
        return "$or/$and"
    if isinstance(where.get("source"), dict):
        return "$in"
    if "source" in where:
        return "$eq"
    if "year" in where:
        return "$gte"
    return "no filter"


def plans(log: Path) -> dict[str, int]:
    """How the vector half ran, counted from the API's log lines."""
    found: dict[str, int] = {}
    for plan in re.findall(r"plan=(\w+)", log.read_text(errors="replace")):
        found[plan] = found.get(plan, 0) + 1
    return found


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            fields[line.split(":")[0]] = int(line.split()[1]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


async def timed(client: httpx.AsyncClient, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = await client.post("/v1/search", json=body)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"search failed: {response.status_code} {response.text[:300]}")
    return elapsed


async def sequential(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> list[float]:
    return [await timed(client, body) for body in bodies]


async def concurrent(
    client: httpx.AsyncClient, bodies: list[dict[str, Any]], clients: int
) -> float:
    todo = list(bodies)

    async def worker() -> None:
        while todo:
            await timed(client, todo.pop())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(bodies) / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def load(stack: Stack, docs: list[Doc], dim: int) -> dict[str, float]:
    figures = {}
    before = [m for m in available_migrations() if m.version < 5]
    await migrate(PG_DSN, stack.schema, migrations=before)
    pool = await create_pool(PostgresSettings(database_url=PG_DSN, database_schema=stack.schema))
    try:
        started = time.perf_counter()
        await load_postgres(DocumentStore(pool), docs, model=_model_name(), dim=dim)
        figures["load_postgres_s"] = time.perf_counter() - started
    finally:
        await pool.close()
    started = time.perf_counter()
    await migrate(PG_DSN, stack.schema)
    figures["migration_0005_s"] = time.perf_counter() - started
    started = time.perf_counter()
    settings = ChromaSettings(chroma_url=stack.env["EMBEDSTREAM_CHROMA_URL"])
    await asyncio.to_thread(
        load_chroma, create_client(settings), "embedstream", docs, model=_model_name(), dim=dim
    )
    figures["load_chroma_s"] = time.perf_counter() - started
    return figures


def _model_name() -> str:
    from embedstream.adapters.embedder import PACKAGED_MODEL_NAME, model_name

    return model_name(PACKAGED_MODEL_NAME, Settings().embed.resolved_backend)


async def measure(stack: Stack, args: argparse.Namespace) -> dict[str, float]:
    api = stack.procs["api"].pid
    figures: dict[str, float] = {}
    figures["api_rss_thin_mb"] = rss_mb(api)[0]
    vector = queries(args.queries, args.chunks, hybrid=False)
    hybrid = queries(args.queries, args.chunks, hybrid=True)
    async with httpx.AsyncClient(
        base_url=stack.url,
        headers=stack.headers,
        timeout=60,
        limits=httpx.Limits(max_connections=args.clients),
    ) as client:
        started = time.perf_counter()
        await timed(client, vector[0])
        figures["first_search_s"] = time.perf_counter() - started
        await sequential(client, vector[-10:] + hybrid[-10:])  # warm-up
        for name, bodies in (("vector", vector), ("hybrid", hybrid)):
            times = await sequential(client, bodies)
            figures[f"{name}_p50_ms"] = pct(times, 50)
            figures[f"{name}_p99_ms"] = pct(times, 99)
            figures[f"{name}_mean_ms"] = statistics.fmean(times)
            for kind in sorted({kind_of(b) for b in bodies}):
                these = [t for t, b in zip(times, bodies, strict=True) if kind_of(b) == kind]
                figures[f"{name}:{kind}:p50"] = pct(these, 50)
                figures[f"{name}:{kind}:p99"] = pct(these, 99)
        mixed = [b for pair in zip(vector, hybrid, strict=True) for b in pair]
        figures["search_rps"] = await concurrent(client, mixed, args.clients)
        figures["vector_rps"] = await concurrent(client, vector, args.clients)
    figures["api_rss_mb"], figures["api_hwm_mb"] = rss_mb(api)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--bases", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    load_before = os.getloadavg()
    docs, dim = build_corpus(args.chunks, args.bases)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        env, names, schema, port = stack_env(tmp, redis_url=REDIS_URL, database_url=PG_DSN)
        (tmp / "logs").mkdir()
        stack = Stack(env, f"http://127.0.0.1:{port}", names, schema, tmp / "chroma", tmp / "logs")
        stack.env["EMBEDSTREAM_RATE_LIMIT"] = ""
        try:
            stack.start_chroma_server()
            figures = asyncio.run(load(stack, docs, dim))
            stack.api_key = create_api_key(stack.env, TENANT, "search:read", name="bench")
            stack.start("api", "api")
            stack.wait_ready()
            figures.update(asyncio.run(measure(stack, args)))
            searched_by = plans(stack.log_dir / "api.log")
        finally:
            stack.stop_all()
            asyncio.run(remove_stack_data(stack))
    load_after = os.getloadavg()
    print(
        f"\n{args.chunks} chunks ({sum(d.tenant == TENANT for d in docs) * CHUNKS_PER_DOC} of "
        f"the searching tenant), {args.queries} queries per mode, {args.clients} clients; "
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"({os.cpu_count()} CPUs)"
    )
    print(
        f"loading: PostgreSQL {figures['load_postgres_s']:.1f}s, migration 0005 on the "
        f"populated table {figures['migration_0005_s']:.1f}s, "
        f"Chroma {figures['load_chroma_s']:.1f}s"
    )
    print(f"{'mode':<8}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name in ("vector", "hybrid"):
        print(
            f"{name:<8}{figures[f'{name}_p50_ms']:>10.1f}{figures[f'{name}_p99_ms']:>10.1f}"
            f"{figures[f'{name}_mean_ms']:>10.1f}"
        )
    kinds = sorted({key.split(":")[1] for key in figures if key.count(":") == 2})
    print(
        "p50 / p99 ms per filter: "
        + "; ".join(
            f"{kind} {figures[f'vector:{kind}:p50']:.0f}/{figures[f'vector:{kind}:p99']:.0f} "
            f"(hybrid {figures[f'hybrid:{kind}:p50']:.0f}/{figures[f'hybrid:{kind}:p99']:.0f})"
            for kind in kinds
        )
    )
    print(f"vector half plans: {searched_by}")
    print(
        f"throughput, {args.clients} clients: {figures['search_rps']:.1f} searches/s "
        f"(half vector, half hybrid), {figures['vector_rps']:.1f}/s vector only"
    )
    print(
        f"API RSS: {figures['api_rss_thin_mb']:.0f} MiB before any search; "
        f"{figures['api_rss_mb']:.0f} MiB after (peak {figures['api_hwm_mb']:.0f} MiB); "
        f"first search (loads the model) {figures['first_search_s']:.2f}s"
    )
    print(
        f"RESULT vector_p50_ms={figures['vector_p50_ms']:.1f} "
        f"vector_p99_ms={figures['vector_p99_ms']:.1f} "
        f"hybrid_p50_ms={figures['hybrid_p50_ms']:.1f} "
        f"search_rps={figures['search_rps']:.1f} api_rss_mb={figures['api_rss_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
