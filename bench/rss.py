"""Peak memory (RSS) of each process of a deployment under load: the figures the
Kubernetes requests and limits in deploy/k8s are sized from.

The API and one embed, index and persist worker run as separate processes with their
production defaults (batch size 100, 2 batches in flight), the index worker against a
Chroma server (`chroma run`, as in Compose and Kubernetes). ``--docs`` generated
documents of 200-1,000 words go in through the API, ``--per-request`` per POST, and the
run ends when every job has completed. Each process's peak is the kernel's high-water
mark (``VmHWM`` in /proc/PID/status), read just before it is stopped.

    python -m bench.rss [--docs 200] [--per-request 50]

The last line is ``RESULT rss_api_mb=<x> rss_embed_mb=<x> rss_index_mb=<x>
rss_persist_mb=<x> rss_chroma_mb=<x>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis.asyncio as redis

from bench.corpus import generate
from bench.stack import Stack, create_stack, free_port, remove_stack_data
from embedstream.schemas.envelope import Envelope

REDIS_URL = os.environ.get("EMBEDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get(
    "EMBEDSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PROCESSES = ("api", "embed", "index", "persist")


def peak_rss_mb(pid: int) -> float:
    """The process's high-water RSS in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def start_chroma(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    proc = subprocess.Popen(
        [str(chroma), "run", "--path", str(tmp / "chroma-server"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).is_success:
                return proc, port
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("chroma run did not start")
        time.sleep(0.2)


async def wait_completed(stack: Stack, jobs: set[str], timeout: float) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + timeout
        done: set[str] = set()
        while not jobs <= done:
            for _, fields in await client.xrange(stack.names.results):
                envelope = Envelope.from_fields(fields)
                if envelope.type in ("job.completed.v1", "job.failed.v1"):
                    done.add(json.loads(envelope.data)["job_id"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(jobs - done)} jobs not finished in {timeout}s")
            await asyncio.sleep(0.5)
    finally:
        await client.aclose()


def run(docs: int, per_request: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        chroma, port = start_chroma(tmp)
        stack = create_stack(tmp, redis_url=REDIS_URL, database_url=PG_DSN)
        stack.env["EMBEDSTREAM_CHROMA_URL"] = f"http://127.0.0.1:{port}"
        try:
            stack.start("api", "api")
            for kind in ("embed", "index", "persist"):
                stack.start_worker(kind, kind)
            stack.wait_ready()
            texts = generate(docs, seed=11)
            jobs: set[str] = set()
            started = time.perf_counter()
            for first in range(0, docs, per_request):
                body = {
                    "documents": [
                        {"id": f"doc-{n}", "text": texts[n]}
                        for n in range(first, min(docs, first + per_request))
                    ]
                }
                reply = httpx.post(f"{stack.url}/v1/documents", json=body,
                                   headers=stack.headers, timeout=60)  # fmt: skip
                reply.raise_for_status()
                jobs.add(reply.json()["job_id"])
            asyncio.run(wait_completed(stack, jobs, timeout=1800))
            elapsed = time.perf_counter() - started
            peaks = {name: peak_rss_mb(stack.procs[name].pid) for name in PROCESSES}
            peaks["chroma"] = peak_rss_mb(chroma.pid)
            print(f"{docs} documents in {elapsed:.1f}s")
            return peaks
        finally:
            stack.stop_all()
            chroma.terminate()
            chroma.wait(30)
            asyncio.run(remove_stack_data(stack))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--per-request", type=int, default=50)
    args = parser.parse_args()
    peaks = run(args.docs, args.per_request)
    print("| process | peak RSS (MiB) |\n|---|---|")
    for name, mb in peaks.items():
        print(f"| {name} | {mb:.0f} |")
    print("RESULT " + " ".join(f"rss_{name}_mb={mb:.0f}" for name, mb in peaks.items()))


if __name__ == "__main__":
    main()
