"""Embedding backends side by side: torch, onnx (fp32) and onnx-int8.

One run, the same texts and the same threads for every backend, each backend in its own
child process (so no backend's threads or memory touch another's), through the
``Embedder`` the embed worker uses (length-sorted sub-batches within its token budget):

1. throughput, chunks/s: ~250-token passages (full chunker windows) and short texts
   (section titles and sentences of 3-40 words); ``--rounds`` rounds in turn, best kept;
   peak RSS of each child;
2. int8 quality: recall@10 of int8 neighbours against fp32 neighbours, over ``--chunks``
   chunks of a real text collection with ``--queries`` queries (section titles), and
   the cosine of each int8 vector to its fp32 vector.

The collection is the Python documentation's reStructuredText sources, a public text set
from Debian's registry (``apt-get install python3.11-doc``: /usr/share/doc/python3.11/
html/_sources, ~500 pages, ~15,000 chunks), cut by the project's own chunker; pass
``--corpus DIR`` for any folder of text files.

    python -m bench.embed_backends [--corpus DIR] [--chunks 10000] [--queries 300]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("torch", "onnx", "onnx-int8")
HEADING = re.compile(r"([=\-~^*#\"'`+])\1{2,}")
ROOT = Path(__file__).resolve().parents[1]


def default_corpus() -> Path | None:
    found = sorted(
        p.resolve()
        for p in Path("/usr/share/doc").glob("python3.*/html/_sources")
        if "-" not in p.parts[-3]
    )
    return found[-1] if found else None


def read_corpus(root: Path) -> tuple[list[str], list[str]]:
    """Documents (``.txt``/``.rst``/``.md`` files, sorted) and their section titles."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".txt", ".rst", ".md"))
    documents, titles = [], []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        documents.append(text)
        lines = text.splitlines()
        for line, under in itertools.pairwise(lines):
            title = line.strip()
            if (
                HEADING.fullmatch(under.strip())
                and 2 <= len(title.split()) <= 12
                and not title.startswith((".. ", ":"))
            ):
                titles.append(title)
    return documents, list(dict.fromkeys(titles))


def build_texts(corpus: Path, n_chunks: int, n_queries: int, seed: int) -> dict[str, list[str]]:
    from embedstream.adapters.chunking import Chunker, special_token_count
    from embedstream.adapters.embedder import resolve_model
    from embedstream.adapters.model_folder import ModelFolder
    from embedstream.adapters.onnx_encoder import load_tokenizer

    folder = ModelFolder(resolve_model(None).path)
    tokenizer = load_tokenizer(folder)
    size = (folder.max_seq_length or 256) - special_token_count(tokenizer)
    chunker = Chunker(tokenizer, chunk_tokens=size, overlap=32)
    documents, titles = read_corpus(corpus)
    chunks = [c for doc in chunker.split_many(documents) for c in doc]
    rng = random.Random(seed)
    if len(chunks) < n_chunks:
        raise SystemExit(f"{corpus} gives {len(chunks)} chunks, fewer than --chunks {n_chunks}")
    if len(titles) < n_queries:
        raise SystemExit(f"{corpus} gives {len(titles)} titles, fewer than --queries {n_queries}")
    collection = [c.text for c in rng.sample(chunks, n_chunks)]
    passages = [c.text for c in chunks if c.tokens >= size - 16]
    sentences = [
        s.strip()
        for doc in documents[:200]
        for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split()))
        if 3 <= len(s.split()) <= 40 and not s.lstrip().startswith((".. ", ":", "*", "="))
    ]
    return {
        "passages": rng.sample(passages, min(96, len(passages))),
        "short": rng.sample(titles, 256) + rng.sample(sentences, 256),
        "collection": collection,
        "queries": rng.sample(titles, n_queries),
    }


# -- the child: one backend ---------------------------------------------------------


def child(backend: str, texts_file: Path, out_dir: Path, task: str) -> None:
    from embedstream.adapters.embedder import Embedder
    from embedstream.config import EmbedSettings

    texts: dict[str, list[str]] = json.loads(texts_file.read_text(encoding="utf-8"))
    embedder = Embedder.load(EmbedSettings(backend=backend))  # type: ignore[arg-type]
    result: dict[str, Any] = {"backend": backend, "model": embedder.name}
    embedder.encode_sync(texts["passages"][:8] + texts["short"][:32])  # warm-up
    if task == "speed":
        for kind in ("passages", "short"):
            started = time.perf_counter()
            embedder.encode_sync(texts[kind])
            result[kind] = len(texts[kind]) / (time.perf_counter() - started)
    else:
        for kind in ("collection", "queries"):
            np.save(out_dir / f"{backend}-{kind}.npy", embedder.encode_sync(texts[kind]))
    embedder.close()
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_child(backend: str, texts_file: Path, out_dir: Path, task: str, threads: int) -> Any:
    env = {
        **os.environ,
        "EMBEDSTREAM_EMBED_THREADS": str(threads),
        "EMBEDSTREAM_LOG_LEVEL": "WARNING",
    }
    env.setdefault("EMBEDSTREAM_MODEL_CACHE", str(ROOT / ".data" / "models"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.embed_backends",
            "--child",
            backend,
            "--task",
            task,
            "--texts-file",
            str(texts_file),
            "--out-dir",
            str(out_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{backend} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def recall_at(k: int, queries: Any, collection: Any, ref_q: Any, ref_c: Any) -> float:
    ours = np.argsort(-(queries @ collection.T), axis=1)[:, :k]
    theirs = np.argsort(-(ref_q @ ref_c.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--task", default="speed", help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        child(args.child, args.texts_file, args.out_dir, args.task)
        return

    from embedstream.cpus import available_cpus

    threads = args.threads or available_cpus()
    corpus = args.corpus or default_corpus()
    if corpus is None or not corpus.is_dir():
        raise SystemExit("no corpus: `apt-get install python3.11-doc` or pass --corpus DIR")
    texts = build_texts(corpus, args.chunks, args.queries, args.seed)
    load = os.getloadavg()
    print(
        f"corpus {corpus}: {len(texts['collection'])} chunks, {len(texts['queries'])} queries; "
        f"{len(texts['passages'])} passages, {len(texts['short'])} short texts; "
        f"{threads} threads; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        texts_file = out / "texts.json"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for backend in BACKENDS:
                r = run_child(backend, texts_file, out, "speed", threads)
                keep = best.setdefault(backend, r)
                for kind in ("passages", "short"):
                    keep[kind] = max(keep[kind], r[kind])
        print(
            f"{'backend':<10} {'passages/s':>11} {'short/s':>9} {'vs torch':>14} {'peak RSS':>10}"
        )
        torch = best["torch"]
        for backend in BACKENDS:
            r = best[backend]
            ratio = f"{r['passages'] / torch['passages']:.2f}x / {r['short'] / torch['short']:.2f}x"
            print(
                f"{backend:<10} {r['passages']:>11.1f} {r['short']:>9.1f} {ratio:>14} "
                f"{r['peak_rss_mb']:>8.0f}MB"
            )
        started = time.perf_counter()
        for backend in ("onnx", "onnx-int8"):
            run_child(backend, texts_file, out, "vectors", threads)
        fp32 = {k: np.load(out / f"onnx-{k}.npy") for k in ("collection", "queries")}
        int8 = {k: np.load(out / f"onnx-int8-{k}.npy") for k in ("collection", "queries")}
    recall = recall_at(10, int8["queries"], int8["collection"], fp32["queries"], fp32["collection"])
    cosine = (int8["collection"] * fp32["collection"]).sum(axis=1)
    print(
        f"int8 vs fp32 over {len(cosine)} chunks, {len(fp32['queries'])} queries: recall@10 "
        f"{recall:.3f}; cosine mean {cosine.mean():.4f}, min {cosine.min():.4f} "
        f"({time.perf_counter() - started:.0f}s)"
    )
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        f"RESULT onnx_vs_torch={best['onnx']['passages'] / torch['passages']:.2f} "
        f"int8_vs_torch={best['onnx-int8']['passages'] / torch['passages']:.2f} "
        f"int8_recall_at_10={recall:.3f} "
        f"onnx_vs_torch_short={best['onnx']['short'] / torch['short']:.2f} "
        f"int8_vs_torch_short={best['onnx-int8']['short'] / torch['short']:.2f}"
    )


if __name__ == "__main__":
    main()
