"""Exporting a sentence-transformers folder to ONNX (needs torch: the ``workers`` extra).

fp32 (``onnx``): the Transformer module's token embeddings, traced with torch's
TorchScript exporter (``torch.onnx.export(..., dynamo=False)``: it needs neither
onnxscript nor a network, and the same weights give the same bytes), with eager
attention so that ONNX Runtime's transformer optimizer can fuse attention, layer norms
and GELU; pooling and normalization stay outside the graph (``onnx_encoder``, from the
folder's config). An export counts only if its vectors match torch's on probe texts of
every length (cosine >= 0.99999 and absolute difference <= 1e-5 each), else the folder
is ``NotExportable`` and stays on torch.

int8 (``onnx-int8``): ONNX Runtime's dynamic quantization of the fp32 graph, int8
weights per output channel (per-tensor weights lose far more: mean cosine 0.92 against
0.99 here). Its agreement with fp32 on the probe texts is recorded in the manifest; its
retrieval quality is what ``python -m bench.embed_backends`` measures.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from embedstream.adapters.model_cache import (
    EXPORT_FORMAT,
    GRAPH_FILES,
    NotExportable,
    Variant,
    export_dir,
    manifest_path,
    read_manifest,
    write_json_atomic,
)
from embedstream.adapters.model_folder import ModelFolder
from embedstream.adapters.onnx_encoder import INPUT_FIELDS, OnnxEncoder
from embedstream.cpus import available_cpus
from embedstream.logging import get_logger

OPSET = 17
MIN_COSINE = 0.99999
MAX_ABS_DIFF = 1e-5

log = get_logger("embedstream.onnx_export")

_SENTENCES = [
    "Redis Streams keep an append-only log of commands for each consumer group.",
    "A worker acknowledges an entry only after its effect is durable.",
    "Embeddings of similar texts lie close together in vector space.",
    "PostgreSQL is the system of record; the Chroma index can be rebuilt from it.",
    "Café naïve résumé: accents, 東京 and emoji 😀 must tokenize the same way.",
    "Short.",
    "x = compute(a, b)  # code and punctuation: {}, [], <>, ==, !=",
]


@contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's optimizer and quantizer log every step on the root logger."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def probe_texts() -> list[str]:
    """Texts from one word to past any model's input limit (so truncation is covered)."""
    texts = [s.split()[0] for s in _SENTENCES[:3]] + list(_SENTENCES)
    for n in (2, 5, 12, 40):
        texts.append(" ".join(_SENTENCES[i % len(_SENTENCES)] for i in range(n)))
    return texts


def export(
    folder: ModelFolder, variant: Variant, cache: Path, *, lock_timeout_s: float = 1800
) -> tuple[Path, dict[str, Any], bool]:
    """Export ``variant`` into the cache unless it is there: (graph, manifest, exported
    now). Holds the export directory's lock while it works."""
    problem = folder.onnx_problem()
    if problem is not None:
        raise NotExportable(f"{folder.path} cannot run on ONNX: {problem}")
    directory = export_dir(cache, folder)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / ".lock"))
    try:
        lock.acquire(timeout=lock_timeout_s)
    except Timeout as exc:
        raise RuntimeError(
            f"waited {lock_timeout_s:.0f}s for another export of {folder.path} holding "
            f"{directory / '.lock'}; is one stuck? (remove the lock file if no export runs)"
        ) from exc
    try:
        manifest = read_manifest(directory, folder, variant)
        if manifest is not None:
            return directory / GRAPH_FILES[variant], manifest, False
        if variant == "onnx":
            manifest = _export_fp32(folder, directory)
        else:
            if read_manifest(directory, folder, "onnx") is None:
                _export_fp32(folder, directory)
            manifest = _quantize(folder, directory)
        return directory / GRAPH_FILES[variant], manifest, True
    finally:
        for partial in directory.glob(f".*.{os.getpid()}.*"):  # what a failure left
            partial.unlink(missing_ok=True)
        lock.release()


def _manifest(folder: ModelFolder, variant: Variant, graph: Path, **extra: Any) -> dict[str, Any]:
    import hashlib

    with graph.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {
        "format": EXPORT_FORMAT,
        "variant": variant,
        "model_path": str(folder.path),
        "model_hash": folder.content_hash,
        "graph": GRAPH_FILES[variant],
        "graph_bytes": graph.stat().st_size,
        "graph_sha256": digest,
        "pooling": list(folder.pooling),
        "normalize": folder.normalize,
        "max_seq_length": folder.max_seq_length,
        **extra,
    }


def _install(tmp: Path, directory: Path, variant: Variant, manifest: dict[str, Any]) -> None:
    os.replace(tmp, directory / GRAPH_FILES[variant])
    write_json_atomic(manifest_path(directory, variant), manifest)


def _agreement(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> dict[str, float]:
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def _export_fp32(folder: ModelFolder, directory: Path) -> dict[str, Any]:
    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    threads = available_cpus()
    torch.set_num_threads(threads)
    model = SentenceTransformer(str(folder.path), device="cpu", local_files_only=True)
    transformer: Any = model[0].auto_model
    transformer.eval()
    try:  # eager attention traces to the pattern ONNX Runtime fuses into one Attention op
        transformer.set_attn_implementation("eager")
    except (AttributeError, ValueError) as exc:
        log.warning("eager attention unavailable; exporting as loaded", error=str(exc))
    names = [
        name
        for name in model.tokenizer.model_input_names
        if name in INPUT_FIELDS and name in _forward_params(transformer)
    ]
    if "input_ids" not in names or "attention_mask" not in names:
        raise NotExportable(f"{folder.path}: the tokenizer feeds {names}, not ids and a mask")

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            out = self.transformer(**dict(zip(names, inputs, strict=True)), return_dict=True)
            return out.last_hidden_state  # type: ignore[no-any-return]

    from embedstream.adapters.onnx_encoder import load_tokenizer

    tokenizer = load_tokenizer(folder)
    tokenizer.enable_padding()
    sample = tokenizer.encode_batch(["an export sample", "a longer export sample, padded"])
    args = tuple(
        torch.tensor([getattr(e, INPUT_FIELDS[n]) for e in sample], dtype=torch.int64)
        for n in names
    )
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "token_embeddings"]}
    traced = directory / f".traced.{os.getpid()}.onnx"
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches it fixed
        torch.onnx.export(
            TokenEmbeddings().eval(),
            args,
            str(traced),
            dynamo=False,
            input_names=names,
            output_names=["token_embeddings"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    tmp = directory / f".{GRAPH_FILES['onnx']}.{os.getpid()}.tmp"
    with _quiet():
        fused = _fuse(traced, tmp, transformer.config)
    traced.unlink(missing_ok=True)

    texts = probe_texts()
    reference = np.asarray(
        model.encode(texts, batch_size=len(texts), normalize_embeddings=True), dtype=np.float32
    )
    ours = OnnxEncoder(folder, tmp, threads=threads).encode(
        texts, batch_size=len(texts), normalize_embeddings=True
    )
    agreement = _agreement(ours, reference)
    if agreement["min_cosine"] < MIN_COSINE or agreement["max_abs_diff"] > MAX_ABS_DIFF:
        tmp.unlink(missing_ok=True)
        raise NotExportable(
            f"{folder.path}: ONNX vectors differ from torch's (min cosine "
            f"{agreement['min_cosine']:.7f}, max abs diff {agreement['max_abs_diff']:.2e}); "
            "use EMBEDSTREAM_BACKEND=torch for this model"
        )
    manifest = _manifest(
        folder,
        "onnx",
        tmp,
        inputs=names,
        dim=int(reference.shape[1]),
        opset=OPSET,
        fused=fused,
        torch_version=torch.__version__,
        onnxruntime_version=onnxruntime.__version__,
        agreement_with_torch=agreement,
        export_s=round(time.perf_counter() - started, 2),
    )
    _install(tmp, directory, "onnx", manifest)
    log.info("onnx export written", path=str(directory / GRAPH_FILES["onnx"]), **agreement)
    return manifest


def _forward_params(module: Any) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)


def _fuse(traced: Path, out: Path, config: Any) -> bool:
    """ONNX Runtime's transformer fusions (attention, layer norms, GELU) when it knows
    the architecture; the traced graph unchanged otherwise."""
    import shutil

    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

    model_type = getattr(config, "model_type", "")
    if model_type in MODEL_TYPES:
        try:
            optimized = optimize_model(
                str(traced),
                model_type=model_type,
                num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
                hidden_size=int(getattr(config, "hidden_size", 0) or 0),
                opt_level=1,
                only_onnxruntime=False,
            )
            optimized.save_model_to_file(str(out))
            return True
        except Exception as exc:  # the plain graph is still correct, only slower
            log.warning("onnx fusion failed; keeping the traced graph", error=str(exc))
    shutil.copyfile(traced, out)
    return False


def _quantize(folder: ModelFolder, directory: Path) -> dict[str, Any]:
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    source = directory / GRAPH_FILES["onnx"]
    tmp = directory / f".{GRAPH_FILES['onnx-int8']}.{os.getpid()}.tmp"
    with _quiet():
        quantize_dynamic(
            source,
            tmp,
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    threads = available_cpus()
    texts = probe_texts()
    fp32 = OnnxEncoder(folder, source, threads=threads).encode(
        texts, batch_size=len(texts), normalize_embeddings=True
    )
    int8 = OnnxEncoder(folder, tmp, threads=threads).encode(
        texts, batch_size=len(texts), normalize_embeddings=True
    )
    agreement = _agreement(int8, fp32)
    fp32_manifest = read_manifest(directory, folder, "onnx") or {}
    manifest = _manifest(
        folder,
        "onnx-int8",
        tmp,
        inputs=fp32_manifest.get("inputs"),
        dim=int(int8.shape[1]),
        quantization="dynamic, int8 weights per channel",
        onnxruntime_version=onnxruntime.__version__,
        agreement_with_fp32=agreement,
        export_s=round(time.perf_counter() - started, 2),
    )
    _install(tmp, directory, "onnx-int8", manifest)
    graph = directory / GRAPH_FILES["onnx-int8"]
    log.info("onnx int8 export written", path=str(graph), **agreement)
    return manifest
