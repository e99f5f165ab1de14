"""The admin endpoints on the real Redis and PostgreSQL: who sees what (403 without the
scope, a tenant's admin sees only its tenant's dead letters and jobs, the operator sees
every tenant's and the unreadable ones), dead-letter filters and pagination, replay and
purge of ids and of a filter's result with a dry run, jobs, entry tracking, status."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as redis

from embedstream.config import ApiSettings, ConsumerSettings, RedisSettings, Settings
from embedstream.streams.names import EMBED, StreamNames
from tests.conftest import REDIS_URL
from tests.integration.conftest import create_key, drop_schema, open_client, with_key_store
from tests.support.dead_letters import add_command, add_poison, dead_letter_all

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Keys:
    schema: str
    operator: str  # tenant acme, scope operator
    acme: str  # tenant acme, scope admin
    globex: str  # tenant globex, scope admin
    reader: str  # tenant acme, jobs:read + documents:write


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    from embedstream.adapters.postgres.migrate import migrate
    from tests.integration.conftest import PG_DSN

    schema = f"t_admin_{uuid.uuid4().hex[:10]}"

    async def setup() -> Keys:
        await migrate(PG_DSN, schema)
        made = [
            (await create_key(schema, tenant, *scopes))[1]
            for tenant, scopes in (
                ("acme", ("operator",)),
                ("acme", ("admin",)),
                ("globex", ("admin",)),
                ("acme", ("jobs:read", "documents:write")),
            )
        ]
        return Keys(schema, *made)

    made = asyncio.run(setup())
    yield made
    asyncio.run(drop_schema(schema))


def settings_for(keys: Keys, names: StreamNames) -> Settings:
    settings = with_key_store(Settings(), keys.schema)
    settings.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=names.prefix)
    settings.api = ApiSettings(rate_limit="")
    return settings


@pytest.fixture
async def api(keys: Keys, names: StreamNames) -> AsyncIterator[httpx.AsyncClient]:
    async for client in open_client(settings_for(keys, names)):
        yield client


def as_(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@dataclass
class Letters:
    acme: str
    globex: str
    poison: str


@pytest.fixture
async def letters(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> Letters:
    await add_command(redis_client, names, tenant="acme", document_id="a/1", job_id="job-a")
    await add_command(redis_client, names, tenant="globex", document_id="g/1", job_id="job-g")
    await add_poison(redis_client, names)
    made = await dead_letter_all(redis_client, names, fast_settings)
    assert len(made) == 3
    by_tenant: dict[str | None, str] = {}
    for entry_id in made:
        detail = await redis_client.xrange(names.dlq, entry_id, entry_id)
        fields = detail[0][1]
        tenant = None
        if b"ce" in fields:
            tenant = "acme" if b'"acme"' in fields[b"ce"] else "globex"
        by_tenant[tenant] = entry_id
    return Letters(by_tenant["acme"], by_tenant["globex"], by_tenant[None])


ADMIN_CALLS = [
    ("GET", "/v1/admin/session", None),
    ("GET", "/v1/admin/status", None),
    ("GET", "/v1/admin/dead-letters", None),
    ("GET", "/v1/admin/dead-letters/1-0", None),
    ("POST", "/v1/admin/dead-letters/replay", {"filter": {}, "dry_run": True}),
    ("POST", "/v1/admin/dead-letters/purge", {"filter": {}, "dry_run": True}),
    ("GET", "/v1/admin/jobs/3f0c2c1e-5d7c-4a55-9a55-3b7f0c1d2e3f", None),
    ("GET", "/v1/admin/streams/x:ingest/entries/1-0", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_admin_endpoints_need_admin_or_operator(
    api: httpx.AsyncClient, keys: Keys, method: str, path: str, body: object
) -> None:
    response = await api.request(method, path, json=body, headers=as_(keys.reader))
    assert response.status_code == 403, response.text
    assert "admin" in response.json()["error"] and "operator" in response.json()["error"]
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    anonymous = await api.request(method, path, json=body)
    assert anonymous.status_code == 401


async def test_session_says_who_sees_what(api: httpx.AsyncClient, keys: Keys) -> None:
    operator = (await api.get("/v1/admin/session", headers=as_(keys.operator))).json()
    assert operator["operator"] is True and operator["tenant"] == "acme"
    admin = (await api.get("/v1/admin/session", headers=as_(keys.acme))).json()
    assert admin["operator"] is False and admin["scopes"] == ["admin"]


async def test_a_tenants_admin_sees_only_its_tenants_dead_letters(
    api: httpx.AsyncClient,
    keys: Keys,
    letters: Letters,
    redis_client: redis.Redis,
    names: StreamNames,
) -> None:
    def ids(response: httpx.Response) -> set[str]:
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    everyone = await api.get("/v1/admin/dead-letters", headers=as_(keys.operator))
    assert ids(everyone) == {letters.acme, letters.globex, letters.poison}
    [poison] = [i for i in everyone.json()["items"] if i["id"] == letters.poison]
    assert poison["tenant"] is None and poison["type"] is None
    acme = await api.get("/v1/admin/dead-letters", headers=as_(keys.acme))
    assert ids(acme) == {letters.acme}
    assert ids(await api.get("/v1/admin/dead-letters", headers=as_(keys.globex))) == {
        letters.globex
    }
    # naming another tenant is the operator's alone
    named = await api.get("/v1/admin/dead-letters?tenant=globex", headers=as_(keys.acme))
    assert named.status_code == 403
    by_operator = await api.get("/v1/admin/dead-letters?tenant=globex", headers=as_(keys.operator))
    assert ids(by_operator) == {letters.globex}

    # another tenant's entry and an unreadable one read like unknown ones
    for other in (letters.globex, letters.poison, "1-0"):
        got = await api.get(f"/v1/admin/dead-letters/{other}", headers=as_(keys.acme))
        assert got.status_code == 404, got.text
    own = await api.get(f"/v1/admin/dead-letters/{letters.acme}", headers=as_(keys.acme))
    assert own.status_code == 200
    assert own.json()["data"]["document_id"] == "a/1"
    assert own.json()["error"] == "cannot use this one"
    poison_detail = await api.get(
        f"/v1/admin/dead-letters/{letters.poison}", headers=as_(keys.operator)
    )
    assert poison_detail.json()["fields"] == {"junk": "not an envelope 0"}

    # replaying or purging them by id touches nothing: they are "missing"
    for action in ("replay", "purge"):
        response = await api.post(
            f"/v1/admin/dead-letters/{action}",
            json={"ids": [letters.globex, letters.poison]},
            headers=as_(keys.acme),
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["done"] == 0
        assert {r["outcome"] for r in body["results"]} == {"missing"}
    assert await redis_client.xlen(names.dlq) == 3
    # a filter's result is the tenant's entries only
    everything = await api.post(
        "/v1/admin/dead-letters/purge", json={"filter": {}}, headers=as_(keys.acme)
    )
    assert everything.json()["done"] == 1
    remaining = {i.decode() for i, _ in await redis_client.xrange(names.dlq)}
    assert remaining == {letters.globex, letters.poison}


async def test_replay_of_a_filters_result_acts_on_what_the_dry_run_counted(
    api: httpx.AsyncClient,
    keys: Keys,
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
) -> None:
    for n in range(3):
        await add_command(redis_client, names, tenant="acme", document_id=f"d{n}")
    first = await dead_letter_all(redis_client, names, fast_settings, error="model away")
    await add_command(redis_client, names, tenant="acme", document_id="other")
    [other] = await dead_letter_all(redis_client, names, fast_settings, error="disk full")

    dry = await api.post(
        "/v1/admin/dead-letters/replay",
        json={"filter": {"grep": "MODEL"}, "dry_run": True},
        headers=as_(keys.acme),
    )
    assert dry.status_code == 200, dry.text
    counted = dry.json()
    assert counted["matched"] == 3 and counted["done"] == 0 and counted["dry_run"] is True
    assert counted["through_id"] == first[-1]
    assert await redis_client.xlen(names.dlq) == 4  # a dry run changes nothing

    # a matching dead letter arrives after the confirmation was shown: left alone
    await add_command(redis_client, names, tenant="acme", document_id="late")
    [late] = await dead_letter_all(redis_client, names, fast_settings, error="model away")
    done = await api.post(
        "/v1/admin/dead-letters/replay",
        json={"filter": {"grep": "MODEL"}, "through_id": counted["through_id"]},
        headers=as_(keys.acme),
    )
    body = done.json()
    assert body["done"] == 3
    assert {r["id"] for r in body["results"]} == set(first)
    assert all(r["stream"] == names.ingest and r["new_id"] for r in body["results"])
    remaining = {i.decode() for i, _ in await redis_client.xrange(names.dlq)}
    assert remaining == {other, late}
    # back on the ingest stream, each counted in flight for its document
    replayed = [
        (i.decode(), f) for i, f in await redis_client.xrange(names.ingest) if b"replayed_from" in f
    ]
    assert {f[b"replayed_from"].decode() for _, f in replayed} == set(first)
    in_flight = await redis_client.hgetall(names.key("ingest", "inflight", "entries"))
    assert {k.decode() for k in in_flight} >= {i for i, _ in replayed}
    assert {v.decode() for v in in_flight.values()} >= {"acme/d0", "acme/d1", "acme/d2"}


async def test_filters_time_bounds_and_pages(
    api: httpx.AsyncClient,
    keys: Keys,
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
) -> None:
    for n in range(5):
        await add_command(redis_client, names, tenant="acme", document_id=f"p{n}", job_id="job-p")
    made = await dead_letter_all(redis_client, names, fast_settings, stage="embed")
    await add_command(redis_client, names, tenant="acme", document_id="q", job_id="job-q")
    [q] = await dead_letter_all(redis_client, names, fast_settings, stage="special")

    async def listed(**query: object) -> list[str]:
        response = await api.get("/v1/admin/dead-letters", params=query, headers=as_(keys.acme))
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await listed(stage="special") == [q]
    assert await listed(job_id="job-p", order="oldest") == made
    assert await listed(document_id="p3") == [made[3]]
    assert len(await listed(type="document.upsert")) == 6  # without its version
    assert len(await listed(type="document.upsert.v1")) == 6
    assert await listed(type="document.delete") == []
    assert len(await listed(since="1h")) == 6
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await listed(since=future) == []
    assert len(await listed(until=future)) == 6

    # pages: newest first, two at a time, the cursor goes on where the page stopped
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await api.get("/v1/admin/dead-letters", params=params, headers=as_(keys.acme))
        ).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed([*made, q]))

    bad = await api.get("/v1/admin/dead-letters?since=yesterday", headers=as_(keys.acme))
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.since"
    both = await api.post(
        "/v1/admin/dead-letters/replay", json={"ids": [q], "filter": {}}, headers=as_(keys.acme)
    )
    assert both.status_code == 422
    neither = await api.post("/v1/admin/dead-letters/purge", json={}, headers=as_(keys.acme))
    assert neither.status_code == 422
    assert await redis_client.xlen(names.dlq) == 6


async def test_purge_of_a_selection(
    api: httpx.AsyncClient,
    keys: Keys,
    letters: Letters,
    redis_client: redis.Redis,
    names: StreamNames,
) -> None:
    response = await api.post(
        "/v1/admin/dead-letters/purge",
        json={"ids": [letters.globex, letters.poison, "5-5"]},
        headers=as_(keys.operator),
    )
    outcomes = {r["id"]: r["outcome"] for r in response.json()["results"]}
    assert outcomes == {letters.globex: "purged", letters.poison: "purged", "5-5": "missing"}
    assert {i.decode() for i, _ in await redis_client.xrange(names.dlq)} == {letters.acme}


async def test_jobs_across_tenants(api: httpx.AsyncClient, keys: Keys) -> None:
    posted = await api.post(
        "/v1/documents", json={"id": "j1", "text": "hello"}, headers=as_(keys.reader)
    )
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["job_id"]
    seen = await api.get(f"/v1/admin/jobs/{job_id}", headers=as_(keys.operator))
    assert seen.status_code == 200
    assert seen.json()["tenant"] == "acme"
    assert seen.json()["documents"][0]["stages"] == {
        "embed": "pending",
        "index": "pending",
        "persist": "pending",
    }
    assert (await api.get(f"/v1/admin/jobs/{job_id}", headers=as_(keys.acme))).status_code == 200
    other = await api.get(f"/v1/admin/jobs/{job_id}", headers=as_(keys.globex))
    assert other.status_code == 404
    assert (
        await api.get("/v1/admin/jobs/not:a:job", headers=as_(keys.operator))
    ).status_code == 404


async def test_status_shows_groups_and_a_group_nobody_reads(
    api: httpx.AsyncClient, keys: Keys, redis_client: redis.Redis, names: StreamNames
) -> None:
    await redis_client.xgroup_create(names.ingest, EMBED.group, id="0", mkstream=True)
    for n in range(4):
        await add_command(redis_client, names, tenant="acme", document_id=f"s{n}")
    await redis_client.xreadgroup(EMBED.group, "reader-1", {names.ingest: ">"}, count=1)
    report = (await api.get("/v1/admin/status", headers=as_(keys.globex))).json()
    [ingest] = [s for s in report["streams"] if s["stream"] == names.ingest]
    [group] = ingest["groups"]
    assert (group["lag"], group["pending"], group["entries_read"]) == (3, 1, 1)
    assert group["live_consumers"] == 1
    assert group["consumers"][0]["name"] == "reader-1"
    assert report["problems"] == []
    # a consumer idle past the bound is not live: work waits for nobody
    async for client in open_client(_with_idle_bound(keys, names, 100)):
        await asyncio.sleep(0.2)  # the bound is about elapsed time: let the consumer age
        aged = (await client.get("/v1/admin/status", headers=as_(keys.acme))).json()
        assert [(p["group"], p["kind"]) for p in aged["problems"]] == [
            (EMBED.group, "no_live_consumer")
        ]


def _with_idle_bound(keys: Keys, names: StreamNames, idle_ms: int) -> Settings:
    settings = settings_for(keys, names)
    settings.consumer = ConsumerSettings(visibility_timeout_ms=idle_ms)
    return settings


async def test_a_replayed_entry_is_followed_through_its_groups(
    api: httpx.AsyncClient,
    keys: Keys,
    letters: Letters,
    redis_client: redis.Redis,
    names: StreamNames,
) -> None:
    replayed = await api.post(
        "/v1/admin/dead-letters/replay", json={"ids": [letters.acme]}, headers=as_(keys.acme)
    )
    [result] = replayed.json()["results"]
    new_id = result["new_id"]
    path = f"/v1/admin/streams/{names.ingest}/entries/{new_id}"

    async def states() -> dict[str, str]:
        body = (await api.get(path, headers=as_(keys.acme))).json()
        return {g["group"]: g["state"] for g in body["groups"]}

    assert await states() == {EMBED.group: "waiting"}
    await redis_client.xreadgroup(EMBED.group, "c9", {names.ingest: ">"}, count=10)
    pending = (await api.get(path, headers=as_(keys.acme))).json()
    assert pending["groups"][0]["consumer"] == "c9"
    assert pending["groups"][0]["state"] == "pending"
    await redis_client.xack(names.ingest, EMBED.group, new_id)
    assert await states() == {EMBED.group: "done"}
    # another tenant cannot look at it; nor at a stream outside the deployment
    assert (await api.get(path, headers=as_(keys.globex))).status_code == 404
    outside = f"/v1/admin/streams/elsewhere:ingest/entries/{new_id}"
    assert (await api.get(outside, headers=as_(keys.operator))).status_code == 404
