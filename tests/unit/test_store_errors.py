"""Error classification, one module per store, by exception class."""

from __future__ import annotations

import sqlite3

import asyncpg
import httpx
import pytest
from chromadb.errors import InternalError, InvalidArgumentError, InvalidDimensionException
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)

from embedstream.errors import PermanentError, RetryableError
from embedstream.errors import chroma as chroma_errors
from embedstream.errors import postgres as postgres_errors
from embedstream.errors import redis as redis_errors
from embedstream.errors.postgres import PostgresUnavailable


def test_redis_outages_are_waited_out_and_answered_503_at_the_ingress() -> None:
    for error in (ConnectionError("x"), BusyLoadingError("x"), OSError("x")):
        assert isinstance(error, redis_errors.TRANSIENT)
    assert isinstance(BusyLoadingError("x"), redis_errors.CLIENT_RETRIES)
    for error in (ReadOnlyError("x"), OutOfMemoryError("x"), ConnectionError("x")):
        assert isinstance(error, redis_errors.UNAVAILABLE)
    assert not isinstance(ResponseError("WRONGTYPE"), redis_errors.TRANSIENT)


def test_redis_group_errors_are_told_by_their_codes() -> None:
    assert redis_errors.is_nogroup(ResponseError("NOGROUP No such key 'x' or consumer group"))
    assert redis_errors.is_nogroup(ResponseError("no such key"))
    assert not redis_errors.is_nogroup(ResponseError("BUSYGROUP Consumer Group name exists"))
    assert redis_errors.is_busygroup(ResponseError("BUSYGROUP Consumer Group name exists"))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OSError("refused"), True),
        (TimeoutError(), True),
        (asyncpg.InterfaceError("connection is closed"), True),
        (asyncpg.InternalClientError("cannot switch to state 15"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating"), True),  # 57P01
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), True),  # 40P01
        (asyncpg.exceptions.LockNotAvailableError("lock"), True),  # 55P03
        (asyncpg.exceptions.CheckViolationError("check"), False),
        (asyncpg.exceptions.UndefinedTableError("no table"), False),
        (ValueError("ours"), False),
    ],
)
def test_postgres_failures_that_waiting_fixes(error: BaseException, transient: bool) -> None:
    assert postgres_errors.is_transient(error) is transient


def test_postgres_refusals_of_the_data_are_permanent_and_outages_retryable() -> None:
    refused = asyncpg.exceptions.CharacterNotInRepertoireError("bad byte")
    assert postgres_errors.is_refused(refused)
    assert postgres_errors.is_refused(asyncpg.exceptions.CheckViolationError("check"))
    assert not postgres_errors.is_refused(asyncpg.exceptions.DeadlockDetectedError("d"))
    permanent = postgres_errors.refusal(refused)
    assert isinstance(permanent, PermanentError)
    assert "CharacterNotInRepertoireError" in str(permanent)
    later = postgres_errors.unavailable(OSError("refused"))
    assert isinstance(later, PostgresUnavailable) and isinstance(later, RetryableError)


def test_chroma_refusals_are_told_by_chromadbs_classes_not_their_names() -> None:
    for error in (
        InvalidArgumentError("dimension 3, got 4"),
        InvalidDimensionException("dim"),
        ValueError("bad metadata"),
        TypeError("not a list"),
    ):
        assert isinstance(chroma_errors.classify_write_error(error), PermanentError)

    class InvalidArgumentErrorLookalike(Exception):  # no longer matched by its name
        pass

    InvalidArgumentErrorLookalike.__name__ = "InvalidArgumentError"
    lookalike = InvalidArgumentErrorLookalike("x")
    assert chroma_errors.classify_write_error(lookalike) is lookalike
    ours = RetryableError("later")
    assert chroma_errors.classify_write_error(ours) is ours


def _wrapped_connect_error() -> ValueError:
    """What chromadb raises for a server it cannot reach: a ValueError from ConnectError."""
    try:
        try:
            raise httpx.ConnectError("connection refused")
        except httpx.ConnectError:
            raise ValueError("Could not connect to a Chroma server. Are you sure it is running?")  # noqa: B904
    except ValueError as exc:
        return exc


def test_a_chroma_server_that_does_not_answer_is_found_through_the_cause() -> None:
    wrapped = _wrapped_connect_error()
    assert chroma_errors.is_unreachable(wrapped)
    assert chroma_errors.classify_write_error(wrapped) is wrapped  # retried, not refused
    assert chroma_errors.is_unreachable(httpx.ReadTimeout("slow"))
    assert chroma_errors.is_unreachable(ConnectionRefusedError())
    assert not chroma_errors.is_unreachable(ValueError("bad metadata"))
    response = httpx.Response(503, request=httpx.Request("GET", "http://chroma"))
    assert chroma_errors.is_unreachable(
        httpx.HTTPStatusError("x", request=response.request, response=response)
    )


def test_an_embedded_folder_being_created_elsewhere_is_worth_a_retry() -> None:
    busy = InternalError("error returned from database: (code: 1) table collections already exists")
    assert chroma_errors.is_transient_open_error(busy)
    assert chroma_errors.is_transient_open_error(sqlite3.OperationalError("database is locked"))
    assert not chroma_errors.is_transient_open_error(ValueError("database is locked"))
