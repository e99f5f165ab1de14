"""A reused embedding a store cannot apply: wait for its base, or ask for a re-embed.

A ``document.embedded`` with ``reused=true`` carries no chunks: a store keeps the chunks
it holds and updates metadata and version. That only works where the store holds the
reused content. The embed stage reuses only when the stored embedding comes from the
document's previous command and no other command for the document is in flight on any
replica (``embedstream.jobs.inflight``); the previous command's event is then
earlier on ``{prefix}:embedded``, so a store normally holds the content already, or soon.
When it does not, the index and persist stages decide alike (``decide``):

- the store's version is older than the reuse's base (``base_version``): the base is
  still on its way (another batch, another replica, a retry): retry with backoff, and on
  the last delivery allowed ask for a re-embed instead of failing the job;
- the store's version is the base's or newer but its content is not the reused one (the
  base was dead-lettered in this store, the store was restored or rebuilt): ask for a
  re-embed at once. A ``*.v1`` event does not name its base: it waits, then re-embeds.

A re-embed request is a ``document.reembed.v1`` command on ``{prefix}:ingest`` with the
event's version, text and metadata, added in the MULTI/EXEC that acknowledges the reused
event and counted in flight like any command; at most one per (document, version) is
added (a marker key with a TTL: both stores, or both type versions of the event, may ask).
The store acknowledges the reused event without recording its stage for the job: the
re-embedded event, a full ``document.embedded`` at the same version, records it. Equal
versions are idempotent in both stores, so the store that did apply the reuse skips it.
Should the request itself be dead-lettered by the embed stage, the document is marked
failed at the stage that asked (``reembed_aware_dead_letter_ops``), so the job ends.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any, Literal, cast

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from embedstream.adapters.redis_client import queue_script
from embedstream.jobs.inflight import COUNT_LUA, InFlight
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.commands import DOCUMENT_REEMBED, DocumentReembed
from embedstream.schemas.envelope import Envelope, Fields, attributes_of
from embedstream.schemas.events import DocumentEmbeddedV2
from embedstream.schemas.tenancy import document_key
from embedstream.streams.messages import DeadLetterOps, TransactionOp
from embedstream.streams.names import INDEX, PERSIST, StageNames, StreamNames

RequestingStage = Literal["index", "persist"]
MARKER_TTL_S = 24 * 3600

# Add a re-embed command unless one was added for this (document, version) already.
# KEYS: ingest stream, in-flight counts, in-flight entries, marker
# ARGV: document key, marker ttl_s, then the entry's fields (field, value, ...)
# Returns 1 when added, 0 when one was added before.
REQUEST = (
    COUNT_LUA
    + """
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[2]) then return 0 end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
count_in_flight(KEYS[2], KEYS[3], id, ARGV[1])
return 1
"""
)


class Unapplied(enum.Enum):
    WAIT = "wait"
    """retry later: the base may still arrive"""
    REEMBED = "reembed"
    """ask the embed stage for the document at this version again"""


def decide(
    stored_version: int | None, base_version: int | None, *, attempt: int, max_deliveries: int
) -> Unapplied:
    """What a store does with a reused event it cannot apply (see the module doc)."""
    if stored_version is not None and base_version is not None and stored_version >= base_version:
        return Unapplied.REEMBED
    if attempt >= max_deliveries:
        return Unapplied.REEMBED
    return Unapplied.WAIT


class ReembedRequests:
    """Builds the ops that ask for a re-embed, for one stage."""

    def __init__(
        self,
        client: redis.Redis,
        names: StreamNames,
        stage: StageNames,
        *,
        marker_ttl_s: int = MARKER_TTL_S,
    ) -> None:
        """``stage``: the index or the persist stage (the stores)."""
        if stage not in (INDEX, PERSIST):
            raise ValueError(f"only the stores ask for re-embeds, not the {stage.name} stage")
        self.names = names
        self.stage = cast(RequestingStage, stage.name)
        self.source = f"embedstream.{stage.name}"
        self.marker_ttl_s = marker_ttl_s
        self._in_flight = InFlight(client, names)
        self._request = client.register_script(REQUEST)

    def marker_key(self, key: str, version: str) -> str:
        return self.names.key("reembed", key, version)

    def op(self, tenant: str, event: DocumentEmbeddedV2, traceparent: str | None) -> TransactionOp:
        """The op adding ``document.reembed.v1`` for ``event`` (a reused embedding)."""
        # the event's document at the event's version, asked for by this stage
        asked = event.model_dump(include={"job_id", "document_id", "version", "text", "metadata"})
        command = DocumentReembed(**asked, requested_by=self.stage)
        envelope = Envelope.wrap(
            DOCUMENT_REEMBED,
            command,
            source=self.source,
            tenant=tenant,
            subject=event.document_id,
            traceparent=traceparent,
        )
        key = document_key(tenant, event.document_id)
        keys = [self.names.ingest, *self._in_flight.keys, self.marker_key(key, event.version)]
        args: list[str | bytes | int] = [key, self.marker_ttl_s]
        for field, value in envelope.to_fields().items():
            args += [field, value]

        def op(pipe: Pipeline) -> Any:
            return queue_script(self._request, keys, args, pipe)

        return op


def reembed_aware_dead_letter_ops(tracker: JobTracker, stage: str) -> DeadLetterOps:
    """For the embed worker: a dead-lettered command marks its document failed at
    ``stage``; a dead-lettered re-embed request marks it at the stage that asked for it
    (that stage left its mark to the re-embedded event, which now never comes)."""
    by_stage = {name: tracker.dead_letter_ops(name) for name in (stage, INDEX.name, PERSIST.name)}

    def ops(fields: Fields, error: BaseException) -> Sequence[TransactionOp]:
        target = stage
        if attributes_of(fields).get("type") == DOCUMENT_REEMBED:
            try:
                requested = json.loads(fields.get(b"data") or b"{}").get("requested_by")
            except (ValueError, AttributeError):
                requested = None
            if requested in by_stage:
                target = requested
        return by_stage[target](fields, error)

    return ops
