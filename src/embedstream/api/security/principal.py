"""Who is calling: the authenticated principal, its tenant and its scopes.

Every credential (API key or JWT) belongs to exactly one tenant; routes get the
principal through ``PrincipalDep`` (see ``embedstream.api.security.guards``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

DOCUMENTS_WRITE = "documents:write"
DOCUMENTS_READ = "documents:read"
JOBS_READ = "jobs:read"
SEARCH_READ = "search:read"
ADMIN = "admin"
OPERATOR = "operator"
#: Every scope a credential may carry, with what it allows.
SCOPES: dict[str, str] = {
    DOCUMENTS_WRITE: "create, replace and delete documents",
    DOCUMENTS_READ: "read what is stored for documents",
    JOBS_READ: "read the status of jobs",
    SEARCH_READ: "search the indexed chunks",
    ADMIN: "everything within the credential's tenant (implies every scope but operator)",
    OPERATOR: "the admin endpoints across every tenant: stream status, every tenant's dead "
    "letters and jobs (implies no other scope)",
}
#: Scopes ``admin`` does not imply: they reach beyond the credential's tenant.
CROSS_TENANT_SCOPES = frozenset({OPERATOR})

CredentialKind = Literal["api_key", "jwt"]


#: RFC 6749 3.3: ``scope = scope-token *( SP scope-token )``, ``scope-token = 1*( %x21 /
#: %x23-5B / %x5D-7E )``: printable ASCII but '"' and '\\', separated by single spaces.
SCOPE_CLAIM = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")
_MAX_NAMED_UNKNOWN = 5


class InvalidScope(ValueError):
    pass


def parse_scope_claim(claim: str) -> list[str]:
    """The scope tokens of an OAuth2 ``scope`` string. Only single ASCII spaces separate
    them: a tab, a newline, a no-break space, leading or trailing or doubled spaces make
    the whole claim malformed (``InvalidScope``, which never repeats the claim)."""
    if SCOPE_CLAIM.fullmatch(claim) is None:
        raise InvalidScope(
            "the scope claim is malformed: scope names are printable ASCII separated by "
            "single spaces (RFC 6749 section 3.3)"
        )
    return claim.split(" ")


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes as a set; unknown ones are refused, and at least one is required."""
    found = frozenset(scopes)
    if unknown := sorted(found - SCOPES.keys()):
        named = ", ".join(name[:40] for name in unknown[:_MAX_NAMED_UNKNOWN])
        more = (
            f" and {len(unknown) - _MAX_NAMED_UNKNOWN} more"
            if len(unknown) > _MAX_NAMED_UNKNOWN
            else ""
        )
        raise InvalidScope(f"unknown scope(s) {named}{more}; known: {', '.join(sorted(SCOPES))}")
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
        """``admin`` grants every scope of the credential's own tenant, never a
        cross-tenant one (``operator``)."""
        if scope in self.scopes:
            return True
        return ADMIN in self.scopes and scope not in CROSS_TENANT_SCOPES

    def missing(self, required: Iterable[str]) -> list[str]:
        return sorted(s for s in required if not self.has_scope(s))
