"""Authentication and authorization dependencies.

- ``authenticate_headers``: the caller from the headers alone; ``AuthenticatedRoute``
  (``embedstream.api.security.route``) runs it before a route reads the request body.
- ``PrincipalDep``: the authenticated caller (tenant, scopes, credential id); 401 when
  there is no valid credential, 429 after too many failed checks.
- ``require(scope)``: a route dependency that also checks the scope (403) and the
  credential's rate limit (429).

Credentials: ``Authorization: Bearer <JWT>``, ``Authorization: Bearer es_...`` or
``X-API-Key: es_...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer, SecurityScopes
from starlette.datastructures import Headers
from starlette.types import Scope

from embedstream.api.backpressure import Backpressure
from embedstream.api.security.apikeys import KEY_PREFIX, key_id_of
from embedstream.api.security.credentials import Forbidden, InvalidCredential, Unauthorized
from embedstream.api.security.keycache import ApiKeyVerifier
from embedstream.api.security.principal import SCOPES, CredentialKind, Principal
from embedstream.api.security.ratelimit import CredentialRateLimiter, FailedAuthLimiter
from embedstream.api.security.tokens import verify_token
from embedstream.config import AuthSettings
from embedstream.logging import get_logger

log = get_logger("embedstream.api.security.guards")

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
    failures: FailedAuthLimiter


async def get_guards(request: Request) -> Guards:
    guards: Guards = request.app.state.guards
    return guards


NO_CREDENTIAL = (
    "no credential: send 'Authorization: Bearer <token or API key>' or 'X-API-Key: <API key>'"
)


def presented(headers: Headers) -> tuple[CredentialKind, str]:
    """(kind, credential) from the request's headers: ``Unauthorized`` when there is
    none, ``InvalidCredential`` when the headers are ill-formed."""
    authorization = headers.get("authorization")
    api_key = headers.get("x-api-key")
    if authorization is not None and api_key is not None:
        raise InvalidCredential(
            "send one credential: Authorization or X-API-Key, not both", kind="malformed"
        )
    if api_key is not None:
        if not api_key.strip():
            raise InvalidCredential("the X-API-Key header is empty", kind="malformed")
        return "api_key", api_key.strip()
    if authorization is None:
        raise Unauthorized(NO_CREDENTIAL, kind=None)
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise InvalidCredential(
            "the Authorization header must read 'Bearer <token or API key>'", kind="malformed"
        )
    value = value.strip()
    return ("api_key" if value.startswith(KEY_PREFIX) else "jwt"), value


def client_address(scope: Scope) -> str:
    """The peer's address (uvicorn puts the forwarded one here for trusted proxies)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def authenticate_headers(guards: Guards, headers: Headers, address: str) -> Principal:
    """The caller, from the request's headers alone (the body is never needed).

    Raises ``Unauthorized`` (401), ``TooManyFailedAttempts`` (429: this address or key
    id failed too often; an uncached API key is then not even checked) or
    ``CredentialStoreUnavailable``. A cached valid API key and a JWT cost no Redis
    round trip; failures are counted per address and per API key id."""
    key_id: str | None = None
    kind = "unreadable"
    try:
        kind, credential = presented(headers)
        if kind == "jwt":
            return verify_token(guards.auth, credential)
        principal = guards.keys.cached(credential)
        if principal is not None:
            return principal
        key_id = key_id_of(credential)
        await guards.failures.check(address, key_id)
        return await guards.keys.verify(credential)
    except InvalidCredential as exc:
        log.info("authentication failed", credential=kind, reason=exc.reason, key_id=key_id)
        await guards.failures.failed(address, key_id)
        raise Unauthorized(exc.reason, kind=exc.kind) from None


def remember(state: dict[str, Any], principal: Principal) -> None:
    """Keep the principal for the request's route, and name it in every later log
    line of the request (``RequestContextMiddleware`` unbinds them at its end)."""
    state["principal"] = principal
    structlog.contextvars.bind_contextvars(
        tenant=principal.tenant, credential_id=principal.credential_id
    )


async def authenticate(
    request: Request,
    guards: Annotated[Guards, Depends(get_guards)],
    _bearer: Annotated[Any, Depends(bearer_scheme)] = None,
    _api_key: Annotated[str | None, Depends(api_key_scheme)] = None,
) -> Principal:
    """The caller, once per request. ``AuthenticatedRoute`` found it before the body
    was read (``request.state.principal``); on a route of another class, it is found
    here."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    principal = await authenticate_headers(guards, request.headers, client_address(request.scope))
    remember(request.scope.setdefault("state", {}), principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


async def authorize(
    security_scopes: SecurityScopes,
    principal: PrincipalDep,
    guards: Annotated[Guards, Depends(get_guards)],
) -> Principal:
    """``authenticate``, then the scopes (403) and the rate limit (429)."""
    await check_access(guards, principal, security_scopes.scopes)
    return principal


async def check_access(guards: Guards, principal: Principal, scopes: Sequence[str]) -> None:
    """The scopes (``Forbidden``, 403), then the credential's rate limit (429)."""
    if missing := principal.missing(scopes):
        log.info(
            "authorization failed",
            credential_id=principal.credential_id,
            tenant=principal.tenant,
            missing=missing,
        )
        raise Forbidden(missing, principal.scopes)
    await guards.rate_limiter.check(principal)


async def check_write(guards: Guards, principal: Principal, scopes: Sequence[str]) -> None:
    """Everything a write checks once the caller is known, in the order the write
    routes' dependencies check it: scopes (403), rate limit (429), backlog (503)."""
    await check_access(guards, principal, scopes)
    await guards.backpressure.check()


def require(*scopes: str) -> Any:
    """A route dependency: a credential with every one of ``scopes`` (``admin`` grants
    all), within its rate limit."""
    return Security(authorize, scopes=list(scopes))


async def check_backpressure(guards: Annotated[Guards, Depends(get_guards)]) -> None:
    """503 for writes while the embedder group lags more than the configured bound."""
    await guards.backpressure.check()
