"""Filters as SQL for PostgreSQL, with every value (keys and texts included) passed as a
query parameter: the SQL text is built only from this module's fixed fragments and the
column expressions its callers name, never from request content.

The meaning follows Chroma's (``embedstream.search.filters``), so both halves of a hybrid
search, and a where_document prefilter, select the same chunks:

- metadata lives in ``documents.metadata`` (jsonb): ``$eq`` is jsonb equality (numbers
  compare as numbers, ``3 = 3.0``; a string, a number and a boolean are never equal);
  ``$gt``... compare only numeric values; a missing key is false for every operator but
  ``$ne``/``$nin``, which are the negation of ``$eq``/``$in`` and so match it;
- ``$contains`` is a case-sensitive substring test on ``chunks.text`` (``strpos``: no
  pattern characters to escape).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Final

from embedstream.search.filters import AllOf, Compare, Node, TextMatch

_ORDER_SQL: Final = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class SqlParams:
    """Positional parameters (``$1``, ``$2``...) collected while SQL is built."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _number(value: int | float) -> Decimal:
    # repr: the shortest text that is the same float, so 0.1 compares as 0.1
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _compare_sql(node: Compare, params: SqlParams, metadata: str) -> str:
    key = params.add(node.key)
    field = f"({metadata} -> {key}::text)"
    if node.op in ("$eq", "$ne"):
        equal = f"coalesce({field} = {params.add(json.dumps(node.value))}::jsonb, false)"
        return equal if node.op == "$eq" else f"NOT {equal}"
    if node.op in ("$in", "$nin"):
        assert isinstance(node.value, tuple)
        values = params.add([json.dumps(v) for v in node.value])
        member = f"coalesce({field} = ANY({values}::jsonb[]), false)"
        return member if node.op == "$in" else f"NOT {member}"
    if not isinstance(node.value, int | float):
        raise TypeError(f"{node.op} compares numbers")
    bound = params.add(_number(node.value))
    # CASE fixes the order: the cast only ever sees a number
    return (
        f"(CASE WHEN jsonb_typeof({field}) = 'number' "
        f"THEN ({metadata} ->> {key}::text)::numeric {_ORDER_SQL[node.op]} {bound}::numeric "
        f"ELSE false END)"
    )


def where_sql(node: Node, params: SqlParams, metadata: str = "d.metadata") -> str:
    """A boolean SQL expression over the jsonb column ``metadata`` (``node`` from
    ``parse_where``)."""
    if isinstance(node, Compare):
        return _compare_sql(node, params, metadata)
    if isinstance(node, TextMatch):
        raise TypeError("a text condition is not a metadata filter")
    joiner = " AND " if isinstance(node, AllOf) else " OR "
    return "(" + joiner.join(where_sql(part, params, metadata) for part in node.parts) + ")"


def where_document_sql(node: Node, params: SqlParams, text: str = "c.text") -> str:
    """A boolean SQL expression over the text column ``text`` (``node`` from
    ``parse_where_document``)."""
    if isinstance(node, TextMatch):
        found = f"strpos({text}, {params.add(node.text)}::text)"
        return f"{found} = 0" if node.negate else f"{found} > 0"
    if isinstance(node, Compare):
        raise TypeError("a metadata condition is not a text filter")
    joiner = " AND " if isinstance(node, AllOf) else " OR "
    return "(" + joiner.join(where_document_sql(part, params, text) for part in node.parts) + ")"
