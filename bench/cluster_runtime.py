"""The consumer runtime on a Redis Cluster: ``python -m bench.runtime --cluster``.

Starts a real local Redis Cluster (three primaries, one replica each, on free ports;
``bench.redis_cluster``) next to the single Redis, and measures side by side in one run:

1. **per-process cost**: no-op messages/s and CPU per message of one consumer process
   (embedstream's ``StreamWorker``, default settings, batch 100; its client connected
   before the clock starts) on one stream of the single Redis, on one stream of the
   cluster (its keys hash-tagged as a deployment's are) and on one stream of a cluster
   of three primaries without replicas (the same protocol, without the replication
   work: each entry a consumer reads is propagated to the replica as an XCLAIM, and the
   replicas run on the same cores). Cases run interleaved, ``--reps`` times, medians
   shown.
2. **partitions**: aggregate messages/s on the cluster over 1 partition stream with one
   consumer process and over 3 partition streams (each with its own hash tag, so the
   cluster spreads them over its shards) with one consumer process per partition. Each
   process times its own consumption; the aggregate is all messages over the span from
   the first start to the last finish (process start-up is not timed).

The machine's cores bound the second figure: three consumer processes and three Redis
primaries share them. The last line is ``RESULT cluster_vs_single=<x>
partitions3_vs_1=<x> cluster_cpu_vs_single=<x> cluster_norepl_vs_single=<x>``: the
cluster's per-process rate over the single node's, the aggregate rate over 3 partitions
over that of 1, the consumer's CPU per message on the cluster over the single node's (the
per-process cost), and the rate on the cluster without replicas over the single node's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.redis_cluster import LocalRedisCluster
from bench.runtime import (
    GROUP,
    Config,
    Run,
    consume_embedstream,
    fill_embedstream,
    loop_factory,
)
from embedstream.adapters.redis_client import create_redis
from embedstream.config import RedisSettings
from embedstream.logging import configure_logging
from embedstream.streams.names import StreamNames

WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


def config(url: str, n: int, batch: int, prefix: str) -> Config:
    return Config(url=url, n=n, batch=batch, text=(WORDS * 14)[:1000], prefix=prefix)


async def prepare(cfg: Config, stream: str) -> None:
    admin = create_redis(RedisSettings(redis_url=cfg.url))
    try:
        await admin.delete(stream)
        await admin.xgroup_create(stream, GROUP, id="0", mkstream=True)
        await fill_embedstream(cfg, admin, stream)
    finally:
        await admin.aclose()


async def consume(cfg: Config, stream: str) -> tuple[float, float, float]:
    """Consume the pre-filled ``stream``; (start, end) in wall-clock seconds and the
    process's CPU seconds."""
    admin = create_redis(RedisSettings(redis_url=cfg.url))
    try:
        run = Run(admin, stream, cfg.n)
        measured = await consume_embedstream(cfg, stream, run, burst=False)
        end = time.time()
        return end - measured.wall_s, end, measured.cpu_s
    finally:
        await admin.delete(stream)
        await admin.aclose()


def consume_in_process(cfg: Config, stream: str, loop: str) -> tuple[float, float, float]:
    configure_logging("WARNING")
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(consume(cfg, stream))


def per_process_rate(cfg: Config, stream: str, loop: str) -> tuple[float, float]:
    """(messages/s, client CPU microseconds per message) of one consumer process."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(prepare(cfg, stream))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        start, end, cpu = pool.apply(consume_in_process, (cfg, stream, loop))
    return cfg.n / (end - start), cpu / cfg.n * 1e6


def aggregate_rate(cfg: Config, streams: Sequence[str], loop: str) -> float:
    """One consumer process per stream, started together; all messages over the span."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        for stream in streams:
            runner.run(prepare(cfg, stream))
    with multiprocessing.get_context("spawn").Pool(len(streams)) as pool:
        spans = pool.starmap(consume_in_process, [(cfg, s, loop) for s in streams])
    return cfg.n * len(streams) / (max(e for _, e, _ in spans) - min(s for s, _, _ in spans))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000, help="entries per consumer process")
    parser.add_argument("--reps", type=int, default=3, help="runs per case (interleaved)")
    parser.add_argument("--quick", action="store_true", help="N=2,000 and 2 reps")
    parser.add_argument("--batch", type=int, default=100, help="entries per read")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.reps = 2_000, 2
    configure_logging("WARNING")
    prefix = f"bench-cluster-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as folder:
        # no AOF: the single Redis it is compared with runs without
        cluster = LocalRedisCluster.start(Path(folder) / "replicated", appendonly=False)
        bare = LocalRedisCluster.start(Path(folder) / "bare", appendonly=False, replicas=0)
        try:
            single = config(args.redis_url, args.n, args.batch, prefix)
            on_cluster = config(cluster.url, args.n, args.batch, prefix)
            on_bare = config(bare.url, args.n, args.batch, prefix)
            order = ["single", "cluster", "norepl", "p1", "p3"]
            rates: dict[str, list[float]] = {case: [] for case in order}
            cpu: dict[str, list[float]] = {"single": [], "cluster": [], "norepl": []}
            for rep in range(args.reps):
                for case in order[rep % 5 :] + order[: rep % 5]:
                    if case == "single":
                        rate, us = per_process_rate(single, f"{prefix}:ingest", args.loop)
                        cpu[case].append(us)
                    elif case in ("cluster", "norepl"):
                        stream = f"{{{prefix}}}:ingest"
                        target = on_cluster if case == "cluster" else on_bare
                        rate, us = per_process_rate(target, stream, args.loop)
                        cpu[case].append(us)
                    else:  # a deployment's partition streams (their own hash tags)
                        n = 1 if case == "p1" else 3
                        names = StreamNames(f"{prefix}-{n}", cluster=True, partitions=n)
                        rate = aggregate_rate(on_cluster, names.ingest_streams(), args.loop)
                    rates[case].append(rate)
                    print(f"  rep {rep + 1} {case:<8} {rate:>9,.0f} msg/s", file=sys.stderr)
        finally:
            cluster.stop()
            bare.stop()
    med = {case: statistics.median(values) for case, values in rates.items()}
    us = {case: statistics.median(values) for case, values in cpu.items()}
    cores = os.cpu_count() or 0
    print(
        f"N={args.n:,} per consumer process, batch={args.batch}, ~1 KB entries, "
        f"loop={args.loop}, {cores} CPU cores, reps={args.reps}, median shown\n\n"
        f"| case | msg/s (median) | consumer CPU us/msg |\n|---|---|---|\n"
        f"| one process, single Redis | {med['single']:,.0f} | {us['single']:.1f} |\n"
        f"| one process, Redis Cluster (3 primaries + 3 replicas) | {med['cluster']:,.0f} "
        f"| {us['cluster']:.1f} |\n"
        f"| one process, Redis Cluster without replicas (3 primaries) | {med['norepl']:,.0f} "
        f"| {us['norepl']:.1f} |\n"
        f"| cluster, 1 partition, 1 process | {med['p1']:,.0f} | |\n"
        f"| cluster, 3 partitions, 3 processes (aggregate) | {med['p3']:,.0f} | |\n\n"
        "cluster_vs_single: messages/s of one process, cluster over single node; "
        "cluster_cpu_vs_single: the consumer process's CPU per message, cluster over "
        "single node (the client-side cost; the rest is the servers' and the network's).\n"
        f"RESULT cluster_vs_single={med['cluster'] / med['single']:.2f} "
        f"partitions3_vs_1={med['p3'] / med['p1']:.2f} "
        f"cluster_cpu_vs_single={us['cluster'] / us['single']:.2f} "
        f"cluster_norepl_vs_single={med['norepl'] / med['single']:.2f}"
    )


if __name__ == "__main__":
    main()
