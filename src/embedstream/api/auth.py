"""Authentication and authorization dependencies.

- ``PrincipalDep``: the authenticated caller (tenant, scopes, credential id); 401 when
  there is no valid credential.
- ``require(scope)``: a route dependency that also checks the scope (403) and the
  credential's rate limit (429).

Credentials: ``Authorization: Bearer <JWT>``, ``Authorization: Bearer es_...`` or
``X-API-Key: es_...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer, SecurityScopes

from embedstream.api.apikeys import KEY_PREFIX
from embedstream.api.backpressure import Backpressure
from embedstream.api.credentials import Forbidden, InvalidCredential, Unauthorized
from embedstream.api.keycache import ApiKeyVerifier
from embedstream.api.principal import SCOPES, Principal
from embedstream.api.ratelimit import CredentialRateLimiter
from embedstream.api.tokens import verify_token
from embedstream.config import AuthSettings
from embedstream.logging import get_logger

log = get_logger("embedstream.api.auth")

_SCOPES_DOC = "; ".join(f"`{name}`: {what}" for name, what in SCOPES.items())
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT or API key",
    description="An OAuth2 access token (HS256 JWT with `iss`, `aud`, `exp`, `sub`, "
    f"`tenant`, `scope`) or an API key (`es_...`). Scopes: {_SCOPES_DOC}.",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="An API key (`es_<id>_<secret>`), created with `embedstream keys create`.",
)


@dataclass(frozen=True)
class Guards:
    """What checks a request: built by the lifespan, kept on ``app.state.guards``."""

    auth: AuthSettings
    keys: ApiKeyVerifier
    rate_limiter: CredentialRateLimiter
    backpressure: Backpressure


def get_guards(request: Request) -> Guards:
    guards: Guards = request.app.state.guards
    return guards


NO_CREDENTIAL = (
    "no credential: send 'Authorization: Bearer <token or API key>' or 'X-API-Key: <API key>'"
)


def _presented(request: Request) -> tuple[str, str]:
    """(kind, credential) from the request's headers; 401 when absent or ill-formed."""
    authorization = request.headers.get("authorization")
    api_key = request.headers.get("x-api-key")
    if authorization is not None and api_key is not None:
        raise Unauthorized("send one credential: Authorization or X-API-Key, not both")
    if api_key is not None:
        if not api_key.strip():
            raise Unauthorized("the X-API-Key header is empty")
        return "api_key", api_key.strip()
    if authorization is None:
        raise Unauthorized(NO_CREDENTIAL, invalid_token=False)
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("the Authorization header must read 'Bearer <token or API key>'")
    value = value.strip()
    return ("api_key" if value.startswith(KEY_PREFIX) else "jwt"), value


async def authenticate(
    request: Request,
    guards: Annotated[Guards, Depends(get_guards)],
    _bearer: Annotated[Any, Depends(bearer_scheme)] = None,
    _api_key: Annotated[str | None, Depends(api_key_scheme)] = None,
) -> Principal:
    """The caller, once per request (kept on ``request.state.principal``)."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    kind, credential = _presented(request)
    try:
        if kind == "api_key":
            principal = await guards.keys.verify(credential)
        else:
            principal = verify_token(guards.auth, credential)
    except InvalidCredential as exc:
        log.info("authentication failed", credential=kind, reason=exc.reason)
        raise Unauthorized(exc.reason) from None
    request.state.principal = principal
    # every later log line of this request (the access log included) says who it was;
    # RequestContextMiddleware unbinds them when the request ends
    structlog.contextvars.bind_contextvars(
        tenant=principal.tenant, credential_id=principal.credential_id
    )
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


async def authorize(
    security_scopes: SecurityScopes,
    principal: PrincipalDep,
    guards: Annotated[Guards, Depends(get_guards)],
) -> Principal:
    """``authenticate``, then the scopes (403) and the rate limit (429)."""
    if missing := principal.missing(security_scopes.scopes):
        log.info(
            "authorization failed",
            credential_id=principal.credential_id,
            tenant=principal.tenant,
            missing=missing,
        )
        raise Forbidden(missing, principal.scopes)
    await guards.rate_limiter.check(principal)
    return principal


def require(*scopes: str) -> Any:
    """A route dependency: a credential with every one of ``scopes`` (``admin`` grants
    all), within its rate limit."""
    return Security(authorize, scopes=list(scopes))


async def check_backpressure(guards: Annotated[Guards, Depends(get_guards)]) -> None:
    """503 for writes while the embedder group lags more than the configured bound."""
    await guards.backpressure.check()
