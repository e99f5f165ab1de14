"""Redis Cluster support on real servers: key names (unchanged on a single Redis, so an
existing deployment keeps its pending work), dead-letter replay and job bookkeeping on
a local Redis Cluster, and the durable-acknowledgement option (WAIT)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Sequence

import pytest
import redis.asyncio as redis

from embedstream.adapters.redis_client import ReplicaAck, ReplicationTimeout, create_redis
from embedstream.config import ConsumerSettings, RedisSettings
from embedstream.jobs.tracker import JobTracker, Submission
from embedstream.schemas.envelope import Envelope
from embedstream.streams.dlq import replay_dead_letter
from embedstream.streams.messages import Ack, DeadLetter, Message, Outcome
from embedstream.streams.names import EMBED, StreamNames
from embedstream.streams.runner import StreamWorker
from tests.conftest import REDIS_BACKENDS, REDIS_URL
from tests.support.builders import TENANT, command_envelope
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.streams import produce

pytestmark = pytest.mark.integration


async def test_an_existing_single_node_deployment_keeps_its_pending_entries(
    fast_settings: ConsumerSettings,
) -> None:
    """Entries written and delivered under the key names of the release before cluster
    support (spelled out here by hand) are taken back and finished by this release's
    worker, configured the ordinary way: no key surgery."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    legacy_stream = f"{prefix}:ingest"  # the name every earlier release used
    client = redis.Redis.from_url(REDIS_URL)
    try:
        ids = await produce(client, legacy_stream, 4)
        await client.xgroup_create(legacy_stream, EMBED.group, "0")
        # a replica of the old release read them and died before acking
        await client.xreadgroup(EMBED.group, "old-replica", {legacy_stream: ">"}, count=10)
        assert (await client.xpending(legacy_stream, EMBED.group))["pending"] == 4

        names = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix).names()
        assert names.ingest == legacy_stream
        handled: list[str] = []

        async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
            handled.extend(m.id for m in messages)
            return [Ack() for _ in messages]

        settings = fast_settings.model_copy(update={"consumer_name": "new-replica"})
        worker: StreamWorker[Envelope] = StreamWorker(
            client, names, names.ingest, EMBED.group, handler, settings
        )
        # the old replica's entries come back once idle past the visibility timeout
        await worker.consumer.claim_idle(0, 10)  # warm the script cache
        await client.xclaim(
            legacy_stream, EMBED.group, "old-replica", 0, ids, idle=10_000_000, justid=True
        )
        await worker.run(burst=True)
        assert sorted(handled) == sorted(ids)
        assert (await client.xpending(legacy_stream, EMBED.group))["pending"] == 0
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def test_key_names_are_tagged_on_a_cluster_only() -> None:
    single = StreamNames("es")
    cluster = StreamNames("es", cluster=True)
    assert (single.ingest, single.key("job", "j1")) == ("es:ingest", "es:job:j1")
    assert (cluster.ingest, cluster.key("job", "j1")) == ("{es}:ingest", "{es}:job:j1")
    assert StreamNames("{es}", cluster=True).results == "{es}:results"
    assert (
        RedisSettings(redis_url="redis+cluster://h:7000/0", stream_prefix="es").names() == cluster
    )
    assert RedisSettings(redis_url="redis://h:7000/0", redis_cluster=True).is_cluster
    with pytest.raises(ValueError, match="hash tag"):
        RedisSettings(stream_prefix="a{b}")


@pytest.fixture(params=REDIS_BACKENDS)
def redis_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


async def test_a_dead_letter_is_replayed_to_its_stream(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    [entry_id] = await produce(redis_client, names.ingest, 1)

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        return [DeadLetter(ValueError("no")) for _ in messages]

    await StreamWorker(redis_client, names, names.ingest, EMBED.group, handler, fast_settings).run(
        burst=True
    )
    [(letter_id, _)] = await redis_client.xrange(names.dlq)

    replayed = await replay_dead_letter(redis_client, names, letter_id.decode())

    assert replayed is not None
    stream, new_id = replayed
    assert stream == names.ingest
    [(_, fields)] = await redis_client.xrange(names.ingest, min=new_id, max=new_id)
    assert fields[b"replayed_from"] == letter_id
    assert await redis_client.xlen(names.dlq) == 0
    assert new_id != entry_id


def submission(job_id: str, document_id: str) -> Submission:
    return Submission(document_id, "upsert", command_envelope(job_id, document_id, "upsert"))


async def test_durable_ack_waits_for_a_replica(
    redis_client: redis.Redis, names: StreamNames, redis_backend: str
) -> None:
    """With ``REDIS_MIN_REPLICAS_ACK=1`` a submit returns once its write is on a replica:
    on the cluster (one replica per primary) it does; on the single Redis, which has no
    replica, it raises ``ReplicationTimeout`` (the API's 503) after writing the job, and
    a retry with the same Idempotency-Key does not enqueue twice."""
    tracker = JobTracker(redis_client, names, replica_ack=ReplicaAck(1, 200))
    job_id = uuid.uuid4().hex
    subs = [submission(job_id, "doc-1")]
    if redis_backend == "cluster":
        submitted = await tracker.submit(job_id, subs, tenant=TENANT, idempotency_key="k1")
        assert submitted.created
        assert await redis_client.xlen(names.ingest) == 1
        return
    with pytest.raises(ReplicationTimeout, match="0 of the 1 replica"):
        await tracker.submit(job_id, subs, tenant=TENANT, idempotency_key="k1")
    retry = JobTracker(redis_client, names)  # e.g. once the replica is back
    again = await retry.submit(uuid.uuid4().hex, subs, tenant=TENANT, idempotency_key="k1")
    assert (again.job_id, again.created) == (job_id, False)
    assert await redis_client.xlen(names.ingest) == 1


async def test_wait_counts_the_replicas_of_the_node_that_took_the_write(
    redis_cluster: LocalRedisCluster,
) -> None:
    """On the cluster, the probe write and WAIT go to the primary serving the key's slot
    (the one that took the write), on one connection."""
    client = create_redis(RedisSettings(redis_url=redis_cluster.url))
    try:
        names = StreamNames(f"t{uuid.uuid4().hex[:12]}", cluster=True)
        for stream in (names.ingest, f"{{other-{uuid.uuid4().hex[:6]}}}:s"):
            await client.xadd(stream, {"a": "1"})
            await ReplicaAck(1, 2_000).wait(client, stream)
            await client.delete(stream, f"{stream}:replicated")
    finally:
        await client.aclose()


def test_a_cluster_node_addressed_as_a_single_redis_is_refused_with_what_to_set(
    redis_cluster: LocalRedisCluster, prefix: str
) -> None:
    """A plain ``redis://`` URL to a cluster node: the worker and ``init`` stop at once
    and say what to set, instead of failing later with MOVED on other nodes' slots."""
    node = redis_cluster.nodes[0]
    env = {
        **os.environ,
        "EMBEDSTREAM_REDIS_URL": f"redis://127.0.0.1:{node.port}/0",
        "EMBEDSTREAM_STREAM_PREFIX": prefix,
        "EMBEDSTREAM_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
    }
    cli = [sys.executable, "-c", "from embedstream.cli import main; main()"]
    for command in (["worker", "persist", "--burst"], ["init"]):
        done = subprocess.run(
            [*cli, *command], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "names a node of a Redis Cluster" in done.stderr, done.stderr
        assert "redis+cluster://" in done.stderr and "Traceback" not in done.stderr
    # the same deployment, told it is a cluster, starts
    env["EMBEDSTREAM_REDIS_CLUSTER"] = "true"
    done = subprocess.run([*cli, "init"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
