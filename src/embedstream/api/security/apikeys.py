"""API keys: their format, their argon2id hashes and their rows in PostgreSQL.

A key reads ``es_<id>_<secret>``: ``id`` is 16 hex characters, public and the primary
key of its row; ``secret`` is 43 URL-safe characters (256 random bits). Only the
argon2id hash of the whole key is stored, so checking a key is one lookup by id and
one hash verification. The key is shown once, when it is created.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from embedstream.api.security.principal import check_scopes
from embedstream.schemas.tenancy import check_tenant

KEY_PREFIX = "es_"
KEY_PATTERN = re.compile(r"es_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})")

_HASHER = PasswordHash((Argon2Hasher(),))  # argon2id, pwdlib's recommended parameters


class KeyNotFound(LookupError):
    pass


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id of a well-formed key, else None."""
    match = KEY_PATTERN.fullmatch(key)
    return match["id"] if match else None


def hash_key(key: str) -> str:
    return _HASHER.hash(key)


def verify_key(key: str, hashed: str) -> bool:
    """Constant-time check of ``key`` against its stored hash (CPU-heavy: ~0.1-0.2 s; run
    it off the event loop)."""
    try:
        return _HASHER.verify(key, hashed)
    except Exception:  # a malformed hash in the table is a refusal, not a crash
        return False


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    tenant: str
    name: str
    scopes: tuple[str, ...]
    hash: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ApiKeyRecord:
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            name=row["name"],
            scopes=tuple(row["scopes"]),
            hash=row["hash"],
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
            last_used_at=row["last_used_at"],
        )


_COLUMNS = "id, tenant, name, scopes, hash, created_at, revoked_at, last_used_at"


class ApiKeyStore:
    """The ``api_keys`` table (in the configured schema: the pool's search_path)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(
        self, *, tenant: str, name: str, scopes: Sequence[str]
    ) -> tuple[ApiKeyRecord, str]:
        """A new key for ``tenant``: its record and the key itself (shown once)."""
        check_tenant(tenant)
        checked = sorted(check_scopes(scopes))
        if not name.strip() or len(name) > 200:
            raise ValueError("the key name must be 1-200 characters")
        key_id, key = new_key()
        row = await self.pool.fetchrow(
            f"INSERT INTO api_keys (id, tenant, name, scopes, hash) VALUES ($1, $2, $3, $4, $5) "
            f"RETURNING {_COLUMNS}",
            key_id,
            tenant,
            name,
            checked,
            hash_key(key),
        )
        return ApiKeyRecord.from_row(row), key

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return None if row is None else ApiKeyRecord.from_row(row)

    async def list_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        if tenant is not None:
            check_tenant(tenant)
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM api_keys WHERE $1::text IS NULL OR tenant = $1 "
            "ORDER BY tenant, created_at, id",
            tenant,
        )
        return [ApiKeyRecord.from_row(row) for row in rows]

    async def revoke(self, key_id: str) -> ApiKeyRecord:
        """Revoke a key (idempotent: a revoked key keeps its first revocation time)."""
        row = await self.pool.fetchrow(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 "
            f"RETURNING {_COLUMNS}",
            key_id,
        )
        if row is None:
            raise KeyNotFound(f"no API key with id {key_id!r}")
        return ApiKeyRecord.from_row(row)

    async def touch(self, key_id: str) -> None:
        await self.pool.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", key_id)
