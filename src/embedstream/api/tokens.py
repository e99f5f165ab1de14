"""OAuth2 bearer JWTs (HS256): issuing them (for development) and verifying them.

Claims: ``iss`` and ``aud`` (must match the settings), ``sub`` (who), ``tenant``,
``scope`` (space-separated, RFC 8693), ``iat`` and ``exp`` (lifetime at most
``jwt_max_ttl_s``), ``jti``; a small ``leeway`` absorbs clock skew."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import jwt

from embedstream.api.credentials import InvalidCredential
from embedstream.api.principal import InvalidScope, Principal, check_scopes, check_tenant
from embedstream.config import AuthSettings

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "tenant", "scope")


class JwtNotConfigured(RuntimeError):
    pass


def issue_token(
    settings: AuthSettings,
    *,
    tenant: str,
    scopes: Iterable[str],
    subject: str,
    ttl_s: int,
    now: float | None = None,
) -> str:
    """A signed token; ``ttl_s`` may not exceed ``jwt_max_ttl_s``."""
    secret = settings.secret
    if not secret:
        raise JwtNotConfigured("EMBEDSTREAM_JWT_SECRET is not set: cannot sign tokens")
    if not 1 <= ttl_s <= settings.jwt_max_ttl_s:
        raise ValueError(
            f"ttl must be 1-{settings.jwt_max_ttl_s} seconds (EMBEDSTREAM_JWT_MAX_TTL_S)"
        )
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "tenant": check_tenant(tenant),
        "scope": " ".join(sorted(check_scopes(scopes))),
        "iat": issued,
        "exp": issued + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "the bearer token has expired"),
    (jwt.ImmatureSignatureError, "the bearer token is not valid yet (iat/nbf in the future)"),
    (jwt.InvalidSignatureError, "the bearer token's signature does not verify"),
    (jwt.InvalidAlgorithmError, f"the bearer token must be signed with {ALGORITHM}"),
    (jwt.DecodeError, "the bearer token is not a well-formed JWT"),
)


def _reason(exc: jwt.PyJWTError, settings: AuthSettings) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the bearer token lacks the {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"the bearer token is for another audience (expected {settings.jwt_audience!r})"
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"the bearer token is from another issuer (expected {settings.jwt_issuer!r})"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return f"the bearer token is invalid ({type(exc).__name__})"


def verify_token(settings: AuthSettings, token: str) -> Principal:
    """The principal of a valid token; ``InvalidCredential`` with a precise reason else."""
    secret = settings.secret
    if not secret:
        raise InvalidCredential(
            "bearer JWTs are not accepted by this server (no signing secret is configured); "
            "use an API key"
        )
    options: dict[str, Any] = {"require": list(REQUIRED_CLAIMS)}
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_s,
            options=options,  # type: ignore[arg-type]
        )
    except jwt.PyJWTError as exc:
        raise InvalidCredential(_reason(exc, settings)) from None
    return _principal(settings, claims)


def _principal(settings: AuthSettings, claims: dict[str, Any]) -> Principal:
    subject, tenant, scope = claims["sub"], claims["tenant"], claims["scope"]
    if not isinstance(subject, str) or not subject or len(subject) > 256:
        raise InvalidCredential("the bearer token's 'sub' claim must be a 1-256 character string")
    if not isinstance(tenant, str):
        raise InvalidCredential("the bearer token's 'tenant' claim must be a string")
    if not isinstance(scope, str):
        raise InvalidCredential("the bearer token's 'scope' claim must be a space-separated string")
    lifetime = int(claims["exp"]) - int(claims["iat"])
    if lifetime > settings.jwt_max_ttl_s:
        raise InvalidCredential(
            f"the bearer token lives {lifetime} s; this server accepts at most "
            f"{settings.jwt_max_ttl_s} s"
        )
    try:
        check_tenant(tenant)
        scopes = check_scopes(scope.split())
    except (ValueError, InvalidScope) as exc:
        raise InvalidCredential(f"the bearer token's claims are invalid: {exc}") from None
    return Principal(
        tenant=tenant,
        scopes=scopes,
        credential_id=f"jwt:{tenant}:{subject}",
        kind="jwt",
        subject=subject,
    )
