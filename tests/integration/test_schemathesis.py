"""Property-based checks of the HTTP ingress against its own OpenAPI document
(Schemathesis, in-process ASGI, the real Redis and PostgreSQL).

Every operation gets a bounded number of generated requests, sent with a valid API key
(``admin``): no 5xx, and every status code, header and body must be documented. The
admin endpoints (``/v1/admin/...``) are covered too, on a dead-letter stream that holds
entries of the key's tenant, of another tenant and without a readable tenant."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python.asgi import shutdown_lifespans

from embedstream.api.app import create_app
from embedstream.config import (
    ApiSettings,
    AuthSettings,
    ChromaSettings,
    ConsumerSettings,
    RedisSettings,
    Settings,
)
from embedstream.streams.names import StreamNames
from tests.conftest import REDIS_URL
from tests.integration.conftest import ApiKeys, with_key_store
from tests.support.chroma_server import chroma_server
from tests.support.dead_letters import add_command, add_poison, dead_letter_all

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chroma_server(tmp_path_factory.mktemp("chroma")) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(api_keys: ApiKeys, chroma_url: str) -> Iterator[schemathesis.BaseSchema]:
    prefix = f"tst{uuid.uuid4().hex[:10]}"
    config = with_key_store(Settings(), api_keys.schema)
    # searches run for real: the query model and a Chroma server (an empty collection)
    config.chroma = ChromaSettings(chroma_url=chroma_url, chroma_collection=prefix)
    config.redis = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix)
    config.api = ApiSettings(max_body_bytes=64 * 1024, rate_limit="100000/minute")
    # ignored_auth probes with invalid credentials: not to be cut short by the failure limit
    config.auth = AuthSettings(
        jwt_secret="schemathesis-jwt-secret-0123456789-abcdefgh",
        auth_failure_limit="100000/minute",
    )
    asyncio.run(seed_dead_letters(StreamNames(prefix)))
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(config))
    shutdown_lifespans()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


async def seed_dead_letters(names: StreamNames) -> None:
    """Dead letters of the key's tenant (acme), of another tenant and unreadable ones."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        for n in range(5):
            for tenant in ("acme", "globex"):
                await add_command(client, names, tenant=tenant, document_id=f"doc-{n}")
            await add_poison(client, names, n)
        await dead_letter_all(client, names, ConsumerSettings(consumer_name="seed", block_ms=50))
    finally:
        await client.aclose()


OPERATIONS = [
    ("POST", "/v1/documents"),
    ("DELETE", "/v1/documents/{document_id}"),
    ("GET", "/v1/documents"),
    ("GET", "/v1/documents/{document_id}"),
    ("POST", "/v1/search"),
    ("GET", "/v1/jobs/{job_id}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/v1/admin/session"),
    ("GET", "/v1/admin/status"),
    ("GET", "/v1/admin/dead-letters"),
    ("GET", "/v1/admin/dead-letters/{entry_id}"),
    ("POST", "/v1/admin/dead-letters/replay"),
    ("POST", "/v1/admin/dead-letters/purge"),
    ("GET", "/v1/admin/jobs/{job_id}"),
    ("GET", "/v1/admin/streams/{stream}/entries/{entry_id}"),
]
#: the dead-letter actions answer what they did (200), not 202
ADMIN_ACTIONS = ("/v1/admin/dead-letters/replay", "/v1/admin/dead-letters/purge")


def test_every_operation_is_covered(api_schema: schemathesis.BaseSchema) -> None:
    found = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert found == set(OPERATIONS)


CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in GenerationMode
    # the probes take no input: there is nothing invalid to generate for them
    if mode is GenerationMode.POSITIVE or path.startswith("/v1/")
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_the_api_keeps_its_contract(
    api_schema: schemathesis.BaseSchema,
    api_keys: ApiKeys,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema[path][method]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        # Schemathesis fills in every declared security scheme with random values; send
        # the one valid credential instead (ignored_auth still tries without it).
        case.headers = {
            name: value
            for name, value in (case.headers or {}).items()
            if name.lower() not in {"authorization", "x-api-key"}
        }
        response = case.call_and_validate(headers={"X-API-Key": api_keys.admin}, checks=CHECKS)
        statuses.append(response.status_code)

    run()
    assert statuses
    assert 401 not in statuses, "the credential was refused: the run tested nothing"
    assert all(status < 500 for status in statuses)
    if mode is GenerationMode.POSITIVE and path in ("/v1/search", *ADMIN_ACTIONS):
        assert 200 in statuses
    elif mode is GenerationMode.POSITIVE and method != "GET":
        assert 202 in statuses
