"""What a large request body costs the ingress when the credential is refused, side by
side with one whose credential is accepted (so the body is read and parsed).

In process, through ASGI, on the real Redis and PostgreSQL (a fresh schema for the API
keys, dropped at the end): a JSON body of ``--mb`` megabytes POSTed to ``/v1/documents``
1. without a credential,
2. with an unknown API key id (one argon2 verification against the dummy hash),
   and with a known id and a wrong secret (one against the key's hash): the same cost,
3. with a valid JWT: the body is read and validated (a 422 for the over-long text, so
   nothing is enqueued).
Per case: median wall time and the peak of Python allocations (tracemalloc) per request.

    python -m bench.auth_gate [--mb 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import redis.asyncio as redis

from embedstream.adapters.postgres.migrate import migrate
from embedstream.api.app import create_app
from embedstream.api.security.apikeys import ApiKeyStore, new_key
from embedstream.api.security.tokens import issue_token
from embedstream.config import (
    ApiSettings,
    AuthSettings,
    PostgresSettings,
    RedisSettings,
    Settings,
)

REDIS_URL = os.environ.get("EMBEDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get(
    "EMBEDSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SECRET = "bench-only-jwt-secret-0123456789-abcdefghijkl"


async def post(app: Any, headers: dict[str, str], body: bytes) -> int:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/documents",
        "raw_path": b"/v1/documents",
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("10.9.9.9", 1234),
        "server": ("bench", 80),
        "state": {},
    }
    await app(scope, receive, send)
    return int(next(m for m in sent if m["type"] == "http.response.start")["status"])


async def measure(
    app: Any, headers_of: Callable[[], dict[str, str]], body: bytes, repeat: int
) -> tuple[int, float, float]:
    times, peaks, status = [], [], 0
    for _ in range(repeat):
        headers = headers_of()
        tracemalloc.start()
        started = time.perf_counter()
        status = await post(app, headers, body)
        times.append((time.perf_counter() - started) * 1000)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    return status, statistics.median(times), statistics.median(peaks)


async def main(mb: int, repeat: int) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    await migrate(PG_DSN, schema)
    pool = await asyncpg.create_pool(
        PG_DSN, min_size=1, max_size=1, server_settings={"search_path": schema}
    )
    record, _ = await ApiKeyStore(pool).create(tenant="bench", name="b", scopes=["admin"])
    await pool.close()
    settings = Settings()
    settings.postgres = PostgresSettings(database_url=PG_DSN, database_schema=schema)
    settings.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix)
    settings.api = ApiSettings(max_body_bytes=(mb + 1) * 2**20)
    settings.auth = AuthSettings(jwt_secret=SECRET, auth_failure_limit="")
    app = create_app(settings)
    text = "lorem ipsum " * (mb * 2**20 // 12)
    body = json.dumps({"documents": [{"id": "big", "text": text}]}).encode()
    token = issue_token(settings.auth, tenant="bench", scopes=["admin"], subject="b", ttl_s=600)
    cases: dict[str, Callable[[], dict[str, str]]] = {
        "no_credential": dict,
        # a new key each time: a repeated one is answered from the refusal cache
        "unknown_key": lambda: {"X-API-Key": new_key()[1]},
        "wrong_secret": lambda: {"X-API-Key": f"es_{record.id}_{new_key()[1][-43:]}"},
        "valid_jwt_parsed": lambda: {"Authorization": f"Bearer {token}"},
    }
    results: dict[str, tuple[int, float, float]] = {}
    async with app.router.lifespan_context(app):
        for name, headers_of in cases.items():
            results[name] = await measure(app, headers_of, body, repeat)
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()

    print(f"body: {len(body) / 2**20:.1f} MB, {repeat} requests per case")
    print(f"{'case':<18} {'status':>6} {'median ms':>10} {'peak MB':>8}")
    for name, (status, ms, peak) in results.items():
        print(f"{name:<18} {status:>6} {ms:>10.1f} {peak:>8.1f}")
    print(
        "RESULT "
        + " ".join(
            f"{name}_ms={ms:.1f} {name}_peak_mb={peak:.1f}"
            for name, (_, ms, peak) in results.items()
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.mb, args.repeat))
