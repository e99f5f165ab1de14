"""Refused settings name the variable and the rule, never the value (issue 10, item 6):
the value may be a secret, or a URL with a password in it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from embedstream import config
from embedstream.config import ApiSettings, AuthSettings, PostgresSettings, Settings

SECRET = "changeme-but-it-is-31-characters"  # refused: a placeholder, and too short
DSN = "postgresql://app:hunter2-db-password@db.internal:5432/prod"


def test_the_production_refusal_does_not_print_the_secret() -> None:
    with pytest.raises(ValidationError) as refused:
        AuthSettings(env="production", jwt_secret=SECRET)
    text = str(refused.value)
    assert "EMBEDSTREAM_JWT_SECRET is a placeholder value" in text
    assert SECRET not in text and "input_value" not in text


@pytest.mark.parametrize(
    ("area", "values", "variable"),
    [
        (ApiSettings, {"rate_limit": "es_0123456789abcdef_notalimit"}, "EMBEDSTREAM_RATE_LIMIT"),
        (ApiSettings, {"cors_origins": "ftp://user:pw-in-origin@x"}, "EMBEDSTREAM_CORS_ORIGINS"),
        (ApiSettings, {"max_body_bytes": "ten-megabytes-please"}, "max_body_bytes"),
        (
            AuthSettings,
            {"auth_failure_limit": "hunter2-not-a-limit"},
            "EMBEDSTREAM_AUTH_FAILURE_LIMIT",
        ),
        (PostgresSettings, {"database_url": DSN, "pool_max_size": "lots"}, "pool_max_size"),
    ],
    ids=["rate-limit", "cors", "int", "failure-limit", "dsn-beside-a-bad-int"],
)
def test_no_validator_repeats_its_input(
    area: type[ApiSettings | AuthSettings | PostgresSettings],
    values: dict[str, str],
    variable: str,
) -> None:
    with pytest.raises(ValidationError) as refused:
        area(**values)  # type: ignore[arg-type]
    text = str(refused.value)
    assert variable in text
    for value in values.values():
        assert value not in text
    for fragment in ("hunter2", "pw-in-origin", "es_0123456789abcdef"):
        assert fragment not in text


def test_settings_from_the_environment_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMBEDSTREAM_ENV", "production")
    monkeypatch.setenv("EMBEDSTREAM_JWT_SECRET", SECRET)
    monkeypatch.setenv("EMBEDSTREAM_RATE_LIMIT", "hunter2")
    settings = Settings()
    with pytest.raises(config.InvalidSettings) as auth:
        _ = settings.auth
    with pytest.raises(config.InvalidSettings) as api:
        _ = settings.api
    assert str(auth.value).startswith("invalid settings (AuthSettings): refusing to run")
    assert str(api.value) == (
        "invalid settings (ApiSettings): EMBEDSTREAM_RATE_LIMIT is not a rate limit such as "
        "'100/minute' or '10/second;1000/hour' (several separated by ';')"
    )
    assert SECRET not in str(auth.value) and "hunter2" not in str(api.value)


def test_the_api_command_refuses_to_start_without_printing_the_secret() -> None:
    env = {
        **os.environ,
        "EMBEDSTREAM_ENV": "production",
        "EMBEDSTREAM_JWT_SECRET": SECRET,
        "EMBEDSTREAM_DATABASE_URL": DSN,
        "EMBEDSTREAM_REDIS_URL": "redis://:redis-password-here@127.0.0.1:1/0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "embedstream", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "EMBEDSTREAM_JWT_SECRET is a placeholder value" in output
    assert "Traceback" not in output
    for secret in (SECRET, "hunter2-db-password", "redis-password-here"):
        assert secret not in output
