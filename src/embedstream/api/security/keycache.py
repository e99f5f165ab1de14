"""Checking API keys against PostgreSQL through a small in-process cache.

- A verified key is trusted for ``ttl_s`` seconds (``EMBEDSTREAM_API_KEY_CACHE_TTL_S``,
  default 5), keyed by the SHA-256 of the key (never the key itself). After the TTL the
  row is read again, so a revoked key stops working within ``ttl_s`` in every process.
- Refusals are remembered as long, in a cache of their own: a wrong key repeated costs
  no argon2 work, and a flood of wrong keys evicts other refusals, never a valid key.
  Both caches hold at most ``max_entries`` keys (least recently used go first).
- Every well-formed key costs one argon2 verification, whether its id exists or not: an
  unknown id is verified against a dummy hash, so the time a refusal takes does not tell
  which key ids exist.
- argon2 runs in a worker thread (never on the event loop), at most
  ``MAX_CONCURRENT_HASHES`` at a time. Concurrent requests with the same uncached key
  share one verification, which runs as a task of its own: a request that is cancelled
  (its client went away) does not take the others' answer with it.

Failed checks are also rate limited per client address and key id (``FailedAuthLimiter``
in ``embedstream.api.security.ratelimit``), before any hashing.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import asyncpg

from embedstream.api.security.apikeys import ApiKeyStore, hash_key, key_id_of, new_key, verify_key
from embedstream.api.security.credentials import CredentialStoreUnavailable, InvalidCredential
from embedstream.api.security.principal import InvalidScope, Principal, check_scopes
from embedstream.errors import postgres as postgres_errors
from embedstream.logging import get_logger

log = get_logger(__name__)

MAX_CONCURRENT_HASHES = 2
MALFORMED = "the API key is malformed (expected es_<16 hex>_<43 characters>)"
V = TypeVar("V")


@functools.cache
def dummy_hash() -> str:
    """An argon2id hash (of a random key no one holds) with the parameters real keys
    get: verifying an unknown id against it costs what a wrong secret costs."""
    return hash_key(new_key()[1])


class TtlLru(Generic[V]):
    """At most ``max_entries`` values, each for ``ttl_s`` seconds; least recently used
    go first."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._items: OrderedDict[bytes, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self.clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: bytes, value: V) -> None:
        if self.ttl_s <= 0:
            return
        self._items[key] = (self.clock() + self.ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)


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
        self.valid: TtlLru[Principal] = TtlLru(ttl_s, max_entries, clock)
        self.refused: TtlLru[InvalidCredential] = TtlLru(ttl_s, max_entries, clock)
        self._inflight: dict[bytes, asyncio.Task[Principal]] = {}
        self._hashing = asyncio.Semaphore(MAX_CONCURRENT_HASHES)

    async def warm(self) -> None:
        """Compute the dummy hash now (off the loop), not on the first unknown id."""
        await asyncio.to_thread(dummy_hash)

    def cached(self, key: str) -> Principal | None:
        """The principal of a key verified within the TTL; None otherwise (no I/O)."""
        return self.valid.get(_digest(key))

    async def verify(self, key: str) -> Principal:
        """The principal of a valid key; ``InvalidCredential`` (with a reason that names
        at most the key id) or ``CredentialStoreUnavailable`` else."""
        key_id = key_id_of(key)
        if key_id is None:
            raise InvalidCredential(MALFORMED, kind="malformed")
        digest = _digest(key)
        principal = self.valid.get(digest)
        if principal is not None:
            return principal
        refusal = self.refused.get(digest)
        if refusal is not None:
            raise InvalidCredential(refusal.reason, kind=refusal.kind)
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.create_task(self._check_and_remember(key, key_id, digest))
            self._inflight[digest] = task
            task.add_done_callback(functools.partial(self._settled, digest))
        # shield: a caller that is cancelled leaves the check running for the others
        return await asyncio.shield(task)

    def _settled(self, digest: bytes, task: asyncio.Task[Principal]) -> None:
        if self._inflight.get(digest) is task:
            del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning if no one waits

    async def _check_and_remember(self, key: str, key_id: str, digest: bytes) -> Principal:
        try:
            principal = await self._check(key, key_id)
        except InvalidCredential as exc:
            if exc.cacheable:
                self.refused.put(digest, exc)
            raise
        self.valid.put(digest, principal)
        return principal

    async def _check(self, key: str, key_id: str) -> Principal:
        try:
            record = await self.store.get(key_id)
        except asyncpg.UndefinedTableError as exc:
            raise CredentialStoreUnavailable(
                "the api_keys table does not exist: run `embedstream migrate`"
            ) from exc
        except postgres_errors.FAILURES as exc:
            raise CredentialStoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        async with self._hashing:
            valid = await asyncio.to_thread(_verify, key, record.hash if record else None)
        if record is None or not valid:
            raise InvalidCredential(f"API key {key_id} is not valid (unknown id or wrong secret)")
        if record.revoked_at is not None:
            raise InvalidCredential(
                f"API key {key_id} was revoked at {record.revoked_at.isoformat()}", kind="revoked"
            )
        try:
            scopes = check_scopes(record.scopes)
        except InvalidScope as exc:
            raise InvalidCredential(f"API key {key_id} has invalid scopes: {exc}") from None
        try:
            await self.store.touch(key_id)
        except postgres_errors.FAILURES as exc:
            log.warning("could not record API key use", key_id=key_id, error=type(exc).__name__)
        return Principal(
            tenant=record.tenant,
            scopes=scopes,
            credential_id=f"key:{key_id}",
            kind="api_key",
            subject=record.name,
        )


def _verify(key: str, stored_hash: str | None) -> bool:
    """argon2 verification (in a worker thread); an unknown id (no stored hash) is
    verified against the dummy hash, and refused whatever the outcome."""
    if stored_hash is None:
        verify_key(key, dummy_hash())
        return False
    return verify_key(key, stored_hash)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
