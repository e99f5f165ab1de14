"""The ingress application without Redis: OpenAPI, the last-resort 500, thinness."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

import embedstream
from embedstream.api.app import create_app
from embedstream.api.deps import get_tracker
from embedstream.api.middleware import choose_request_id
from embedstream.api.routes import documents, health, jobs
from embedstream.api.security.guards import PrincipalDep, authorize
from embedstream.api.security.principal import Principal
from embedstream.api.security.route import AuthenticatedRoute, needs_credential
from embedstream.config import AuthSettings, RedisSettings, Settings


@pytest.fixture
def settings() -> Settings:
    settings = Settings()
    # never contacted by these tests: the client connects lazily
    settings.redis = RedisSettings(redis_url="redis://127.0.0.1:1/0", stream_prefix="unit")
    return settings


def _responses(spec: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    responses: dict[str, Any] = spec["paths"][path][method]["responses"]
    return responses


def _ref(response: dict[str, Any]) -> str:
    ref: str = response["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


def test_openapi_documents_every_response(settings: Settings) -> None:
    spec = create_app(settings).openapi()

    assert spec["info"]["title"] == "embedstream ingress"
    assert spec["info"]["version"] == embedstream.__version__
    post = _responses(spec, "/v1/documents", "post")
    assert {code: _ref(r) for code, r in post.items()} == {
        "202": "JobAccepted",
        "400": "ErrorResponse",
        "401": "ErrorResponse",
        "403": "ErrorResponse",
        "409": "ErrorResponse",
        "413": "ErrorResponse",
        "415": "ErrorResponse",
        "422": "ValidationErrorResponse",
        "429": "ErrorResponse",
        "503": "ErrorResponse",
    }
    assert set(post["202"]["headers"]) == {"Location", "Idempotent-Replayed"}
    assert "Retry-After" in post["503"]["headers"]
    delete = _responses(spec, "/v1/documents/{document_id}", "delete")
    assert {"202", "409", "413", "422", "503"} <= set(delete)
    job = _responses(spec, "/v1/jobs/{job_id}", "get")
    assert {code: _ref(r) for code, r in job.items()} == {
        "200": "JobOut",
        "401": "ErrorResponse",
        "403": "ErrorResponse",
        "404": "ErrorResponse",
        "429": "ErrorResponse",
        "422": "ValidationErrorResponse",
        "503": "ErrorResponse",
    }
    assert _ref(_responses(spec, "/readyz", "get")["503"]) == "ErrorResponse"
    headers = [p["name"] for p in spec["paths"]["/v1/documents"]["post"]["parameters"]]
    assert headers == ["Idempotency-Key"]


def test_docs_are_off_in_production(settings: Settings) -> None:
    settings.app.env = "production"
    settings.auth = AuthSettings(jwt_secret="unit-test-secret-0123456789-abcdefghijkl")
    routes = {getattr(r, "path", None) for r in create_app(settings).routes}
    assert not {"/docs", "/redoc", "/openapi.json"} & routes


class _Exploding:
    async def status(self, job_id: str) -> None:
        raise RuntimeError("secret internals")


@pytest.fixture
async def exploding_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    app.dependency_overrides[get_tracker] = _Exploding
    app.dependency_overrides[authorize] = lambda: Principal(
        tenant="unit", scopes=frozenset({"admin"}), credential_id="unit", kind="jwt", subject="u"
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        yield c


async def test_an_unexpected_error_is_a_json_500_with_the_request_id(
    exploding_client: httpx.AsyncClient,
) -> None:
    response = await exploding_client.get(
        "/v1/jobs/0b9f6e0e-8d0c-4c39-9a55-3b7f0c1d2e3f", headers={"X-Request-ID": "r-1"}
    )

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "r-1"
    assert response.json() == {
        "error": "internal server error; the request id identifies it in the logs",
        "request_id": "r-1",
    }


async def test_unknown_routes_and_methods_name_themselves(
    exploding_client: httpx.AsyncClient,
) -> None:
    missing = await exploding_client.get("/v2/nothing")
    wrong_method = await exploding_client.put("/v1/jobs/x")

    assert missing.json()["error"] == "Not Found: GET /v2/nothing"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "Method Not Allowed: PUT /v1/jobs/x"


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("abc-123", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("x y", False),
        ("", False),
        # '$' matched before a final newline: it went back out in the response header
        ("abc\n", False),
        ("abc\r\n", False),
    ],
)
def test_choose_request_id(incoming: str, kept: bool) -> None:
    assert (choose_request_id(incoming) == incoming) is kept


def test_the_ingress_is_thin() -> None:
    code = (
        "import sys, embedstream.api.app; "
        "heavy = {'torch', 'chromadb', 'sentence_transformers'} & set(sys.modules); "
        "print(', '.join(sorted(heavy))); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"the api imports {result.stdout.strip()}"


def test_every_route_that_needs_a_credential_checks_it_before_the_body(
    settings: Settings,
) -> None:
    app = create_app(settings)

    @app.post("/v1/extra")
    async def extra(principal: PrincipalDep, body: dict[str, int]) -> None:
        return None

    routes = [r for module in (documents, jobs, health) for r in module.router.routes]
    routes += [r for r in app.router.routes if isinstance(r, APIRoute)]
    protected = [r for r in routes if isinstance(r, APIRoute) and needs_credential(r.dependant)]
    assert {r.path for r in protected} >= {
        "/v1/documents",
        "/v1/documents/{document_id:document_id}",
        "/v1/jobs/{job_id}",
        "/v1/extra",
    }
    assert all(isinstance(r, AuthenticatedRoute) for r in protected)
