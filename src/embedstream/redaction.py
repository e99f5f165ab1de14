"""Keeping credentials out of the logs.

``redact_secrets`` (a structlog processor) and ``RedactingFilter`` (for the standard
library's handlers) replace:

- the value of any field whose name says it holds a credential (``authorization``,
  ``x-api-key``, ``api_key``, ``token``, ``*_token``, ``secret``, ``*_secret``,
  ``password``, ``cookie``...), at any depth;
- anything that looks like an API key (``es_<id>_<secret>``: the id is kept), a JWT
  (``eyJ...``) or a ``Bearer`` credential inside any string, exceptions included.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"
_SENSITIVE_NAMES = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "x_api_key",
        "api_key",
        "apikey",
        "token",
        "jwt",
        "secret",
        "password",
        "passwd",
        "credentials",
    }
)
_SENSITIVE_SUFFIXES = ("_token", "_secret", "_password", "_api_key", "_apikey")
_API_KEY = re.compile(r"\b(es_[0-9a-f]{16}_)[A-Za-z0-9_-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")


def is_sensitive_name(name: object) -> bool:
    if not isinstance(name, str):
        return False
    return _sensitive(name)


@functools.lru_cache(maxsize=4096)
def _sensitive(name: str) -> bool:
    """Cached: every log line asks again about the same few field names."""
    normal = name.strip().lower().replace("-", "_")
    return normal in _SENSITIVE_NAMES or normal.endswith(_SENSITIVE_SUFFIXES)


def redact_text(text: str) -> str:
    """``text`` with API keys, JWTs and Bearer credentials replaced."""
    if "es_" in text:
        text = _API_KEY.sub(rf"\g<1>{REDACTED}", text)
    if "eyJ" in text:
        text = _JWT.sub(f"{REDACTED}(jwt)", text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
    return text


_PLAIN = frozenset({int, float, bool, type(None)})


def redact_value(value: Any, depth: int = 0) -> Any:
    if type(value) in _PLAIN:  # most fields of a log line: nothing to redact
        return value
    if isinstance(value, str):
        return redact_text(value)
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if is_sensitive_name(k) else redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        items = [redact_value(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, BaseException | bytes):
        text = value.decode(errors="replace") if isinstance(value, bytes) else repr(value)
        redacted = redact_text(text)
        return value if redacted == text else redacted
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """structlog processor: redact by field name and by pattern (exceptions included)."""
    for key, value in list(event_dict.items()):
        if key == "exc_info":
            continue
        event_dict[key] = REDACTED if is_sensitive_name(key) else redact_value(value)
    if event_dict.get("exc_info"):
        formatted = structlog.processors.format_exc_info(logger, method_name, dict(event_dict))
        text = formatted.get("exception", "")
        if isinstance(text, str) and redact_text(text) != text:
            # the traceback names a secret: render it here, redacted, instead
            event_dict.pop("exc_info")
            event_dict["exception"] = redact_text(text)
    return event_dict


class RedactingFilter(logging.Filter):
    """A handler filter for standard-library records: message, arguments and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: leave it to logging
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def install_stdlib_redaction(logger: logging.Logger | None = None) -> None:
    """Add a ``RedactingFilter`` to every handler of ``logger`` (the root by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
