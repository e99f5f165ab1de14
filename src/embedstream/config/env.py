"""What every settings area shares: the ``EMBEDSTREAM_`` prefix and how refusals are told.

A refused value is never repeated: errors name the variable and the rule
(``hide_input_in_errors``, and no validator quotes its input), since the value may be a
secret or a URL with a password.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

Environment = Literal["development", "production", "test"]
ENV_PREFIX = "EMBEDSTREAM_"


def settings_config() -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True)


class InvalidSettings(ValueError):
    """The environment holds settings that are refused; the message names each variable
    and its rule, never the value."""


def describe_settings_error(exc: ValidationError) -> str:
    """One line per refused setting: ``EMBEDSTREAM_<NAME>: <rule>``."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        variable = f"{ENV_PREFIX}{field.upper()}"
        named = not field or message.startswith(variable)
        lines.append(message if named else f"{variable}: {message}")
    return f"invalid settings ({exc.title}): " + "; ".join(lines)
