"""Versioned SQL migrations, applied in order under an advisory lock.

Migrations are the files ``migrations/NNNN_name.sql`` inside this package. Each one runs
in its own transaction with ``search_path`` set to the target schema (so the SQL names
no schema) and is recorded in ``schema_migrations`` in that schema. Concurrent starters
serialize on a session advisory lock keyed by the schema name, so the one that gets the
lock applies what is missing and the others find nothing left to do.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from embedstream.adapters.postgres.pool import quote_ident
from embedstream.logging import get_logger

log = get_logger("embedstream.postgres.migrate")

MIGRATION_FILE = re.compile(r"(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)\.sql")
LOCK_NAMESPACE = "embedstream.migrate:"


class MigrationError(Exception):
    """The database's migration history does not match the migrations shipped here."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def id(self) -> str:
        return f"{self.version:04d}_{self.name}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """The migrations shipped in the package, in version order."""
    folder = resources.files("embedstream.adapters.postgres").joinpath("migrations")
    found: list[Migration] = []
    for item in folder.iterdir():
        match = MIGRATION_FILE.fullmatch(item.name)
        if match:
            found.append(
                Migration(int(match["version"]), match["name"], item.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def migrate(
    target: str | asyncpg.Connection,
    schema: str,
    *,
    migrations: list[Migration] | None = None,
) -> list[str]:
    """Bring ``schema`` up to date; returns the ids of the migrations applied now
    (empty when it was already current). ``target`` is a DSN or an open connection."""
    if isinstance(target, str):
        conn = await asyncpg.connect(target)
        try:
            return await _migrate(conn, schema, migrations)
        finally:
            await conn.close()
    return await _migrate(target, schema, migrations)


async def _migrate(
    conn: asyncpg.Connection, schema: str, migrations: list[Migration] | None
) -> list[str]:
    todo = available_migrations() if migrations is None else migrations
    quoted = quote_ident(schema)
    lock_key = LOCK_NAMESPACE + schema
    await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock_key)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations (
                    version    integer     PRIMARY KEY,
                    name       text        NOT NULL,
                    checksum   text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )"""
        )
        rows = await conn.fetch(f"SELECT version, name, checksum FROM {quoted}.schema_migrations")
        done = {row["version"]: row for row in rows}
        _check_history(todo, done)
        applied: list[str] = []
        for migration in todo:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {quoted}")
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("migration applied", schema=schema, migration=migration.id)
            applied.append(migration.id)
        log.info(
            "schema up to date",
            schema=schema,
            applied=len(applied),
            version=max([*done, *(m.version for m in todo)], default=0),
        )
        return applied
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock_key)


def _check_history(todo: list[Migration], done: dict[int, asyncpg.Record]) -> None:
    known = {m.version: m for m in todo}
    for version, row in done.items():
        migration = known.get(version)
        if migration is None:
            log.warning(
                "database has a migration this code does not know (newer release?)",
                version=version,
                name=row["name"],
            )
        elif row["checksum"] != migration.checksum:
            raise MigrationError(
                f"migration {migration.id} was changed after it was applied "
                f"(checksum {row['checksum'][:12]} in the database, {migration.checksum[:12]} "
                "here); add a new migration instead of editing an applied one"
            )
