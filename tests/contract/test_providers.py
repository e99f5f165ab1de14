"""Provider verification of every producer against the pacts its consumers wrote
(``schemas/pacts/``) and against the released contract set (``schemas/released/v1``):
a change that breaks a released consumer fails here and needs a new message version."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedstream.adapters.embedder import Embedder
from embedstream.contracts.catalog import EMBED_WORKER, INGRESS, REEMBED
from embedstream.contracts.catalog import RESULTS as RESULTS_PROVIDER
from tests.contract.interactions import EMBEDDED_STREAM, INGEST, REEMBED_REQUESTS, RESULTS_ALL
from tests.contract.providers import (
    embed_worker_provider,
    ingress_provider,
    reembed_provider,
    results_provider,
)
from tests.contract.support import PACTS, RELEASED_PACTS, assert_verified

SOURCES = [pytest.param(PACTS, id="current"), pytest.param(RELEASED_PACTS, id="released-v1")]


@pytest.mark.parametrize("source", SOURCES)
def test_ingress_command_builders_satisfy_the_embed_worker(source: Path) -> None:
    provider = ingress_provider(INGRESS)
    assert_verified(provider.verifier(INGEST, source), source, INGRESS)


@pytest.mark.parametrize("source", SOURCES)
def test_embed_worker_satisfies_the_index_and_persist_workers(
    source: Path, embedder: Embedder
) -> None:
    provider = embed_worker_provider(EMBED_WORKER, embedder)
    results = assert_verified(provider.verifier(EMBEDDED_STREAM, source), source, EMBED_WORKER)
    consumers = {r["consumer"] for r in results["interactionResults"]}
    assert consumers == {"embedstream-index-worker", "embedstream-persist-worker"}


@pytest.mark.parametrize("source", SOURCES)
def test_result_publisher_satisfies_downstream_subscribers(source: Path) -> None:
    provider = results_provider(RESULTS_PROVIDER)
    assert_verified(provider.verifier(RESULTS_ALL, source), source, RESULTS_PROVIDER)


def test_store_workers_reembed_requests_satisfy_the_embed_worker() -> None:
    """Not in the released v1 set: re-embed requests are new since."""
    provider = reembed_provider(REEMBED)
    assert_verified(provider.verifier(REEMBED_REQUESTS, PACTS), PACTS, REEMBED)


def test_a_verifier_for_an_unknown_provider_verifies_nothing() -> None:
    """Why every verification above compares what was checked with the pacts."""
    provider = ingress_provider("embedstream-no-such-provider")
    verifier = provider.verifier(INGEST, PACTS)
    verifier.verify()
    assert verifier.results["result"] is True
    assert verifier.results["interactionResults"] == []
