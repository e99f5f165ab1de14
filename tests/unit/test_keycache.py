"""The API key verifier (issue 10, item 10) with an in-memory key store: unknown ids cost
an argon2 verification like wrong secrets, refusals never evict valid keys, and a
cancelled first check does not fail the requests waiting on it. The argon2 hashing is
real."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from embedstream.api.security import keycache
from embedstream.api.security.apikeys import ApiKeyRecord, hash_key, new_key
from embedstream.api.security.credentials import InvalidCredential
from embedstream.api.security.keycache import ApiKeyVerifier


class MemoryStore:
    """``ApiKeyStore``'s ``get`` and ``touch``, over a dict; ``gate`` (when set) holds
    every lookup until it is opened."""

    def __init__(self) -> None:
        self.records: dict[str, ApiKeyRecord] = {}
        self.lookups: list[str] = []
        self.looked_up = asyncio.Event()
        self.gate: asyncio.Event | None = None

    def add(self, tenant: str = "acme") -> str:
        key_id, key = new_key()
        self.records[key_id] = ApiKeyRecord(
            id=key_id,
            tenant=tenant,
            name="test",
            scopes=("jobs:read",),
            hash=hash_key(key),
            created_at=datetime.now(UTC),
            revoked_at=None,
            last_used_at=None,
        )
        return key

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        self.lookups.append(key_id)
        self.looked_up.set()
        if self.gate is not None:
            await self.gate.wait()
        return self.records.get(key_id)

    async def touch(self, key_id: str) -> None:
        return None


def verifier(store: MemoryStore, *, max_entries: int = 100) -> ApiKeyVerifier:
    return ApiKeyVerifier(store, ttl_s=60, max_entries=max_entries)  # type: ignore[arg-type]


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes argon2 verified keys against, in order."""
    seen: list[str] = []
    real = keycache.verify_key

    def spy(key: str, hashed: str) -> bool:
        seen.append(hashed)
        return real(key, hashed)

    monkeypatch.setattr(keycache, "verify_key", spy)
    return seen


async def test_an_unknown_key_id_costs_one_verification_like_a_wrong_secret(
    hashes: list[str],
) -> None:
    store = MemoryStore()
    known = store.add()
    keys = verifier(store)
    unknown = new_key()[1]
    wrong_secret = known[:20] + "A" * 43

    for key in (unknown, wrong_secret):
        with pytest.raises(InvalidCredential) as refused:
            await keys.verify(key)
        assert refused.value.reason.endswith("is not valid (unknown id or wrong secret)")
    # one argon2 verification each: the unknown id against the dummy hash
    assert hashes == [keycache.dummy_hash(), store.records[known[3:19]].hash]
    assert keycache.dummy_hash().startswith("$argon2id$")


async def test_refusals_never_evict_a_valid_cached_key(hashes: list[str]) -> None:
    store = MemoryStore()
    good = store.add()
    keys = verifier(store, max_entries=3)
    principal = await keys.verify(good)

    for _ in range(10):  # a flood of wrong keys, more than the cache holds
        with pytest.raises(InvalidCredential):
            await keys.verify(new_key()[1])
    store.lookups.clear()

    assert await keys.verify(good) == principal
    assert store.lookups == []  # served from the cache: no lookup, no argon2
    assert len(keys.refused) == 3  # the refusals are bounded too
    assert keys.cached(good) == principal


async def test_a_refusal_is_cached_and_costs_no_argon2_when_repeated(hashes: list[str]) -> None:
    store = MemoryStore()
    key = store.add()[:20] + "B" * 43
    keys = verifier(store)
    for _ in range(3):
        with pytest.raises(InvalidCredential):
            await keys.verify(key)
    assert len(hashes) == 1


async def test_a_cancelled_first_check_does_not_fail_the_requests_waiting_on_it() -> None:
    store = MemoryStore()
    key = store.add()
    keys = verifier(store)
    store.gate = asyncio.Event()

    first = asyncio.create_task(keys.verify(key))
    await store.looked_up.wait()  # the first check is under way
    waiting = [asyncio.create_task(keys.verify(key)) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()  # its client went away
    with pytest.raises(asyncio.CancelledError):
        await first
    store.gate.set()

    principals = await asyncio.gather(*waiting)
    assert {p.tenant for p in principals} == {"acme"}
    assert len(store.lookups) == 1  # one check, shared
    assert keys.cached(key) is not None


async def test_malformed_keys_cost_nothing(hashes: list[str]) -> None:
    store = MemoryStore()
    keys = verifier(store)
    for key in ("es_short", store.add() + "\n", "x" * 500):
        with pytest.raises(InvalidCredential) as refused:
            await keys.verify(key)
        assert refused.value.kind == "malformed"
    assert hashes == [] and store.lookups == []
