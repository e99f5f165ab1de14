"""Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): the hybrid score
of a chunk is the sum, over the ranked lists it appears in, of ``1 / (k + rank)``, ranks
counted from 1. Only ranks matter, so a cosine distance and a term-weight score need no
common scale; ``k = 60`` is the paper's constant, which keeps a single first place from
outweighing agreement between the lists."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

RRF_K: Final = 60

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Fused(Generic[K]):
    key: K
    score: float
    ranks: tuple[int | None, ...]
    """the key's rank in each list (1-based), None where it is absent"""


def reciprocal_rank_fusion(lists: Sequence[Sequence[K]], *, k: int = RRF_K) -> list[Fused[K]]:
    """Every key of ``lists`` with its fused score, best first. Equal scores: the better
    single rank first, then the earlier list's (the caller puts the list it trusts most
    first), then the key."""
    ranks: dict[K, list[int | None]] = {}
    for position, ranked in enumerate(lists):
        for rank, key in enumerate(ranked, start=1):
            slots = ranks.setdefault(key, [None] * len(lists))
            if slots[position] is None:  # a key listed twice keeps its better rank
                slots[position] = rank
    fused = [
        Fused(key, sum(1.0 / (k + r) for r in slots if r is not None), tuple(slots))
        for key, slots in ranks.items()
    ]

    def order(item: Fused[K]) -> tuple[float, int, int, str]:
        present = [(r, n) for n, r in enumerate(item.ranks) if r is not None]
        best_rank, best_list = min(present)
        return (-item.score, best_rank, best_list, str(item.key))

    return sorted(fused, key=order)
