"""Stream, group and key names under one configurable prefix, and the pipeline's stages:
the one place their names, streams and consumer groups are defined."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StreamNames:
    """Every Redis key embedstream uses starts with ``prefix``, so deployments can share
    one Redis."""

    prefix: str

    @property
    def ingest(self) -> str:
        return f"{self.prefix}:ingest"

    @property
    def embedded(self) -> str:
        return f"{self.prefix}:embedded"

    @property
    def results(self) -> str:
        return f"{self.prefix}:results"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}:dlq"

    @property
    def dlq_counts(self) -> str:
        """Hash ``{stream}|{group}`` -> number of entries dead-lettered from that group."""
        return f"{self.prefix}:dlq:counts"

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

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
