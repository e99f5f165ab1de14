"""Fixtures of the contract tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from embedstream.adapters.embedder import Embedder
from tests.contract.support import fake_embedder


@pytest.fixture(scope="session")
def embedder() -> Iterator[Embedder]:
    """The real ``Embedder`` over a fake model (no weights): fast and deterministic."""
    loaded = fake_embedder()
    yield loaded
    loaded.close()
