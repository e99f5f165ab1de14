"""Compact vector encoding for events: base64 of little-endian float32.

The one place vectors are encoded and decoded: the embed stage encodes
(``encode_vector``), the event models check what they carry (``vector_bytes``, see
``embedstream.schemas.events``), the index stage reads arrays and the persist stage
stores the bytes as they are (PostgreSQL keeps them as ``bytea``, ``vector_array`` reads
them back).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where vectors are made or read, not by the API
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]
FLOAT32_BYTES = 4


def __getattr__(name: str) -> Any:
    """``Vector`` at run time (importing numpy then): the ingress imports the event
    models but never a vector, and numpy is ~10 MB of its memory."""
    if name == "Vector":
        import numpy as np
        import numpy.typing as npt

        return npt.NDArray[np.float32]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def encode_vector(vector: Sequence[float] | npt.NDArray[np.floating]) -> str:
    """Encode one vector as base64 text of little-endian float32 values."""
    import numpy as np

    array = np.asarray(vector, dtype="<f4")
    return base64.b64encode(array.tobytes()).decode("ascii")


def vector_bytes(text: str, dim: int | None = None) -> bytes:
    """The little-endian float32 bytes ``text`` encodes; ``ValueError`` when it is not
    base64 or does not hold ``dim`` values (any whole number of them without ``dim``)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"vector is not base64: {exc}") from None
    if dim is None:
        dim = len(raw) // FLOAT32_BYTES
    if len(raw) != dim * FLOAT32_BYTES:
        raise ValueError(
            f"vector has {len(raw) / FLOAT32_BYTES:g} float32 values, expected dim={dim}"
        )
    return raw


def vector_array(raw: bytes) -> Vector:
    """Little-endian float32 bytes as a float32 array."""
    import numpy as np

    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def decode_vector(text: str, dim: int) -> Vector:
    """Decode what ``encode_vector`` wrote; raises ``ValueError`` when ``dim`` does not fit."""
    return vector_array(vector_bytes(text, dim))
