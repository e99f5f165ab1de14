"""``embedstream keys ...`` (API keys in PostgreSQL) and ``embedstream token issue``
(a signed JWT for development). Registered as typer sub-apps by ``embedstream.cli``.

Secrets go to stdout once and nowhere else: not to the logs, not to the tables."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from embedstream.api.security.principal import SCOPES
from embedstream.cli_output import JsonOption, fail, print_json, usage_error
from embedstream.config import Settings
from embedstream.logging import configure_logging

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
token_app = typer.Typer(help="Issue bearer JWTs (development).", no_args_is_help=True)
stderr = Console(stderr=True)
T = TypeVar("T")

ScopeOption = Annotated[
    list[str],
    typer.Option(
        "--scope",
        help=f"repeat for several: {', '.join(SCOPES)}",
        show_default=False,
    ),
]
TenantOption = Annotated[str, typer.Option(help="the tenant the credential acts for")]


def _settings() -> Settings:
    settings = Settings()
    configure_logging(settings.app.log_level, json=settings.app.json_logs)
    return settings


def _with_store(settings: Settings, body: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``body(ApiKeyStore)`` on a fresh pool, after bringing the schema up to date."""

    async def run() -> T:
        from embedstream.adapters.postgres.migrate import migrate
        from embedstream.adapters.postgres.pool import create_pool
        from embedstream.api.security.apikeys import ApiKeyStore

        pool = await create_pool(settings.postgres)
        try:
            async with pool.acquire() as conn:
                await migrate(conn, settings.postgres.database_schema)
            return await body(ApiKeyStore(pool))
        finally:
            await pool.close()

    return asyncio.run(run())


def _fail(message: str, as_json: bool = False) -> typer.Exit:
    return fail(message, as_json=as_json)


def _row(r: Any) -> dict[str, Any]:
    """An API key's record as ``keys list --json`` prints it (never a secret or hash)."""
    return {
        "id": r.id,
        "tenant": r.tenant,
        "name": r.name,
        "scopes": list(r.scopes),
        "created_at": r.created_at.isoformat(),
        "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
        "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
    }


@keys_app.command("create")
def keys_create(
    tenant: TenantOption,
    scope: ScopeOption,
    name: Annotated[str, typer.Option(help="what the key is for (shown by `keys list`)")],
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Create a key and print it once (stdout); only its argon2id hash is stored."""
    from embedstream.api.security.principal import InvalidScope

    settings = _settings()
    try:
        record, key = _with_store(
            settings, lambda store: store.create(tenant=tenant, name=name, scopes=scope)
        )
    except (ValueError, InvalidScope) as exc:  # an invalid tenant, scope or name
        raise usage_error(str(exc)) from None
    if as_json:
        print_json({**_row(record), "key": key})
        stderr.print("store the key now: it is not shown again")
        return
    stderr.print(
        f"created API key [bold]{record.id}[/bold] for tenant {record.tenant!r} "
        f"({record.name}), scopes: {' '.join(record.scopes)}\n"
        "store it now: it is not shown again"
    )
    print(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's keys")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """List keys (ids, tenants, scopes, use and revocation; never secrets or hashes)."""
    from embedstream.schemas.tenancy import InvalidTenant, check_tenant

    if tenant is not None:
        try:
            check_tenant(tenant)
        except InvalidTenant as exc:
            raise usage_error(str(exc), "--tenant") from None
    settings = _settings()
    records = _with_store(settings, lambda store: store.list_keys(tenant))
    rows = [_row(r) for r in records]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="API keys")
    for column in ("id", "tenant", "name", "scopes", "created", "last used", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["id"],
            row["tenant"],
            row["name"],
            " ".join(row["scopes"]),
            row["created_at"][:19],
            (row["last_used_at"] or "-")[:19],
            (row["revoked_at"] or "-")[:19],
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key id (see `keys list`)")],
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Revoke a key. API processes stop accepting it within EMBEDSTREAM_API_KEY_CACHE_TTL_S."""
    from embedstream.api.security.apikeys import KeyNotFound

    settings = _settings()
    try:
        record = _with_store(settings, lambda store: store.revoke(key_id))
    except KeyNotFound as exc:
        raise _fail(str(exc), as_json) from None
    assert record.revoked_at is not None
    if as_json:
        print_json(_row(record))
        return
    print(
        f"revoked {record.id} (tenant {record.tenant!r}) at {record.revoked_at.isoformat()}; "
        f"API processes refuse it within {settings.auth.api_key_cache_ttl_s:g} s"
    )


@token_app.command("issue")
def token_issue(
    tenant: TenantOption,
    scope: ScopeOption,
    ttl: Annotated[int, typer.Option(help="lifetime in seconds")] = 900,
    subject: Annotated[str | None, typer.Option(help="the `sub` claim")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Sign a JWT with EMBEDSTREAM_JWT_SECRET and print it (stdout)."""
    from embedstream.api.security.principal import InvalidScope
    from embedstream.api.security.tokens import JwtNotConfigured, issue_token

    settings = _settings()
    try:
        token = issue_token(
            settings.auth,
            tenant=tenant,
            scopes=scope,
            subject=subject or f"dev:{getpass.getuser()}",
            ttl_s=ttl,
        )
    except (JwtNotConfigured, ValueError, InvalidScope) as exc:  # a setting or an argument
        raise usage_error(str(exc)) from None
    if as_json:
        import jwt

        claims = jwt.decode(token, options={"verify_signature": False})
        print_json(
            {
                "token": token,
                "tenant": claims.get("tenant"),
                "scopes": str(claims.get("scope", "")).split(),
                "subject": claims.get("sub"),
                "issued_at": claims.get("iat"),
                "expires_at": claims.get("exp"),
            }
        )
        return
    print(token)
