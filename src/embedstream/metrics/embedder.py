"""The embed stage's encoder counters, read from the model's own ``EmbedderStats`` at
scrape time (a custom collector: nothing is counted twice and the encode loop pays
nothing for them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry


class _Stats(Protocol):
    calls: int
    chunks: int
    tokens: int
    padded_tokens: int
    seconds: float


class _Encoder(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def stats(self) -> _Stats: ...


class EmbedderCollector(Collector):
    """``embedstream_embed_*_total`` of one loaded model."""

    def __init__(self, embedder: _Encoder) -> None:
        self.embedder = embedder

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats, model = self.embedder.stats, self.embedder.name
        for name, doc, value in (
            ("embedstream_embed_chunks", "Chunks encoded.", stats.chunks),
            ("embedstream_embed_tokens", "Tokens encoded (special tokens included).", stats.tokens),
            (
                "embedstream_embed_padded_tokens",
                "Tokens the model computed, padding included (batch size x longest input).",
                stats.padded_tokens,
            ),
            ("embedstream_embed_encode_calls", "Calls of the encoder.", stats.calls),
            ("embedstream_embed_encode_seconds", "Time spent encoding.", stats.seconds),
        ):
            family = CounterMetricFamily(name, doc, labels=["model"])
            family.add_metric([model], value)
            yield family


def register_embedder(
    embedder: _Encoder, registry: CollectorRegistry = REGISTRY
) -> EmbedderCollector | None:
    """Report ``embedder``'s counters in ``registry`` (until ``registry.unregister``).
    One embedder per process reports (a worker loads one); a second one's counters are
    left out rather than clash with the first's (None)."""
    collector = EmbedderCollector(embedder)
    try:
        registry.register(collector)
    except ValueError:  # the series of an embedder already registered here
        return None
    return collector
