"""Who may use the admin endpoints (``/v1/admin/...``) and what each caller sees.

- ``operator`` (cross-tenant): every stream's status, every tenant's dead letters and
  jobs, and dead letters whose tenant cannot be read (poison). ``admin`` does not imply
  it (``embedstream.api.principal``).
- ``admin`` (a tenant's administrator): the stream status (counts, lags, ages and
  consumer names: no tenant's data), its own tenant's dead letters and jobs only.
  Another tenant's entry or job reads exactly like an unknown one (404, ``missing``).
- anything else: 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import HTTPException, Security

from embedstream.api.security.credentials import REALM
from embedstream.api.security.guards import authorize
from embedstream.api.security.principal import ADMIN, OPERATOR, Principal
from embedstream.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Viewer:
    """The caller of an admin endpoint: ``tenant`` is the only tenant it may see, or
    None for an operator (every tenant)."""

    principal: Principal
    tenant: str | None

    @property
    def operator(self) -> bool:
        return self.tenant is None

    def may_see(self, tenant: str | None) -> bool:
        return self.tenant is None or tenant == self.tenant


class AdminForbidden(HTTPException):
    def __init__(self, principal: Principal) -> None:
        granted = ", ".join(sorted(principal.scopes)) or "none"
        super().__init__(
            status_code=403,
            detail="this operation needs the scope admin (the credential's own tenant) or "
            f"operator (every tenant); the credential has {granted}",
            headers={
                "WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", '
                f'scope="{ADMIN} {OPERATOR}"'
            },
        )


async def admin_viewer(principal: Annotated[Principal, Security(authorize)]) -> Viewer:
    """The caller, if it holds ``operator`` or ``admin`` (403 otherwise)."""
    if principal.has_scope(OPERATOR):
        return Viewer(principal, tenant=None)
    if principal.has_scope(ADMIN):
        return Viewer(principal, tenant=principal.tenant)
    log.info(
        "authorization failed",
        credential_id=principal.credential_id,
        tenant=principal.tenant,
        missing=[f"{ADMIN} or {OPERATOR}"],
    )
    raise AdminForbidden(principal)


ViewerDep = Annotated[Viewer, Security(admin_viewer)]
