"""Checking API keys against PostgreSQL through a small in-process cache.

A verified key is trusted for ``ttl_s`` seconds (``EMBEDSTREAM_API_KEY_CACHE_TTL_S``,
default 5), keyed by the SHA-256 of the key (never the key itself); refusals are cached
as long, so a wrong key repeated costs no argon2 work. After the TTL the row is read
again, so a revoked key stops working within ``ttl_s`` seconds in every process. The
cache holds at most ``max_entries`` keys (least recently used go first).

argon2 verification runs in a worker thread (never on the event loop), at most
``MAX_CONCURRENT_HASHES`` at a time, and concurrent requests with the same uncached key
share one verification.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from embedstream.api.apikeys import ApiKeyStore, key_id_of, verify_key
from embedstream.api.credentials import CredentialStoreUnavailable, InvalidCredential
from embedstream.api.principal import InvalidScope, Principal, check_scopes
from embedstream.logging import get_logger

log = get_logger(__name__)

MAX_CONCURRENT_HASHES = 2


@dataclass(frozen=True)
class _Entry:
    expires_at: float
    principal: Principal | None
    reason: str = ""


class ApiKeyVerifier:
    def __init__(
        self,
        store: ApiKeyStore,
        *,
        ttl_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[Principal]] = {}
        self._hashing = asyncio.Semaphore(MAX_CONCURRENT_HASHES)

    async def verify(self, key: str) -> Principal:
        """The principal of a valid key; ``InvalidCredential`` (with a reason that names
        at most the key id) or ``CredentialStoreUnavailable`` else."""
        key_id = key_id_of(key)
        if key_id is None:
            raise InvalidCredential(
                "the API key is malformed (expected es_<16 hex>_<43 characters>)"
            )
        digest = hashlib.sha256(key.encode()).digest()
        entry = self._cached(digest)
        if entry is not None:
            if entry.principal is None:
                raise InvalidCredential(entry.reason)
            return entry.principal
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            principal = await self._check(key, key_id)
        except InvalidCredential as exc:
            if exc.cacheable:
                self._remember(digest, _Entry(self.clock() + self.ttl_s, None, exc.reason))
            future.set_exception(exc)
            raise
        except Exception as exc:
            future.set_exception(exc)
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            self._remember(digest, _Entry(self.clock() + self.ttl_s, principal))
            future.set_result(principal)
            return principal
        finally:
            del self._inflight[digest]
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved: no "never retrieved" warnings

    def _cached(self, digest: bytes) -> _Entry | None:
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if entry.expires_at <= self.clock():
            del self._cache[digest]
            return None
        self._cache.move_to_end(digest)
        return entry

    def _remember(self, digest: bytes, entry: _Entry) -> None:
        if self.ttl_s <= 0:
            return
        self._cache[digest] = entry
        self._cache.move_to_end(digest)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _check(self, key: str, key_id: str) -> Principal:
        try:
            record = await self.store.get(key_id)
        except asyncpg.UndefinedTableError as exc:
            raise CredentialStoreUnavailable(
                "the api_keys table does not exist: run `embedstream migrate`"
            ) from exc
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise CredentialStoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if record is None:
            raise InvalidCredential(f"API key {key_id} is not valid (unknown id or wrong secret)")
        async with self._hashing:
            valid = await asyncio.to_thread(verify_key, key, record.hash)
        if not valid:
            raise InvalidCredential(f"API key {key_id} is not valid (unknown id or wrong secret)")
        if record.revoked_at is not None:
            raise InvalidCredential(
                f"API key {key_id} was revoked at {record.revoked_at.isoformat()}"
            )
        try:
            scopes = check_scopes(record.scopes)
        except InvalidScope as exc:
            raise InvalidCredential(f"API key {key_id} has invalid scopes: {exc}") from None
        try:
            await self.store.touch(key_id)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("could not record API key use", key_id=key_id, error=type(exc).__name__)
        return Principal(
            tenant=record.tenant,
            scopes=scopes,
            credential_id=f"key:{key_id}",
            kind="api_key",
            subject=record.name,
        )
