"""A consumer process for the runtime tests, started with ``sys.executable``.

    python consumer_proc.py REDIS_URL PREFIX CONSUMER_NAME [--sleep S] [--batch-size N]
        [--visibility-ms MS] [--drain-timeout S] [--max-in-flight N]

It consumes ``{prefix}:ingest`` in group ``g``. For every batch its handler first pushes
the batch's entry ids onto ``{prefix}:started:{name}`` (so a test knows it is mid-batch),
then sleeps ``--sleep`` seconds, then acks each message, counting the ack in the hash
``{prefix}:acked:{name}`` inside the ack's own transaction. SIGTERM/SIGINT stop it
through ``install_stop_signals``; it exits 0 after draining.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import redis.asyncio as redis

from embedstream.config import ConsumerSettings
from embedstream.logging import configure_logging
from embedstream.schemas.envelope import Envelope
from embedstream.streams.messages import Ack, Message, Outcome
from embedstream.streams.names import StreamNames
from embedstream.streams.runner import StreamWorker, install_stop_signals

GROUP = "g"


def _ack(key: str, entry_id: str) -> Ack:
    return Ack(ops=[lambda pipe: pipe.hincrby(key, entry_id, 1)])


async def main(args: argparse.Namespace) -> int:
    configure_logging("INFO")
    names = StreamNames(args.prefix)
    client = redis.Redis.from_url(args.redis_url)
    started_key = names.key("started", args.name)
    acked_key = names.key("acked", args.name)

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        await client.rpush(started_key, *[m.id for m in messages])
        await asyncio.sleep(args.sleep)
        return [_ack(acked_key, m.id) for m in messages]

    settings = ConsumerSettings(
        consumer_name=args.name,
        batch_size=args.batch_size,
        block_ms=50,
        max_in_flight=args.max_in_flight,
        visibility_timeout_ms=args.visibility_ms,
        claim_interval_ms=50,
        retry_backoff_ms=20,
        retry_backoff_max_ms=100,
        drain_timeout_s=args.drain_timeout,
    )
    stop = asyncio.Event()
    install_stop_signals(stop)
    worker = StreamWorker(client, names, names.ingest, GROUP, handler, settings)
    stats = await worker.run(stop)
    await client.aclose()
    print(f"STATS acked={stats.acked} batches={stats.batches}", flush=True)
    return 0


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url")
    parser.add_argument("prefix")
    parser.add_argument("name")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--visibility-ms", type=int, default=600)
    parser.add_argument("--drain-timeout", type=float, default=5.0)
    parser.add_argument("--max-in-flight", type=int, default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
