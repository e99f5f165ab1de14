"""Reading a Prometheus exposition in tests (prometheus-client's own parser)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

ALLOWED_LABELS = frozenset(
    {"stage", "group", "stream", "outcome", "route", "method", "status", "store", "model",
     "operation", "le"}
)  # fmt: skip
"""Every label an embedstream_* sample may carry: small fixed sets, no ids."""


@dataclass(frozen=True)
class Scrape:
    """The samples of one scrape: ``value(name, **labels)``, 0 when absent."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return cls(samples)

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def label_names(self, prefix: str = "embedstream_") -> set[str]:
        return {k for (n, ls) in self.samples if n.startswith(prefix) for k, _ in ls}

    def label_values(self, name: str, label: str) -> set[str]:
        return {v for (n, ls) in self.samples if n == name for k, v in ls if k == label}

    def minus(self, before: Scrape) -> Scrape:
        """What changed since ``before`` (counters of one process)."""
        keys: Iterable[tuple[str, frozenset[tuple[str, str]]]] = self.samples
        return Scrape({k: self.samples[k] - before.samples.get(k, 0.0) for k in keys})
