"""OAuth2 bearer JWTs (HS256): issuing them (for development) and verifying them.

Claims: ``iss`` and ``aud`` (must match the settings), ``sub`` (who), ``tenant``,
``scope`` (scope names separated by single spaces, RFC 6749 3.3 / RFC 8693), ``iat`` and
``exp`` (lifetime at most ``jwt_max_ttl_s``), ``jti``; a small ``leeway`` absorbs clock
skew. Refusals state what is wrong without repeating the claim's text."""

from __future__ import annotations

import time
import unicodedata
import uuid
from collections.abc import Iterable
from typing import Any

import jwt

from embedstream.api.security.credentials import FailureKind, InvalidCredential
from embedstream.api.security.principal import (
    InvalidScope,
    Principal,
    check_scopes,
    parse_scope_claim,
)
from embedstream.config import AuthSettings
from embedstream.schemas.tenancy import TENANT_RULE, check_tenant, is_tenant

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


_REASONS: tuple[tuple[type[jwt.PyJWTError], FailureKind, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "the bearer token has expired"),
    (
        jwt.ImmatureSignatureError,
        "expired",
        "the bearer token is not valid yet (iat/nbf in the future)",
    ),
    (jwt.InvalidSignatureError, "invalid", "the bearer token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "invalid", f"the bearer token must be signed with {ALGORITHM}"),
    (jwt.DecodeError, "malformed", "the bearer token is not a well-formed JWT"),
)


def _refusal(exc: jwt.PyJWTError, settings: AuthSettings) -> InvalidCredential:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        # the claim's name is one of REQUIRED_CLAIMS: ours, not the token's text
        return InvalidCredential(f"the bearer token lacks the {exc.claim!r} claim")
    if isinstance(exc, jwt.InvalidAudienceError):
        return InvalidCredential(
            f"the bearer token is for another audience (expected {settings.jwt_audience!r})"
        )
    if isinstance(exc, jwt.InvalidIssuerError):
        return InvalidCredential(
            f"the bearer token is from another issuer (expected {settings.jwt_issuer!r})"
        )
    for error_type, kind, reason in _REASONS:
        if isinstance(exc, error_type):
            return InvalidCredential(reason, kind=kind)
    return InvalidCredential(f"the bearer token is invalid ({type(exc).__name__})")


def verify_token(settings: AuthSettings, token: str) -> Principal:
    """The principal of a valid token; ``InvalidCredential`` with a precise reason else."""
    secret = settings.secret
    if not secret:
        raise InvalidCredential(
            "bearer JWTs are not accepted by this server (no signing secret is configured); "
            "use an API key",
            kind="not_accepted",
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
        raise _refusal(exc, settings) from None
    return _principal(settings, claims)


def _valid_subject(subject: object) -> bool:
    """1-256 characters, none of them a control, format or separator character other
    than the plain space (it names the caller in logs and rate limits)."""
    return (
        isinstance(subject, str)
        and 0 < len(subject) <= 256
        and not any(unicodedata.category(char)[0] in "CZ" and char != " " for char in subject)
    )


def _principal(settings: AuthSettings, claims: dict[str, Any]) -> Principal:
    subject, tenant, scope = claims["sub"], claims["tenant"], claims["scope"]
    if not _valid_subject(subject):
        raise InvalidCredential(
            "the bearer token's 'sub' claim must be 1-256 characters without control characters"
        )
    if not is_tenant(tenant):
        raise InvalidCredential(f"the bearer token's 'tenant' claim is invalid: {TENANT_RULE}")
    if not isinstance(scope, str):
        raise InvalidCredential("the bearer token's 'scope' claim must be a space-separated string")
    lifetime = int(claims["exp"]) - int(claims["iat"])
    if lifetime > settings.jwt_max_ttl_s:
        raise InvalidCredential(
            f"the bearer token lives {lifetime} s; this server accepts at most "
            f"{settings.jwt_max_ttl_s} s"
        )
    try:
        scopes = check_scopes(parse_scope_claim(scope))
    except InvalidScope as exc:
        raise InvalidCredential(f"the bearer token's 'scope' claim is invalid: {exc}") from None
    return Principal(
        tenant=tenant,
        scopes=scopes,
        credential_id=f"jwt:{tenant}:{subject}",
        kind="jwt",
        subject=subject,
    )
