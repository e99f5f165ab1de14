"""Reciprocal rank fusion and the choice of the lexical half's terms."""

from __future__ import annotations

import math

from embedstream.search.fusion import RRF_K, reciprocal_rank_fusion
from embedstream.search.lexical import bm25_idf, distinctive, tsquery_term


def test_rrf_sums_one_over_k_plus_rank() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]])
    scores = {item.key: item.score for item in fused}
    assert math.isclose(scores["a"], 1 / (RRF_K + 1) + 1 / (RRF_K + 2))
    assert math.isclose(scores["c"], 1 / (RRF_K + 3) + 1 / (RRF_K + 1))
    assert math.isclose(scores["b"], 1 / (RRF_K + 2))
    assert [item.key for item in fused] == ["a", "c", "b"]
    assert fused[0].ranks == (1, 2) and fused[2].ranks == (2, None)


def test_rrf_ties_go_to_the_better_rank_then_the_first_list() -> None:
    # x: first in list 0 only; y: first in list 1 only -> equal scores
    fused = reciprocal_rank_fusion([["x"], ["y"]])
    assert [item.key for item in fused] == ["x", "y"]
    assert fused[0].score == fused[1].score


def test_the_lexical_half_keeps_codes_or_else_the_rarest_words() -> None:
    # a code beats ordinary words that are just as rare in a small corpus
    assert distinctive({"what": 1, "does": 1, "xq7731": 1, "mean": 2}, 3) == ["xq7731"]
    # no code: the rarest words, up to twice as common as the rarest
    assert distinctive({"keda": 2, "autoscaling": 4, "deploy": 5, "the": 900}, 10) == [
        "keda",
        "autoscaling",
    ]
    # words in more chunks than the bound, or in none, never take part
    assert distinctive({"2024": 50, "the": 900, "zzz": 0}, 10) == []


def test_idf_falls_with_frequency_and_stays_positive() -> None:
    assert bm25_idf(1000, 1) > bm25_idf(1000, 10) > bm25_idf(1000, 900) > 0


def test_a_lexeme_is_quoted_as_one_tsquery_operand() -> None:
    assert tsquery_term("a.com/x?a=1&b=2") == "'a.com/x?a=1&b=2'"
    assert tsquery_term("o'neil\\x") == "'o''neil\\\\x'"
