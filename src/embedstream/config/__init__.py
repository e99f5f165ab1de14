"""Settings, one class per area, all read from ``EMBEDSTREAM_*`` environment variables.

Nothing here opens a connection: processes build their clients from these values at
start-up and pass them on. A refused value is never repeated (``embedstream.config.env``);
``Settings`` reads each area on first use and turns refusals into one
``InvalidSettings`` message per refused setting.

The areas: ``embedstream.config.pipeline`` (logging, Redis, the stream runtime, events,
health, PostgreSQL, Chroma, the embedder), ``embedstream.config.api`` (the ingress and
its credentials) and ``embedstream.config.observability`` (metrics).
"""

from __future__ import annotations

from functools import cached_property
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from embedstream.config.api import (
    MIN_SECRET_CHARS,
    WEAK_SECRETS,
    ApiSettings,
    AuthSettings,
    SearchSettings,
    jwt_secret_problem,
    rate_limit_spec,
)
from embedstream.config.env import (
    ENV_PREFIX,
    Environment,
    InvalidSettings,
    describe_settings_error,
)
from embedstream.config.observability import MetricsSettings
from embedstream.config.pipeline import (
    AppSettings,
    Backend,
    ChromaSettings,
    ConsumerSettings,
    EmbedSettings,
    EventSettings,
    EventVersions,
    HealthSettings,
    PostgresSettings,
    RedisSettings,
    default_consumer_name,
)

__all__ = [
    "ENV_PREFIX",
    "MIN_SECRET_CHARS",
    "WEAK_SECRETS",
    "ApiSettings",
    "AppSettings",
    "AuthSettings",
    "Backend",
    "ChromaSettings",
    "ConsumerSettings",
    "EmbedSettings",
    "Environment",
    "EventSettings",
    "EventVersions",
    "HealthSettings",
    "InvalidSettings",
    "MetricsSettings",
    "PostgresSettings",
    "RedisSettings",
    "SearchSettings",
    "Settings",
    "default_consumer_name",
    "describe_settings_error",
    "jwt_secret_problem",
    "rate_limit_spec",
    "read_settings",
]


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
    def metrics(self) -> MetricsSettings:
        return read_settings(MetricsSettings)

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
