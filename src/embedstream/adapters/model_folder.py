"""A sentence-transformers model folder, read without sentence-transformers or torch.

What the ONNX backend needs to reproduce ``SentenceTransformer.encode`` exactly: the
module list (``modules.json``), the pooling configuration (``1_Pooling/config.json`` or
wherever ``modules.json`` points), whether a ``Normalize`` module follows, the longest
input (``sentence_bert_config.json``) and the fast tokenizer (``tokenizer.json``). A
folder with anything else (a ``Dense`` layer, a router, a default prompt, no
``tokenizer.json``) cannot run on ONNX here: ``onnx_problem`` says why, and such a model
stays on torch.

``content_hash`` identifies the folder's bytes: ONNX exports are cached under it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

#: The pooling modes the ONNX backend implements (sentence-transformers' names).
POOLING_MODES = frozenset(
    {"cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"}
)
# Legacy boolean keys of 1_Pooling/config.json, in sentence-transformers' concatenation order.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class Module:
    """One entry of ``modules.json``: its kind (last part of the type) and folder."""

    kind: str
    path: Path
    type: str


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from exc


def pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """The pooling modes of a ``Pooling`` config, new (``pooling_mode``) or legacy
    (``pooling_mode_*_tokens`` booleans) style; mean when it names none."""
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return (mode,)
    if isinstance(mode, list | tuple) and mode:
        return tuple(str(m) for m in mode)
    legacy = tuple(name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key))
    return legacy or ("mean",)


class ModelFolder:
    """A local sentence-transformers model folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw = _read_json(path / "modules.json")
        if raw is None:
            # sentence-transformers treats a plain transformers folder as Transformer + mean.
            self.modules = [Module("Transformer", path, "Transformer")]
            self._implicit_mean = True
        else:
            self.modules = [
                Module(str(m["type"]).rsplit(".", 1)[-1], path / str(m.get("path", "")), m["type"])
                for m in sorted(raw, key=lambda m: int(m.get("idx", 0)))
            ]
            self._implicit_mean = False

    # -- what the folder declares --------------------------------------------------------

    @property
    def transformer_path(self) -> Path:
        """The folder of the Transformer module (its config, weights and tokenizer)."""
        for module in self.modules:
            if module.kind == "Transformer":
                return module.path
        return self.path

    @cached_property
    def st_config(self) -> dict[str, Any]:
        """``sentence_bert_config.json`` of the Transformer module (may be empty)."""
        for folder in (self.transformer_path, self.path):
            config = _read_json(folder / "sentence_bert_config.json")
            if isinstance(config, dict):
                return config
        return {}

    @property
    def max_seq_length(self) -> int | None:
        value = self.st_config.get("max_seq_length")
        return int(value) if value else None

    @property
    def do_lower_case(self) -> bool:
        return bool(self.st_config.get("do_lower_case", False))

    @cached_property
    def pooling(self) -> tuple[str, ...]:
        """Pooling modes in concatenation order."""
        if self._implicit_mean:
            return ("mean",)
        for module in self.modules:
            if module.kind == "Pooling":
                config = _read_json(module.path / "config.json") or {}
                return pooling_modes(config)
        return ()

    @property
    def normalize(self) -> bool:
        return any(m.kind == "Normalize" for m in self.modules)

    @property
    def tokenizer_file(self) -> Path:
        return self.transformer_path / "tokenizer.json"

    def pad_token(self) -> str | None:
        """The padding token the tokenizer config names, if any."""
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            config = _read_json(self.transformer_path / name)
            token = config.get("pad_token") if isinstance(config, dict) else None
            if isinstance(token, dict):
                token = token.get("content")
            if isinstance(token, str):
                return token
        return None

    def onnx_problem(self) -> str | None:
        """Why this folder cannot run on the ONNX backend, or None when it can."""
        kinds = [m.kind for m in self.modules]
        if not kinds or kinds[0] != "Transformer":
            return f"its first module is {kinds[0] if kinds else 'missing'}, not a Transformer"
        extra = [k for k in kinds[1:] if k not in ("Pooling", "Normalize")]
        if extra:
            return f"it has modules the ONNX backend does not implement: {', '.join(extra)}"
        if "Pooling" not in kinds:
            return "it has no Pooling module"
        unknown = [m for m in self.pooling if m not in POOLING_MODES]
        if unknown:
            return f"it pools with {', '.join(unknown)}, which the ONNX backend does not implement"
        if not self.tokenizer_file.is_file():
            return f"it has no fast tokenizer file ({self.tokenizer_file.name})"
        if not self.max_seq_length:
            return "sentence_bert_config.json declares no max_seq_length"
        st = _read_json(self.path / "config_sentence_transformers.json") or {}
        if st.get("default_prompt_name"):
            return f"it prepends a default prompt ({st['default_prompt_name']!r})"
        return None

    # -- identity -------------------------------------------------------------------------

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 over every file's relative path and bytes (hidden files skipped)."""
        digest = hashlib.sha256()
        files = sorted(
            p
            for p in self.path.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
        )
        for file in files:
            digest.update(file.relative_to(self.path).as_posix().encode() + b"\0")
            with file.open("rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
        return digest.hexdigest()
