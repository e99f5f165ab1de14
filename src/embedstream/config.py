"""Settings, one class per area, all read from ``EMBEDSTREAM_*`` environment variables.

Nothing here opens a connection: processes build their clients from these values at
start-up and pass them on. A refused value is never repeated: errors name the variable
and the rule (``hide_input_in_errors``, and no validator quotes its input), since the
value may be a secret or a URL with a password. ``Settings`` turns them into one
``InvalidSettings`` message per refusal.
"""

from __future__ import annotations

import os
import socket
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from embedstream.streams.names import StreamNames

Environment = Literal["development", "production", "test"]
Backend = Literal["torch", "onnx", "onnx-int8"]


ENV_PREFIX = "EMBEDSTREAM_"


def _config() -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True)


class InvalidSettings(ValueError):
    """The environment holds settings that are refused; the message names each variable
    and its rule, never the value."""


def describe_settings_error(exc: ValidationError) -> str:
    """One line per refused setting: ``EMBEDSTREAM_<NAME>: <rule>``."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        variable = f"{ENV_PREFIX}{field.upper()}"
        named = not field or message.startswith(variable)
        lines.append(message if named else f"{variable}: {message}")
    return f"invalid settings ({exc.title}): " + "; ".join(lines)


def default_consumer_name() -> str:
    """A name that is stable for the life of a process and unique across hosts."""
    return f"{socket.gethostname()}-{os.getpid()}"


class AppSettings(BaseSettings):
    """Process-wide settings: environment and logging."""

    model_config = _config()

    env: Environment = "development"
    log_level: str = "INFO"
    log_json: bool | None = Field(
        default=None, description="JSON log lines; defaults to on in production."
    )

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.env == "production"


class RedisSettings(BaseSettings):
    model_config = _config()

    redis_url: str = "redis://127.0.0.1:6379/0"
    stream_prefix: str = "embedstream"
    results_retention_s: int = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="results-stream entries older than this are trimmed once every "
        "group on it has acknowledged them (with no group: once older); 0 keeps them all",
    )

    @property
    def names(self) -> StreamNames:
        return StreamNames(self.stream_prefix)

    @field_validator("stream_prefix")
    @classmethod
    def _prefix_has_no_spaces(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError("stream_prefix must be a non-empty string without whitespace")
        return value


class ConsumerSettings(BaseSettings):
    """How a worker reads its stream: batch sizes, leases, retries, draining."""

    model_config = _config()

    consumer_name: str = Field(default_factory=default_consumer_name)
    batch_size: int = Field(default=100, ge=1, le=10_000)
    block_ms: int = Field(default=2_000, ge=1)
    max_in_flight: int = Field(default=2, ge=1, description="batches handled at once")
    visibility_timeout_ms: int = Field(default=60_000, ge=100)
    max_deliveries: int = Field(default=5, ge=1)
    retry_backoff_ms: int = Field(default=1_000, ge=0)
    retry_backoff_max_ms: int = Field(default=30_000, ge=0)
    claim_interval_ms: int = Field(default=5_000, ge=10)
    consumer_idle_reap_ms: int = Field(default=3_600_000, ge=1_000)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    trim: bool = True


EventVersions = Annotated[tuple[int, ...], NoDecode]


class EventSettings(BaseSettings):
    """Which type versions of the versioned events are produced (``1``: the version as a
    JSON integer; ``2``: as exact version text, see ``embedstream.schemas.versions``).
    Both by default, the same event in two entries, so that consumers of ``*.v1`` keep
    working while they move to ``*.v2``; drop ``1`` once none reads it."""

    model_config = _config()

    embedded_event_versions: EventVersions = Field(
        default=(1, 2),
        description="document.embedded / document.removed on {prefix}:embedded "
        "(EMBEDSTREAM_EMBEDDED_EVENT_VERSIONS, e.g. '1,2' or '2'); each version repeats "
        "every vector, so '2' alone halves that stream once no consumer reads v1",
    )
    results_event_versions: EventVersions = Field(
        default=(1, 2),
        description="document.deleted on {prefix}:results (EMBEDSTREAM_RESULTS_EVENT_VERSIONS)",
    )

    @field_validator("embedded_event_versions", "results_event_versions", mode="before")
    @classmethod
    def _split_versions(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(
                part.strip().removeprefix("v") for part in value.split(",") if part.strip()
            )
        return value

    @field_validator("embedded_event_versions", "results_event_versions")
    @classmethod
    def _known_versions(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        versions = tuple(sorted(set(value)))
        if not versions or not set(versions) <= {1, 2}:
            raise ValueError(f"event versions must be 1, 2 or both (e.g. '1,2'), got {value!r}")
        return versions


class HealthSettings(BaseSettings):
    """The worker's probe endpoint (``/healthz``, ``/readyz``); off unless a port is set."""

    model_config = _config()

    health_port: int | None = Field(
        default=None,
        ge=0,
        le=65_535,
        description="port of the worker's health endpoint (EMBEDSTREAM_HEALTH_PORT); unset: "
        "no endpoint. The images set 8081.",
    )
    health_host: str = Field(
        default="127.0.0.1",
        description="bind address of the health endpoint; 0.0.0.0 in containers",
    )
    liveness_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="liveness fails when the worker loop and every batch in flight have not "
        "moved for longer than this (EMBEDSTREAM_LIVENESS_TIMEOUT_S); keep it above the "
        "longest step that reports no progress (one Chroma or PostgreSQL write, a lock wait "
        "of half the visibility timeout, one encode sub-batch)",
    )
    readiness_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="time allowed to the readiness checks (Redis, the stage's store)",
    )


class PostgresSettings(BaseSettings):
    model_config = _config()

    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    database_schema: str = "embedstream"
    pool_min_size: int = 1
    pool_max_size: int = 4


class ChromaSettings(BaseSettings):
    model_config = _config()

    chroma_path: Path = Path(".data/chroma")
    chroma_url: str | None = None
    chroma_collection: str = "embedstream"
    chroma_store_documents: bool = Field(
        default=False,
        description="also store chunk text in Chroma (PostgreSQL always has it); costs CPU",
    )


class EmbedSettings(BaseSettings):
    model_config = _config()

    model: str | None = Field(
        default=None,
        description="Path of a local sentence-transformers model; defaults to the packaged "
        "all-MiniLM-L6-v2.",
    )
    device: str = "cpu"
    backend: Backend | None = Field(
        default=None,
        description="EMBEDSTREAM_BACKEND: torch, onnx (fp32, same vectors as torch) or "
        "onnx-int8 (faster, different vectors: another model for the collection guard). "
        "Unset: onnx on CPU (torch when the model folder cannot be exported), torch on "
        "other devices.",
    )
    embed_threads: int | None = Field(
        default=None,
        ge=1,
        description="EMBEDSTREAM_EMBED_THREADS: intra-op threads of the model; defaults to "
        "the CPUs this process may use (affinity, cgroup CPU quota). With several replicas "
        "on one host, give each its share (cores / replicas) or a CPU limit.",
    )
    model_cache: Path = Field(
        default=Path(".data/models"),
        description="EMBEDSTREAM_MODEL_CACHE: where ONNX exports of the model are kept "
        "(`embedstream model export` writes there; a worker exports once when missing).",
    )
    chunk_tokens: int | None = Field(default=None, ge=16)
    chunk_overlap: int = Field(default=32, ge=0)
    max_batch_chunks: int = Field(default=64, ge=1)
    max_batch_tokens: int = Field(default=8_192, ge=64)

    @model_validator(mode="after")
    def _onnx_runs_on_cpu(self) -> EmbedSettings:
        if self.backend in ("onnx", "onnx-int8") and self.device != "cpu":
            raise ValueError(
                f"EMBEDSTREAM_BACKEND={self.backend} runs on the CPU; for "
                f"EMBEDSTREAM_DEVICE={self.device} use EMBEDSTREAM_BACKEND=torch"
            )
        return self

    @property
    def resolved_backend(self) -> Backend:
        """The backend asked for, or the default: onnx on CPU, torch elsewhere."""
        if self.backend is not None:
            return self.backend
        return "onnx" if self.device == "cpu" else "torch"

    @property
    def threads(self) -> int:
        from embedstream.cpus import available_cpus

        return self.embed_threads or available_cpus()


class ApiSettings(BaseSettings):
    model_config = _config()

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


class SearchSettings(BaseSettings):
    """Search in the API process (``POST /v1/search``): the query model is loaded on the
    first search unless ``search_preload`` asks for it at start."""

    model_config = _config()

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

    model_config = _config()

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


A = TypeVar("A", bound=BaseSettings)


def read_settings(area: type[A]) -> A:
    """``area`` read from the environment; ``InvalidSettings`` (variables and rules, no
    values) when something is refused."""
    try:
        return area()
    except ValidationError as exc:
        raise InvalidSettings(describe_settings_error(exc)) from None


class Settings:
    """All areas together; each area is read from the environment on first use."""

    @cached_property
    def app(self) -> AppSettings:
        return read_settings(AppSettings)

    @cached_property
    def redis(self) -> RedisSettings:
        return read_settings(RedisSettings)

    @cached_property
    def consumer(self) -> ConsumerSettings:
        return read_settings(ConsumerSettings)

    @cached_property
    def health(self) -> HealthSettings:
        return HealthSettings()

    @cached_property
    def postgres(self) -> PostgresSettings:
        return read_settings(PostgresSettings)

    @cached_property
    def chroma(self) -> ChromaSettings:
        return read_settings(ChromaSettings)

    @cached_property
    def embed(self) -> EmbedSettings:
        return read_settings(EmbedSettings)

    @cached_property
    def events(self) -> EventSettings:
        return read_settings(EventSettings)

    @cached_property
    def api(self) -> ApiSettings:
        return read_settings(ApiSettings)

    @cached_property
    def auth(self) -> AuthSettings:
        return read_settings(AuthSettings)

    @cached_property
    def search(self) -> SearchSettings:
        return read_settings(SearchSettings)
