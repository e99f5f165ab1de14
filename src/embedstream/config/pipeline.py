"""Settings of the pipeline's processes: logging, Redis and the stream runtime, the event
versions produced, the worker's health endpoint, PostgreSQL, Chroma and the embedder."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from embedstream.config.env import Environment, settings_config
from embedstream.streams.names import StreamNames

Backend = Literal["torch", "onnx", "onnx-int8"]


def default_consumer_name() -> str:
    """A name that is stable for the life of a process and unique across hosts."""
    return f"{socket.gethostname()}-{os.getpid()}"


class AppSettings(BaseSettings):
    """Process-wide settings: environment and logging."""

    model_config = settings_config()

    env: Environment = "development"
    log_level: str = "INFO"
    log_json: bool | None = Field(
        default=None, description="JSON log lines; defaults to on in production."
    )

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.env == "production"


class RedisSettings(BaseSettings):
    model_config = settings_config()

    redis_url: str = "redis://127.0.0.1:6379/0"
    stream_prefix: str = "embedstream"
    results_retention_s: int = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="results-stream entries older than this are trimmed once every "
        "group on it has acknowledged them (with no group: once older); 0 keeps them all",
    )

    redis_cluster: bool | None = Field(
        default=None,
        description="talk to a Redis Cluster (redis-py's cluster client); by default on "
        "when EMBEDSTREAM_REDIS_URL has the redis+cluster:// (or rediss+cluster://) scheme. "
        "Every key then carries the prefix as a hash tag (embedstream.streams.names)",
    )
    partitions: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="EMBEDSTREAM_PARTITIONS: the ingest and embedded streams exist once per "
        "partition (each with its own hash tag on a cluster); a document's partition is a "
        "stable hash of (tenant, document id). Every process of a deployment must agree; "
        "a change is refused while entries are pending",
    )
    redis_min_replicas_ack: int = Field(
        default=0,
        ge=0,
        description="durable acknowledgement: the API answers 202 (and a worker acks what "
        "it wrote) only after WAIT reports the write on at least this many replicas; "
        "0 (the default) does not wait (Redis replication is asynchronous)",
    )
    redis_replicas_ack_timeout_ms: int = Field(
        default=1_000,
        ge=1,
        description="how long WAIT may take before the write counts as not replicated "
        "(the API answers 503, a worker leaves the entry pending for redelivery)",
    )

    @field_validator("stream_prefix")
    @classmethod
    def _prefix_has_no_spaces(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError("stream_prefix must be a non-empty string without whitespace")
        if ("{" in value or "}" in value) and not (
            value.startswith("{") and "}" in value[2:] and value.count("{") == 1
        ):
            raise ValueError(
                "stream_prefix may hold braces only as one leading hash tag ('{es}' or "
                "'{es}:blue'); on a Redis Cluster a plain prefix is tagged for you"
            )
        return value

    @property
    def is_cluster(self) -> bool:
        """Cluster mode: ``redis_cluster`` when set, else the URL's scheme says."""
        if self.redis_cluster is not None:
            return self.redis_cluster
        return self.redis_url.split("://", 1)[0].endswith("+cluster")

    def names(self) -> StreamNames:
        """The deployment's key names (tagged on a cluster, see ``StreamNames``)."""
        return StreamNames(self.stream_prefix, cluster=self.is_cluster, partitions=self.partitions)


class ConsumerSettings(BaseSettings):
    """How a worker reads its stream: batch sizes, leases, retries, draining."""

    model_config = settings_config()

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

    model_config = settings_config()

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

    model_config = settings_config()

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
    model_config = settings_config()

    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    database_schema: str = "embedstream"
    pool_min_size: int = 1
    pool_max_size: int = 4


class ChromaSettings(BaseSettings):
    model_config = settings_config()

    chroma_path: Path = Path(".data/chroma")
    chroma_url: str | None = None
    chroma_collection: str = "embedstream"
    chroma_store_documents: bool = Field(
        default=False,
        description="also store chunk text in Chroma (PostgreSQL always has it); costs CPU",
    )


class EmbedSettings(BaseSettings):
    model_config = settings_config()

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
