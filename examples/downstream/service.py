"""job-stats: a downstream service that counts completed jobs and logs failures.

It reads ``{prefix}:results`` in its own consumer group (``job-stats`` by default) with
the subscriber kit, so it gets every job event once per group, at least once: an event
seen again (after a crash or a retry) is recognised by its envelope id and not counted
twice. On SIGTERM or Ctrl-C it finishes the batch in hand, then prints its totals as one
JSON line.

    EMBEDSTREAM_REDIS_URL=redis://127.0.0.1:6379/0 EMBEDSTREAM_STREAM_PREFIX=embedstream \\
        python -m examples.downstream.service
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import redis.asyncio as redis

from embedstream.config import ConsumerSettings
from embedstream.logging import configure_logging, get_logger
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DocumentDeletedV2, JobCompleted, JobFailed
from embedstream.subscribe import Subscriber

DEFAULT_GROUP = "job-stats"

log = get_logger("job-stats")


@dataclass
class JobStats:
    """What the service has seen so far."""

    completed: int = 0
    failed: int = 0
    documents: int = 0
    deleted: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    last_deleted: dict[str, str] = field(default_factory=dict)
    """document key -> the newest version deleted (version text: compared as strings)"""
    seen: set[str] = field(default_factory=set)

    def first_time(self, envelope: Envelope) -> bool:
        """At-least-once delivery: count an event id once (a real service would keep
        this in its own store, next to the counts)."""
        if envelope.id in self.seen:
            return False
        self.seen.add(envelope.id)
        return True

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("seen")
        return data


def build_subscriber(
    redis_client: str | redis.Redis,
    prefix: str,
    *,
    group: str = DEFAULT_GROUP,
    consumer: str | None = None,
    settings: ConsumerSettings | None = None,
    stats: JobStats | None = None,
) -> tuple[Subscriber, JobStats]:
    """The service's subscriber and the stats its handlers update."""
    stats = stats or JobStats()
    sub = Subscriber(redis_client, prefix, group, consumer, settings)

    @sub.on(JobCompleted)
    async def completed(event: JobCompleted, envelope: Envelope) -> None:
        if stats.first_time(envelope):
            stats.completed += 1
            stats.documents += event.documents
            log.info("job completed", job_id=event.job_id, documents=event.documents)

    @sub.on(JobFailed)
    async def failed(event: JobFailed, envelope: Envelope) -> None:
        if not stats.first_time(envelope):
            return
        stats.failed += 1
        stats.documents += event.documents
        for failure in event.failures:
            stats.failures.append(failure.model_dump())
            log.warning(
                "job failed",
                job_id=event.job_id,
                document_id=failure.document_id,
                stage=failure.stage,
                error=failure.error,
            )

    # v2: the version as exact text (v1's integer exceeds 2**53). Both are produced by
    # default, the same event twice: a service handles one of them.
    @sub.on(DocumentDeletedV2)
    def deleted(event: DocumentDeletedV2, envelope: Envelope) -> None:
        if not stats.first_time(envelope):
            return
        stats.deleted += 1
        key = f"{envelope.tenant}/{event.document_id}"
        # version texts have one width: string order is version order, in any language
        if event.version > stats.last_deleted.get(key, ""):
            stats.last_deleted[key] = event.version

    return sub, stats


def main() -> None:
    configure_logging(os.environ.get("EMBEDSTREAM_LOG_LEVEL", "INFO"))
    sub, stats = build_subscriber(
        os.environ.get("EMBEDSTREAM_REDIS_URL", "redis://127.0.0.1:6379/0"),
        os.environ.get("EMBEDSTREAM_STREAM_PREFIX", "embedstream"),
        group=os.environ.get("JOB_STATS_GROUP", DEFAULT_GROUP),
    )
    sub.run_forever()
    print(json.dumps(stats.summary()), flush=True)


if __name__ == "__main__":
    main()
