"""Development logs (the console renderer) never hold a credential after an unhandled
error (issue 10, item 7): rich tracebacks would print every frame's local variables,
request headers included, where no redaction sees them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import structlog
from fastapi import Request

from embedstream.api import middleware
from embedstream.api.app import create_app
from embedstream.config import RedisSettings, Settings
from embedstream.logging import configure_logging, get_logger

SECRET = "Zq7Wm2Kp9Xc4Lv8Rt3Hb6Ny1Gd5Fs0Je7Ua2Oi9Pk4Ml"  # 43 characters
KEY = f"es_0123456789abcdef_{SECRET}"
SIGNATURE = "c2lnbmF0dXJlLXNlY3JldC12YWx1ZQ"
JWT = f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdmMtYSJ9.{SIGNATURE}"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


async def test_an_unhandled_error_in_a_request_with_a_key_never_logs_the_key(
    restore_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # here, not in a fixture: the console logger writes to the sys.stderr of the moment,
    # which is capsys's only during the test itself
    configure_logging("INFO", json=False)  # what `embedstream dev` and `api` use locally
    # module loggers keep the configuration of their first use (an earlier test's): the
    # access log's logger, afresh
    monkeypatch.setattr(middleware, "log", get_logger("embedstream.api.access"))
    settings = Settings()
    settings.redis = RedisSettings(redis_url="redis://127.0.0.1:1/0", stream_prefix="unit")
    app = create_app(settings)

    @app.get("/boom")
    async def boom(request: Request) -> None:
        headers = dict(request.headers)  # a local that holds the credential
        credential = headers.get("x-api-key") or headers.get("authorization")
        raise RuntimeError(f"boom while handling a request ({len(credential or '')} chars)")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        by_key = await client.get("/boom", headers={"X-API-Key": KEY})
        by_jwt = await client.get("/boom", headers={"Authorization": f"Bearer {JWT}"})

    assert by_key.status_code == by_jwt.status_code == 500
    output = capsys.readouterr()
    logged = output.out + output.err
    assert "unhandled error" in logged and "RuntimeError" in logged  # the traceback is there
    assert "RuntimeError: boom while handling a request" in logged
    # not even a part of one (a rich panel cuts long values at its width)
    for secret in (SECRET, SIGNATURE):
        assert secret[:10] not in logged
