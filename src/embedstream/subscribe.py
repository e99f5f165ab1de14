"""The subscriber kit: typed handlers for embedstream's events, on the workers' runtime.

```python
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import JobCompleted
from embedstream.subscribe import Subscriber

sub = Subscriber("redis://127.0.0.1:6379/0", prefix="embedstream", group="my-service")

@sub.on(JobCompleted)                      # or @sub.on("job.completed.v1")
async def completed(event: JobCompleted, envelope: Envelope) -> None:
    print(event.job_id, event.documents)

sub.run_forever()                          # or: await sub.run(stop_event)
```

Delivery is at least once: a message is acknowledged after every handler for its type
returned, so handlers must tolerate seeing a message again (after a crash or a retry).

Events that carry a document version come in two type versions, both produced by
default (``EMBEDSTREAM_*_EVENT_VERSIONS``): ``*.v1`` with the version as a JSON integer
(beyond 2**53, so readers that parse numbers as doubles round it) and ``*.v2`` with the
version as exact version text (``embedstream.schemas.versions``: 20 digits, string order
is version order). They are the same event twice: register handlers for one of them
(``DocumentDeletedV2``, ``DocumentEmbeddedV2``, ...); registering both logs a warning.
The subscriber reads ``{prefix}:results`` (or ``{prefix}:embedded`` with
``stream="embedded"``) in its own consumer group, created on first run from the start of
what the stream retains (``start_id="$"``: only what arrives later). It does not trim
the stream unless ``trim=True``: trimming drops what every *existing* group has
acknowledged, so a service whose group does not exist yet would miss those entries.

Failures follow the runtime (``embedstream.streams.runner``):

- an entry that is not a valid envelope, or whose payload does not validate against the
  type's model, goes to ``{prefix}:dlq`` at once with the validation error;
- an entry of a type with no handler is acknowledged and skipped
  (``unknown="ignore"``, the default) or dead-lettered (``unknown="dead_letter"``);
- a handler raising ``PermanentError`` (or ``PoisonMessage``) dead-letters the entry; any
  other exception retries it with backoff, and after ``max_deliveries`` attempts it is
  dead-lettered.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

import redis.asyncio as redis
import structlog
from pydantic import BaseModel

from embedstream import tracing
from embedstream.adapters.redis_client import create_redis, is_cluster_client
from embedstream.config import ConsumerSettings, RedisSettings
from embedstream.contracts.catalog import MessageType, message_for_model, message_type
from embedstream.errors import PoisonMessage
from embedstream.logging import get_logger
from embedstream.schemas.envelope import Envelope, Fields
from embedstream.streams.decoding import payload_of
from embedstream.streams.messages import Ack, DeadLetter, Message, Outcome, outcome_for
from embedstream.streams.names import PIPELINE, StreamNames
from embedstream.streams.runner import RunStats, StreamWorker, install_stop_signals

__all__ = ["Delivery", "EventHandler", "Subscriber", "UnknownPolicy"]

P = TypeVar("P", bound=BaseModel)

EventHandler = Callable[[P, Envelope], Awaitable[None] | None]
"""``handler(payload, envelope)``; a coroutine function or a plain function."""

UnknownPolicy = Literal["ignore", "dead_letter"]
SubscribableStream = Literal["results", "embedded"]

log = get_logger("embedstream.subscribe")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A decoded entry: its envelope and, for a type with handlers, its validated payload."""

    envelope: Envelope
    payload: BaseModel | None
    handlers: tuple[EventHandler[Any], ...] = ()


def _event_name(type_name: str) -> str:
    """``document.deleted`` of ``document.deleted.v2``."""
    name, _, version = type_name.rpartition(".")
    return name if version.startswith("v") and version[1:].isdigit() else type_name


class Subscriber:
    """Handlers for event types, run by one consumer in the group ``group``."""

    def __init__(
        self,
        redis_client: str | redis.Redis,
        prefix: str = "embedstream",
        group: str = "subscriber",
        consumer: str | None = None,
        settings: ConsumerSettings | None = None,
        *,
        stream: SubscribableStream = "results",
        unknown: UnknownPolicy = "ignore",
        start_id: str = "0",
        trim: bool = False,
        partitions: int = 1,
    ) -> None:
        """``partitions``: the deployment's ``EMBEDSTREAM_PARTITIONS``; a subscriber of
        ``embedded`` then reads every partition's stream (results are not partitioned)."""
        if not group or group in {stage.group for stage in PIPELINE}:
            raise ValueError(f"group {group!r}: use a consumer group of your own")
        if unknown not in ("ignore", "dead_letter"):
            raise ValueError(f"unknown={unknown!r}: expected 'ignore' or 'dead_letter'")
        # on a Redis Cluster (a redis+cluster:// URL, or a cluster client) every key
        # carries the prefix as a hash tag, as the pipeline writes them
        cluster = (
            RedisSettings(redis_url=redis_client).is_cluster
            if isinstance(redis_client, str)
            else is_cluster_client(redis_client)
        )
        self.names = StreamNames(prefix, cluster=cluster, partitions=partitions)
        self.streams = (
            (self.names.results,) if stream == "results" else self.names.embedded_streams()
        )
        self.stream = self.streams[0]
        self.group = group
        self.unknown: UnknownPolicy = unknown
        self.start_id = start_id
        update: dict[str, object] = {"trim": trim}
        if consumer:
            update["consumer_name"] = consumer
        self.settings = (settings or ConsumerSettings()).model_copy(update=update)
        self._client = redis_client
        self._handlers: dict[str, list[EventHandler[Any]]] = {}
        self._models: dict[str, type[BaseModel]] = {}
        self.stats = RunStats()

    # -- registering -----------------------------------------------------------------

    @overload
    def on(self, event: type[P]) -> Callable[[EventHandler[P]], EventHandler[P]]: ...

    @overload
    def on(self, event: str) -> Callable[[EventHandler[Any]], EventHandler[Any]]: ...

    def on(self, event: type[BaseModel] | str) -> Callable[[EventHandler[Any]], EventHandler[Any]]:
        """Register the decorated function for a type (its payload model, or its name)."""
        spec = self._spec(event)

        def register(handler: EventHandler[Any]) -> EventHandler[Any]:
            self.add_handler(spec.type, handler)
            return handler

        return register

    def add_handler(self, event: type[BaseModel] | str, handler: EventHandler[Any]) -> None:
        """``on`` without the decorator; several handlers per type run in order."""
        spec = self._spec(event)
        family = _event_name(spec.type)
        twins = [t for t in self._handlers if t != spec.type and _event_name(t) == family]
        if twins:
            log.warning(
                "handlers for two type versions of one event: embedstream produces both "
                "(the same event twice) unless EMBEDSTREAM_*_EVENT_VERSIONS says otherwise; "
                "handle one of them",
                type=spec.type,
                also=twins,
            )
        self._models[spec.type] = spec.model
        self._handlers.setdefault(spec.type, []).append(handler)

    def _spec(self, event: type[BaseModel] | str) -> MessageType:
        """The catalog entry of ``event``, which must be published on this stream."""
        spec = message_type(event) if isinstance(event, str) else message_for_model(event)
        expected = self.stream.rsplit(":", 1)[-1]
        if spec.channel != expected:
            raise ValueError(
                f"{spec.type} is published on {{prefix}}:{spec.channel}, but this subscriber "
                f"reads {self.stream} (pass stream={spec.channel!r})"
            )
        return spec

    @property
    def types(self) -> tuple[str, ...]:
        """The event types that have handlers."""
        return tuple(self._handlers)

    # -- decoding and handling ----------------------------------------------------------

    def decode(self, fields: Fields) -> Delivery:
        """The runtime's decoder (``embedstream.streams.decoding``, as for the pipeline's
        stages): anything raised here dead-letters the entry."""
        envelope = Envelope.from_fields(fields)
        payload = payload_of(envelope, self._models)
        if payload is None:
            if self.unknown == "dead_letter":
                raise PoisonMessage(
                    f"no handler for type {envelope.type!r} in group {self.group!r} "
                    f"(handled: {', '.join(self._handlers) or 'none'})"
                )
            return Delivery(envelope, None)
        return Delivery(envelope, payload, tuple(self._handlers[envelope.type]))

    async def handle(self, messages: Sequence[Message[Delivery]]) -> list[Outcome]:
        """The runtime's handler: each message's handlers in order, one outcome each."""
        return [await self._handle_one(message) for message in messages]

    async def _handle_one(self, message: Message[Delivery]) -> Outcome:
        delivery = message.body
        envelope = delivery.envelope
        if delivery.payload is None:
            log.debug("skipped event without handler", type=envelope.type, message_id=message.id)
            return Ack()
        with (
            structlog.contextvars.bound_contextvars(
                message_id=message.id, type=envelope.type, attempt=message.attempt
            ),
            tracing.handler_span(envelope.type, self.stream, self.group, envelope.traceparent),
        ):
            try:
                for handler in delivery.handlers:
                    result = handler(delivery.payload, envelope)
                    if inspect.isawaitable(result):
                        await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcome = outcome_for(exc)
                log.warning(
                    "handler failed",
                    error=f"{type(exc).__name__}: {exc}",
                    outcome="dead-letter" if isinstance(outcome, DeadLetter) else "retry",
                )
                return outcome
        return Ack()

    # -- running -------------------------------------------------------------------------

    def worker(self, client: redis.Redis, stream: str | None = None) -> StreamWorker[Delivery]:
        """The runtime loop over ``client`` on ``stream`` (the first of ``streams`` by
        default; ``run`` builds one per stream per run)."""
        if not self._handlers:
            raise RuntimeError("no handlers registered: use @subscriber.on(EventModel)")
        return StreamWorker[Delivery](
            client,
            self.names,
            stream or self.stream,
            self.group,
            self.handle,
            self.settings,
            decode=self.decode,
            start_id=self.start_id,
        )

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> RunStats:
        """Consume until ``stop`` is set (``burst``: until nothing is left to read)."""
        tracing.setup_tracing(f"embedstream-subscriber-{self.group}")
        owned = isinstance(self._client, str)
        client = (
            create_redis(RedisSettings(redis_url=self._client))
            if isinstance(self._client, str)
            else self._client
        )
        try:
            workers = [self.worker(client, stream) for stream in self.streams]
            log.info(
                "subscriber started",
                streams=list(self.streams),
                group=self.group,
                consumer=self.settings.consumer_name,
                types=list(self._handlers),
            )
            stop = stop or asyncio.Event()
            runs = await asyncio.gather(*(w.run(stop, burst=burst) for w in workers))
            self.stats = RunStats(
                **{name: sum(getattr(r, name) for r in runs) for name in vars(RunStats())}
            )
            return self.stats
        finally:
            if owned:
                await client.aclose()

    def run_forever(self) -> RunStats:
        """Run in a new event loop until SIGTERM or SIGINT (then drain and return)."""

        async def main() -> RunStats:
            stop = asyncio.Event()
            install_stop_signals(stop)
            return await self.run(stop)

        return asyncio.run(main())
