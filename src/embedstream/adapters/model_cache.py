"""Where ONNX exports of a model folder live, and getting one at worker start.

An export directory is ``{cache}/{content hash of the model folder}/`` and holds
``model.onnx`` (fp32), ``model.int8.onnx`` and one manifest per variant
(``onnx.json``, ``onnx-int8.json``), written last: a graph counts as exported only when
its manifest names this folder's hash, this export format and the graph's size. Readers
need no lock (a read-only image layer works); exporters hold ``.lock`` in that directory
(``filelock``), so replicas starting together on one host export once and the others
wait for it.

A worker without an export runs ``embedstream model export`` in a child process: torch is
loaded there, never in the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from embedstream.adapters.model_folder import ModelFolder
from embedstream.logging import get_logger

Variant = Literal["onnx", "onnx-int8"]
VARIANTS: tuple[Variant, ...] = ("onnx", "onnx-int8")
GRAPH_FILES: dict[Variant, str] = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
#: Bump when the export recipe changes: older exports are then made again.
EXPORT_FORMAT = 1

log = get_logger("embedstream.model_cache")


class NotExportable(ValueError):
    """The model folder cannot run on the ONNX backend (structure or vectors differ)."""


class ExportUnavailable(RuntimeError):
    """No export is cached and this installation cannot make one."""


def export_dir(cache: Path, folder: ModelFolder) -> Path:
    return cache / folder.content_hash[:32]


def manifest_path(directory: Path, variant: Variant) -> Path:
    return directory / f"{variant}.json"


def read_manifest(directory: Path, folder: ModelFolder, variant: Variant) -> dict[str, Any] | None:
    """The variant's manifest when it describes a complete export of this folder."""
    try:
        manifest = json.loads(manifest_path(directory, variant).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    graph = directory / GRAPH_FILES[variant]
    ok = (
        manifest.get("format") == EXPORT_FORMAT
        and manifest.get("variant") == variant
        and manifest.get("model_hash") == folder.content_hash
        and graph.is_file()
        and graph.stat().st_size == manifest.get("graph_bytes")
    )
    return manifest if ok else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def can_export() -> bool:
    """Whether this installation has what an export needs (the ``workers`` extra)."""
    return all(find_spec(name) is not None for name in ("torch", "sentence_transformers", "onnx"))


def ensure_export(
    folder: ModelFolder,
    variant: Variant,
    cache: Path,
    *,
    model: str | None,
    timeout_s: float = 1800,
) -> tuple[Path, dict[str, Any]]:
    """The variant's graph and manifest, exported first (in a child process running
    ``embedstream model export``) when the cache has none. Raises ``NotExportable`` when
    the folder cannot run on ONNX, ``ExportUnavailable`` when nothing can export here."""
    directory = export_dir(cache, folder)
    manifest = read_manifest(directory, folder, variant)
    if manifest is not None:
        return directory / GRAPH_FILES[variant], manifest
    if not can_export():
        raise ExportUnavailable(
            f"no {variant} export of {folder.path} in {cache} (EMBEDSTREAM_MODEL_CACHE), and "
            "this installation cannot make one (it needs torch, sentence-transformers and onnx: "
            "the `workers` extra). Run `embedstream model export` where they are installed, "
            "e.g. at image build time with the same EMBEDSTREAM_MODEL_CACHE, or set "
            "EMBEDSTREAM_BACKEND=torch."
        )
    command = [
        sys.executable, "-m", "embedstream", "model", "export", "--variant", variant, "--json"
    ]  # fmt: skip
    command += ["--cache", str(cache)]
    if model is not None:
        command += ["--model", model]
    log.info("exporting the model", variant=variant, cache=str(cache), model=str(folder.path))
    # its log goes to ours (stderr); its result (JSON) comes back on stdout
    done = subprocess.run(
        command, timeout=timeout_s, check=False, stdout=subprocess.PIPE, text=True
    )
    if done.returncode != 0 and _not_exportable(done.stdout):
        raise NotExportable(f"{folder.path} cannot run on ONNX: {_not_exportable(done.stdout)}")
    if done.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` failed with exit code {done.returncode}; see its log above"
        )
    manifest = read_manifest(directory, folder, variant)
    if manifest is None:
        raise RuntimeError(f"the export finished but {directory} holds no {variant} export")
    return directory / GRAPH_FILES[variant], manifest


def _not_exportable(result: str) -> str | None:
    """Why ``embedstream model export --json`` found the folder not exportable, if so."""
    try:
        parsed = json.loads(result)
    except ValueError:
        return None
    reason = parsed.get("not_exportable") if isinstance(parsed, dict) else None
    return reason if isinstance(reason, str) else None
