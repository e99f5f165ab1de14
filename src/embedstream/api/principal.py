"""Who is calling: the authenticated principal, its tenant and its scopes.

Every credential (API key or JWT) belongs to exactly one tenant; routes get the
principal through ``PrincipalDep`` (see ``embedstream.api.auth``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

DOCUMENTS_WRITE = "documents:write"
JOBS_READ = "jobs:read"
ADMIN = "admin"
#: Every scope a credential may carry, with what it allows.
SCOPES: dict[str, str] = {
    DOCUMENTS_WRITE: "create, replace and delete documents",
    JOBS_READ: "read the status of jobs",
    ADMIN: "everything (implies every other scope)",
}

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CredentialKind = Literal["api_key", "jwt"]


class InvalidScope(ValueError):
    pass


def check_tenant(tenant: str) -> str:
    if not TENANT_PATTERN.match(tenant):
        raise ValueError(
            f"invalid tenant {tenant[:80]!r}: 1-64 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return tenant


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes as a set; unknown ones are refused, and at least one is required."""
    found = frozenset(scopes)
    if unknown := sorted(found - SCOPES.keys()):
        raise InvalidScope(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(SCOPES))}"
        )
    if not found:
        raise InvalidScope(f"at least one scope is required ({', '.join(sorted(SCOPES))})")
    return found


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``credential_id`` identifies the credential (``key:<key id>`` or ``jwt:<subject>``);
    rate limits count per credential id."""

    tenant: str
    scopes: frozenset[str]
    credential_id: str
    kind: CredentialKind
    subject: str

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    def missing(self, required: Iterable[str]) -> list[str]:
        return sorted(s for s in required if not self.has_scope(s))
