"""The Redis keys of a job, and what may name one."""

from __future__ import annotations

import re
from dataclasses import dataclass

from embedstream.streams.names import INDEX, PERSIST, PIPELINE, StreamNames

STAGES = tuple(stage.name for stage in PIPELINE)
REQUIRED_STAGES = (INDEX.name, PERSIST.name)
"""The stages a document must pass to be done: the two stores."""

#: What may name a job in a Redis key: the ingress's UUIDs and the plain ids tools and
#: tests use. Never ':' (``{job}:docs``, ``{job}:state``... are the job's other keys, so
#: ``<id>:state`` would read another key as a job) and never braces (cluster hash tags).
JOB_ID_SYNTAX = re.compile(r"[A-Za-z0-9_-]{1,128}")


def valid_job_id(job_id: object) -> bool:
    return isinstance(job_id, str) and JOB_ID_SYNTAX.fullmatch(job_id) is not None


class InvalidJobId(ValueError):
    """A string that cannot name a job (see ``JOB_ID_SYNTAX``)."""


@dataclass(frozen=True)
class JobKeys:
    """A job's keys: its record (a hash: id, tenant, traceparent, state, counts, times)
    and, per document, its command, state, failure and each stage's mark."""

    record: str

    @classmethod
    def of(cls, names: StreamNames, job_id: str) -> JobKeys:
        """``{prefix}:job:{job_id}``; ``InvalidJobId`` unless ``job_id`` fits
        ``JOB_ID_SYNTAX``: no key is built from anything else."""
        if not valid_job_id(job_id):
            raise InvalidJobId("not a job id: 1-128 letters, digits, '_' or '-'")
        return cls(names.key("job", job_id))

    @property
    def documents(self) -> str:
        return f"{self.record}:docs"

    @property
    def states(self) -> str:
        return f"{self.record}:state"

    @property
    def failures(self) -> str:
        return f"{self.record}:failures"

    def stage(self, stage: str) -> str:
        return f"{self.record}:stage:{stage}"
