"""A downstream service for the tracing test, started with ``sys.executable``:

    python traced_subscriber.py REDIS_URL PREFIX

It subscribes to ``{prefix}:results`` in group ``traced`` with the subscriber kit and
handles ``job.completed.v1``; with the ``OTEL_*`` variables set, the kit traces each
handler as a child of the event's context. SIGTERM stops it.
"""

from __future__ import annotations

import sys

from embedstream.logging import configure_logging
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import JobCompleted
from embedstream.subscribe import Subscriber


def main(redis_url: str, prefix: str) -> None:
    configure_logging("INFO")
    subscriber = Subscriber(redis_url, prefix=prefix, group="traced")

    @subscriber.on(JobCompleted)
    async def completed(event: JobCompleted, envelope: Envelope) -> None:
        print(f"completed {event.job_id}", flush=True)

    subscriber.run_forever()


if __name__ == "__main__":
    main(*sys.argv[1:3])
