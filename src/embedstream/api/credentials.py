"""Failures of authentication and authorization, as HTTP errors (RFC 6750).

Messages are precise but never contain the credential: at most the public key id."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.exceptions import HTTPException

REALM = "embedstream"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")


class InvalidCredential(Exception):
    """The credential was refused; ``reason`` is safe to show the caller."""

    def __init__(self, reason: str, *, cacheable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cacheable = cacheable


class CredentialStoreUnavailable(Exception):
    """PostgreSQL (the API key store) cannot answer now."""


class Unauthorized(HTTPException):
    """401: no credential, or one that is malformed, unknown, expired or revoked."""

    def __init__(self, reason: str, *, invalid_token: bool = True) -> None:
        challenge = f'Bearer realm="{REALM}"'
        if invalid_token:
            challenge += f', error="invalid_token", error_description="{_quoted(reason)}"'
        super().__init__(
            status_code=401,
            detail=f"authentication required: {reason}",
            headers={"WWW-Authenticate": challenge},
        )


class Forbidden(HTTPException):
    """403: the credential is valid but lacks a scope the operation needs."""

    def __init__(self, missing: Iterable[str], granted: Iterable[str]) -> None:
        missing_list = sorted(missing)
        needed = " ".join(missing_list)
        granted_text = ", ".join(sorted(granted)) or "none"
        super().__init__(
            status_code=403,
            detail=f"this operation needs the scope {', '.join(missing_list)}; the credential "
            f"has {granted_text}",
            headers={
                "WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", '
                f'scope="{needed}"'
            },
        )
