"""Settings, one class per area, all read from ``EMBEDSTREAM_*`` environment variables.

Nothing here opens a connection: processes build their clients from these values at
start-up and pass them on.
"""

from __future__ import annotations

import os
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from embedstream.streams.names import StreamNames

Environment = Literal["development", "production", "test"]


def _config() -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix="EMBEDSTREAM_", extra="ignore")


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
    chunk_tokens: int | None = Field(default=None, ge=16)
    chunk_overlap: int = Field(default=32, ge=0)
    max_batch_chunks: int = Field(default=64, ge=1)
    max_batch_tokens: int = Field(default=8_192, ge=64)


class ApiSettings(BaseSettings):
    model_config = _config()

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_documents_per_request: int = Field(default=1_000, ge=1)
    max_document_chars: int = Field(default=1_000_000, ge=1)


class Settings:
    """All areas together; each area is read from the environment on first use."""

    @cached_property
    def app(self) -> AppSettings:
        return AppSettings()

    @cached_property
    def redis(self) -> RedisSettings:
        return RedisSettings()

    @cached_property
    def consumer(self) -> ConsumerSettings:
        return ConsumerSettings()

    @cached_property
    def postgres(self) -> PostgresSettings:
        return PostgresSettings()

    @cached_property
    def chroma(self) -> ChromaSettings:
        return ChromaSettings()

    @cached_property
    def embed(self) -> EmbedSettings:
        return EmbedSettings()

    @cached_property
    def api(self) -> ApiSettings:
        return ApiSettings()
