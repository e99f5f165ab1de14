"""Per-document write order for the index (invariant 3).

Chroma has no conditional write, so the order is kept in Redis:

- a version register, hash ``{prefix}:index:versions``: document key
  (``{tenant}/{document_id}``, see ``embedstream.schemas.tenancy``) -> the last version
  applied to Chroma (deletes included, as tombstones), which only moves forward;
- a short per-document lock, ``{prefix}:index:lock:{tenant}/{document_id}`` (SET NX PX with a
  random token, renewed while held, released only by its holder), so one writer at a
  time reads the register, writes Chroma and advances the register.

Everything here takes document keys, never bare document ids, so two tenants' documents
of the same id have their own locks and versions. Versions are compared as decimal
strings (length, then text): Lua numbers are doubles and versions built from stream ids
exceed 2**53.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis

from embedstream.logging import get_logger
from embedstream.streams.names import StreamNames

log = get_logger("embedstream.index")

_GREATER = """
local function greater(a, b)
  if not b then return true end
  if #a ~= #b then return #a > #b end
  return a > b
end
"""

# KEYS: register, lock keys...; ARGV: token, ttl_ms, document ids... (same order)
# -> for each document: {held (0/1), registered version or false}
ACQUIRE = """
local out = {}
for i = 2, #KEYS do
  local doc = ARGV[i + 1]
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[#out + 1] = {1, redis.call('HGET', KEYS[1], doc)}
  else
    out[#out + 1] = {0, false}
  end
end
return out
"""

# KEYS: register, lock keys...; ARGV: token, then (document id, version or '') pairs
# Advances the register where the version is newer, then releases the locks we hold.
# -> number of locks that were no longer ours
RELEASE = (
    _GREATER
    + """
local lost = 0
for i = 2, #KEYS do
  local doc, version = ARGV[2 * i - 2], ARGV[2 * i - 1]
  if version ~= '' and greater(version, redis.call('HGET', KEYS[1], doc)) then
    redis.call('HSET', KEYS[1], doc, version)
  end
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
  else
    lost = lost + 1
  end
end
return lost
"""
)

# KEYS: lock keys; ARGV: token, ttl_ms -> number still held
RENEW = """
local held = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    held = held + 1
  end
end
return held
"""


@dataclass
class DocumentLocks:
    """The document locks taken for one batch: ``held`` documents with their registered
    versions, ``busy`` ones another replica holds."""

    token: str
    registered: dict[str, int | None] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)
    applied: dict[str, int] = field(default_factory=dict)

    @property
    def held(self) -> list[str]:
        return list(self.registered)

    def advance(self, document_id: str, version: int) -> None:
        """Record ``version`` as applied; the register moves when the locks are released."""
        self.applied[document_id] = version


class DocumentOrder:
    """Locks and version register of the index stage."""

    def __init__(self, client: redis.Redis, names: StreamNames, *, lock_ttl_ms: int) -> None:
        self.client = client
        self.register_key = names.key("index", "versions")
        self._lock_prefix = names.key("index", "lock", "")
        self.lock_ttl_ms = lock_ttl_ms
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)
        self._renew = client.register_script(RENEW)

    def lock_key(self, document_id: str) -> str:
        return self._lock_prefix + document_id

    async def registered(self, document_ids: Iterable[str]) -> dict[str, int | None]:
        """The register's versions (None: never written)."""
        ids = list(document_ids)
        if not ids:
            return {}
        values: list[bytes | str | None] = await self.client.hmget(self.register_key, ids)
        return {doc: _version(v) for doc, v in zip(ids, values, strict=True)}

    @contextlib.asynccontextmanager
    async def hold(self, document_ids: Iterable[str]) -> AsyncIterator[DocumentLocks]:
        """Lock what can be locked right now (the rest is ``locks.busy``) and read the
        registered versions of what was locked. On exit, advance the register for what was
        marked applied and release. If the holder is cancelled the locks are left to
        expire: a Chroma call may still be running on its thread."""
        locks = DocumentLocks(token=uuid.uuid4().hex)
        await self._take(locks, list(dict.fromkeys(document_ids)))
        # stopped by an event, not by cancel(): redis-py may swallow a cancellation that
        # lands mid-command, and a renewer that missed it would never end
        done = asyncio.Event()
        renewer = asyncio.create_task(self._keep(locks, done)) if locks.registered else None
        cancelled = False
        try:
            yield locks
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            done.set()
            if renewer is not None:
                await asyncio.shield(renewer)
            if locks.registered and not cancelled:
                await asyncio.shield(self._finish(locks))

    async def _take(self, locks: DocumentLocks, document_ids: list[str]) -> None:
        if not document_ids:
            return
        rows: list[list[Any]] = await self._acquire(
            keys=[self.register_key, *(self.lock_key(d) for d in document_ids)],
            args=[locks.token, self.lock_ttl_ms, *document_ids],
        )
        for doc, (held, version) in zip(document_ids, rows, strict=True):
            if held:
                locks.registered[doc] = _version(version)
            else:
                locks.busy.add(doc)

    async def _keep(self, locks: DocumentLocks, done: asyncio.Event) -> None:
        keys = [self.lock_key(d) for d in locks.held]
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.lock_ttl_ms / 3000)
            if done.is_set():
                return
            try:
                held = await self._renew(keys=keys, args=[locks.token, self.lock_ttl_ms])
            except Exception as exc:
                log.warning("document lock renewal failed", error=str(exc))
                continue
            if held < len(keys):
                log.error(
                    "document locks expired while held; another replica may write the "
                    "same documents concurrently",
                    lost=len(keys) - held,
                )

    async def _finish(self, locks: DocumentLocks) -> None:
        docs = locks.held
        args: list[str] = [locks.token]
        for doc in docs:
            version = locks.applied.get(doc)
            args.extend((doc, "" if version is None else str(version)))
        lost: int = await self._release(
            keys=[self.register_key, *(self.lock_key(d) for d in docs)], args=args
        )
        if lost:
            log.error("document locks had expired before release", lost=lost)


def _version(value: bytes | str | None) -> int | None:
    if value is None:
        return None
    return int(value)
