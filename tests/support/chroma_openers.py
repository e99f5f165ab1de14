"""Open one embedded Chroma folder from several processes at the same moment, the way
index workers starting together do: each process imports Chroma, waits at a barrier,
then runs ``ChromaIndex.open()``. Returns what each process saw."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from pathlib import Path
from typing import Any

from embedstream.adapters.chroma.index import ChromaIndex
from embedstream.config import ChromaSettings


def _open(folder: str, barrier: Any, results: Any, n: int) -> None:
    os.environ["ANONYMIZED_TELEMETRY"] = "False"
    index = ChromaIndex(ChromaSettings(chroma_path=Path(folder), chroma_url=None))
    try:
        barrier.wait(timeout=60)
        asyncio.run(index.open())
        results.put((n, "ok"))
    except Exception as exc:
        results.put((n, f"{type(exc).__name__}: {exc}"))
    finally:
        index.close()


def open_together(folder: Path, processes: int) -> list[str]:
    """Outcomes ("ok" or the error) of ``processes`` simultaneous opens of ``folder``."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    procs = [
        context.Process(target=_open, args=(str(folder), barrier, results, n))
        for n in range(processes)
    ]
    for proc in procs:
        proc.start()
    outcomes = dict(results.get(timeout=180) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
    return [outcomes[n] for n in range(processes)]
