"""Why an embedded Chroma folder gets one writer (``embedstream.adapters.chroma.folder``).

Side by side in one run: two processes write distinct vectors into one embedded folder,
first one after the other, then at the same time (plain ``PersistentClient``s, no
embedstream lock). Then every vector is queried for its own id. Printed: how many of
them the search no longer finds although ``count()`` has them all.

    python -m bench.chroma_writers [--batches 20] [--per-batch 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DIM = 8
COLLECTION = "writers"

WRITER = """
import sys, time
import chromadb, numpy as np
from chromadb.config import Settings
path, who, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
col = client.get_or_create_collection("writers", embedding_function=None)
rng = np.random.default_rng(who)
for b in range(batches):
    vectors = rng.normal(size=(size, 8)).astype(np.float32)
    np.save(f"{path}/../v{who}-{b}.npy", vectors)
    col.upsert(ids=[f"p{who}-{b}-{i}" for i in range(size)], embeddings=vectors)
    time.sleep(0.05)
"""


def create(path: Path) -> None:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(
        path=str(path), settings=Settings(anonymized_telemetry=False)
    )
    client.get_or_create_collection(COLLECTION, embedding_function=None)


def write(path: Path, batches: int, size: int, *, together: bool) -> None:
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    args = [str(path), "{who}", str(batches), str(size)]
    commands = [[sys.executable, "-c", WRITER, *(a.format(who=w) for a in args)] for w in (1, 2)]
    if together:
        procs = [subprocess.Popen(c, env=env) for c in commands]
        for proc in procs:
            assert proc.wait() == 0
    else:
        for command in commands:
            subprocess.run(command, env=env, check=True)


def unfindable(path: Path, batches: int) -> tuple[int, int, int]:
    """(records counted, vectors queried, vectors whose own id is not the nearest)."""
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(
        path=str(path), settings=Settings(anonymized_telemetry=False)
    )
    col = client.get_collection(COLLECTION, embedding_function=None)
    queried = missed = 0
    for who in (1, 2):
        for b in range(batches):
            vectors = np.load(path.parent / f"v{who}-{b}.npy")
            found = col.query(query_embeddings=vectors, n_results=1)
            for i, ids in enumerate(found["ids"]):
                queried += 1
                missed += ids[0] != f"p{who}-{b}-{i}"
    return col.count(), queried, missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--per-batch", type=int, default=50)
    args = parser.parse_args()
    results = {}
    for name, together in (("sequential", False), ("concurrent", True)):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "chroma"
            create(path)
            write(path, args.batches, args.per_batch, together=together)
            results[name] = unfindable(path, args.batches)
    print(f"{'writers':12}{'count':>8}{'queried':>9}{'unfindable':>12}")
    for name, (count, queried, missed) in results.items():
        print(f"{name:12}{count:>8}{queried:>9}{missed:>12}")
    print(
        f"RESULT sequential_unfindable={results['sequential'][2]} "
        f"concurrent_unfindable={results['concurrent'][2]} queried={results['concurrent'][1]}"
    )


if __name__ == "__main__":
    main()
