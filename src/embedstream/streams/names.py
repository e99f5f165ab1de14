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

import zlib
from dataclasses import dataclass, field, replace
from typing import Literal

PARTITION_LOCAL = frozenset({"ingest", "embedded", "embed", "reembed"})
"""First parts of the keys that belong to one partition (its streams, in-flight counts,
stored embeddings, re-embed markers): every document's keys of that kind live in its
partition, next to its streams, so the scripts and transactions over them stay in one
hash slot on a cluster."""


def hash_tagged(prefix: str) -> str:
    """``prefix`` as a Redis Cluster hash tag: ``{prefix}``, unless it already starts
    with one (``{es}`` or ``{es}:blue`` are kept)."""
    if prefix.startswith("{") and "}" in prefix[2:]:
        return prefix
    return "{" + prefix + "}"


def untagged(prefix: str) -> str:
    return prefix.replace("{", "").replace("}", "")


def partition_of(tenant: str, document_id: str, partitions: int) -> int:
    """The partition of a document: a stable hash (CRC-32) of ``tenant\\0document_id``
    modulo the number of partitions. Every command of a document goes to the same
    partition, so its order (its stream ids) holds however many partitions there are."""
    if partitions == 1:
        return 0
    return zlib.crc32(f"{tenant}\0{document_id}".encode()) % partitions


@dataclass(frozen=True)
class StreamNames:
    """Every Redis key embedstream uses starts with ``base`` (the prefix; on a cluster
    the prefix as a hash tag), so deployments can share one Redis and, on a cluster,
    every key of a deployment is in one hash slot (see the module doc).

    With ``partitions`` > 1 the ingest and embedded streams (and the keys that go with
    them, ``PARTITION_LOCAL``) exist once per partition, under the partition's own base
    (``es:p1`` on a single Redis, ``{es:p1}`` on a cluster: a slot of its own, so a
    cluster spreads the partitions over its primaries). A ``StreamNames`` is a view of
    one partition (``partition``, 0 by default): ``ingest``, ``embedded`` and
    ``key("ingest", ...)`` name that partition's keys; ``at(k)`` is the view of
    partition ``k``. With one partition (the default) the names are the unpartitioned
    ones above."""

    prefix: str
    cluster: bool = False
    partitions: int = 1
    partition: int = 0
    base: str = field(init=False)

    def __post_init__(self) -> None:
        if self.partitions < 1 or not 0 <= self.partition < self.partitions:
            raise ValueError(f"partition {self.partition} of {self.partitions}")
        object.__setattr__(self, "base", hash_tagged(self.prefix) if self.cluster else self.prefix)

    # -- partitions ------------------------------------------------------------------

    def at(self, partition: int) -> StreamNames:
        """The view of ``partition``."""
        return self if partition == self.partition else replace(self, partition=partition)

    def views(self) -> tuple[StreamNames, ...]:
        """One view per partition."""
        return tuple(self.at(k) for k in range(self.partitions))

    def for_document(self, tenant: str, document_id: str) -> StreamNames:
        """The view of the document's partition (``partition_of``)."""
        return self.at(partition_of(tenant, document_id, self.partitions))

    def partition_base(self, partition: int | None = None) -> str:
        k = self.partition if partition is None else partition
        if self.partitions == 1:
            return self.base
        if self.cluster:
            return "{" + f"{untagged(self.prefix)}:p{k}" + "}"
        return f"{self.prefix}:p{k}"

    @property
    def partitioned(self) -> bool:
        return self.partitions > 1

    @property
    def partitions_key(self) -> str:
        """Where the deployment records its number of partitions (absent: 1)."""
        return f"{self.base}:partitions"

    # -- streams ---------------------------------------------------------------------

    @property
    def ingest(self) -> str:
        return f"{self.partition_base()}:ingest"

    @property
    def embedded(self) -> str:
        return f"{self.partition_base()}:embedded"

    def ingest_streams(self) -> tuple[str, ...]:
        return tuple(view.ingest for view in self.views())

    def embedded_streams(self) -> tuple[str, ...]:
        return tuple(view.embedded for view in self.views())

    def view_of_stream(self, stream: str) -> StreamNames | None:
        """The view whose ingest or embedded stream ``stream`` is (None: neither)."""
        for view in self.views():
            if stream in (view.ingest, view.embedded):
                return view
        return None

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
    def job_counts(self) -> str:
        """Hash ``completed``/``failed`` -> jobs finished so far (the job bookkeeping
        counts each job once, when it finishes; never expires)."""
        return f"{self.base}:jobs:counts"

    @property
    def pattern(self) -> str:
        """A SCAN/KEYS pattern matching every key of the deployment's base (partition
        keys have their own bases: ``patterns``)."""
        return _pattern(self.base)

    def patterns(self) -> tuple[str, ...]:
        """SCAN patterns covering every key of the deployment, partitions included."""
        bases = {self.base, *(self.partition_base(k) for k in range(self.partitions))}
        return tuple(_pattern(base) for base in sorted(bases))

    def key(self, *parts: str) -> str:
        """A key under the deployment's base; under the partition's base when its first
        part is one of ``PARTITION_LOCAL``."""
        base = self.partition_base() if parts and parts[0] in PARTITION_LOCAL else self.base
        return ":".join((base, *parts))

    def pipeline_streams(self) -> tuple[str, ...]:
        return (*self.ingest_streams(), *self.embedded_streams(), self.results)

    def stage_groups(self) -> tuple[tuple[str, str], ...]:
        """(stream, group) of every pipeline stage (embed, index, persist), on every
        partition."""
        return tuple(
            (stage.stream_of(view), stage.group) for stage in PIPELINE for view in self.views()
        )


def _pattern(base: str) -> str:
    escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in base)
    return f"{escaped}:*"


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
