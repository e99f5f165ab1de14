"""Production mode: no start with missing or placeholder secrets, docs off unless asked,
CORS only for configured origins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis.asyncio as redis
from pydantic import ValidationError

from embedstream.api.app import create_app
from embedstream.api.security.setup import ProductionConfigError
from embedstream.config import ApiSettings, AppSettings, AuthSettings, RedisSettings, Settings
from tests.conftest import REDIS_URL
from tests.integration.conftest import JWT_SECRET, ApiKeys, open_client, with_key_store

pytestmark = pytest.mark.integration

STRONG = "k3J9-q0Zr8mXc2Lw7Vb5Nt1Ys6Pd4Hf0Ga8Ue3Ri"


def production(prefix: str, schema: str, **api: object) -> Settings:
    settings = with_key_store(Settings(), schema)
    settings.app = AppSettings(env="production")
    settings.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix)
    settings.auth = AuthSettings(env="production", jwt_secret=STRONG)
    settings.api = ApiSettings(**api)  # type: ignore[arg-type]
    return settings


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (None, "EMBEDSTREAM_JWT_SECRET is not set"),
        ("", "EMBEDSTREAM_JWT_SECRET is not set"),
        ("changeme", "EMBEDSTREAM_JWT_SECRET is a placeholder value"),
        ("CHANGEME-please-changeme-please-1234", "EMBEDSTREAM_JWT_SECRET is a placeholder"),
        ("short-but-random-9f8e", "EMBEDSTREAM_JWT_SECRET is too short (21 characters"),
        ("a" * 40, "too few distinct characters"),
    ],
)
def test_production_refuses_weak_or_missing_secrets(secret: str | None, problem: str) -> None:
    with pytest.raises(ValidationError, match="refusing to run in production") as caught:
        AuthSettings(env="production", jwt_secret=secret)
    assert problem in str(caught.value)
    assert AuthSettings(env="development", jwt_secret=secret).env == "development"


def test_create_app_refuses_production_with_a_weak_secret() -> None:
    settings = Settings()
    settings.app = AppSettings(env="production")
    settings.auth = AuthSettings(jwt_secret="changeme")
    with pytest.raises(ProductionConfigError, match="EMBEDSTREAM_JWT_SECRET is a placeholder"):
        create_app(settings)


def test_the_api_process_does_not_start_with_the_default_secret() -> None:
    env = {
        **os.environ,
        "EMBEDSTREAM_ENV": "production",
        "EMBEDSTREAM_JWT_SECRET": "changeme",
    }
    code = "from embedstream.api.app import create_app; create_app()"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "EMBEDSTREAM_JWT_SECRET" in result.stderr
    assert "refusing to run in production" in result.stderr
    ok = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "EMBEDSTREAM_JWT_SECRET": STRONG},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr


async def test_docs_are_off_in_production_unless_asked(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    async for client in open_client(production(prefix, api_keys.schema)):
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
    async for client in open_client(production(prefix, api_keys.schema, api_docs=True)):
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 200  # no credential needed


async def test_docs_are_on_in_development(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    settings = with_key_store(Settings(), api_keys.schema)
    settings.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix)
    settings.auth = AuthSettings(jwt_secret=JWT_SECRET)
    async for client in open_client(settings):
        spec = (await client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["apiKey"]["description"],
    }
    assert spec["paths"]["/v1/documents"]["post"]["security"] == [
        {"bearer": ["documents:write"]},  # OpenAPI 3.1: the scopes (roles) it needs
        {"apiKey": ["documents:write"]},
    ]
    assert "security" not in spec["paths"]["/healthz"]["get"]


ORIGIN = "https://app.example.com"


async def test_cors_answers_only_configured_origins(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    settings = production(prefix, api_keys.schema, cors_origins=f"{ORIGIN}, https://b.example")
    preflight_headers = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    async for client in open_client(settings):
        allowed = await client.options(
            "/v1/documents", headers={"Origin": ORIGIN, **preflight_headers}
        )
        refused = await client.options(
            "/v1/documents", headers={"Origin": "https://evil.example", **preflight_headers}
        )
        actual = await client.get(
            "/v1/jobs/x", headers={"Origin": ORIGIN, "X-API-Key": api_keys.full}
        )
        foreign = await client.get(
            "/v1/jobs/x", headers={"Origin": "https://evil.example", "X-API-Key": api_keys.full}
        )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in allowed.headers
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    assert actual.headers["access-control-allow-origin"] == ORIGIN
    assert "retry-after" in actual.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in foreign.headers


async def test_no_cors_headers_without_configured_origins(
    prefix: str, redis_client: redis.Redis, api_keys: ApiKeys
) -> None:
    async for client in open_client(production(prefix, api_keys.schema)):
        response = await client.get("/healthz", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("origins", "message"),
    [
        ("*", "not '*'"),
        ("https://a.example, *", "not '*'"),
        ("app.example.com", "is not an origin"),
        ("https://a.example/", "is not an origin"),
    ],
)
def test_cors_origins_must_be_explicit(origins: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ApiSettings(cors_origins=origins)  # type: ignore[arg-type]


def test_cors_origins_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDSTREAM_CORS_ORIGINS", f"{ORIGIN},https://b.example")
    monkeypatch.setenv("EMBEDSTREAM_API_DOCS", "true")
    api = ApiSettings()
    assert api.cors_origins == [ORIGIN, "https://b.example"]
    assert api.api_docs is True
