"""PostgreSQL failures: what waiting fixes, what is a refusal of the data itself, and the
errors the stages raise for each.

Classified by exception class (asyncpg's) and, for server errors, by SQLSTATE class.
"""

from __future__ import annotations

import asyncpg

from embedstream.errors import PermanentError, RetryableError

TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
"""connection exception, transaction rollback (deadlock, serialization), insufficient
resources, operator intervention (shutdown, cannot connect now), system error."""
LOCK_NOT_AVAILABLE = "55P03"

REFUSED: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)
"""PostgreSQL refused the data itself: retrying the same rows cannot help."""

FAILURES: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
"""Anything PostgreSQL (or the way to it) can fail with: the store is unavailable to a
reader that has no other answer (the ingress's API key lookups)."""


class PostgresUnavailable(RetryableError):
    """PostgreSQL is away, restarting, overloaded or dropped the connection: retry later."""


def is_transient(exc: BaseException) -> bool:
    """True for failures that retrying later can fix: the server is away, restarting,
    overloaded, terminated the connection, or chose this transaction as a deadlock or
    serialization victim."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True  # refused, reset, timed out, "connection is closed"
    if isinstance(exc, asyncpg.InternalClientError):
        # the client's protocol state after a connection died under it ("cannot switch
        # to state 15" once the server terminated it): a fresh connection works
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        return sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES) or sqlstate == LOCK_NOT_AVAILABLE
    return False


def is_refused(exc: BaseException) -> bool:
    """PostgreSQL refused the data (``REFUSED``)."""
    return isinstance(exc, REFUSED)


def refusal(exc: BaseException) -> PermanentError:
    """The permanent error for data PostgreSQL refused."""
    return PermanentError(f"postgres refused the document: {type(exc).__name__}: {exc}")


def unavailable(exc: BaseException) -> PostgresUnavailable:
    """The retryable error for a transient failure."""
    return PostgresUnavailable(f"postgres unavailable: {type(exc).__name__}: {exc}")
