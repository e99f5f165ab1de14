"""OpenTelemetry traces: optional (the ``otel`` extra), on only when the standard
``OTEL_*`` variables ask for them, and free otherwise.

Tracing is on in a process when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, or ``OTEL_TRACES_EXPORTER`` names an
exporter (``otlp``, ``console``), unless ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none``. Everything else (service name, resource attributes,
headers, batch delays, sampling) is the SDK's own reading of the ``OTEL_*`` variables.
When tracing is off nothing of OpenTelemetry is imported and every helper here returns at
once (``active()`` is one global read).

What is traced (messaging semantic conventions, the envelope's ``traceparent`` as the
carrier across streams):

- the ingress: a server span per request (FastAPI instrumentation) that continues an
  incoming ``traceparent``; each command it enqueues, and the job record, carry that
  span's context (``current_traceparent``); Redis and asyncpg calls are child spans;
- each stage: a consumer span per batch (``process {stream}``) with a link to each
  message's context, and child spans for the encode, the Chroma write and the
  PostgreSQL write (``span``);
- events on ``{p}:embedded`` and ``{p}:results`` carry the request's context (job.completed
  the context of the request that created the job), and the subscriber kit starts its
  handler spans as children of it, so a downstream service joins the request's trace.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from embedstream.logging import get_logger

log = get_logger("embedstream.tracing")

_tracer: Any = None
"""The process' tracer once ``setup_tracing`` turned tracing on (None: off)."""


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces (see the module doc)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER")
    if exporter is not None and exporter.strip():
        return exporter.strip().lower() != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def active() -> bool:
    return _tracer is not None


def install(tracer: Any) -> Any:
    """Make ``tracer`` the process' tracer (None: tracing off) and return the one it
    replaces; for benchmarks that compare with and without tracing in one process."""
    global _tracer
    previous, _tracer = _tracer, tracer
    return previous


def setup_tracing(service: str, *, instrument_clients: bool = False) -> bool:
    """Turn tracing on for this process when the ``OTEL_*`` variables ask for it (once;
    later calls change nothing). ``service``: the default ``service.name``
    (``OTEL_SERVICE_NAME`` wins). ``instrument_clients``: also trace every Redis and
    asyncpg call (the ingress, where they happen inside a request's span; a worker's
    blocking reads would each start a trace of their own). Returns whether tracing is on."""
    global _tracer
    if _tracer is not None:
        return True
    if not tracing_requested():
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_* variables ask for traces but OpenTelemetry is not installed; "
            "install embedstream[otel] to send them",
        )
        return False
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("embedstream")
    if instrument_clients:
        _instrument_clients()
    log.info("tracing on", service=resource.attributes.get(SERVICE_NAME))
    return True


def _exporter() -> Any:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if names == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _instrument_clients() -> None:
    with contextlib.suppress(ImportError):
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument()
    with contextlib.suppress(ImportError):
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]


def instrument_app(app: Any) -> None:
    """Server spans for the ingress' requests (continuing an incoming ``traceparent``)."""
    if _tracer is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """No spans from the instrumented clients inside the block (the queue gauges' Redis
    reads at each scrape would otherwise each start a trace of their own)."""
    if _tracer is None:
        yield
        return
    try:
        from opentelemetry.instrumentation.utils import suppress_instrumentation
    except ImportError:
        yield
        return
    with suppress_instrumentation():
        yield


def flush(timeout_ms: int = 5_000) -> None:
    """Send the spans still buffered (before a process exits)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(timeout_ms)


# -- contexts ----------------------------------------------------------------------------


def _context_of(traceparent: str | None) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not traceparent:
        return None
    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def _span_context(traceparent: str | None) -> Any:
    """The remote span context of a W3C ``traceparent`` (None when it is not a valid
    version-00 one); a plain split, cheaper than a propagator per message."""
    from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID, SpanContext, TraceFlags

    if not traceparent or len(traceparent) != 55:
        return None
    version, trace_id, span_id, flags = traceparent.split("-")
    try:
        ids = int(trace_id, 16), int(span_id, 16), int(flags, 16)
    except ValueError:
        return None
    if version != "00" or ids[0] == INVALID_TRACE_ID or ids[1] == INVALID_SPAN_ID:
        return None
    return SpanContext(ids[0], ids[1], is_remote=True, trace_flags=TraceFlags(ids[2]))


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (None when tracing is off or no span
    is recording)."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (for log lines; no OpenTelemetry needed)."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None


# -- spans -------------------------------------------------------------------------------


@contextlib.contextmanager
def batch_span(
    stream: str, group: str, stage: str | None, traceparents: Iterable[str | None]
) -> Iterator[None]:
    """A consumer span for one batch, linked to each message's context (messaging
    semantic conventions); a no-op when tracing is off."""
    if _tracer is None:
        yield
        return
    from opentelemetry import trace

    contexts = list(traceparents)
    links = []
    for traceparent in contexts:
        span_context = _span_context(traceparent)
        if span_context is not None:
            links.append(trace.Link(span_context))
    attributes: dict[str, Any] = {
        "messaging.system": "redis",
        "messaging.operation.type": "process",
        "messaging.destination.name": stream,
        "messaging.consumer.group.name": group,
        "messaging.batch.message_count": len(contexts),
    }
    if stage:
        attributes["embedstream.stage"] = stage
    with _tracer.start_as_current_span(
        f"process {stream}", kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes
    ):
        yield


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
    """A child span of the current one (an encode, a store write); no-op when off."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=dict(attributes or {})):
        yield


@contextlib.contextmanager
def handler_span(
    event_type: str, stream: str, group: str, traceparent: str | None
) -> Iterator[None]:
    """A subscriber's handler span, a child of the event's context (its ``traceparent``),
    so a downstream service joins the trace of the request that made the event."""
    if _tracer is None:
        yield
        return
    from opentelemetry import trace

    with _tracer.start_as_current_span(
        f"handle {event_type}",
        context=_context_of(traceparent),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": stream,
            "messaging.consumer.group.name": group,
            "cloudevents.event_type": event_type,
        },
    ):
        yield
