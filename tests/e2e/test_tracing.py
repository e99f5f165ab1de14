"""One document's trace, end to end: the API and every stage as processes with tracing
on (the standard OTEL_* variables), a downstream subscriber (the subscriber kit) in a
process of its own, and a local OTLP/HTTP receiver in this test decoding what they
export (opentelemetry-proto). The request's server span continues the caller's
traceparent; each stage's consumer span links to it and holds the encode, Chroma and
PostgreSQL write spans; the subscriber's handler span joins the request's trace."""

from __future__ import annotations

import asyncio
import gzip
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from tests.e2e.conftest import REDIS_URL, Stack
from tests.e2e.stores import wait_for_results

pytest.importorskip("opentelemetry.sdk", reason="tracing needs the otel extra")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[tuple[str, str], ...]
    attributes: dict[str, Any]


class Receiver:
    """An OTLP/HTTP trace receiver on a free port: POST /v1/traces, protobuf."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.add(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attrs.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    spans.append(
                        Span(
                            service=service,
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            links=tuple((x.trace_id.hex(), x.span_id.hex()) for x in s.links),
                            attributes={
                                a.key: a.value.string_value or a.value.int_value
                                for a in s.attributes
                            },
                        )
                    )
        with self.lock:
            self.spans.extend(spans)

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


SERVER, CONSUMER = 2, 5  # OTLP SpanKind values


def consumer_span(spans: list[Span], service: str, link: tuple[str, str]) -> Span | None:
    return next(
        (s for s in spans if s.service == service and s.kind == CONSUMER and link in s.links),
        None,
    )


def start_subscriber(stack: Stack) -> None:
    """The downstream service (tests/support/traced_subscriber.py), stopped with the stack."""
    log = open(stack.log_dir / "subscriber.log", "ab")  # noqa: SIM115 - lives with the process
    stack.procs["subscriber"] = subprocess.Popen(
        [sys.executable, "-m", "tests.support.traced_subscriber", REDIS_URL, stack.names.prefix],
        env=stack.env,
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )


async def test_one_documents_trace_connects_request_stages_and_subscriber(
    stack: Stack, receiver: Receiver, results_reader: redis.Redis
) -> None:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    stack.env.update(otel)
    stack.start("api", "api")
    for stage in ("embed", "index", "persist"):
        stack.start_worker(stage, f"{stage}-0")
    stack.wait_ready()
    start_subscriber(stack)

    for _ in range(3):  # the queue gauges read Redis at each scrape: no trace of their own
        assert httpx.get(f"{stack.url}/metrics").status_code == 200
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    response = httpx.post(
        f"{stack.url}/v1/documents",
        json={"documents": [{"id": "traced", "text": "a document followed by its trace"}]},
        headers={**stack.headers, "traceparent": f"00-{trace_id}-{caller_span}-01"},
    )
    assert response.status_code == 202, response.text
    job = response.json()["job_id"]
    await wait_for_results(results_reader, stack.names, {job}, timeout=300)

    def complete(spans: list[Span]) -> bool:
        request = [s for s in spans if s.kind == SERVER and s.trace_id == trace_id]
        if not request:
            return False
        link = (trace_id, request[0].span_id)
        stages = [
            consumer_span(spans, f"embedstream-{s}", link) for s in ("embed", "index", "persist")
        ]
        handled = [s for s in spans if s.name.startswith("handle job.completed")]
        return all(stages) and any(s.trace_id == trace_id for s in handled)

    deadline = time.monotonic() + 60
    while not complete(receiver.snapshot()):
        assert time.monotonic() < deadline, (
            f"the trace did not come together: {receiver.snapshot()}\n{stack.logs()}"
        )
        await asyncio.sleep(0.3)
    spans = receiver.snapshot()

    # the request: a server span continuing the caller's context
    (request,) = [s for s in spans if s.kind == SERVER and s.trace_id == trace_id]
    assert request.service == "embedstream-api"
    assert request.parent_id == caller_span
    link = (trace_id, request.span_id)

    # each stage: a consumer span per batch linked to the request, with its work inside
    children = {
        "embedstream-embed": "encode",
        "embedstream-index": "chroma write",
        "embedstream-persist": "postgresql write",
    }
    for service, child in children.items():
        batch = consumer_span(spans, service, link)
        assert batch is not None
        assert batch.attributes["messaging.system"] == "redis"
        assert batch.attributes["messaging.consumer.group.name"]
        assert batch.attributes["messaging.batch.message_count"] >= 1
        inside = [s for s in spans if s.trace_id == batch.trace_id and s.parent_id == batch.span_id]
        assert child in {s.name for s in inside}, (service, inside)

    # the ingress' Redis calls are children of its requests: the scrapes added no roots
    api_roots = [s for s in spans if s.service == "embedstream-api" and not s.parent_id]
    assert not [s for s in api_roots if s.name.split()[0] in {"XINFO", "XLEN", "XPENDING"}]
    assert any(
        s.trace_id == trace_id and s.parent_id == request.span_id
        for s in spans
        if s.service == "embedstream-api" and s.kind == 3
    )

    # the downstream handler joins the request's trace, as a child of the request's span
    (handled,) = [
        s for s in spans if s.name == "handle job.completed.v1" and s.trace_id == trace_id
    ]
    assert handled.service == "embedstream-subscriber-traced"
    assert handled.parent_id == request.span_id
