"""Stream, group and key names under one configurable prefix, and the pipeline's stages:
the one place their names, streams and consumer groups are defined.

Key layout and Redis Cluster
----------------------------
A Redis Cluster runs a Lua script or a MULTI/EXEC only when every key it touches lives
in one hash slot. embedstream's atomic steps (the ingress's submit script, a worker's
ack with its next event and its job bookkeeping, a dead letter, a replay) each touch
several keys, so on a cluster every key of a deployment carries one hash tag: the
prefix in braces, ``{embedstream}:ingest``, ``{embedstream}:job:<id>``... (``base``).
Every script and MULTI then stays in one slot, atomic as on a single node, and nothing
relies on a cross-slot operation. Code builds every key from ``StreamNames`` (never
from the prefix by hand), so the tag is applied everywhere.

On a single Redis (``cluster=False``) the keys are untagged and exactly what they were
before cluster support: ``embedstream:ingest``, ``embedstream:job:<id>``... An existing
deployment keeps its streams, groups and pending entries after the upgrade with no key
surgery. A prefix that is already a hash tag (``{es}``) is used as it is in both cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def hash_tagged(prefix: str) -> str:
    """``prefix`` as a Redis Cluster hash tag: ``{prefix}``, unless it already starts
    with one (``{es}`` or ``{es}:blue`` are kept)."""
    if prefix.startswith("{") and "}" in prefix[2:]:
        return prefix
    return "{" + prefix + "}"


@dataclass(frozen=True)
class StreamNames:
    """Every Redis key embedstream uses starts with ``base`` (the prefix; on a cluster
    the prefix as a hash tag), so deployments can share one Redis and, on a cluster,
    every key of a deployment is in one hash slot (see the module doc)."""

    prefix: str
    cluster: bool = False
    base: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", hash_tagged(self.prefix) if self.cluster else self.prefix)

    @property
    def ingest(self) -> str:
        return f"{self.base}:ingest"

    @property
    def embedded(self) -> str:
        return f"{self.base}:embedded"

    @property
    def results(self) -> str:
        return f"{self.base}:results"

    @property
    def dlq(self) -> str:
        return f"{self.base}:dlq"

    @property
    def dlq_counts(self) -> str:
        """Hash ``{stream}|{group}`` -> number of entries dead-lettered from that group."""
        return f"{self.base}:dlq:counts"

    @property
    def pattern(self) -> str:
        """A SCAN/KEYS pattern matching every key of the deployment."""
        escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.base)
        return f"{escaped}:*"

    def key(self, *parts: str) -> str:
        return ":".join((self.base, *parts))

    def pipeline_streams(self) -> tuple[str, ...]:
        return (self.ingest, self.embedded, self.results)

    def stage_groups(self) -> tuple[tuple[str, str], ...]:
        """(stream, group) of every pipeline stage: embed, index, persist."""
        return tuple((stage.stream_of(self), stage.group) for stage in PIPELINE)


@dataclass(frozen=True)
class StageNames:
    """A pipeline stage's names: its own (in job records, dead letters, logs), the stream
    it reads and its consumer group there."""

    name: str
    stream: Literal["ingest", "embedded"]
    group: str

    def stream_of(self, names: StreamNames) -> str:
        """The stage's stream under ``names``' prefix."""
        return names.ingest if self.stream == "ingest" else names.embedded


EMBED = StageNames("embed", "ingest", "embedder")
INDEX = StageNames("index", "embedded", "indexer")
PERSIST = StageNames("persist", "embedded", "persister")
PIPELINE = (EMBED, INDEX, PERSIST)
"""Every stage, in the order a document passes them."""


def as_text(value: object) -> str:
    """A value from a Redis reply as text (bytes decoded as UTF-8, bad bytes replaced)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def stream_id_to_version(entry_id: str | bytes) -> int:
    """A stream entry id as one sortable integer (ms * 2**20 + seq)."""
    ms, _, seq = as_text(entry_id).partition("-")
    return (int(ms) << 20) + int(seq or 0)
