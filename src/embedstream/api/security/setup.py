"""Building the ingress's guards (credentials, rate limits, backpressure) and its
production checks. Called by the lifespan and ``create_app``."""

from __future__ import annotations

import asyncpg
import redis.asyncio as redis

from embedstream.adapters.postgres.pool import APPLICATION_NAME, COMMAND_TIMEOUT_S, quote_ident
from embedstream.api.backpressure import Backpressure, IngestLagGauge
from embedstream.api.security.apikeys import ApiKeyStore
from embedstream.api.security.guards import Guards
from embedstream.api.security.keycache import ApiKeyVerifier
from embedstream.api.security.ratelimit import CredentialRateLimiter, FailedAuthLimiter
from embedstream.config import Settings, jwt_secret_problem

KEY_LOOKUP_TIMEOUT_S = 5.0


class ProductionConfigError(RuntimeError):
    """The settings are unsafe for ``EMBEDSTREAM_ENV=production``."""


def check_production(settings: Settings) -> None:
    """Refuse to run in production with a missing or placeholder secret."""
    if settings.app.env != "production":
        return
    if problem := jwt_secret_problem(settings.auth.secret):
        raise ProductionConfigError(
            f"refusing to start in production (EMBEDSTREAM_ENV=production): {problem}; set "
            "EMBEDSTREAM_JWT_SECRET to a random value of 32+ characters"
        )


async def create_key_pool(settings: Settings) -> asyncpg.Pool:
    """A small pool for API key lookups. It connects lazily (``min_size=0``), so the API
    starts while PostgreSQL is away; key checks then answer 503 until it is back."""
    return await asyncpg.create_pool(
        settings.postgres.database_url,
        min_size=0,
        max_size=settings.postgres.pool_max_size,
        command_timeout=min(COMMAND_TIMEOUT_S, KEY_LOOKUP_TIMEOUT_S),
        timeout=KEY_LOOKUP_TIMEOUT_S,
        server_settings={
            "search_path": quote_ident(settings.postgres.database_schema),
            "application_name": f"{APPLICATION_NAME}-api",
        },
    )


def build_guards(settings: Settings, client: redis.Redis, pool: asyncpg.Pool) -> Guards:
    names = settings.redis.names()
    return Guards(
        auth=settings.auth,
        keys=ApiKeyVerifier(
            ApiKeyStore(pool),
            ttl_s=settings.auth.api_key_cache_ttl_s,
            max_entries=settings.auth.api_key_cache_size,
        ),
        rate_limiter=CredentialRateLimiter(client, names, settings.api.rate_limit),
        backpressure=Backpressure(
            IngestLagGauge(client, names, ttl_s=settings.api.ingest_lag_cache_s),
            settings.api.max_ingest_lag,
        ),
        failures=FailedAuthLimiter(client, names, settings.auth.auth_failure_limit),
    )
