"""Consumer throughput per process on the real Redis: embedstream's runtime side by side
with a raw redis-py loop, taskiq-redis and FastStream.

Every case consumes the same N pre-filled stream entries with a no-op handler, in one
process, reading ``--batch`` entries per XREADGROUP. The payload is the same JSON object
for all (a counter and ``--payload-bytes`` of text, ~1 KB), wrapped the way each library's
own producer wraps it (embedstream envelope fields, a taskiq task message, a FastStream
binary message). The clock starts just before the consumer starts and stops when the
handler has seen all N entries and the group has no pending entry left (every ack is in);
stopping the consumer afterwards is not timed. Cases run interleaved, ``--reps`` times in
rotating order, and the table shows medians; CPU is this process's CPU time (Redis'
own CPU is not in it).

    python -m bench.runtime                      # N=20,000, 3 repetitions
    python -m bench.runtime --quick              # N=2,000, 2 repetitions
    python -m bench.runtime --only embedstream   # one case, e.g. under py-spy
    python -m bench.runtime --cluster            # Redis Cluster vs single node, partitions
                                                 # (bench.cluster_runtime)

All cases run on the same event loop type: uvloop by default, since both peers' worker
CLIs (``taskiq worker``, ``faststream run``) switch to uvloop when it is installed.

The last line is ``RESULT runtime_vs_raw=<x> runtime_vs_taskiq=<x> runtime_vs_faststream=<x>
runtime_vs_faststream_batch=<x> metrics_cost=<pct> metrics_cpu_cost=<pct>
metrics_cpu_share=<pct> tracing_cost=<pct> tracing_cpu_cost=<pct>``: the median rate
of embedstream's worker loop divided by the raw loop's, taskiq's, FastStream's stream
subscriber's (one handler call per message, its documented form) and FastStream's
``batch=True`` subscriber's; what the Prometheus counters cost the worker loop (its rate
with ``metrics=False`` against the default, metrics on) and what tracing configured costs
(a consumer span per batch linked to each message's context, exported over OTLP/HTTP to
a sink process, against the loop without tracing), by rate and by CPU per message; and
the counters' calls of one batch timed alone, as a share of the loop's CPU per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis.asyncio as redis
from pydantic import BaseModel
from redis import __version__ as redis_version
from redis.utils import HIREDIS_AVAILABLE

from embedstream import tracing
from embedstream.adapters.redis_client import create_redis
from embedstream.config import ConsumerSettings, RedisSettings
from embedstream.logging import configure_logging
from embedstream.metrics.runtime import ConsumerMetrics
from embedstream.schemas.envelope import Envelope
from embedstream.streams.messages import Ack, Message, Outcome
from embedstream.streams.runner import StreamWorker

GROUP = "bench"
FILL_CHUNK = 500
TASKIQ_TASK = "bench.noop"
EntryFields = Mapping[Any, str | bytes]
"""One entry's field map (str or bytes keys)."""


class Payload(BaseModel):
    """The body every case carries."""

    n: int
    text: str


@dataclass(frozen=True)
class Config:
    url: str
    n: int
    batch: int
    text: str
    prefix: str

    def payload(self, n: int) -> Payload:
        return Payload(n=n, text=self.text)

    @property
    def timeout_s(self) -> float:
        return max(60.0, self.n / 100)


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    cpu_s: float


class Run:
    """One timed consumption of a pre-filled stream.

    A case calls ``start()`` just before it starts its consumer, its handler calls
    ``handled(k)``, and it awaits ``finished()``, which returns once all N entries were
    handled and the group's pending list is empty.
    """

    def __init__(self, admin: redis.Redis, stream: str, n: int) -> None:
        self.admin = admin
        self.stream = stream
        self.n = n
        self.count = 0
        self._all_handled = asyncio.Event()
        self._t0 = 0.0
        self._c0 = 0.0

    def handled(self, k: int = 1) -> None:
        self.count += k
        if self.count >= self.n:
            self._all_handled.set()

    def start(self) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    async def finished(self, timeout_s: float) -> Measurement:
        await asyncio.wait_for(self._all_handled.wait(), timeout_s)
        # Polling is the only way to see the last XACK land; it runs for a few ms at most.
        while (await self.admin.xpending(self.stream, GROUP))["pending"]:  # noqa: ASYNC110
            await asyncio.sleep(0.0005)
        return Measurement(time.perf_counter() - self._t0, time.process_time() - self._c0)


Fill = Callable[[Config, redis.Redis, str], Awaitable[int]]
"""Pre-fill a stream with N entries; returns the size of one entry in bytes."""
Consume = Callable[[Config, str, Run], Awaitable[Measurement]]


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    setup: str
    fill: Fill
    consume: Consume
    results: list[Measurement] = field(default_factory=list)
    entry_bytes: list[int] = field(default_factory=list)

    def rates(self, n: int) -> list[float]:
        return [n / m.wall_s for m in self.results]

    def median_rate(self, n: int) -> float:
        return statistics.median(self.rates(n)) if self.results else math.nan

    def median_cpu_us(self, n: int) -> float:
        if not self.results:
            return math.nan
        return statistics.median(m.cpu_s for m in self.results) / n * 1e6


def entry_size(fields: EntryFields) -> int:
    def size(value: str | bytes) -> int:
        return len(value.encode() if isinstance(value, str) else value)

    return sum(size(k) + size(v) for k, v in fields.items())


async def xadd_all(client: redis.Redis, stream: str, entries: Iterable[EntryFields]) -> int:
    """XADD every entry, pipelined; returns the size of the first one."""
    first = 0
    pipe = client.pipeline(transaction=False)
    for fields in entries:
        first = first or entry_size(fields)
        pipe.xadd(stream, dict(fields))
        if len(pipe) >= FILL_CHUNK:
            await pipe.execute()
    await pipe.execute()
    return first


def consumer_name(case: str) -> str:
    return f"{case}-{uuid.uuid4().hex[:8]}"


# -- 1. raw redis-py ---------------------------------------------------------------------


async def fill_raw(cfg: Config, client: redis.Redis, stream: str) -> int:
    return await xadd_all(
        client, stream, ({"data": cfg.payload(i).model_dump_json()} for i in range(cfg.n))
    )


async def consume_raw(cfg: Config, stream: str, run: Run) -> Measurement:
    """The floor: XREADGROUP COUNT batch, XACK the batch, nothing else."""
    client = redis.Redis.from_url(cfg.url)
    name = consumer_name("raw")
    try:
        await client.ping()  # connected before the clock starts, as embedstream's case
        run.start()
        while run.count < cfg.n:
            reply: Any = await client.xreadgroup(
                GROUP, name, {stream: ">"}, count=cfg.batch, block=1000
            )
            if not reply:
                continue
            ids = [entry_id for entry_id, _ in reply[0][1]]
            await client.xack(stream, GROUP, *ids)
            run.handled(len(ids))
        return await run.finished(cfg.timeout_s)
    finally:
        await client.aclose()


# -- 2. embedstream ----------------------------------------------------------------------


async def fill_embedstream(cfg: Config, client: redis.Redis, stream: str) -> int:
    return await xadd_all(
        client,
        stream,
        (
            Envelope.wrap(
                "bench.noop.v1", cfg.payload(i), source="bench", tenant="bench"
            ).to_fields()
            for i in range(cfg.n)
        ),
    )


async def fill_embedstream_traced(cfg: Config, client: redis.Redis, stream: str) -> int:
    """The same entries, each with a trace context of its own (as from a traced ingress)."""
    return await xadd_all(
        client,
        stream,
        (
            Envelope.wrap(
                "bench.noop.v1",
                cfg.payload(i),
                source="bench",
                tenant="bench",
                traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
            ).to_fields()
            for i in range(cfg.n)
        ),
    )


@contextlib.contextmanager
def traced(cfg: Config) -> Iterator[None]:
    """Tracing on for the block: a tracer provider with the OTLP/HTTP exporter (batch
    span processor) sending to a sink process that answers every export with 200."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    sink = subprocess.Popen([sys.executable, "-c", OTLP_SINK], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "bench"}))
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
        previous = tracing.install(provider.get_tracer("embedstream"))
        try:
            yield
        finally:
            tracing.install(previous)
            provider.shutdown()
    finally:
        sink.terminate()
        sink.wait(timeout=10)


OTLP_SINK = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


async def consume_embedstream_traced(cfg: Config, stream: str, run: Run) -> Measurement:
    with traced(cfg):
        return await consume_embedstream(cfg, stream, run, burst=False)


async def consume_embedstream(
    cfg: Config, stream: str, run: Run, *, burst: bool, metrics: bool = True
) -> Measurement:
    """StreamWorker with default ConsumerSettings except consumer_name and batch_size.

    Worker loop (``burst=False``): what ``embedstream worker`` runs; a stop event is set
    once everything is acked (the stop itself, which waits out the blocking read, is not
    timed). Burst (``burst=True``): ``run(burst=True)`` until it returns, which includes
    its closing housekeeping (reap + trim of the acked entries).
    """
    client = create_redis(RedisSettings(redis_url=cfg.url))

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        run.handled(len(messages))
        return [Ack() for _ in messages]

    settings = ConsumerSettings(consumer_name=consumer_name("es"), batch_size=cfg.batch)
    worker: StreamWorker[Envelope] = StreamWorker(
        client,
        RedisSettings(redis_url=cfg.url, stream_prefix=cfg.prefix).names(),
        stream,
        GROUP,
        handler,
        settings,
        metrics=metrics,
    )
    try:
        # connected before the clock starts: a cluster client's first command reads the
        # slot map and the server's command table (tens of ms, once per process)
        await client.ping()
        run.start()
        if burst:
            await worker.run(burst=True)
            return await run.finished(cfg.timeout_s)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            return await run.finished(cfg.timeout_s)
        finally:
            stop.set()
            await running
    finally:
        await client.aclose()


# -- 3. taskiq-redis ---------------------------------------------------------------------


def taskiq_broker(cfg: Config, stream: str) -> Any:
    from taskiq_redis import RedisStreamBroker

    # Defaults except the names, ``consumer_id="0"`` (the group may see entries that
    # were added before it was created; we create it first anyway) and the read size.
    return RedisStreamBroker(
        cfg.url,
        queue_name=stream,
        consumer_group_name=GROUP,
        consumer_name=consumer_name("taskiq"),
        consumer_id="0",
        xread_count=cfg.batch,
    )


async def fill_taskiq(cfg: Config, client: redis.Redis, stream: str) -> int:
    """The bytes ``noop.kiq(n=i, text=...)`` would XADD, pipelined."""
    broker = taskiq_broker(cfg, stream)

    async def noop(n: int, text: str) -> None:
        return None

    task = broker.register_task(noop, task_name=TASKIQ_TASK)
    try:
        return await xadd_all(
            client,
            stream,
            (
                {b"data": broker.formatter.dumps(task.kicker()._prepare_message(**kw)).message}
                for kw in (cfg.payload(i).model_dump() for i in range(cfg.n))
            ),
        )
    finally:
        await broker.shutdown()


async def consume_taskiq(cfg: Config, stream: str, run: Run) -> Measurement:
    """taskiq's own Receiver over ``broker.listen()``, as ``taskiq worker`` runs it.

    ``taskiq worker`` builds exactly this Receiver (prefetcher task + runner task, one
    asyncio task per message, ack after the result is stored) in each worker process;
    iterating ``broker.listen()`` by hand would skip that machinery and flatter taskiq.
    The arguments are the CLI's defaults (max_async_tasks=100, max_prefetch=0, ack when
    saved, a thread pool for sync tasks); logging is at WARNING, as in every case here
    (the CLI's default INFO would log a line per task).
    """
    from taskiq.receiver import Receiver

    broker = taskiq_broker(cfg, stream)

    async def noop(n: int, text: str) -> None:
        run.handled()

    broker.register_task(noop, task_name=TASKIQ_TASK)
    broker.is_worker_process = True
    finish = asyncio.Event()
    with ThreadPoolExecutor() as pool:
        receiver = Receiver(broker, executor=pool, max_async_tasks=100, max_prefetch=0)
        run.start()
        listening = asyncio.create_task(receiver.listen(finish))
        try:
            return await run.finished(cfg.timeout_s)
        finally:
            finish.set()
            await stop_taskiq_receiver(listening)
            await broker.shutdown()


async def stop_taskiq_receiver(listening: asyncio.Task[None], grace_s: float = 5.0) -> None:
    """Wait for the Receiver to stop; cancel it if it does not (not timed).

    With taskiq 0.13 / taskiq-redis 1.2.4 the Receiver sometimes never returns after
    ``finish_event`` is set: the prefetcher cancels the task reading ``broker.listen()``
    while it is blocked in XREADGROUP on the now empty stream, and waits for it forever
    (seen about once in 30 runs). The measurement is over by then, so cancel and move on.
    """
    done, _ = await asyncio.wait({listening}, timeout=grace_s)
    if done:
        listening.result()
        return
    print(f"  taskiq Receiver did not stop within {grace_s:.0f} s; cancelling it", file=sys.stderr)
    listening.cancel()
    done, _ = await asyncio.wait({listening}, timeout=grace_s)
    if not done:
        print("  taskiq Receiver ignored the cancel; abandoning it", file=sys.stderr)


# -- 4. FastStream -----------------------------------------------------------------------


async def fill_faststream(cfg: Config, client: redis.Redis, stream: str) -> int:
    """``broker.publish(body, stream=...)`` into a pipeline: FastStream's own encoding."""
    from faststream.redis import RedisBroker

    first = 0
    async with RedisBroker(cfg.url, logger=None) as broker:  # type: ignore[arg-type]
        pipe = client.pipeline(transaction=False)
        for i in range(cfg.n):
            await broker.publish(cfg.payload(i).model_dump(), stream=stream, pipeline=pipe)
            if len(pipe) >= FILL_CHUNK:
                await pipe.execute()
        await pipe.execute()
        reply: Any = await client.xrange(stream, count=1)
        first = entry_size(reply[0][1])
    return first


async def consume_faststream(cfg: Config, stream: str, run: Run, *, batch: bool) -> Measurement:
    """A RedisBroker with one consumer-group stream subscriber, as the FastStream docs
    configure it: ``StreamSub(stream, group=..., consumer=..., max_records=...)``, plus
    ``batch=True`` for the batch variant (one handler call and one XACK per read).
    ``logger=None`` turns off the per-message access log (on at INFO by default), which
    the docs suggest for throughput. Default ack policy (ack after the handler returns).
    """
    from faststream.redis import RedisBroker, StreamSub

    broker = RedisBroker(cfg.url, logger=None)  # type: ignore[arg-type]  # None: no logging
    sub = StreamSub(
        stream, group=GROUP, consumer=consumer_name("fs"), batch=batch, max_records=cfg.batch
    )
    if batch:

        @broker.subscriber(stream=sub)  # type: ignore[untyped-decorator]
        async def handle_batch(body: list[dict[str, Any]]) -> None:
            run.handled(len(body))

    else:

        @broker.subscriber(stream=sub)  # type: ignore[untyped-decorator]
        async def handle(body: dict[str, Any]) -> None:
            run.handled()

    run.start()
    await broker.start()
    try:
        return await run.finished(cfg.timeout_s)
    finally:
        await broker.stop()


# -- the harness -------------------------------------------------------------------------


def all_cases() -> list[Case]:
    return [
        Case("raw", "raw redis-py", "XREADGROUP COUNT b + XACK", fill_raw, consume_raw),
        Case(
            "embedstream",
            "embedstream",
            "StreamWorker loop, batch_size=b",
            fill_embedstream,
            partial(consume_embedstream, burst=False),
        ),
        Case(
            "embedstream-nometrics",
            "embedstream, metrics off",
            "StreamWorker(metrics=False)",
            fill_embedstream,
            partial(consume_embedstream, burst=False, metrics=False),
        ),
        Case(
            "embedstream-traced",
            "embedstream, traced",
            "span per batch + links, OTLP/HTTP",
            fill_embedstream_traced,
            consume_embedstream_traced,
        ),
        Case(
            "embedstream-burst",
            "embedstream burst",
            "run(burst=True), batch_size=b",
            fill_embedstream,
            partial(consume_embedstream, burst=True),
        ),
        Case(
            "taskiq",
            "taskiq-redis",
            "RedisStreamBroker + Receiver",
            fill_taskiq,
            consume_taskiq,
        ),
        Case(
            "faststream",
            "FastStream",
            "StreamSub(group, max_records=b)",
            fill_faststream,
            partial(consume_faststream, batch=False),
        ),
        Case(
            "faststream-batch",
            "FastStream batch",
            "StreamSub(..., batch=True)",
            fill_faststream,
            partial(consume_faststream, batch=True),
        ),
    ]


async def run_once(cfg: Config, admin: redis.Redis, case: Case, rep: int) -> None:
    stream = f"{cfg.prefix}:{case.key}:{rep}"
    try:
        await admin.xgroup_create(stream, GROUP, id="0", mkstream=True)
        case.entry_bytes.append(await case.fill(cfg, admin, stream))
        filled = await admin.xlen(stream)
        if filled != cfg.n:
            raise RuntimeError(f"{case.key}: filled {filled} entries, expected {cfg.n}")
        gc.collect()
        run = Run(admin, stream, cfg.n)
        result = await case.consume(cfg, stream, run)
        if run.count != cfg.n:
            raise RuntimeError(f"{case.key}: handled {run.count} entries, expected {cfg.n}")
        case.results.append(result)
        print(
            f"  rep {rep + 1} {case.key:<18} {cfg.n / result.wall_s:>9,.0f} msg/s"
            f"  {result.cpu_s / cfg.n * 1e6:6.1f} us CPU/msg",
            file=sys.stderr,
            flush=True,
        )
    finally:
        for key in (stream, f"autoclaim:{GROUP}:{stream}"):  # one by one: a cluster's slots
            await admin.delete(key)


async def cleanup(admin: redis.Redis, prefix: str) -> None:
    keys = [key async for key in admin.scan_iter(match=f"{prefix}:*")]
    if keys:
        await admin.delete(*keys)


async def run_all(cfg: Config, cases: list[Case], reps: int) -> None:
    admin = redis.Redis.from_url(cfg.url)
    try:
        for rep in range(reps):
            shift = rep % len(cases)
            for case in cases[shift:] + cases[:shift]:
                await run_once(cfg, admin, case, rep)
    finally:
        await cleanup(admin, cfg.prefix)
        await admin.aclose()


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and not math.isnan(a) and not math.isnan(b) else "nan"


def metrics_us_per_batch(repeat: int = 20_000) -> float:
    """What the runtime's counters cost one batch, timed alone: the calls a batch makes
    (``batch_started``, ``settled``, ``batch_ended``, ``claimed``); steadier than the
    difference of two noisy rates."""
    metrics = ConsumerMetrics("bench", "bench")
    started = time.perf_counter()
    for _ in range(repeat):
        mark = metrics.batch_started(100)
        metrics.claimed(0)
        metrics.settled(100, 0, 0)
        metrics.batch_ended(mark)
    return (time.perf_counter() - started) / repeat * 1e6


def cost(rate: float, baseline: float) -> str:
    """How much slower ``rate`` is than ``baseline``, in percent (negative: faster)."""
    if not baseline or math.isnan(rate) or math.isnan(baseline):
        return "nan"
    return f"{(1 - rate / baseline) * 100:.1f}%"


def report(cfg: Config, cases: list[Case], loop: str) -> str:
    by_key = {case.key: case for case in cases}
    ours = by_key["embedstream"].median_rate(cfg.n) if "embedstream" in by_key else math.nan
    size = next((c.entry_bytes[0] for c in cases if c.entry_bytes), 0)
    parser = "hiredis" if HIREDIS_AVAILABLE else "pure Python (no hiredis)"
    lines = [
        f"N={cfg.n:,} per run, batch={cfg.batch}, payload text {len(cfg.text)} B "
        f"(~{size} B entry), loop={loop}, redis-py {redis_version} parser: {parser}, "
        f"reps={len(cases[0].results)}, median shown",
        "",
        f"| {'case':<18} | {'setup':<32} | {'entry B':>7} | {'msg/s (median)':>14} "
        f"| {'min..max msg/s':>17} | {'CPU us/msg':>10} | {'embedstream/x':>13} |",
        f"|{'-' * 20}|{'-' * 34}|{'-' * 9}|{'-' * 16}|{'-' * 19}|{'-' * 12}|{'-' * 15}|",
    ]
    for case in cases:
        rates = case.rates(cfg.n)
        spread = f"{min(rates):,.0f}..{max(rates):,.0f}" if rates else "-"
        entry = case.entry_bytes[0] if case.entry_bytes else 0
        rate = case.median_rate(cfg.n)
        lines.append(
            f"| {case.label:<18} | {case.setup:<32} | {entry:>7} | {rate:>14,.0f} "
            f"| {spread:>17} | {case.median_cpu_us(cfg.n):>10.1f} | {ratio(ours, rate):>13} |"
        )

    def best(*keys: str) -> float:
        rates = [by_key[k].median_rate(cfg.n) for k in keys if k in by_key]
        return max(rates) if rates else math.nan

    def cpu_cost(key: str, baseline: str) -> str:
        """Extra CPU per message of ``key`` over ``baseline``, in percent."""
        if key not in by_key or baseline not in by_key:
            return "nan"
        base = by_key[baseline].median_cpu_us(cfg.n)
        return f"{(by_key[key].median_cpu_us(cfg.n) / base - 1) * 100:.1f}%"

    per_batch = metrics_us_per_batch()
    per_msg = per_batch / cfg.batch
    ours_cpu = by_key["embedstream"].median_cpu_us(cfg.n) if "embedstream" in by_key else math.nan
    share = f"{per_msg / ours_cpu * 100:.2f}%" if not math.isnan(ours_cpu) else "nan"
    lines += [
        "",
        f"metrics per batch, timed alone: {per_batch:.2f} us ({per_msg:.3f} us/msg at batch "
        f"{cfg.batch}; metrics_cpu_share: of the loop's CPU us/msg)",
        "CPU us/msg: this process only (client side), median.",
        "metrics_cost: 1 - embedstream / embedstream metrics off; tracing_cost: 1 - traced /",
        "embedstream (both with metrics on); *_cpu_cost: the same by CPU us/msg (steadier",
        "than rates on a shared machine).",
        "runtime_vs_faststream: FastStream's stream subscriber as documented (a handler per",
        "message); runtime_vs_faststream_batch: its batch=True variant (a handler per read).",
        f"RESULT runtime_vs_raw={ratio(ours, best('raw'))} "
        f"runtime_vs_taskiq={ratio(ours, best('taskiq'))} "
        f"runtime_vs_faststream={ratio(ours, best('faststream'))} "
        f"runtime_vs_faststream_batch={ratio(ours, best('faststream-batch'))} "
        f"metrics_cost={cost(ours, best('embedstream-nometrics'))} "
        f"metrics_cpu_cost={cpu_cost('embedstream', 'embedstream-nometrics')} "
        f"metrics_cpu_share={share} "
        f"tracing_cost={cost(best('embedstream-traced'), ours)} "
        f"tracing_cpu_cost={cpu_cost('embedstream-traced', 'embedstream')}",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    keys = [case.key for case in all_cases()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000, help="entries per run")
    parser.add_argument("--reps", type=int, default=3, help="runs per case (interleaved)")
    parser.add_argument("--quick", action="store_true", help="N=2,000 and 2 reps")
    parser.add_argument("--batch", type=int, default=100, help="entries per read")
    parser.add_argument("--payload-bytes", type=int, default=1000, help="text per message")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(keys)}")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop"
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.reps = 2_000, 2
    unknown = set(filter(None, args.only.split(","))) - set(keys)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    return args


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    if "--cluster" in (sys.argv[1:] if argv is None else argv):
        from bench.cluster_runtime import main as cluster_main

        cluster_main([a for a in (sys.argv[1:] if argv is None else argv) if a != "--cluster"])
        return
    args = parse_args(argv)
    configure_logging("WARNING")
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    cfg = Config(
        url=args.redis_url,
        n=args.n,
        batch=args.batch,
        text=(words * (args.payload_bytes // len(words) + 1))[: args.payload_bytes],
        prefix=f"bench-runtime-{os.getpid()}",
    )
    only = set(filter(None, args.only.split(",")))
    cases = [case for case in all_cases() if not only or case.key in only]
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(run_all(cfg, cases, args.reps))
    print(report(cfg, cases, args.loop))


if __name__ == "__main__":
    main()
