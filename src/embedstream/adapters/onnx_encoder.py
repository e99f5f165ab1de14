"""The ONNX Runtime encoder: ``tokenizers`` + ``onnxruntime`` + numpy, nothing else.

``OnnxEncoder.encode`` does what ``SentenceTransformer.encode`` does for a folder of
Transformer -> Pooling (-> Normalize) modules: tokenize (the folder's ``tokenizer.json``,
truncated to ``max_seq_length``, padded to the longest text of the batch), run the
exported graph for the token embeddings, pool them as the folder's pooling config says
and L2-normalize when it has a Normalize module (or the caller asks). No torch,
transformers or sentence-transformers is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer, normalizers

from embedstream.adapters.model_folder import ModelFolder

Array = npt.NDArray[np.float32]

#: Graph inputs the exporter may declare, and which ``Encoding`` field feeds each.
INPUT_FIELDS = {
    "input_ids": "ids",
    "attention_mask": "attention_mask",
    "token_type_ids": "type_ids",
}


def load_tokenizer(folder: ModelFolder) -> Tokenizer:
    """The folder's fast tokenizer as sentence-transformers configures it: lower-casing
    when ``do_lower_case`` is set, truncation at ``max_seq_length``, no padding."""
    tokenizer = Tokenizer.from_file(str(folder.tokenizer_file))
    if folder.do_lower_case:
        current = tokenizer.normalizer
        tokenizer.normalizer = (
            normalizers.Sequence([current, normalizers.Lowercase()])
            if current is not None
            else normalizers.Lowercase()
        )
    tokenizer.no_padding()
    if folder.max_seq_length:
        tokenizer.enable_truncation(folder.max_seq_length)
    return tokenizer


def pool(modes: Sequence[str], tokens: Array, mask: npt.NDArray[np.int64]) -> Array:
    """Sentence vectors from token embeddings ``(batch, seq, dim)`` and the attention
    mask, one block per mode, concatenated in order (as sentence-transformers' Pooling)."""
    weights = mask.astype(np.float32)[:, :, None]
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    parts: list[Array] = []
    for mode in modes:
        if mode == "cls":
            first = mask.argmax(axis=1)
            parts.append(tokens[np.arange(len(tokens)), first])
        elif mode == "max":
            parts.append(np.where(weights > 0, tokens, -np.inf).max(axis=1).astype(np.float32))
        elif mode == "mean":
            parts.append((tokens * weights).sum(axis=1) / counts)
        elif mode == "mean_sqrt_len_tokens":
            parts.append((tokens * weights).sum(axis=1) / np.sqrt(counts))
        elif mode == "weightedmean":
            positions = np.arange(1, tokens.shape[1] + 1, dtype=np.float32)[None, :, None]
            weighted = weights * positions
            parts.append(
                (tokens * weighted).sum(axis=1) / np.clip(weighted.sum(axis=1), 1e-9, None)
            )
        elif mode == "lasttoken":
            last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
            parts.append(tokens[np.arange(len(tokens)), last])
        else:
            raise ValueError(f"pooling mode {mode!r} is not implemented for ONNX")
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def normalize(vectors: Array) -> Array:
    """Rows scaled to unit length, as ``torch.nn.functional.normalize`` (eps 1e-12)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: Array = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return out


def session_options(threads: int) -> Any:
    """Sequential execution on ``threads`` intra-op threads, all graph optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


class OnnxEncoder:
    """An exported model graph with its folder's tokenizer and pooling; the ``encode``
    face of ``SentenceTransformer`` that ``Embedder`` uses."""

    def __init__(self, folder: ModelFolder, graph: Path, *, threads: int) -> None:
        import onnxruntime as ort

        self.folder = folder
        self.graph = graph
        self.threads = threads
        self.session = ort.InferenceSession(
            str(graph), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        unknown = [name for name in self.inputs if name not in INPUT_FIELDS]
        if unknown:
            raise ValueError(f"{graph} expects inputs this encoder cannot feed: {unknown}")
        self.tokenizer = load_tokenizer(folder)
        pad = folder.pad_token()
        pad_id = self.tokenizer.token_to_id(pad) if pad else None
        self.tokenizer.enable_padding(pad_id=pad_id or 0, pad_token=pad or "[PAD]")
        self.pooling = folder.pooling
        self.normalizes = folder.normalize

    def token_embeddings(self, encodings: Sequence[Encoding]) -> tuple[Array, Any]:
        feed = {
            name: np.asarray([getattr(e, INPUT_FIELDS[name]) for e in encodings], dtype=np.int64)
            for name in self.inputs
        }
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        (tokens,) = self.session.run(None, feed)
        return np.asarray(tokens, dtype=np.float32), mask

    def encode(
        self,
        inputs: list[str],
        *,
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        **_: Any,
    ) -> Array:
        """One row per input, in order; batches of ``batch_size`` padded to their longest."""
        rows: list[Array] = []
        for start in range(0, len(inputs), batch_size):
            encodings = self.tokenizer.encode_batch(inputs[start : start + batch_size])
            tokens, mask = self.token_embeddings(encodings)
            vectors = pool(self.pooling, tokens, mask)
            if self.normalizes or normalize_embeddings:
                vectors = normalize(vectors)
            rows.append(vectors)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        out: Array = np.concatenate(rows, axis=0)
        return out
