"""The search filter grammar: ``where`` (metadata) and ``where_document`` (chunk text).

A filter arrives as JSON; ``parse_where`` and ``parse_where_document`` check it against
an allow-list and turn it into a small tree (``Compare``/``TextMatch`` leaves under
``AllOf``/``AnyOf``), or raise ``FilterError`` naming the path of the first problem
(``where.$and.1.price.$gt``). Both halves of a search translate the same tree: to a
Chroma ``where`` (``to_chroma``) and to parameterized SQL (``embedstream.search.sql``).

``where``, Chroma's syntax with a few conveniences:

- ``{"key": value}`` is ``{"key": {"$eq": value}}``; several keys in one object, or
  several operators on one key (``{"year": {"$gte": 2020, "$lt": 2024}}``), are ANDed.
- operators: ``$eq $ne`` (string, number, boolean), ``$gt $gte $lt $lte`` (numbers),
  ``$in $nin`` (a non-empty list of such values), and ``$and $or`` (a non-empty list of
  filters).
- values are what the ingress accepts as metadata: strings without NUL, 64-bit integers,
  finite floats, booleans. Numbers compare as numbers (``3`` matches ``3.0``); a boolean
  is not a number; ``$ne`` and ``$nin`` also match chunks without the key (as Chroma).
- keys are metadata keys (the ingress's rules); embedstream's own keys (``tenant``,
  ``document_id``, ``chunk_index``, ``version``, ``job_id``, ``content_hash``) cannot be
  named: the tenant is always the caller's, applied by the server.

``where_document``: ``{"$contains": "text"}``, ``{"$not_contains": "text"}``
(case-sensitive substring of the chunk text), and ``$and``/``$or`` lists of those.

Bounds: depth ``MAX_DEPTH``, ``MAX_CONDITIONS`` leaves, ``MAX_LIST`` values per list,
``MAX_TEXT_CHARS`` per text to match.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from embedstream.schemas.storable import (
    INT64_MAX,
    INT64_MIN,
    describe,
    metadata_key_problem,
    text_problem,
)

Scalar: TypeAlias = str | int | float | bool
Loc: TypeAlias = tuple[str | int, ...]

EQUALITY: Final = ("$eq", "$ne")
ORDER: Final = ("$gt", "$gte", "$lt", "$lte")
MEMBERSHIP: Final = ("$in", "$nin")
OPERATORS: Final = (*EQUALITY, *ORDER, *MEMBERSHIP)
LOGICAL: Final = ("$and", "$or")
TEXT_OPERATORS: Final = ("$contains", "$not_contains")

#: the chunk metadata key that holds the tenant (``embedstream.adapters.chroma.TENANT``)
TENANT_KEY: Final = "tenant"
#: embedstream's own chunk metadata keys (``embedstream.adapters.chroma.chunk_metadata``)
RESERVED_KEYS: Final = frozenset(
    {TENANT_KEY, "document_id", "chunk_index", "version", "job_id", "content_hash"}
)

MAX_DEPTH: Final = 6
MAX_CONDITIONS: Final = 64
MAX_LIST: Final = 100
MAX_TEXT_CHARS: Final = 1_000

Operator = Literal["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"]


class FilterError(ValueError):
    """A filter that is refused; ``loc`` is the path of the offending part."""

    def __init__(self, loc: Loc, message: str, kind: str = "invalid_filter") -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.kind = kind

    @property
    def field(self) -> str:
        return ".".join(str(part) for part in self.loc)


@dataclass(frozen=True)
class Compare:
    """``key <op> value``; ``value`` is a tuple for ``$in``/``$nin``."""

    key: str
    op: Operator
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True)
class TextMatch:
    """The chunk text contains (or, ``negate``, does not contain) ``text``."""

    text: str
    negate: bool = False


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Node, ...]


Node: TypeAlias = Compare | TextMatch | AllOf | AnyOf
Where: TypeAlias = Compare | AllOf | AnyOf
WhereDocument: TypeAlias = TextMatch | AllOf | AnyOf


def _kind(value: object) -> str | None:
    """'string', 'number' or 'boolean' for a metadata scalar; None otherwise."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


class _Parser:
    def __init__(self) -> None:
        self.conditions = 0

    def count(self, loc: Loc) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise FilterError(
                loc,
                f"too many conditions: a filter holds at most {MAX_CONDITIONS}",
                "filter_too_large",
            )

    def branches(self, raw: object, loc: Loc, depth: int) -> list[tuple[object, Loc]]:
        """The items of a ``$and``/``$or`` list, checked for shape and size."""
        if not isinstance(raw, list):
            raise FilterError(loc, f"{loc[-1]} takes a list of filters (got {describe(raw)})")
        if not raw:
            raise FilterError(loc, f"{loc[-1]} needs at least one filter")
        if len(raw) > MAX_LIST:
            raise FilterError(
                loc, f"{loc[-1]} holds at most {MAX_LIST} filters", "filter_too_large"
            )
        if depth >= MAX_DEPTH:
            raise FilterError(
                loc, f"filters nest at most {MAX_DEPTH} levels deep", "filter_too_deep"
            )
        return [(item, (*loc, index)) for index, item in enumerate(raw)]

    # -- where ---------------------------------------------------------------------------

    def where(self, raw: object, loc: Loc, depth: int = 0) -> Where:
        if not isinstance(raw, dict):
            raise FilterError(
                loc,
                "a filter is an object of metadata keys (or $and/$or) to conditions "
                f"(got {describe(raw)})",
            )
        if not raw:
            raise FilterError(loc, "a filter needs at least one condition")
        parts: list[Where] = []
        for key, value in raw.items():
            here = (*loc, key)
            if key in LOGICAL:
                branches = self.branches(value, here, depth)
                items = [self.where(item, at, depth + 1) for item, at in branches]
                parts.append(_combine(key, items))
            elif key.startswith("$"):
                raise FilterError(
                    here,
                    f"unknown operator {key[:40]!r} here: a filter's keys are metadata keys "
                    "or $and/$or",
                    "unknown_operator",
                )
            else:
                parts.extend(self.conditions_on(key, value, here))
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def conditions_on(self, key: str, raw: object, loc: Loc) -> list[Where]:
        if (problem := metadata_key_problem(key)) is not None:
            raise FilterError(loc, f"metadata key {problem}", "invalid_key")
        if key in RESERVED_KEYS:
            raise FilterError(
                loc,
                f"{key!r} is set by embedstream and cannot be filtered on (the tenant is "
                f"always the caller's; reserved: {', '.join(sorted(RESERVED_KEYS))})",
                "reserved_key",
            )
        if not isinstance(raw, dict):
            self.count(loc)
            if _kind(raw) is None:
                raise FilterError(
                    loc,
                    "a condition is a value (string, number or boolean) or an object of "
                    f'operators such as {{"$gte": 2}} (got {describe(raw)})',
                    "invalid_value",
                )
            return [Compare(key, "$eq", self.scalar(raw, loc, "$eq"))]
        if not raw:
            raise FilterError(loc, f"an operator object needs an operator ({', '.join(OPERATORS)})")
        found: list[Where] = []
        for op, value in raw.items():
            here = (*loc, op)
            self.count(here)
            if op in MEMBERSHIP:
                found.append(Compare(key, op, self.members(value, here, op)))
            elif op in OPERATORS:
                found.append(Compare(key, op, self.scalar(value, here, op)))
            else:
                raise FilterError(
                    here,
                    f"unknown operator {op[:40]!r}: use one of {', '.join(OPERATORS)}",
                    "unknown_operator",
                )
        return found

    def scalar(self, value: object, loc: Loc, op: str) -> Scalar:
        kind = _kind(value)
        if kind is None:
            raise FilterError(
                loc,
                f"{op} takes a string, number or boolean (got {describe(value)})",
                "invalid_value",
            )
        if op in ORDER and kind != "number":
            raise FilterError(loc, f"{op} compares numbers (got a {kind})", "invalid_value")
        if isinstance(value, str):
            if (problem := text_problem(value)) is not None:
                raise FilterError(loc, f"the value {problem}", "invalid_value")
        elif isinstance(value, float) and not math.isfinite(value):
            raise FilterError(loc, "numbers must be finite", "invalid_value")
        elif isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise FilterError(loc, "integers must fit in 64 bits", "invalid_value")
        assert isinstance(value, str | int | float)  # bool is an int
        return value

    def members(self, raw: object, loc: Loc, op: str) -> tuple[Scalar, ...]:
        if not isinstance(raw, list) or not raw:
            raise FilterError(
                loc, f"{op} takes a non-empty list of values (got {describe(raw)})", "invalid_value"
            )
        if len(raw) > MAX_LIST:
            raise FilterError(loc, f"{op} takes at most {MAX_LIST} values", "filter_too_large")
        return tuple(self.scalar(item, (*loc, n), "$eq") for n, item in enumerate(raw))

    # -- where_document ------------------------------------------------------------------

    def where_document(self, raw: object, loc: Loc, depth: int = 0) -> WhereDocument:
        if not isinstance(raw, dict):
            raise FilterError(
                loc,
                'a document filter is an object: {"$contains": "text"}, '
                f'{{"$not_contains": "text"}}, $and or $or (got {describe(raw)})',
            )
        if not raw:
            raise FilterError(loc, "a document filter needs at least one condition")
        parts: list[WhereDocument] = []
        for key, value in raw.items():
            here = (*loc, key)
            if key in LOGICAL:
                items = [
                    self.where_document(item, at, depth + 1)
                    for item, at in self.branches(value, here, depth)
                ]
                parts.append(_combine(key, items))
            elif key in TEXT_OPERATORS:
                self.count(here)
                parts.append(TextMatch(self.text(value, here, key), negate=key == "$not_contains"))
            else:
                raise FilterError(
                    here,
                    f"unknown operator {key[:40]!r}: use $contains, $not_contains, $and or $or",
                    "unknown_operator",
                )
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def text(self, value: object, loc: Loc, op: str) -> str:
        if not isinstance(value, str) or not value:
            raise FilterError(
                loc, f"{op} takes a non-empty string (got {describe(value)})", "invalid_value"
            )
        if len(value) > MAX_TEXT_CHARS:
            raise FilterError(
                loc, f"{op} takes at most {MAX_TEXT_CHARS} characters", "invalid_value"
            )
        if (problem := text_problem(value)) is not None:
            raise FilterError(loc, f"the text {problem}", "invalid_value")
        return value


def _combine(key: str, items: Sequence[Any]) -> Any:
    if len(items) == 1:
        return items[0]
    return AllOf(tuple(items)) if key == "$and" else AnyOf(tuple(items))


def parse_where(raw: Mapping[str, Any] | None, loc: Loc = ("where",)) -> Where | None:
    """The metadata filter as a tree; None for no filter (absent or ``{}``)."""
    if raw is None or (isinstance(raw, dict) and not raw):
        return None
    return _Parser().where(raw, loc)


def parse_where_document(
    raw: Mapping[str, Any] | None, loc: Loc = ("where_document",)
) -> WhereDocument | None:
    """The chunk text filter as a tree; None for no filter (absent or ``{}``)."""
    if raw is None or (isinstance(raw, dict) and not raw):
        return None
    return _Parser().where_document(raw, loc)


# -- Chroma ----------------------------------------------------------------------------


def to_chroma(node: Node) -> dict[str, Any]:
    """The filter as a Chroma ``where``. Chroma wants exactly one key per object, at
    least two items under ``$and``/``$or`` and one kind of value per ``$in`` list (where
    an int and a float are two kinds); and it compares an integer it stores with a
    fractional filter value truncated toward zero (``2 < 2.5`` is false to it). What
    ``parse_where`` allows is rewritten into that form with the grammar's meaning
    (``chroma_compare``)."""
    if isinstance(node, AllOf | AnyOf):
        parts = [to_chroma(part) for part in node.parts]
        return _join("$and" if isinstance(node, AllOf) else "$or", parts)
    if isinstance(node, TextMatch):
        raise TypeError("a text condition is not a metadata filter")
    if isinstance(node.value, tuple):
        return _chroma_members(node.key, node.op, node.value)
    return chroma_compare(node.key, node.op, node.value)


def _join(op: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return parts[0] if len(parts) == 1 else {op: parts}


def _fractional(value: Scalar) -> bool:
    return isinstance(value, float) and not value.is_integer()


def chroma_compare(key: str, op: str, value: Scalar) -> dict[str, Any]:
    """``key op value`` for Chroma. A fractional ``value`` (f < value < f + 1) also gets
    integer bounds, which Chroma applies exactly to both integers and floats: each
    rewrite is the same condition for a float, and the right one for an integer (which
    is below ``value`` iff it is at most f, above it iff at least f + 1, never equal)."""
    if not _fractional(value):
        return {key: {op: value}}
    assert isinstance(value, float)
    low, high = math.floor(value), math.ceil(value)

    def cond(operator: str, bound: Scalar) -> dict[str, Any]:
        return {key: {operator: bound}}

    rewrites = {
        "$lt": ("$or", [cond("$lt", value), cond("$lte", low)]),
        "$lte": ("$and", [cond("$lte", value), cond("$lt", high)]),
        "$gt": ("$or", [cond("$gt", value), cond("$gte", high)]),
        "$gte": ("$and", [cond("$gte", value), cond("$gt", low)]),
        "$eq": ("$and", [cond("$eq", value), cond("$gt", low), cond("$lt", high)]),
        "$ne": ("$or", [cond("$ne", value), cond("$lte", low), cond("$gte", high)]),
    }
    joiner, parts = rewrites[op]
    return {joiner: parts}


def _chroma_members(key: str, op: str, values: tuple[Scalar, ...]) -> dict[str, Any]:
    """``$in``/``$nin`` for Chroma: one list per Python type (integral floats become
    integers where they fit), fractional floats as ``$eq``/``$ne`` each."""
    groups: dict[type, list[Scalar]] = {}
    fractional: list[Scalar] = []
    for value in values:
        if _fractional(value):
            fractional.append(value)
        elif isinstance(value, float) and INT64_MIN <= value <= INT64_MAX:
            groups.setdefault(int, []).append(int(value))
        else:
            groups.setdefault(type(value), []).append(value)
    single = "$eq" if op == "$in" else "$ne"
    parts = [{key: {op: items}} for items in groups.values()]
    parts.extend(chroma_compare(key, single, value) for value in fractional)
    return _join("$or" if op == "$in" else "$and", parts)


def with_tenant(tenant_key: str, tenant: str, node: Where | None) -> dict[str, Any]:
    """The Chroma ``where`` of a search: the caller's tenant AND the caller's filter."""
    own = {tenant_key: {"$eq": tenant}}
    return own if node is None else {"$and": [own, to_chroma(node)]}
