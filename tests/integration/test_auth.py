"""Credentials on the real Redis and PostgreSQL: the 401/403 matrix of every endpoint,
API keys (hashing, revocation, caching), JWTs (expiry, audience, issuer...), the
principal dependency, the keys/token CLI, and secrets kept out of the logs."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import redis.asyncio as redis
import structlog
from structlog.testing import LogCapture
from typer.testing import CliRunner

from embedstream.api.security.apikeys import ApiKeyStore
from embedstream.api.security.guards import PrincipalDep
from embedstream.api.security.tokens import issue_token
from embedstream.cli import app as cli_app
from embedstream.config import AuthSettings, PostgresSettings, RedisSettings, Settings
from embedstream.logging import configure_logging
from embedstream.redaction import install_stdlib_redaction
from tests.conftest import REDIS_URL
from tests.integration.conftest import (
    JWT_SECRET,
    PG_DSN,
    ApiKeys,
    create_key,
    open_client,
    with_key_store,
)
from tests.support.streams import wait_until

pytestmark = pytest.mark.integration

AUTH = AuthSettings(jwt_secret=JWT_SECRET)
WRITE_POST = ("POST", "/v1/documents")
WRITE_DELETE = ("DELETE", "/v1/documents/doc-1")
READ_JOB = ("GET", "/v1/jobs/no-such-job")
ENDPOINTS = {WRITE_POST: "documents:write", WRITE_DELETE: "documents:write", READ_JOB: "jobs:read"}


def settings_for(prefix: str, schema: str, **auth: Any) -> Settings:
    settings = with_key_store(Settings(), schema)
    settings.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix)
    settings.auth = AuthSettings(jwt_secret=JWT_SECRET, **auth)
    return settings


@pytest.fixture
async def client(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(settings_for(prefix, api_keys.schema)):
        yield c


def token(
    scopes: tuple[str, ...] = ("documents:write", "jobs:read"),
    *,
    tenant: str = "acme",
    ttl_s: int = 300,
    now: float | None = None,
) -> str:
    return issue_token(AUTH, tenant=tenant, scopes=scopes, subject="svc-a", ttl_s=ttl_s, now=now)


@dataclass(frozen=True)
class FromNow:
    """A time claim relative to when the token is made: parametrize values are computed
    at collection, which may be many minutes before the test runs in a long suite."""

    seconds: int


def raw_token(secret: str = JWT_SECRET, **claims: Any) -> str:
    now = int(time.time())
    claims = {k: now + v.seconds if isinstance(v, FromNow) else v for k, v in claims.items()}
    base: dict[str, Any] = {
        "iss": "embedstream",
        "aud": "embedstream-api",
        "sub": "svc-a",
        "tenant": "acme",
        "scope": "jobs:read",
        "iat": now,
        "exp": now + 300,
    }
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, "HS256")


async def call(
    client: httpx.AsyncClient, endpoint: tuple[str, str], headers: dict[str, str]
) -> httpx.Response:
    method, path = endpoint
    body = {"json": {"text": "hello"}} if method == "POST" else {}
    return await client.request(method, path, headers=headers, **body)  # type: ignore[arg-type]


def assert_401(response: httpx.Response, *fragments: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer realm="embedstream"')
    error = response.json()["error"]
    assert error.startswith("authentication required: ")
    for fragment in fragments:
        assert fragment in error


# -- the matrix --------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", list(ENDPOINTS), ids=lambda e: f"{e[0]} {e[1]}")
async def test_every_endpoint_needs_a_valid_credential_with_its_scope(
    client: httpx.AsyncClient, api_keys: ApiKeys, endpoint: tuple[str, str]
) -> None:
    scope = ENDPOINTS[endpoint]
    wrong_secret = api_keys.full[:-4] + ("AAAA" if not api_keys.full.endswith("AAAA") else "BBBB")
    refused = {
        "no credential": {},
        "malformed key": {"X-API-Key": "es_nope"},
        "wrong secret": {"X-API-Key": wrong_secret},
        "unknown key id": {"X-API-Key": "es_0123456789abcdef_" + "x" * 43},
        "basic auth": {"Authorization": "Basic dXNlcjpwYXNz"},
        "empty bearer": {"Authorization": "Bearer "},
        "garbage jwt": {"Authorization": "Bearer not.a.jwt"},
        "expired jwt": {"Authorization": f"Bearer {token(ttl_s=60, now=time.time() - 600)}"},
        "both headers": {"Authorization": f"Bearer {token()}", "X-API-Key": api_keys.full},
    }
    for case, headers in refused.items():
        response = await call(client, endpoint, headers)
        assert response.status_code == 401, (case, response.text)
        assert "www-authenticate" in response.headers, case

    lacking = api_keys.reader if scope == "documents:write" else api_keys.writer
    lacking_jwt = token(("jobs:read",) if scope == "documents:write" else ("documents:write",))
    for headers in ({"X-API-Key": lacking}, {"Authorization": f"Bearer {lacking_jwt}"}):
        response = await call(client, endpoint, headers)
        assert response.status_code == 403, response.text
        assert f'scope="{scope}"' in response.headers["www-authenticate"]
        assert response.json()["error"].startswith(f"this operation needs the scope {scope};")

    allowed = (
        {"X-API-Key": api_keys.full},
        {"Authorization": f"Bearer {api_keys.full}"},
        {"X-API-Key": api_keys.admin},
        {"Authorization": f"Bearer {token()}"},
        {"Authorization": f"Bearer {token(('admin',))}"},
    )
    for headers in allowed:
        response = await call(client, endpoint, headers)
        assert response.status_code == (404 if endpoint == READ_JOB else 202), response.text


async def test_the_probes_need_no_credential(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_401_messages_are_precise_and_never_echo_the_secret(
    client: httpx.AsyncClient, api_keys: ApiKeys
) -> None:
    key_id, secret = api_keys.full[3:19], api_keys.full[20:]
    wrong = f"es_{key_id}_{'Z' * 43}"
    none = await client.get("/v1/jobs/x")
    bad = await client.get("/v1/jobs/x", headers={"X-API-Key": wrong})
    malformed = await client.get("/v1/jobs/x", headers={"X-API-Key": "es_" + secret})

    assert_401(none, "no credential", "X-API-Key")
    assert 'error="invalid_token"' not in none.headers["www-authenticate"]
    assert_401(bad, f"API key {key_id} is not valid")
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert_401(malformed, "malformed")
    for response in (bad, malformed):
        assert "Z" * 43 not in response.text + str(response.headers)
        assert secret not in response.text + str(response.headers)


# -- JWTs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "secret", "reason"),
    [
        ({"exp": FromNow(-120)}, JWT_SECRET, "has expired"),
        ({"aud": "someone-else"}, JWT_SECRET, "another audience (expected 'embedstream-api')"),
        ({"iss": "evil"}, JWT_SECRET, "another issuer (expected 'embedstream')"),
        ({}, "another-secret-of-enough-length-0123456789", "signature does not verify"),
        ({"tenant": None}, JWT_SECRET, "lacks the 'tenant' claim"),
        ({"scope": None}, JWT_SECRET, "lacks the 'scope' claim"),
        ({"exp": None}, JWT_SECRET, "lacks the 'exp' claim"),
        ({"scope": "jobs:read root"}, JWT_SECRET, "unknown scope(s) root"),
        ({"tenant": "bad tenant!"}, JWT_SECRET, "'tenant' claim is invalid: 1-64 characters"),
        ({"exp": FromNow(86_400)}, JWT_SECRET, "accepts at most 3600 s"),
        ({"iat": FromNow(600)}, JWT_SECRET, "not valid yet"),
    ],
    ids=[
        "expired",
        "audience",
        "issuer",
        "signature",
        "no-tenant",
        "no-scope",
        "no-exp",
        "unknown-scope",
        "bad-tenant",
        "too-long",
        "future-iat",
    ],
)
async def test_bad_jwts_are_401_with_the_reason(
    client: httpx.AsyncClient, claims: dict[str, Any], secret: str, reason: str
) -> None:
    response = await client.get(
        "/v1/jobs/x", headers={"Authorization": f"Bearer {raw_token(secret, **claims)}"}
    )
    assert_401(response, reason)


async def test_unsigned_and_other_algorithm_jwts_are_refused(client: httpx.AsyncClient) -> None:
    claims = jwt.decode(raw_token(), options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
    hs512 = jwt.encode(claims, JWT_SECRET * 2, algorithm="HS512")
    for value in (unsigned, hs512):
        response = await client.get("/v1/jobs/x", headers={"Authorization": f"Bearer {value}"})
        assert response.status_code == 401


async def test_a_small_clock_skew_is_tolerated(client: httpx.AsyncClient) -> None:
    just_expired = raw_token(exp=int(time.time()) - 3)
    response = await client.get("/v1/jobs/x", headers={"Authorization": f"Bearer {just_expired}"})
    assert response.status_code == 404


async def test_jwts_are_refused_when_no_secret_is_configured(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    settings = settings_for(prefix, api_keys.schema)
    settings.auth = AuthSettings(jwt_secret=None)
    async for client in open_client(settings):
        response = await client.get("/v1/jobs/x", headers={"Authorization": f"Bearer {token()}"})
        assert_401(response, "bearer JWTs are not accepted by this server")


# -- API keys ----------------------------------------------------------------------------


async def test_keys_are_stored_only_as_argon2id_hashes(pg_schema: str) -> None:
    record, key = await create_key(pg_schema, "acme", "jobs:read", name="ci")
    conn = await asyncpg.connect(PG_DSN)
    try:
        row = await conn.fetchrow(f'SELECT * FROM "{pg_schema}".api_keys')
        everything = " ".join(str(v) for v in row.values())
    finally:
        await conn.close()
    secret = key.split("_", 2)[2]
    assert key not in everything and secret not in everything
    assert row["hash"].startswith("$argon2id$")
    assert row["id"] == record.id and key.startswith(f"es_{record.id}_")
    assert list(row["scopes"]) == ["jobs:read"] and row["tenant"] == "acme"


async def test_a_revoked_key_stops_working_within_the_cache_ttl(
    prefix: str, redis_client: redis.Redis, pg_schema: str
) -> None:
    record, key = await create_key(pg_schema, "acme", "jobs:read")
    settings = settings_for(prefix, pg_schema, api_key_cache_ttl_s=0.3)
    async for client in open_client(settings, {"X-API-Key": key}):
        assert (await client.get("/v1/jobs/x")).status_code == 404
        pool = await asyncpg.create_pool(
            PG_DSN, min_size=1, max_size=1, server_settings={"search_path": pg_schema}
        )
        try:
            await ApiKeyStore(pool).revoke(record.id)
        finally:
            await pool.close()
        answers: list[httpx.Response] = []

        async def refused(
            client: httpx.AsyncClient = client, answers: list[httpx.Response] = answers
        ) -> bool:
            answers.append(await client.get("/v1/jobs/x"))
            return answers[-1].status_code == 401

        await wait_until(refused, within=5, what="the revoked key to be refused")
        assert_401(answers[-1], f"API key {record.id} was revoked at")


async def test_a_verified_key_is_cached_and_its_use_recorded(
    prefix: str, redis_client: redis.Redis, pg_schema: str
) -> None:
    record, key = await create_key(pg_schema, "acme", "jobs:read")
    assert record.last_used_at is None
    async for client in open_client(settings_for(prefix, pg_schema), {"X-API-Key": key}):
        started = time.perf_counter()
        await client.get("/v1/jobs/x")
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(5):
            assert (await client.get("/v1/jobs/x")).status_code == 404
        cached = (time.perf_counter() - started) / 5
    assert cached < first / 3  # no argon2 per request
    conn = await asyncpg.connect(PG_DSN)
    try:
        used = await conn.fetchval(f'SELECT last_used_at FROM "{pg_schema}".api_keys')
    finally:
        await conn.close()
    assert used is not None


async def test_postgres_down_is_503_for_keys_while_jwts_still_work(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys, closed_port: int
) -> None:
    settings = settings_for(prefix, api_keys.schema)
    settings.postgres = PostgresSettings(
        database_url=f"postgresql://postgres@127.0.0.1:{closed_port}/test"
    )
    async for client in open_client(settings):
        by_key = await client.get("/v1/jobs/x", headers={"X-API-Key": api_keys.full})
        by_jwt = await client.get("/v1/jobs/x", headers={"Authorization": f"Bearer {token()}"})
    assert by_key.status_code == 503
    assert by_key.headers["retry-after"] == "5"
    assert "credential store (PostgreSQL) is unavailable" in by_key.json()["error"]
    assert by_jwt.status_code == 404


async def test_routes_get_the_principal(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    from embedstream.api.app import create_app

    app = create_app(settings_for(prefix, api_keys.schema))

    @app.get("/whoami")
    async def whoami(principal: PrincipalDep) -> dict[str, Any]:
        return {
            "tenant": principal.tenant,
            "scopes": sorted(principal.scopes),
            "credential_id": principal.credential_id,
            "kind": principal.kind,
        }

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        by_key = (await c.get("/whoami", headers={"X-API-Key": api_keys.reader})).json()
        by_jwt = (await c.get("/whoami", headers={"Authorization": f"Bearer {token()}"})).json()
        anonymous = await c.get("/whoami")
    assert by_key == {
        "tenant": "acme",
        "scopes": ["jobs:read"],
        "credential_id": f"key:{api_keys.reader[3:19]}",
        "kind": "api_key",
    }
    assert by_jwt["credential_id"] == "jwt:acme:svc-a" and by_jwt["kind"] == "jwt"
    assert anonymous.status_code == 401


# -- CLI ---------------------------------------------------------------------------------


def json_of(stdout: str) -> Any:
    """The JSON document in ``stdout`` (structlog's default, in tests, also prints there)."""
    return json.loads(stdout[stdout.index("\n[") + 1 if not stdout.startswith("[") else 0 :])


def test_keys_cli_creates_lists_and_revokes(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import uuid

    from tests.integration.conftest import drop_schema

    schema = f"t_cli_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("EMBEDSTREAM_DATABASE_URL", PG_DSN)
    monkeypatch.setenv("EMBEDSTREAM_DATABASE_SCHEMA", schema)
    # structlog would keep writing to the first invocation's (then closed) stderr
    monkeypatch.setattr("embedstream.api.security.cli.configure_logging", lambda *a, **k: None)
    runner = CliRunner()
    try:
        created = runner.invoke(
            cli_app,
            [
                "keys",
                "create",
                "--tenant",
                "acme",
                "--scope",
                "documents:write",
                "--scope",
                "jobs:read",
                "--name",
                "ingest bot",
            ],
        )
        assert created.exit_code == 0, created.output
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("es_")
        key_id = key[3:19]

        listed = runner.invoke(cli_app, ["keys", "list", "--tenant", "acme", "--json"])
        assert listed.exit_code == 0, listed.output
        [row] = json_of(listed.stdout)
        assert row["id"] == key_id and row["revoked_at"] is None
        assert row["scopes"] == ["documents:write", "jobs:read"]
        assert key.split("_", 2)[2] not in listed.output and "argon2" not in listed.output

        revoked = runner.invoke(cli_app, ["keys", "revoke", key_id])
        assert revoked.exit_code == 0, revoked.output
        assert f"revoked {key_id}" in revoked.stdout
        [row] = json_of(runner.invoke(cli_app, ["keys", "list", "--json"]).stdout)
        assert row["revoked_at"] is not None

        unknown = runner.invoke(cli_app, ["keys", "revoke", "0000000000000000"])
        assert unknown.exit_code == 1
        bad_scope = runner.invoke(
            cli_app, ["keys", "create", "--tenant", "acme", "--scope", "root", "--name", "x"]
        )
        # an unknown scope is a usage error (exit code 2), like every bad argument
        assert bad_scope.exit_code == 2 and "unknown scope(s) root" in bad_scope.output
    finally:
        asyncio.run(drop_schema(schema))


def test_token_cli_issues_a_verifiable_jwt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDSTREAM_JWT_SECRET", JWT_SECRET)
    monkeypatch.setattr("embedstream.api.security.cli.configure_logging", lambda *a, **k: None)
    result = CliRunner().invoke(
        cli_app,
        ["token", "issue", "--tenant", "acme", "--scope", "jobs:read", "--ttl", "900"],
    )
    assert result.exit_code == 0, result.output
    claims = jwt.decode(
        result.stdout.strip(), JWT_SECRET, algorithms=["HS256"], audience="embedstream-api"
    )
    assert claims["tenant"] == "acme" and claims["scope"] == "jobs:read"
    assert claims["exp"] - claims["iat"] == 900
    too_long = CliRunner().invoke(
        cli_app, ["token", "issue", "--tenant", "acme", "--scope", "jobs:read", "--ttl", "99999"]
    )
    assert too_long.exit_code == 2  # an argument out of bounds
    monkeypatch.delenv("EMBEDSTREAM_JWT_SECRET")
    unset = CliRunner().invoke(
        cli_app, ["token", "issue", "--tenant", "acme", "--scope", "jobs:read"]
    )
    # a missing setting is a usage error (exit code 2)
    assert unset.exit_code == 2 and "EMBEDSTREAM_JWT_SECRET is not set" in unset.output


# -- logs --------------------------------------------------------------------------------


async def test_credentials_never_reach_the_logs(
    client: httpx.AsyncClient, api_keys: ApiKeys
) -> None:
    good_jwt, expired_jwt = token(), token(ttl_s=60, now=time.time() - 600)
    wrong_key = api_keys.full[:-6] + "ZZZZZZ"
    secrets = [api_keys.full, wrong_key, good_jwt, expired_jwt]
    capture = LogCapture()  # like capture_logs(), with the request's contextvars merged
    saved = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        for headers in (
            {"X-API-Key": api_keys.full},
            {"X-API-Key": wrong_key},
            {"Authorization": f"Bearer {good_jwt}"},
            {"Authorization": f"Bearer {expired_jwt}"},
            {"Authorization": f"Bearer {api_keys.reader}"},
        ):
            await client.post("/v1/documents", json={"text": "x"}, headers=headers)
            await client.get("/v1/jobs/x", headers=headers)
    finally:
        structlog.configure(**saved)
    logs = capture.entries
    text = repr(logs)
    assert any(e["event"] == "authentication failed" for e in logs)
    assert any(e["event"] == "authorization failed" for e in logs)
    for secret in secrets:
        assert secret not in text
        assert secret.split(".")[-1] not in text  # not even a JWT's signature
    assert all("headers" not in e and "authorization" not in e for e in logs)
    access = [e for e in logs if e["event"] == "request" and e["status"] in (202, 404)]
    assert access and all(e["tenant"] == "acme" for e in access)  # who, never the secret
    assert {e["credential_id"] for e in access} >= {f"key:{api_keys.full[3:19]}", "jwt:acme:svc-a"}
    refused = [e for e in logs if e["event"] == "request" and e["status"] == 401]
    assert refused and all("credential_id" not in e for e in refused)  # nothing leaked over


def test_the_log_pipeline_redacts_what_a_caller_might_log(
    api_keys: ApiKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = structlog.get_config()
    a_jwt = token()
    try:
        configure_logging("INFO", json=True)
        log = structlog.get_logger("leaky")
        log.info(
            "oops",
            authorization=f"Bearer {a_jwt}",
            headers={"X-API-Key": api_keys.full, "accept": "*/*"},
            note=f"key {api_keys.full} and token {a_jwt}",
            jwt_secret=JWT_SECRET,
        )
        try:
            raise ValueError(f"bad credential {api_keys.full}")
        except ValueError:
            log.exception("failed")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    finally:
        structlog.configure(**saved)
    text = json.dumps(lines)
    for secret in (api_keys.full, a_jwt, JWT_SECRET, api_keys.full.split("_", 2)[2]):
        assert secret not in text
    oops = lines[0]
    assert oops["authorization"] == "[REDACTED]"
    assert oops["jwt_secret"] == "[REDACTED]"
    assert oops["headers"] == {"X-API-Key": "[REDACTED]", "accept": "*/*"}
    assert f"es_{api_keys.full[3:19]}_[REDACTED]" in oops["note"]
    assert "[REDACTED](jwt)" in oops["note"]
    assert "[REDACTED]" in lines[1]["exception"]

    stream = io.StringIO()
    stdlib = logging.getLogger("embedstream.test.stdlib")
    handler = logging.StreamHandler(stream)
    stdlib.addHandler(handler)
    stdlib.propagate = False
    try:
        install_stdlib_redaction(stdlib)
        stdlib.warning("got %s from %s", api_keys.full, f"Authorization: Bearer {a_jwt}")
        try:
            raise RuntimeError(a_jwt)
        except RuntimeError:
            stdlib.exception("boom")
    finally:
        stdlib.removeHandler(handler)
    output = stream.getvalue()
    assert api_keys.full not in output and a_jwt not in output
    assert "[REDACTED]" in output and "RuntimeError" in output
