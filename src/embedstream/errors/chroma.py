"""Chroma failures: a server that does not answer (yet), a folder being opened by another
process, and writes Chroma refuses.

Classified by exception class (``chromadb.errors`` for Chroma's own, ``httpx`` for the way
to a server, ``sqlite3`` for an embedded folder), following the exception's cause where
chromadb wraps one (it raises ``ValueError`` for a server it cannot connect to).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import httpx
from chromadb.errors import InternalError, InvalidArgumentError, InvalidDimensionException

from embedstream.errors import EmbedstreamError, PermanentError

REFUSED_WRITE: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    InvalidArgumentError,
    InvalidDimensionException,
)
"""Chroma refused a write's arguments (a dimension, an id, metadata): permanent."""

OPENING: tuple[type[Exception], ...] = (InternalError, sqlite3.OperationalError)
"""What opening an embedded folder raises while another process creates or migrates it
(``table collections already exists``, ``database is locked``): worth a retry."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _no_answer(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError | httpx.TransportError):
        return True
    # a proxy or a server still starting answers 5xx
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500


def is_unreachable(exc: BaseException) -> bool:
    """A Chroma server that is down or not up yet: waiting fixes it."""
    return any(_no_answer(link) for link in _chain(exc))


def is_transient_open_error(exc: BaseException) -> bool:
    """An embedded folder being created by another process right now (``OPENING``)."""
    return isinstance(exc, OPENING)


def classify_write_error(exc: BaseException) -> BaseException:
    """What a failed write stands for: Chroma's refusal of its arguments is permanent;
    a server that does not answer, and anything else, is worth a retry (the exception as
    it is)."""
    if isinstance(exc, EmbedstreamError) or is_unreachable(exc):
        return exc
    if isinstance(exc, REFUSED_WRITE):
        return PermanentError(f"chroma refused the write: {type(exc).__name__}: {exc}")
    return exc
