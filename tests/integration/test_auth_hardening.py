"""Credentials checked before the body, failed checks rate limited, scopes parsed by RFC
6749, and no claim text in any response header (issue 10, items 1-3 and 10), on the real
Redis and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI

from embedstream.api.app import create_app
from embedstream.api.security import credentials
from embedstream.config import AuthSettings, Settings
from tests.integration.conftest import JWT_SECRET, ApiKeys
from tests.integration.test_auth import raw_token, settings_for

pytestmark = pytest.mark.integration

DOC = "/v1/documents"
JOB = "/v1/jobs/0b9f6e0e-8d0c-4c39-9a55-3b7f0c1d2e3f"


async def running(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def http(app: FastAPI, address: str = "10.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)),
        base_url="http://testserver",
    )


@pytest.fixture
async def app(prefix: str, redis_client: redis.Redis, api_keys: ApiKeys) -> AsyncIterator[FastAPI]:
    async for a in running(settings_for(prefix, api_keys.schema)):
        yield a


def wrong_secret(key: str, n: int = 0) -> str:
    return key[:20] + f"{n:04d}".rjust(43, "Z")


# -- item 1: the credential is checked before the body is read ---------------------------


async def post_raw(
    app: FastAPI, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes, int]:
    """POST ``body`` straight through ASGI; (status, headers, body, times receive() was
    called)."""
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": body, "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"host", b"testserver"),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": DOC,
        "raw_path": DOC.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw_headers,
        "client": ("10.0.0.9", 5000),
        "server": ("testserver", 80),
        "state": {},
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, content, calls


async def test_a_large_body_without_a_valid_credential_is_refused_unread(
    app: FastAPI, api_keys: ApiKeys
) -> None:
    big = json.dumps({"documents": [{"text": "x" * 1000}] * 60}).encode()  # ~60 KB, valid
    for headers in ({}, {"X-API-Key": "es_nope"}, {"Authorization": "Bearer not.a.jwt"}):
        status, _, body, calls = await post_raw(app, headers, big)
        assert status == 401, body
        assert calls == 0, "the body was read before the credential was checked"
    status, _, _, calls = await post_raw(app, {"X-API-Key": api_keys.full}, big)
    assert (status, calls) == (202, 1)  # with a credential the body is read, once


async def test_a_malformed_body_without_a_credential_is_401_not_422(app: FastAPI) -> None:
    async with http(app) as client:
        for content in (b"{not json", b'{"text": "\xff"}', b"[1, 2"):
            response = await client.post(
                DOC, content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code == 401, response.text
            assert response.json()["error"].startswith("authentication required: no credential")
        # a wrong Content-Type does not get a 415 either: who you are comes first
        response = await client.post(DOC, content=b"x", headers={"content-type": "text/plain"})
        assert response.status_code == 401


# -- item 1 and 10: failed checks are limited per address and per key id ------------------


@pytest.fixture
async def strict_app(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> AsyncIterator[FastAPI]:
    async for a in running(settings_for(prefix, api_keys.schema, auth_failure_limit="3/minute")):
        yield a


async def test_failed_checks_from_one_address_get_429_with_retry_after(
    strict_app: FastAPI, api_keys: ApiKeys
) -> None:
    async with http(strict_app, "10.0.0.1") as attacker, http(strict_app, "10.0.0.2") as other:
        statuses = [
            (
                await attacker.get(JOB, headers={"X-API-Key": wrong_secret(api_keys.full, n)})
            ).status_code
            for n in range(3)
        ]
        assert statuses == [401, 401, 401]
        refused = await attacker.get(JOB, headers={"X-API-Key": wrong_secret(api_keys.full, 9)})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "too many failed authentication attempts" in refused.json()["error"]
        # the address is limited whatever it tries next: an uncached key, even a valid one,
        # is not checked at all, and a bad JWT is refused the same way
        assert (await attacker.get(JOB, headers={"X-API-Key": api_keys.reader})).status_code == 429
        bad_jwt = {"Authorization": f"Bearer {raw_token('another-secret-0123456789abcdefghij')}"}
        assert (await attacker.get(JOB, headers=bad_jwt)).status_code == 429
        # another address is not affected, with another key
        assert (await other.get(JOB, headers={"X-API-Key": api_keys.reader})).status_code == 404


async def test_failed_checks_of_one_key_id_are_limited_across_addresses(
    strict_app: FastAPI, api_keys: ApiKeys
) -> None:
    for n in range(3):
        async with http(strict_app, f"10.1.0.{n}") as client:
            bad = {"X-API-Key": wrong_secret(api_keys.writer, n)}
            assert (await client.get(JOB, headers=bad)).status_code == 401
    async with http(strict_app, "10.1.0.99") as fresh:
        bad = {"X-API-Key": wrong_secret(api_keys.writer, 7)}
        assert (await fresh.get(JOB, headers=bad)).status_code == 429
        # other key ids are not affected from that address
        assert (await fresh.get(JOB, headers={"X-API-Key": api_keys.full})).status_code == 404


async def test_requests_without_a_credential_do_not_count_and_valid_cached_keys_pass(
    strict_app: FastAPI, api_keys: ApiKeys
) -> None:
    async with http(strict_app) as client:
        assert (await client.get(JOB, headers={"X-API-Key": api_keys.full})).status_code == 404
        for _ in range(5):
            assert (await client.get(JOB)).status_code == 401
        for n in range(4):
            await client.get(JOB, headers={"X-API-Key": wrong_secret(api_keys.admin, n)})
        # the address is over its limit, but a key verified within the cache TTL costs
        # nothing to check and is still accepted
        assert (await client.get(JOB, headers={"X-API-Key": api_keys.full})).status_code == 404


async def test_the_failure_limit_is_a_setting(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    settings = settings_for(prefix, api_keys.schema, auth_failure_limit="")
    async for app in running(settings):
        async with http(app) as client:
            for n in range(12):
                bad = {"X-API-Key": wrong_secret(api_keys.full, n)}
                assert (await client.get(JOB, headers=bad)).status_code == 401


# -- item 2: scopes are separated by single ASCII spaces ----------------------------------


@pytest.mark.parametrize(
    "scope",
    [
        "jobs:read\tadmin",
        "jobs:read\nadmin",
        "jobs:read\u00a0admin",  # NO-BREAK SPACE
        "jobs:read\u2003admin",  # EM SPACE
        "jobs:read\r\nadmin",
        "jobs:read  admin",
        " admin",
        "admin ",
        "",
    ],
    ids=[
        "tab",
        "newline",
        "nbsp",
        "em-space",
        "crlf",
        "double-space",
        "leading",
        "trailing",
        "empty",
    ],
)
async def test_scopes_split_on_anything_but_single_spaces_are_a_malformed_token(
    app: FastAPI, scope: str
) -> None:
    token = raw_token(JWT_SECRET, scope=scope)
    async with http(app) as client:
        response = await client.post(
            DOC, json={"text": "x"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 401, response.text  # never admin's 202
    assert "'scope' claim is invalid" in response.json()["error"]
    assert "RFC 6749" in response.json()["error"]


async def test_scopes_separated_by_single_spaces_are_granted(app: FastAPI) -> None:
    token = raw_token(JWT_SECRET, scope="jobs:read documents:write")
    async with http(app) as client:
        response = await client.post(
            DOC, json={"text": "x"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 202, response.text


# -- item 3: claim text never reaches a header ------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        {"tenant": "acme\x01\x1b[31m"},
        {"tenant": "тенант"},  # not Latin-1: could not even be encoded in a header
        {"tenant": "acme\r\nSet-Cookie: x=1"},
        {"scope": "jobs:read \x7f"},
        {"scope": "jobs:read 日本"},
        {"scope": "jobs:read \u00fcber"},  # Latin-1, not ASCII
        {"scope": 'jobs:read a"b'},
        {"sub": "svc\nforged log line"},
    ],
    ids=["control", "cyrillic", "crlf-injection", "del", "cjk", "latin1", "quote", "sub-newline"],
)
async def test_claim_text_never_reaches_the_www_authenticate_header(
    app: FastAPI, claims: dict[str, str]
) -> None:
    token = raw_token(JWT_SECRET, **claims)
    async with http(app) as client:
        response = await client.get(JOB, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge == (
        f'Bearer realm="embedstream", error="invalid_token", '
        f'error_description="{credentials.CHALLENGES["invalid"]}"'
    )
    claim = next(iter(claims.values()))
    error = response.json()["error"]
    assert claim not in error
    for part in claim.split():
        if part not in ("jobs:read", "svc"):
            assert part not in challenge


async def test_every_challenge_is_fixed_printable_ascii() -> None:
    for kind, text in credentials.CHALLENGES.items():
        assert text.isascii() and text.isprintable() and '"' not in text and "\\" not in text, kind


async def test_the_challenge_names_the_kind_of_failure_not_the_reason(
    app: FastAPI, api_keys: ApiKeys
) -> None:
    expired = raw_token(JWT_SECRET, iat=1_000_000_000, exp=1_000_000_100)
    async with http(app) as client:
        malformed = await client.get(JOB, headers={"X-API-Key": "es_short"})
        late = await client.get(JOB, headers={"Authorization": f"Bearer {expired}"})
        unknown = await client.get(JOB, headers={"X-API-Key": wrong_secret(api_keys.full)})
    for response, kind in ((malformed, "malformed"), (late, "expired"), (unknown, "invalid")):
        assert response.status_code == 401
        assert (
            f'error_description="{credentials.CHALLENGES[kind]}"'
            in response.headers["www-authenticate"]
        )
    assert f"API key {api_keys.full[3:19]} is not valid" in unknown.json()["error"]


def test_auth_settings_parse_the_failure_limit() -> None:
    assert AuthSettings(auth_failure_limit=" 5/minute ").auth_failure_limit == "5/minute"
