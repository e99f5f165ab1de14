"""What one request costs the ingress, side by side with the floor of a FastAPI service
that writes documents to Redis Streams (``bench.ingress_floor``).

Both run as one uvicorn process each, on the same uvicorn settings
(``embedstream.api.app.UVICORN_OPTIONS``: uvloop and httptools where installed, no access
log), against the same Redis, and get the same requests from ``wrk`` (Debian's compiled
HTTP load generator, one thread, ``--connections`` keep-alive connections; its own CPU
per request is printed to show it is not the bottleneck):

- ``POST /v1/documents`` with 1, 4 and 100 documents of ~60 words, each with an id and
  two metadata values, without and with an ``Idempotency-Key`` (a new key per request,
  so every request makes a new job);
- the ingress is the real one (``embedstream api``) with production logging (JSON lines
  at INFO, to a file), the per-credential rate limit and backpressure off, an API key
  of its own, warm in the key cache (``EMBEDSTREAM_API_KEY_CACHE_TTL_S`` 60, the most;
  with the default 5 s, one argon2 verification every 5 s lands in some rounds);
- the floor validates the same body with a pydantic model and writes one XADD per
  document in one pipeline: no credential, tenant, job record, idempotency or envelope.

Per case: requests/s and CPU milliseconds per request of each server process (utime +
stime from /proc, the figure that does not depend on what else shares the cores), and
Redis's CPU per request (a shared server: indicative). ``ingress_vs_floor`` is the
floor's CPU per request over the ingress's (1.0: as cheap as the floor; 0.5: twice the
floor's cost). The ingress's ingest stream must have grown by one entry per accepted
document, and every answer must be a 2xx, or the run fails.

    python -m bench.ingress [--duration 2] [--rounds 2] [--connections 16] [--batches 1,4,100]
        [--pin]

``--pin`` pins the server under test to CPU 0 and wrk to CPU 1 (on a 2-core machine
shared with other work, leave it off; the CPU per request is the robust figure). The
last line is ``RESULT ingress_vs_floor=<batches of 4> ingress_vs_floor_idem=<x>
single_vs_floor=<x> batch100_vs_floor=<x> ... api_rss_mb=<peak RSS of the API>
api_rss_now_mb=<its RSS at the end>``. The peak includes the API key's one argon2
verification (64 MiB of working memory, pwdlib's default parameters, for a moment): the
default run (~55 s) stays within the key cache's 60 s, as a warm cache is the case
measured; a longer run verifies the key again, on top of whatever the process holds
then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.corpus import generate
from bench.stack import Stack, create_stack, free_port, remove_stack_data

REDIS_URL = os.environ.get("EMBEDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get(
    "EMBEDSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BATCHES = (1, 4, 100)
WORDS_PER_DOCUMENT = 60
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def documents(count: int) -> list[dict[str, object]]:
    """``count`` documents of ~60 words of technical English, each with an id and
    metadata."""
    words = " ".join(generate(max(4, count // 4 + 1), seed=3)).split()
    return [
        {
            "id": f"bench/doc-{n}",
            "text": " ".join(words[n * WORDS_PER_DOCUMENT : (n + 1) * WORDS_PER_DOCUMENT]),
            "metadata": {"source": "bench", "page": n},
        }
        for n in range(count)
    ]


def wrk_script(body: bytes, api_key: str, idempotent: bool, out: Path) -> str:
    """The wrk Lua script: POST ``body`` as JSON with the API key; with ``idempotent``
    a new Idempotency-Key per request; a JSON summary written to ``out`` at the end."""
    run_tag = uuid.uuid4().hex[:12]
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = [==[{body.decode()}]==]",
        'wrk.headers["Content-Type"] = "application/json"',
        f'wrk.headers["X-API-Key"] = "{api_key}"',
    ]
    if idempotent:  # without request(), wrk formats the request once and resends it
        lines += [
            "local counter = 0",
            "request = function()",
            "  counter = counter + 1",
            f'  wrk.headers["Idempotency-Key"] = "bench-{run_tag}-" .. counter',
            "  return wrk.format()",
            "end",
        ]
    lines += [
        "done = function(summary, latency, requests)",
        f'  local f = io.open("{out}", "w")',
        "  local e = summary.errors",
        '  f:write(string.format(\'{"requests": %d, "duration_us": %d, "non2xx": %d, \'',
        '    .. \'"socket_errors": %d, "p50_us": %d, "p99_us": %d}\',',
        "    summary.requests, summary.duration, e.status,",
        "    e.connect + e.read + e.write + e.timeout,",
        "    latency:percentile(50), latency:percentile(99)))",
        "  f:close()",
        "end",
    ]
    return "\n".join(lines) + "\n"


def cpu_s(pid: int) -> float:
    """utime + stime of the process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def rss_mb(pid: int) -> tuple[float, float]:
    """(peak, current) RSS of the process in MiB: the kernel's ``VmHWM`` and ``VmRSS``."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            found[line[:5]] = int(line.split()[1]) / 1024
    return found["VmHWM"], found["VmRSS"]


@dataclass
class Measured:
    requests: int
    seconds: float
    rps: float
    cpu_ms: float
    """server CPU milliseconds per request"""
    redis_ms: float
    wrk_ms: float
    p50_ms: float
    p99_ms: float


@dataclass
class Server:
    name: str
    url: str
    pid: int
    stream: str


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_wrk(
    server: Server,
    script: str,
    out: Path,
    duration: int,
    connections: int,
    pin: bool,
    client: redis.Redis,
) -> Measured:
    lua = out.with_suffix(".lua")
    lua.write_text(script)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(lua), server.url]
    if pin:
        command = ["taskset", "-c", "1", *command]
    cpu_before, redis_before = cpu_s(server.pid), redis_cpu_s(client)
    log = out.with_suffix(".log")
    with log.open("wb") as output:
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu_after, redis_after = cpu_s(server.pid), redis_cpu_s(client)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {log.read_text()[-2000:]}")
    summary = json.loads(out.read_text())
    if summary["non2xx"] or summary["socket_errors"]:
        raise RuntimeError(f"{server.name}: errors under load: {summary}")
    n = summary["requests"]
    if n == 0:
        raise RuntimeError(f"{server.name}: wrk completed no request")
    return Measured(
        requests=n,
        seconds=summary["duration_us"] / 1e6,
        rps=n / (summary["duration_us"] / 1e6),
        cpu_ms=(cpu_after - cpu_before) * 1000 / n,
        redis_ms=(redis_after - redis_before) * 1000 / n,
        wrk_ms=(usage.ru_utime + usage.ru_stime) * 1000 / n,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
    )


def combined(rounds: list[Measured]) -> Measured:
    """One case's rounds as one measurement: totals over the rounds (per-request figures
    weighted by requests), the median p50 and the worst p99."""
    n = sum(m.requests for m in rounds)
    seconds = sum(m.seconds for m in rounds)

    def per_request(figure: str) -> float:
        return sum(getattr(m, figure) * m.requests for m in rounds) / n

    return Measured(
        requests=n,
        seconds=seconds,
        rps=n / seconds,
        cpu_ms=per_request("cpu_ms"),
        redis_ms=per_request("redis_ms"),
        wrk_ms=per_request("wrk_ms"),
        p50_ms=statistics.median(m.p50_ms for m in rounds),
        p99_ms=max(m.p99_ms for m in rounds),
    )


def start_servers(stack: Stack, pin: bool) -> tuple[Server, Server]:
    """The real ingress and the floor app, one uvicorn process each."""
    api = stack.start("api", "api")
    stack.wait_ready()
    floor_port = free_port()
    floor_stream = stack.names.key("floor")
    with (stack.log_dir / "floor.log").open("ab") as log:
        floor = subprocess.Popen(
            [sys.executable, "-m", "bench.ingress_floor", "--port", str(floor_port),
             "--redis-url", REDIS_URL, "--stream", floor_stream],
            env=stack.env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    stack.procs["floor"] = floor
    floor_url = f"http://127.0.0.1:{floor_port}"
    stack.wait_ready(url=floor_url)
    if pin:
        for proc in (api, floor):
            subprocess.run(["taskset", "-pc", "0", str(proc.pid)], check=True, capture_output=True)
    return (
        Server("floor", f"{floor_url}/v1/documents", floor.pid, floor_stream),
        Server("ingress", f"{stack.url}/v1/documents", api.pid, stack.names.ingest),
    )


def measure_all(
    stack: Stack,
    duration: int,
    connections: int,
    pin: bool,
    tmp: Path,
    batches: tuple[int, ...] = BATCHES,
    rounds: int = 2,
) -> tuple[dict[tuple[str, int, bool], Measured], tuple[float, float]]:
    floor, ingress = start_servers(stack, pin)
    client = redis.Redis.from_url(REDIS_URL)
    results: dict[tuple[str, int, bool], Measured] = {}
    try:
        bodies = {n: json.dumps({"documents": documents(n)}).encode() for n in {*batches, 4}}
        started = time.monotonic()
        for server in (floor, ingress):  # warm-up: connections, caches, the key cache
            script = wrk_script(bodies[4], stack.api_key, False, tmp / "warm.json")
            run_wrk(server, script, tmp / "warm.json", 1, connections, pin, client)
        for n in batches:
            for idempotent in (False, True):
                # the servers take turns, round after round: a change in what else runs
                # on the machine falls on both alike
                measured: dict[str, list[Measured]] = {floor.name: [], ingress.name: []}
                for _ in range(rounds):
                    for server in (floor, ingress):
                        out = tmp / f"{server.name}-{n}-{idempotent}.json"
                        script = wrk_script(bodies[n], stack.api_key, idempotent, out)
                        before = client.xlen(server.stream)
                        m = run_wrk(server, script, out, duration, connections, pin, client)
                        added = client.xlen(server.stream) - before
                        if added < m.requests * n:  # in-flight ones at the end may add more
                            raise RuntimeError(
                                f"{server.name}: {m.requests} requests of {n} documents "
                                f"answered 2xx but only {added} entries reached the stream"
                            )
                        measured[server.name].append(m)
                        client.xtrim(server.stream, maxlen=0)  # keep Redis small
                for name, ms in measured.items():
                    results[(name, n, idempotent)] = combined(ms)
        rss = rss_mb(ingress.pid)
        elapsed = time.monotonic() - started
        print(f"measured for {elapsed:.0f} s from the first request (the key cache: 60 s)")
    finally:
        client.close()
    return results, rss


def report(
    results: dict[tuple[str, int, bool], Measured], rss: tuple[float, float], args: object
) -> None:
    print(
        "| documents | Idempotency-Key | server | requests/s | CPU ms/request | "
        "Redis CPU ms/request | p50 ms | p99 ms | wrk CPU ms/request |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, n, idempotent), m in results.items():
        print(
            f"| {n} | {'yes' if idempotent else 'no'} | {name} | {m.rps:,.0f} | "
            f"{m.cpu_ms:.3f} | {m.redis_ms:.3f} | {m.p50_ms:.1f} | {m.p99_ms:.1f} | "
            f"{m.wrk_ms:.3f} |"
        )

    names = {1: "single", 4: "ingress", 100: "batch100"}
    figures: list[str] = []
    for n in sorted({n for _, n, _ in results}):
        for idempotent in (False, True):
            floor, ingress = results[("floor", n, idempotent)], results[("ingress", n, idempotent)]
            name = names.get(n, f"batch{n}") + "_vs_floor" + ("_idem" if idempotent else "")
            figures.append(f"{name}={floor.cpu_ms / ingress.cpu_ms:.2f}")
    if ("ingress", 4, False) in results:
        four, floor_four = results[("ingress", 4, False)], results[("floor", 4, False)]
        figures += [
            f"ingress_cpu_ms_4={four.cpu_ms:.3f}",
            f"floor_cpu_ms_4={floor_four.cpu_ms:.3f}",
            f"ingress_rps_4={four.rps:.0f}",
            f"floor_rps_4={floor_four.rps:.0f}",
        ]
    print(f"settings: {args}")
    peak, current = rss
    print(f"API RSS after the run: peak {peak:.0f} MiB, now {current:.0f} MiB")
    print("RESULT " + " ".join(figures) + f" api_rss_mb={peak:.0f} api_rss_now_mb={current:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=int, default=2, help="seconds per round of a case and server"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds per case (the servers take turns)"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--pin", action="store_true", help="servers on CPU 0, wrk on CPU 1 (taskset)"
    )
    parser.add_argument(
        "--batches",
        default=",".join(map(str, BATCHES)),
        help="documents per request, comma-separated (default 1,4,100)",
    )
    args = parser.parse_args()
    batches = tuple(int(n) for n in args.batches.split(","))
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (scripts/setup.sh does)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stack = create_stack(
            tmp,
            redis_url=REDIS_URL,
            database_url=PG_DSN,
            EMBEDSTREAM_RATE_LIMIT="",
            EMBEDSTREAM_MAX_INGEST_LAG="0",
            EMBEDSTREAM_LOG_JSON="true",
            # the API key stays verified for a minute (the most; default 5 s, after which
            # one argon2 verification, ~0.1 CPU-s, lands in whichever round is running)
            EMBEDSTREAM_API_KEY_CACHE_TTL_S="60",
        )
        try:
            results, rss = measure_all(
                stack, args.duration, args.connections, args.pin, tmp, batches, args.rounds
            )
        except Exception:
            print(stack.logs()[-3000:], file=sys.stderr)
            raise
        finally:
            stack.stop_all()
            asyncio.run(remove_stack_data(stack))
    report(results, rss, args)


if __name__ == "__main__":
    main()
