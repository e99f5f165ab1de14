"""What both stores can hold: the rules a document's text, ids and metadata meet so that
Chroma and PostgreSQL accept it alike.

One ``document.embedded`` event feeds two stores. If one refused what the other stored,
they would disagree (Chroma serving a document PostgreSQL, the system of record, does
not have). So everything either store refuses is refused before any store sees it: at
the ingress (422, ``embedstream.schemas.api``), and again by the command and event models
every stage decodes (``embedstream.schemas.commands`` / ``events``), so that a message
another producer wrote to a stream is refused (dead-lettered) by every stage alike.

- PostgreSQL: ``text`` and ``jsonb`` hold no NUL (U+0000) and no lone surrogates (they are
  not UTF-8); ``jsonb`` numbers are finite.
- Chroma: metadata keys are non-empty and do not start with ``#`` or ``$``; ``chroma:``
  keys are its own (``chroma:document`` is refused, other ``chroma:*`` keys are dropped);
  values are strings, 64-bit integers, floats or booleans; lone surrogates are refused.

Messages say what is wrong and where; they do not repeat the offending text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

METADATA_KEY_MAX_CHARS = 256
RESERVED_KEY_PREFIXES = ("#", "$", "chroma:")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (None: it can)."""
    found = _UNSTORABLE_CHAR.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return f"contains a NUL (U+0000) character at position {found.start()}"
    return f"is not valid Unicode (lone surrogate at position {found.start()})"


def metadata_key_problem(key: str) -> str | None:
    if not key or len(key) > METADATA_KEY_MAX_CHARS:
        return f"must be 1-{METADATA_KEY_MAX_CHARS} characters"
    if key.startswith(RESERVED_KEY_PREFIXES):
        return "must not start with '#', '$' or 'chroma:' (reserved by the vector index)"
    return text_problem(key)


def describe(value: object) -> str:
    """A JSON name for ``value``'s type."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def metadata_value_problem(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            return "is out of range: integers must fit in 64 bits"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must be a finite number (got {value})"
    return f"must be a string, number or boolean (got {describe(value)})"


def metadata_problem(metadata: Mapping[str, object]) -> str | None:
    """The first reason ``metadata`` cannot be stored (None: it can). A bad key is named
    by its position, a bad value by its (valid) key."""
    for position, (key, value) in enumerate(metadata.items()):
        if (problem := metadata_key_problem(key)) is not None:
            return f"metadata key #{position + 1} {problem}"
        if (problem := metadata_value_problem(value)) is not None:
            return f"metadata[{key[:80]!r}] {problem}"
    return None


def check_texts(**fields: str) -> None:
    """``ValueError`` naming the first field whose text cannot be stored."""
    for name, value in fields.items():
        if (problem := text_problem(value)) is not None:
            raise ValueError(f"{name} {problem}")


def check_metadata(metadata: Mapping[str, object]) -> None:
    if (problem := metadata_problem(metadata)) is not None:
        raise ValueError(problem)
