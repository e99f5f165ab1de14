"""Failures of authentication and authorization, as HTTP errors (RFC 6750).

Messages are precise but never contain the credential: at most the public key id. Claim
text of a token (its tenant, scope or subject) is never repeated, and nothing that came
with the request goes into a response header: ``WWW-Authenticate`` carries one fixed
description per kind of failure (``CHALLENGES``), the JSON body the precise reason."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from starlette.exceptions import HTTPException

REALM = "embedstream"

FailureKind = Literal["malformed", "invalid", "expired", "revoked", "not_accepted"]
#: The ``error_description`` of the ``WWW-Authenticate`` challenge, per kind of failure:
#: fixed ASCII text, so no credential or claim can shape a response header.
CHALLENGES: dict[FailureKind, str] = {
    "malformed": "the credential is malformed",
    "invalid": "the credential is not valid",
    "expired": "the credential has expired or is not valid yet",
    "revoked": "the credential was revoked",
    "not_accepted": "this kind of credential is not accepted here",
}


class InvalidCredential(Exception):
    """The credential was refused; ``reason`` is safe to show the caller (in a JSON body),
    ``kind`` picks the fixed challenge text."""

    def __init__(self, reason: str, *, kind: FailureKind = "invalid", cacheable: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.kind: FailureKind = kind
        self.cacheable = cacheable


class CredentialStoreUnavailable(Exception):
    """PostgreSQL (the API key store) cannot answer now."""


class Unauthorized(HTTPException):
    """401: no credential, or one that is malformed, unknown, expired or revoked."""

    def __init__(self, reason: str, *, kind: FailureKind | None = "invalid") -> None:
        challenge = f'Bearer realm="{REALM}"'
        if kind is not None:  # None: no credential at all (RFC 6750 3.1: no error code)
            challenge += f', error="invalid_token", error_description="{CHALLENGES[kind]}"'
        super().__init__(
            status_code=401,
            detail=f"authentication required: {reason}",
            headers={"WWW-Authenticate": challenge},
        )


class Forbidden(HTTPException):
    """403: the credential is valid but lacks a scope the operation needs."""

    def __init__(self, missing: Iterable[str], granted: Iterable[str]) -> None:
        missing_list = sorted(missing)
        needed = " ".join(missing_list)  # the route's own scope names, never the caller's
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
