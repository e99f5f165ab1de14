"""A plain Python reading of the search filter grammar, written apart from
``embedstream.search`` (which translates filters for Chroma and SQL): the tests compare
what the stores select with what this says should match."""

from __future__ import annotations

from typing import Any

MISSING = object()


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def _eq(stored: Any, wanted: Any) -> bool:
    return stored is not MISSING and _kind(stored) == _kind(wanted) and stored == wanted


def _operator(op: str, stored: Any, wanted: Any) -> bool:
    if op == "$eq":
        return _eq(stored, wanted)
    if op == "$ne":
        return not _eq(stored, wanted)
    if op == "$in":
        return any(_eq(stored, w) for w in wanted)
    if op == "$nin":
        return not any(_eq(stored, w) for w in wanted)
    if stored is MISSING or _kind(stored) != "number":
        return False
    return {
        "$gt": stored > wanted,
        "$gte": stored >= wanted,
        "$lt": stored < wanted,
        "$lte": stored <= wanted,
    }[op]


def matches_where(where: dict[str, Any], metadata: dict[str, Any]) -> bool:
    for key, condition in where.items():
        if key == "$and":
            ok = all(matches_where(part, metadata) for part in condition)
        elif key == "$or":
            ok = any(matches_where(part, metadata) for part in condition)
        elif isinstance(condition, dict):
            stored = metadata.get(key, MISSING)
            ok = all(_operator(op, stored, value) for op, value in condition.items())
        else:
            ok = _eq(metadata.get(key, MISSING), condition)
        if not ok:
            return False
    return True


def matches_text(where_document: dict[str, Any], text: str) -> bool:
    for key, condition in where_document.items():
        if key == "$and":
            ok = all(matches_text(part, text) for part in condition)
        elif key == "$or":
            ok = any(matches_text(part, text) for part in condition)
        elif key == "$contains":
            ok = condition in text
        else:
            ok = condition not in text
        if not ok:
            return False
    return True
