"""The whole pipeline against the raw encode of the same chunks on the same backend.

Side by side in one run, on this machine (everything shares the same cores):
1. raw: the embedding backend the workers run (``--backend``, default the configured
   one: onnx on CPU) encoding exactly the chunks the pipeline will produce, in a child
   process, through the embedder's own length-sorted batches; torch's raw figure too
   (``--no-torch`` skips it), for what the backend changes end to end;
2. pipeline: the API, one embed, one index and one persist worker as separate processes,
   from the first POST to the last ``job.completed`` (chunks per second);
3. raw again (the machine is noisy: the pipeline is compared with the mean of both);
4. latency of one short document at idle: POST to ``job.completed`` seen on the results
   stream, p50 and p99.
Where the CPU went (per process) and the embed worker's peak RSS are printed too.

    python -m bench.pipeline [--docs 60] [--latency 60] [--backend onnx|onnx-int8|torch]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis.asyncio as redis

from bench.corpus import generate
from bench.stack import MODEL_CACHE, Stack, create_stack, remove_stack_data
from embedstream.schemas.envelope import attributes_of

REDIS_URL = os.environ.get("EMBEDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get(
    "EMBEDSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def chunk_texts(texts: list[str]) -> list[str]:
    """The chunks the embed worker makes of ``texts`` (its chunker, default settings; the
    tokenizer is the model folder's, whatever the backend)."""
    from embedstream.adapters.chunking import Chunker, special_token_count
    from embedstream.adapters.embedder import resolve_model
    from embedstream.adapters.model_folder import ModelFolder
    from embedstream.adapters.onnx_encoder import load_tokenizer
    from embedstream.config import EmbedSettings

    settings = EmbedSettings()
    folder = ModelFolder(resolve_model(settings.model).path)
    tokenizer = load_tokenizer(folder)
    limit = (folder.max_seq_length or 256) - special_token_count(tokenizer)
    chunker = Chunker(tokenizer, chunk_tokens=settings.chunk_tokens or limit, overlap=32)
    return [c.text for doc in chunker.split_many(texts) for c in doc]


def raw_encode(chunks: list[str], backend: str) -> float:
    """Chunks per second of the backend's embedder alone, in a child process."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(chunks, handle)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.pipeline", "--raw", backend, "--chunks", handle.name],
            env={**os.environ, "EMBEDSTREAM_LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        raise SystemExit(f"raw encode on {backend} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def raw_child(backend: str, chunks_file: Path) -> None:
    from embedstream.adapters.embedder import Embedder
    from embedstream.config import EmbedSettings

    chunks = json.loads(chunks_file.read_text(encoding="utf-8"))
    embedder = Embedder.load(EmbedSettings(backend=backend))  # type: ignore[arg-type]
    embedder.encode_sync(chunks[:8])  # warm-up
    started = time.perf_counter()
    embedder.encode_sync(chunks)
    print(len(chunks) / (time.perf_counter() - started))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def redis_pid(client: redis.Redis) -> int:
    info = await client.info("server")
    return int(info["process_id"])


async def wait_jobs(client: redis.Redis, stack: Stack, jobs: set[str], last_id: str) -> str:
    """Read the results stream until every job in ``jobs`` has finished."""
    pending = set(jobs)
    while pending:
        reply = await client.xread({stack.names.results: last_id}, block=1000, count=100)
        if not reply:
            continue
        for entry_id, fields in reply[0][1]:
            last_id = entry_id.decode()
            event_type = attributes_of(fields).get("type")
            if event_type == "job.failed.v1":
                raise SystemExit(f"a job failed: {fields[b'data'].decode()}")
            if event_type == "job.completed.v1":
                pending.discard(json.loads(fields[b"data"])["job_id"])
    return last_id


async def post(client: httpx.AsyncClient, documents: list[dict[str, object]]) -> str:
    response = await client.post("/v1/documents", json={"documents": documents})
    response.raise_for_status()
    job_id: str = response.json()["job_id"]
    return job_id


async def run_pipeline(
    stack: Stack, texts: list[str], n_chunks: int, latency_samples: int
) -> dict[str, float]:
    client = redis.Redis.from_url(REDIS_URL)
    http = httpx.AsyncClient(base_url=stack.url, headers=stack.headers, timeout=60)
    try:
        last = "0-0"  # a fresh prefix: every result on the stream is ours
        warm = await post(http, [{"id": "warm-up", "text": "warming up the pipeline"}])
        last = await wait_jobs(client, stack, {warm}, last)

        pids = {name: proc.pid for name, proc in stack.procs.items()}
        pids["redis-server"] = await redis_pid(client)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        jobs = set()
        for start in range(0, len(texts), 20):
            batch = texts[start : start + 20]
            jobs.add(
                await post(
                    http, [{"id": f"doc-{start + i}", "text": t} for i, t in enumerate(batch)]
                )
            )
        last = await wait_jobs(client, stack, jobs, last)
        elapsed = time.perf_counter() - started
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        embed_rss = peak_rss_mb(pids["embed-0"])

        latencies = []
        for n in range(latency_samples):
            t0 = time.perf_counter()
            job = await post(http, [{"id": f"short-{n}", "text": f"A short note number {n}."}])
            last = await wait_jobs(client, stack, {job}, last)
            latencies.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.05)
    finally:
        await http.aclose()
        await client.aclose()
    latencies.sort()
    result = {
        "pipeline_chunks_per_s": n_chunks / elapsed,
        "pipeline_s": elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "embed_peak_rss_mb": embed_rss,
    }
    result.update({f"cpu_{name}": seconds for name, seconds in cpu.items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=60, help="documents of 200-1,000 words")
    parser.add_argument("--latency", type=int, default=60, help="latency samples")
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx", "onnx-int8"),
        default=None,
        help="EMBEDSTREAM_BACKEND of the workers (default: as configured, onnx on CPU)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip torch's raw figure")
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--chunks", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("EMBEDSTREAM_MODEL_CACHE", str(MODEL_CACHE))
    if args.raw:
        raw_child(args.raw, args.chunks)
        return
    from embedstream.config import EmbedSettings

    if args.backend:
        os.environ["EMBEDSTREAM_BACKEND"] = args.backend
    backend = EmbedSettings().resolved_backend
    texts = generate(args.docs, seed=21)
    chunks = chunk_texts(texts)
    print(f"corpus: {len(texts)} documents, {len(chunks)} chunks; backend {backend}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    with tempfile.TemporaryDirectory() as tmp:
        stack = create_stack(Path(tmp), redis_url=REDIS_URL, database_url=PG_DSN)
        try:
            stack.start("api", "api")
            for kind in ("embed", "index", "persist"):
                stack.start_worker(kind, f"{kind}-0")
            stack.wait_ready()
            raw_before = raw_encode(chunks, backend)
            print(f"raw encode ({backend}):  {raw_before:8.1f} chunks/s")
            result = asyncio.run(run_pipeline(stack, texts, len(chunks), args.latency))
            print(
                f"pipeline:    {result['pipeline_chunks_per_s']:8.1f} chunks/s "
                f"({result['pipeline_s']:.1f}s, API to last job.completed)"
            )
            raw_after = raw_encode(chunks, backend)
            print(f"raw encode ({backend}):  {raw_after:8.1f} chunks/s (again)")
            if backend != "torch" and not args.no_torch:
                raw_torch = raw_encode(chunks, "torch")
                print(f"raw encode (torch): {raw_torch:8.1f} chunks/s (for comparison)")
        finally:
            stack.stop_all()
            asyncio.run(remove_stack_data(stack))
    raw = (raw_before + raw_after) / 2
    print("CPU seconds during the pipeline run, per process:")
    for key, value in sorted(result.items()):
        if key.startswith("cpu_"):
            print(f"  {key[4:]:<14} {value:7.2f}")
    print(f"embed worker peak RSS ({backend}): {result['embed_peak_rss_mb']:.0f} MB")
    print(
        f"latency of one short document at idle: p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms ({args.latency} samples)"
    )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ratio = result["pipeline_chunks_per_s"] / raw
    print(
        f"RESULT pipeline_vs_raw={ratio:.2f} "
        f"pipeline_chunks_per_s={result['pipeline_chunks_per_s']:.1f} "
        f"embed_peak_rss_mb={result['embed_peak_rss_mb']:.0f} "
        f"p50_ms={result['p50_ms']:.1f} p99_ms={result['p99_ms']:.1f}"
    )


if __name__ == "__main__":
    main()
