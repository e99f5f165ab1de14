"""Compact vector encoding for events: base64 of little-endian float32."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


def encode_vector(vector: Sequence[float] | npt.NDArray[np.floating]) -> str:
    """Encode one vector as base64 text of little-endian float32 values."""
    array = np.asarray(vector, dtype="<f4")
    return base64.b64encode(array.tobytes()).decode("ascii")


def decode_vector(text: str, dim: int) -> Vector:
    """Decode what ``encode_vector`` wrote; raises ``ValueError`` when ``dim`` does not fit."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) != dim * 4:
        raise ValueError(f"vector has {len(raw) // 4} float32 values, expected dim={dim}")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)
