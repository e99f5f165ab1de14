"""One tenant syntax (issue 10, item 4) in PostgreSQL and the CLI: the CHECK constraints
accept exactly what ``schemas.tenancy`` accepts, and every command that takes a tenant
refuses the same strings before anything is stored."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from typer.testing import CliRunner

from embedstream.adapters.postgres.migrate import migrate
from embedstream.cli import app as cli_app
from embedstream.schemas.tenancy import TENANT_REGEX
from tests.integration.conftest import JWT_SECRET, PG_DSN, drop_schema
from tests.support.tenants import INVALID, VALID

pytestmark = pytest.mark.integration

# PostgreSQL text cannot hold NUL at all: that one is refused before any constraint
SAMPLES = [t for t in VALID + INVALID if "\x00" not in t]


async def test_postgres_constraints_are_the_tenant_syntax(pool: asyncpg.Pool) -> None:
    definitions = {
        row["conname"]: row["definition"]
        for row in await pool.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
            "WHERE conrelid IN ('documents'::regclass, 'api_keys'::regclass) AND contype = 'c'"
        )
    }
    tenant_checks = [d for d in definitions.values() if "tenant ~" in d]
    assert len(tenant_checks) == 2
    assert all(f"'{TENANT_REGEX}'" in d for d in tenant_checks), tenant_checks


@pytest.mark.parametrize("tenant", SAMPLES)
async def test_postgres_refuses_exactly_what_the_code_refuses(
    pool: asyncpg.Pool, tenant: str
) -> None:
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO documents (tenant, document_id, version, text) "
                    "VALUES ($1, 'd', 1, 't')",
                    tenant,
                )
                await conn.execute(
                    "INSERT INTO api_keys (id, tenant, name, scopes, hash) "
                    "VALUES ('0123456789abcdef', $1, 'n', '{jobs:read}', '$argon2id$x')",
                    tenant,
                )
            stored = True
        except asyncpg.CheckViolationError:
            stored = False
    assert stored is (tenant in VALID)


@pytest.fixture
def cli_schema(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    schema = f"t_cli_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("EMBEDSTREAM_DATABASE_URL", PG_DSN)
    monkeypatch.setenv("EMBEDSTREAM_DATABASE_SCHEMA", schema)
    monkeypatch.setenv("EMBEDSTREAM_JWT_SECRET", JWT_SECRET)
    monkeypatch.setattr("embedstream.api.security.cli.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr("embedstream.cli_common.configure_logging", lambda *a, **k: None)
    asyncio.run(migrate(PG_DSN, schema))
    yield schema
    asyncio.run(drop_schema(schema))


async def _count_keys(schema: str) -> int:
    conn = await asyncpg.connect(PG_DSN)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".api_keys'))
    finally:
        await conn.close()


@pytest.mark.parametrize("tenant", ["tA\n", ".acme", "a/b", "t" * 65])
def test_the_cli_refuses_what_credentials_refuse(cli_schema: str, tenant: str) -> None:
    cli = CliRunner()
    scope = ["--scope", "jobs:read"]
    created = cli.invoke(cli_app, ["keys", "create", "--tenant", tenant, *scope, "--name", "n"])
    issued = cli.invoke(cli_app, ["token", "issue", "--tenant", tenant, *scope])
    listed = cli.invoke(cli_app, ["keys", "list", "--tenant", tenant])
    searched = cli.invoke(cli_app, ["search", "anything", "--tenant", tenant])

    for result in (created, issued, listed, searched):
        assert result.exit_code in (1, 2), result.output
        assert "invalid tenant: 1-64 characters" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert asyncio.run(_count_keys(cli_schema)) == 0
