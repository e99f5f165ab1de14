"""Stream, group and key names under one configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass

EMBEDDER_GROUP = "embedder"
INDEXER_GROUP = "indexer"
PERSISTER_GROUP = "persister"


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
        return (
            (self.ingest, EMBEDDER_GROUP),
            (self.embedded, INDEXER_GROUP),
            (self.embedded, PERSISTER_GROUP),
        )


def as_text(value: object) -> str:
    """A value from a Redis reply as text (bytes decoded as UTF-8, bad bytes replaced)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def stream_id_to_version(entry_id: str | bytes) -> int:
    """A stream entry id as one sortable integer (ms * 2**20 + seq)."""
    ms, _, seq = as_text(entry_id).partition("-")
    return (int(ms) << 20) + int(seq or 0)
