"""A worker's probe endpoint: ``/healthz`` (liveness) and ``/readyz`` (readiness).

Served by a small HTTP server on a thread of its own (stdlib ``ThreadingHTTPServer``),
not on the worker's event loop, so that it still answers when the loop is blocked and
can say so:

- **liveness** (``/healthz``, also ``/livez``): 200 while the worker loop makes progress
  (``embedstream.streams.heartbeat``); 503 when nothing has moved for longer than
  ``EMBEDSTREAM_LIVENESS_TIMEOUT_S`` (a stuck handler holding every slot, a blocked event
  loop, a hung connection). 200 while the worker starts (loading the model, waiting for
  PostgreSQL) and drains.
- **readiness** (``/readyz``): 200 when Redis and the stage's store answer within
  ``EMBEDSTREAM_READINESS_TIMEOUT_S``; the checks run on the worker's own loop with its
  own clients, so a blocked loop is "not ready" too (the check times out). 503 while
  starting and once stopping.

- **metrics** (``/metrics``): the process' Prometheus metrics (``embedstream.metrics``),
  unless ``EMBEDSTREAM_METRICS=false``. A worker reports what it does, never the queue
  gauges (those come from one place, see ``embedstream.metrics.queues``).

Off unless ``EMBEDSTREAM_HEALTH_PORT`` is set. ``HealthServer.routes`` is a plain table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from embedstream.config import HealthSettings
from embedstream.logging import get_logger
from embedstream.streams.heartbeat import Heartbeat

log = get_logger("embedstream.health")

ReadyCheck = Callable[[], Awaitable[object]]
"""A readiness check: raises (or times out) when its dependency is unavailable."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, payload: Mapping[str, Any]) -> Reply:
        return cls(status, json.dumps(payload).encode())


Route = Callable[[], Reply]


class WorkerHealth:
    """Liveness and readiness of one worker process (see the module doc)."""

    def __init__(
        self, settings: HealthSettings, stage: str, stop: asyncio.Event, *, metrics: bool = True
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stage = stage
        self.stop = stop
        self.heartbeat = Heartbeat()  # replaced by the worker's own in watch()
        self._checks: dict[str, ReadyCheck] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, heartbeat: Heartbeat, checks: Mapping[str, ReadyCheck]) -> None:
        """The worker is assembled: follow its heartbeat, check these dependencies. Call
        from the worker's event loop."""
        self.heartbeat = heartbeat
        self._checks = dict(checks)
        self._loop = asyncio.get_running_loop()

    # -- probes (called on the server's threads) ------------------------------------

    def liveness(self) -> Reply:
        stall = self.heartbeat.stall(self.settings.liveness_timeout_s)
        body: dict[str, Any] = {
            "stage": self.stage,
            "in_flight": self.heartbeat.in_flight(),
            "bound_s": self.settings.liveness_timeout_s,
        }
        if stall is not None:
            log.error("liveness failed", stage=self.stage, reason=str(stall))
            return Reply.json(503, {"status": "stalled", "detail": str(stall), **body})
        state = "stopping" if self.stop.is_set() else "starting"
        if self.heartbeat.running:
            state = "ok"
        return Reply.json(200, {"status": state, **body})

    def readiness(self) -> Reply:
        loop = self._loop
        if self.stop.is_set():
            return Reply.json(503, {"status": "stopping", "stage": self.stage})
        if loop is None:
            return Reply.json(503, {"status": "starting", "stage": self.stage})
        timeout = self.settings.readiness_timeout_s
        checks_run = self._run_checks()
        try:
            future = asyncio.run_coroutine_threadsafe(checks_run, loop)
        except RuntimeError:  # the worker's loop has closed
            checks_run.close()
            return Reply.json(503, {"status": "stopping", "stage": self.stage})
        try:
            checks = future.result(timeout + 1.0)
        except FutureTimeout:
            future.cancel()
            detail = f"the worker's event loop did not answer within {timeout + 1.0:g}s"
            log.warning("not ready", stage=self.stage, reason=detail)
            return Reply.json(503, {"status": "unavailable", "stage": self.stage, "detail": detail})
        ok = all(result == "ok" for result in checks.values())
        if not ok:
            log.warning("not ready", stage=self.stage, checks=checks)
        body = {"status": "ok" if ok else "unavailable", "stage": self.stage, "checks": checks}
        return Reply.json(200 if ok else 503, body)

    async def _run_checks(self) -> dict[str, str]:
        timeout = self.settings.readiness_timeout_s

        async def one(check: ReadyCheck) -> str:
            try:
                async with asyncio.timeout(timeout):
                    await check()
            except TimeoutError:
                return f"no answer within {timeout:g}s"
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"[:300]
            return "ok"

        names = list(self._checks)
        results = await asyncio.gather(*(one(self._checks[name]) for name in names))
        return dict(zip(names, results, strict=True))

    def routes(self) -> dict[str, Route]:
        routes = {
            "/healthz": self.liveness,
            "/livez": self.liveness,
            "/readyz": self.readiness,
        }
        if self.metrics:
            routes["/metrics"] = metrics_reply
        return routes


def metrics_reply() -> Reply:
    """The process' metrics in Prometheus' text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return Reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)


class HealthServer:
    """A small HTTP server on a daemon thread answering GET on a table of routes."""

    def __init__(self, host: str, port: int, routes: Mapping[str, Route]) -> None:
        self.routes: dict[str, Route] = dict(routes)
        self._server = ThreadingHTTPServer((host, port), _handler_for(self.routes))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedstream-health", daemon=True
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler_for(routes: Mapping[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                known = sorted(routes)
                reply = Reply.json(404, {"detail": f"no route {self.path}", "routes": known})
            else:
                try:
                    reply = route()
                except Exception as exc:  # a probe must answer, whatever went wrong
                    log.exception("health route failed", path=self.path)
                    reply = Reply.json(500, {"detail": f"{type(exc).__name__}: {exc}"})
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes every few seconds would flood the log: stay quiet."""

    return Handler


@contextlib.asynccontextmanager
async def worker_health(
    settings: HealthSettings, stage: str, stop: asyncio.Event, *, metrics: bool = True
) -> AsyncIterator[WorkerHealth]:
    """A ``WorkerHealth`` for the worker's run, served on ``settings.health_port`` from
    here to the end of the block (nothing is served when no port is set); ``metrics``:
    with ``/metrics``."""
    health = WorkerHealth(settings, stage, stop, metrics=metrics)
    server: HealthServer | None = None
    if settings.health_port is not None:
        try:
            server = HealthServer(settings.health_host, settings.health_port, health.routes())
        except OSError as exc:
            raise RuntimeError(
                f"cannot serve the health endpoint on {settings.health_host}:"
                f"{settings.health_port} ({exc}); set EMBEDSTREAM_HEALTH_PORT to a free port, "
                "or unset it to run without one"
            ) from exc
        server.start()
        log.info("health endpoint", stage=stage, host=settings.health_host, port=server.port)
    try:
        yield health
    finally:
        if server is not None:
            await asyncio.to_thread(server.close)
