"""Settings of the ingress: HTTP, limits and CORS (``ApiSettings``) and credentials
(``AuthSettings``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from embedstream.config.env import Environment, settings_config


class ApiSettings(BaseSettings):
    model_config = settings_config()

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_documents_per_request: int = Field(default=1_000, ge=1)
    max_document_chars: int = Field(default=1_000_000, ge=1)
    rate_limit: str = Field(
        default="20/second;600/minute",
        description="requests per credential (EMBEDSTREAM_RATE_LIMIT), in the `limits` "
        "notation: '100/minute', '10/second;1000/hour'; empty turns it off",
    )
    max_ingest_lag: int = Field(
        default=100_000,
        ge=0,
        description="writes get 503 while the embedder group lags more entries than this "
        "on the ingest stream (EMBEDSTREAM_MAX_INGEST_LAG); 0 turns it off",
    )
    ingest_lag_cache_s: float = Field(default=1.0, gt=0, le=60)
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins allowed by CORS (EMBEDSTREAM_CORS_ORIGINS, comma-separated); "
        "none: no CORS headers at all",
    )
    api_docs: bool | None = Field(
        default=None,
        description="serve /docs, /redoc and /openapi.json (EMBEDSTREAM_API_DOCS); "
        "defaults to on, off in production",
    )
    console: bool | None = Field(
        default=None,
        description="serve the operator console at /console (EMBEDSTREAM_CONSOLE); "
        "defaults to on, off in production",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _explicit_origins(cls, value: list[str]) -> list[str]:
        for position, origin in enumerate(value, start=1):
            if origin == "*":
                raise ValueError(
                    "EMBEDSTREAM_CORS_ORIGINS must list explicit origins "
                    "(https://app.example.com), not '*'"
                )
            if not origin.startswith(("http://", "https://")) or origin.endswith("/"):
                raise ValueError(
                    f"EMBEDSTREAM_CORS_ORIGINS: entry {position} is not an origin "
                    "(scheme://host[:port], no path or trailing slash)"
                )
        return value

    @field_validator("rate_limit")
    @classmethod
    def _parseable_rate_limit(cls, value: str) -> str:
        return rate_limit_spec(value, "EMBEDSTREAM_RATE_LIMIT")


def rate_limit_spec(value: str, variable: str) -> str:
    """``value`` stripped, if the ``limits`` library parses it (empty: no limit); the
    refusal names ``variable`` and the rule, not the value."""
    if value.strip():
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                f"{variable} is not a rate limit such as '100/minute' or "
                "'10/second;1000/hour' (several separated by ';')"
            ) from None
    return value.strip()


#: JWT secrets that are placeholders, never real ones (compared case-insensitively).
WEAK_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "secret",
        "password",
        "default",
        "jwt-secret",
        "jwt_secret",
        "dev",
        "development",
        "test",
        "example",
    }
)
MIN_SECRET_CHARS = 32


def jwt_secret_problem(secret: str | None) -> str | None:
    """Why ``secret`` is unfit for production (None when it is fine)."""
    if not secret:
        return "EMBEDSTREAM_JWT_SECRET is not set"
    lowered = secret.strip().lower()
    if lowered in WEAK_SECRETS or any(word in lowered for word in ("changeme", "change-me")):
        return "EMBEDSTREAM_JWT_SECRET is a placeholder value"
    if len(secret) < MIN_SECRET_CHARS:
        return (
            f"EMBEDSTREAM_JWT_SECRET is too short ({len(secret)} characters; at least "
            f"{MIN_SECRET_CHARS} are required)"
        )
    if len(set(secret)) < 8:
        return "EMBEDSTREAM_JWT_SECRET has too few distinct characters"
    return None


class AuthSettings(BaseSettings):
    """Credentials of the ingress: OAuth2 bearer JWTs (HS256) and API keys."""

    model_config = settings_config()

    env: Environment = "development"
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="HS256 signing secret (EMBEDSTREAM_JWT_SECRET); unset: JWTs refused. "
        "Required in production (32+ characters, e.g. `openssl rand -base64 48`).",
    )
    jwt_issuer: str = "embedstream"
    jwt_audience: str = "embedstream-api"
    jwt_leeway_s: int = Field(default=10, ge=0, le=120)
    jwt_max_ttl_s: int = Field(default=3_600, ge=60, le=86_400)
    api_key_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="how long a process trusts a verified API key before asking PostgreSQL "
        "again: a revoked key stops working within this many seconds",
    )
    api_key_cache_size: int = Field(default=10_000, ge=1)
    auth_failure_limit: str = Field(
        default="10/minute;100/hour",
        description="failed credential checks allowed per client address and per API key "
        "id (EMBEDSTREAM_AUTH_FAILURE_LIMIT, `limits` notation); past it: 429, and no "
        "uncached API key is checked; empty turns it off",
    )

    @field_validator("auth_failure_limit")
    @classmethod
    def _parseable_failure_limit(cls, value: str) -> str:
        return rate_limit_spec(value, "EMBEDSTREAM_AUTH_FAILURE_LIMIT")

    @model_validator(mode="after")
    def _secrets_fit_for_production(self) -> AuthSettings:
        if self.env == "production":
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else None
            if problem := jwt_secret_problem(secret):
                raise ValueError(
                    f"refusing to run in production (EMBEDSTREAM_ENV=production): {problem}; "
                    "set EMBEDSTREAM_JWT_SECRET to a random value of 32+ characters"
                )
        return self

    @property
    def secret(self) -> str | None:
        return self.jwt_secret.get_secret_value() if self.jwt_secret else None


class SearchSettings(BaseSettings):
    """Search in the API process (``POST /v1/search``): the query model is loaded on the
    first search unless ``search_preload`` asks for it at start."""

    model_config = settings_config()

    search_preload: bool = Field(
        default=False,
        description="load the query embedding model and open the index when the API "
        "starts (EMBEDSTREAM_SEARCH_PRELOAD) instead of on the first search; an API that "
        "is never asked to search loads no model either way unless this is on",
    )
    search_max_in_flight: int = Field(
        default=16,
        ge=1,
        le=1_000,
        description="searches one API process runs at once (EMBEDSTREAM_SEARCH_MAX_IN_FLIGHT); "
        "more get 503 with Retry-After (query embedding is CPU work)",
    )
