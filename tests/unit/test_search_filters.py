"""The filter grammar's refusals (each naming the path of the problem) and its bounds;
what the stores select is tested on the real ones (tests/integration/test_search_filters.py)."""

from __future__ import annotations

from typing import Any

import pytest

from embedstream.adapters.chroma.chunks import TENANT as CHROMA_TENANT
from embedstream.adapters.chroma.chunks import chunk_metadata
from embedstream.search.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_LIST,
    RESERVED_KEYS,
    TENANT_KEY,
    AllOf,
    Compare,
    FilterError,
    TextMatch,
    parse_where,
    parse_where_document,
    with_tenant,
)
from embedstream.search.sql import SqlParams, where_document_sql, where_sql


def refusal(raw: Any, *, document: bool = False) -> FilterError:
    with pytest.raises(FilterError) as caught:
        (parse_where_document if document else parse_where)(raw)
    return caught.value


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"k": 1}
    for _ in range(depth):
        node = {"$or": [node, {"k": 2}]}
    return node


def test_reserved_keys_are_exactly_the_ones_the_index_writes() -> None:
    written = chunk_metadata(
        {}, tenant="t", document_id="d", index=0, version=1, job_id="j", content_hash="h"
    )
    assert set(written) == RESERVED_KEYS
    assert CHROMA_TENANT == TENANT_KEY


@pytest.mark.parametrize(
    ("raw", "field", "kind"),
    [
        ({"$foo": 1}, "where.$foo", "unknown_operator"),
        ({"k": {"$regex": "a"}}, "where.k.$regex", "unknown_operator"),
        (
            {"$and": [{"k": 1}, {"k": {"$exists": True}}]},
            "where.$and.1.k.$exists",
            "unknown_operator",
        ),
        ({"tenant": "globex"}, "where.tenant", "reserved_key"),
        ({"$or": [{"a": 1}, {"tenant": {"$ne": "acme"}}]}, "where.$or.1.tenant", "reserved_key"),
        (
            {"$and": [{"$or": [{"document_id": "x"}, {"a": 1}]}]},
            "where.$and.0.$or.0.document_id",
            "reserved_key",
        ),
        ({"chunk_index": {"$gte": 0}}, "where.chunk_index", "reserved_key"),
        ({"version": 1}, "where.version", "reserved_key"),
        ({"#x": 1}, "where.#x", "invalid_key"),
        ({"": 1}, "where.", "invalid_key"),
        ({"k": [1, 2]}, "where.k", "invalid_value"),
        ({"k": None}, "where.k", "invalid_value"),
        ({"k": {}}, "where.k", "invalid_filter"),
        ({"k": {"$gt": "3"}}, "where.k.$gt", "invalid_value"),
        ({"k": {"$lte": True}}, "where.k.$lte", "invalid_value"),
        ({"k": {"$eq": float("nan")}}, "where.k.$eq", "invalid_value"),
        ({"k": {"$gt": float("inf")}}, "where.k.$gt", "invalid_value"),
        ({"k": 2**63}, "where.k", "invalid_value"),
        ({"k": "a\x00b"}, "where.k", "invalid_value"),
        ({"k": {"$in": []}}, "where.k.$in", "invalid_value"),
        ({"k": {"$in": "a"}}, "where.k.$in", "invalid_value"),
        ({"k": {"$nin": [1, {"a": 1}]}}, "where.k.$nin.1", "invalid_value"),
        ({"k": {"$in": list(range(MAX_LIST + 1))}}, "where.k.$in", "filter_too_large"),
        ({"$and": []}, "where.$and", "invalid_filter"),
        ({"$or": {"k": 1}}, "where.$or", "invalid_filter"),
        ({"$and": [1]}, "where.$and.0", "invalid_filter"),
        ([{"k": 1}], "where", "invalid_filter"),
    ],
)
def test_a_refused_filter_names_the_path_of_the_problem(raw: Any, field: str, kind: str) -> None:
    error = refusal(raw)
    assert (error.field, error.kind) == (field, kind)


def test_depth_and_size_are_bounded() -> None:
    assert parse_where(nested(MAX_DEPTH)) is not None
    error = refusal(nested(MAX_DEPTH + 1))
    assert error.kind == "filter_too_deep"
    assert error.field.startswith("where.$or.0.$or.0")
    most = {"$or": [{f"k{n}": n} for n in range(MAX_CONDITIONS)]}
    assert parse_where(most) is not None
    one_more = {"$and": [most, {"k": {"$nin": [1]}}]}
    error = refusal(one_more)
    assert (error.kind, error.field) == ("filter_too_large", "where.$and.1.k.$nin")


def test_a_deep_filter_is_refused_without_walking_all_of_it() -> None:
    # far deeper than Python's recursion limit: refused at the bound, not a crash
    assert refusal(nested(5_000)).kind == "filter_too_deep"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"$regex": "a.*"}, "where_document.$regex"),
        ({"$contains": ""}, "where_document.$contains"),
        ({"$contains": 3}, "where_document.$contains"),
        ({"$contains": "x" * 1001}, "where_document.$contains"),
        (
            {"$and": [{"$contains": "a"}, {"$not_contains": "b\x00"}]},
            "where_document.$and.1.$not_contains",
        ),
        ({"k": "v"}, "where_document.k"),
        ("text", "where_document"),
    ],
)
def test_a_refused_document_filter_names_its_path(raw: Any, field: str) -> None:
    assert refusal(raw, document=True).field == field


def test_the_conveniences_mean_what_they_say() -> None:
    assert parse_where(None) is None and parse_where({}) is None
    assert parse_where({"k": 1}) == Compare("k", "$eq", 1)
    assert parse_where({"a": 1, "b": {"$gte": 2, "$lt": 5}}) == AllOf(
        (Compare("a", "$eq", 1), Compare("b", "$gte", 2), Compare("b", "$lt", 5))
    )
    assert parse_where({"$and": [{"k": "x"}]}) == Compare("k", "$eq", "x")
    assert parse_where_document({"$not_contains": "x"}) == TextMatch("x", negate=True)


def test_chroma_where_keeps_one_key_per_object_and_always_the_tenant() -> None:
    assert with_tenant(TENANT_KEY, "acme", None) == {"tenant": {"$eq": "acme"}}
    where = parse_where({"a": 1, "b": {"$in": ["x", 2, 3.0, True]}})
    assert with_tenant(TENANT_KEY, "acme", where) == {
        "$and": [
            {"tenant": {"$eq": "acme"}},
            {
                "$and": [
                    {"a": {"$eq": 1}},
                    {
                        "$or": [
                            {"b": {"$in": ["x"]}},
                            {"b": {"$in": [2, 3]}},
                            {"b": {"$in": [True]}},
                        ]
                    },
                ]
            },
        ]
    }


def test_sql_carries_every_value_as_a_parameter() -> None:
    hostile = "x'); DROP TABLE chunks; --"
    where = parse_where({hostile: {"$gt": 1.5}, "k": hostile, "n": {"$in": [hostile]}})
    text = parse_where_document({"$contains": hostile})
    assert where is not None and text is not None
    params = SqlParams("tenant")
    sql = where_sql(where, params) + where_document_sql(text, params)
    assert "DROP" not in sql and "'x'" not in sql
    assert hostile in params.values
