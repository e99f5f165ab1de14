"""Every ``embedstream`` verb that prints a result, run with ``--json`` as a script would
(a subprocess, no terminal): stdout parses as one JSON document with the table's fields;
and the exit codes of each class: 0 done, 1 failed, 2 usage error, 3 unhealthy."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from bench.stack import free_port

from embedstream.config import ConsumerSettings
from embedstream.streams.names import EMBED, StreamNames
from tests.conftest import REDIS_URL
from tests.integration.conftest import JWT_SECRET, PG_DSN, drop_schema
from tests.support.dead_letters import add_command, add_poison, dead_letter_all

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.stdout.strip(), f"nothing on stdout (exit {self.code}): {self.stderr}"
        return json.loads(self.stdout)


@dataclass
class Cli:
    env: dict[str, str]
    names: StreamNames
    tmp: Path

    def __call__(self, *args: str, **env: str) -> Run:
        done = subprocess.run(
            [sys.executable, "-m", "embedstream", *args],
            env={**self.env, **env},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(tmp_path: Path, names: StreamNames, redis_client: redis.Redis) -> Iterator[Cli]:
    schema = f"t_cli_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "EMBEDSTREAM_REDIS_URL": REDIS_URL,
        "EMBEDSTREAM_STREAM_PREFIX": names.prefix,
        "EMBEDSTREAM_DATABASE_URL": PG_DSN,
        "EMBEDSTREAM_DATABASE_SCHEMA": schema,
        "EMBEDSTREAM_CHROMA_PATH": str(tmp_path / "chroma"),
        "EMBEDSTREAM_JWT_SECRET": JWT_SECRET,
        "EMBEDSTREAM_RATE_LIMIT": "",
        "EMBEDSTREAM_LOG_LEVEL": "WARNING",
    }
    env.pop("EMBEDSTREAM_CHROMA_URL", None)
    yield Cli(env, names, tmp_path)
    asyncio.run(drop_schema(schema))


async def test_every_verb_speaks_json(
    cli: Cli, redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    migrated = cli("migrate", "--json").json()
    assert migrated["applied"][0].startswith("0001")
    assert {(s["stream"], s["group"]) for s in migrated["streams"]} >= {
        (names.ingest, "embedder"),
        (names.embedded, "indexer"),
        (names.embedded, "persister"),
    }
    again = cli("init", "--json").json()
    assert again["streams"] and not any(s["created"] for s in again["streams"])

    # keys and tokens
    created = cli(
        "keys", "create", "--tenant", "acme", "--scope", "admin", "--name", "ops", "--json"
    ).json()
    assert created["key"].startswith(f"es_{created['id']}_")
    assert created["tenant"] == "acme" and created["scopes"] == ["admin"]
    [listed] = cli("keys", "list", "--json").json()
    assert listed["id"] == created["id"] and "key" not in listed
    revoked = cli("keys", "revoke", created["id"], "--json").json()
    assert revoked["id"] == created["id"] and revoked["revoked_at"] is not None
    token = cli("token", "issue", "--tenant", "acme", "--scope", "jobs:read", "--json").json()
    assert token["token"].count(".") == 2 and token["scopes"] == ["jobs:read"]
    assert token["expires_at"] - token["issued_at"] == 900

    # contracts
    compat = cli("schemas", "compat", "v1", "--json").json()
    assert compat == {"version": "v1", "compatible": True, "problems": []}
    assert cli("schemas", "export", "--check", "--json").json()["up_to_date"] is True

    # status and dead letters
    await add_command(redis_client, names, tenant="acme", document_id="d1", job_id="j1")
    await add_poison(redis_client, names)
    dead = await dead_letter_all(redis_client, names, fast_settings)
    report = cli("status", "--json").json()
    [ingest] = [s for s in report["streams"] if s["stream"] == names.ingest]
    assert ingest["groups"][0]["dead_letters"] == 2 and report["dead_letters_total"] == 2
    assert report["problems"] == []
    listed_letters = cli("dlq", "list", "--json").json()
    assert [row["id"] for row in listed_letters] == dead
    by_tenant = {row["tenant"]: row["id"] for row in listed_letters}
    assert set(by_tenant) == {"acme", None}  # the poison's tenant cannot be read
    assert {"id", "stream", "stage", "attempts", "type", "error"} <= set(listed_letters[0])
    only = cli("dlq", "list", "--grep", "undecodable", "--json").json()
    assert [row["id"] for row in only] == [by_tenant[None]]
    dry = cli("dlq", "replay", "--all", "--dry-run", "--json").json()
    assert dry["matched"] == 2 and dry["done"] == 0 and dry["dry_run"] is True
    replayed = cli("dlq", "replay", by_tenant["acme"], "--json").json()
    assert replayed["results"][0]["outcome"] == "replayed"
    assert replayed["results"][0]["stream"] == names.ingest
    purged = cli("dlq", "purge", "--stage", "embed", "--yes", "--json").json()
    assert purged["done"] == 1 and purged["results"][0]["id"] == by_tenant[None]
    assert await redis_client.xlen(names.dlq) == 0

    # reindex of an empty store; search of an empty index
    assert cli("reindex", "--json").json() == {"collection": "embedstream", "chunks": 0}
    assert cli("search", "anything", "--tenant", "acme", "--json").json() == []

    # the model export (kept in the shared cache)
    exported = cli("model", "export", "--variant", "onnx", "--json").json()
    [variant] = exported["exported"]
    assert variant["variant"] == "onnx" and variant["dim"] == 384
    assert variant["min_cosine"] >= 0.9999


def test_ingest_speaks_json(cli: Cli, tmp_path: Path) -> None:
    assert cli("migrate").code == 0
    key = cli("keys", "create", "--tenant", "acme", "--scope", "admin", "--name", "i").stdout
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = subprocess.Popen(
        [sys.executable, "-m", "embedstream", "api"],
        env={**cli.env, "EMBEDSTREAM_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            assert api.poll() is None and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        folder = tmp_path / "docs"
        folder.mkdir()
        for n in range(3):
            (folder / f"d{n}.md").write_text(f"document number {n}")
        result = cli(
            "ingest", str(folder), "--url", url, "--no-wait", "--json",
            EMBEDSTREAM_API_KEY=key.strip(),
        )  # fmt: skip
        assert result.code == 0, result.stderr
        body = result.json()
        assert body["documents"] == 3
        [job] = body["jobs"]
        assert job["state"] == "queued" and job["job_id"]
        # nobody listening there: failed (1), the reason on stderr
        gone = cli("ingest", str(folder), "--url", f"http://127.0.0.1:{free_port()}", "--json")
        assert gone.code == 1 and gone.stdout == ""
        assert json.loads(gone.stderr.strip().splitlines()[-1])["exit_code"] == 1
    finally:
        api.terminate()
        api.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def test_exit_codes(
    cli: Cli, redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    # 0: done
    assert cli("init").code == 0
    assert cli("status", "--check").code == 0  # nothing waits for anyone

    # 1: failed
    unknown = cli("dlq", "replay", "1-1", "--json")
    assert unknown.code == 1
    assert unknown.json()["results"] == [{"id": "1-1", "outcome": "missing", "stream": None,
                                          "new_id": None}]  # fmt: skip
    assert cli("keys", "revoke", "0000000000000000").code == 1
    away = cli("status", EMBEDSTREAM_REDIS_URL="redis://127.0.0.1:1/0")
    assert away.code == 1 and "cannot reach" in away.stderr and "Traceback" not in away.stderr

    # 2: usage errors, caught by the parser or by the command
    assert cli("status", "--no-such-option").code == 2
    assert cli("dlq", "list", "--since", "last tuesday").code == 2
    assert cli("dlq", "replay").code == 2  # no ids, no --all, no filter
    assert cli("dlq", "replay", "1-1", "--all").code == 2
    assert cli("keys", "create", "--tenant", "a b", "--scope", "admin", "--name", "x").code == 2
    assert cli("status", EMBEDSTREAM_BATCH_SIZE="0").code == 2  # an invalid setting
    await add_command(redis_client, names, tenant="acme", document_id="x")
    await dead_letter_all(redis_client, names, fast_settings)
    unconfirmed = cli("dlq", "purge", "--all")  # no terminal to confirm on, no --yes
    assert unconfirmed.code == 2 and "--yes" in unconfirmed.stderr
    assert await redis_client.xlen(names.dlq) == 1

    # 3: unhealthy: the consumer that made the dead letter is gone, work waits for nobody
    await redis_client.xgroup_delconsumer(names.ingest, EMBED.group, fast_settings.consumer_name)
    for n in range(3):
        await add_command(redis_client, names, tenant="acme", document_id=f"w{n}")
    waiting = cli("status", "--check", "--json")
    assert waiting.code == 3
    [problem] = waiting.json()["problems"]
    assert (problem["group"], problem["kind"]) == (EMBED.group, "no_live_consumer")
    # a consumer reading it is live: healthy, until a bound says otherwise
    await redis_client.xreadgroup(EMBED.group, "live-one", {names.ingest: ">"}, count=1)
    assert cli("status", "--check").code == 0
    assert cli("status", "--fail-over-lag", "5").code == 0
    over = cli("status", "--fail-over-lag", "1", "--json")
    assert over.code == 3 and [p["kind"] for p in over.json()["problems"]] == ["lag"]
    assert cli("status", "--fail-over-age", "0").code == 3  # the pending entry's age
    assert cli("status").code == 0  # no check asked for: a report, not a verdict
