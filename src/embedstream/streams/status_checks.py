"""Health of the streams, judged from a ``StatusReport``: a group whose lag or oldest
pending entry is over a bound, or that has work waiting and no live consumer.

``embedstream status --check`` (and ``--fail-over-lag``, ``--fail-over-age``) exits 3
when any problem is found; the admin API and the console show the same problems.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from embedstream.streams.status import GroupView, StatusReport

ProblemKind = Literal["lag", "oldest_pending", "no_live_consumer"]


@dataclass(frozen=True)
class HealthBounds:
    """``max_lag``: entries a group may have unread; ``max_oldest_pending_ms``: how long
    an entry may stay delivered and unacknowledged; a consumer is live when it talked to
    Redis within ``consumer_idle_ms`` (a reading consumer does so every block period)."""

    max_lag: int | None = None
    max_oldest_pending_ms: int | None = None
    consumer_idle_ms: int = 60_000


@dataclass(frozen=True)
class Problem:
    stream: str
    group: str
    kind: ProblemKind
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def live_consumers(group: GroupView, consumer_idle_ms: int) -> int:
    return sum(1 for c in group.consumers if c.idle_ms < consumer_idle_ms)


def has_waiting_work(group: GroupView) -> bool:
    return bool(group.lag) or group.pending > 0


def check_status(report: StatusReport, bounds: HealthBounds) -> list[Problem]:
    """Every problem found, stream by stream, group by group."""
    problems: list[Problem] = []
    for stream in report.streams:
        for group in stream.groups:
            where = (stream.stream, group.name)
            if bounds.max_lag is not None and (group.lag or 0) > bounds.max_lag:
                problems.append(Problem(*where, "lag", f"lag {group.lag} is over {bounds.max_lag}"))
            age = group.oldest_pending_age_ms
            limit = bounds.max_oldest_pending_ms
            if limit is not None and age is not None and age > limit:
                problems.append(
                    Problem(
                        *where,
                        "oldest_pending",
                        f"oldest pending entry is {age / 1000:.1f}s old, over {limit / 1000:g}s",
                    )
                )
            if has_waiting_work(group) and not live_consumers(group, bounds.consumer_idle_ms):
                problems.append(
                    Problem(
                        *where,
                        "no_live_consumer",
                        f"{group.lag or 0} unread and {group.pending} pending entries, and no "
                        f"consumer seen in the last {bounds.consumer_idle_ms / 1000:g}s",
                    )
                )
    return problems
