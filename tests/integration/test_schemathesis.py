"""Property-based checks of the HTTP ingress against its own OpenAPI document
(Schemathesis, in-process ASGI, the real Redis and PostgreSQL).

Every operation gets a bounded number of generated requests, sent with a valid API key
(``admin``): no 5xx, and every status code, header and body must be documented."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
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
from embedstream.config import ApiSettings, AuthSettings, ChromaSettings, RedisSettings, Settings
from tests.conftest import REDIS_URL
from tests.integration.conftest import ApiKeys, with_key_store
from tests.support.chroma_server import chroma_server

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
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(config))
    shutdown_lifespans()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


OPERATIONS = [
    ("POST", "/v1/documents"),
    ("DELETE", "/v1/documents/{document_id}"),
    ("GET", "/v1/documents"),
    ("GET", "/v1/documents/{document_id}"),
    ("POST", "/v1/search"),
    ("GET", "/v1/jobs/{job_id}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]


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
    if mode is GenerationMode.POSITIVE and path == "/v1/search":
        assert 200 in statuses
    elif mode is GenerationMode.POSITIVE and method != "GET":
        assert 202 in statuses
