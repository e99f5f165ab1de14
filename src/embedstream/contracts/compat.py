"""Is a new message schema still readable by consumers of a released one?

Consumers validate what they read with the models they were built with (``extra=
"forbid"``), so a change breaks them when a message the new schema allows is one the
released schema refuses, or when a field they read is gone:

- a property removed (a rename is a removal plus an addition);
- a required property made optional;
- a property added to an object that refuses unknown properties;
- a type widened (``integer`` -> ``number``, ``string`` -> ``string | null``), a ``const``
  or ``enum`` widened, or a bound loosened (``minimum``, ``maxLength``, ...).

A breaking change needs a new message type version (``*.v2``), produced next to the
released one until its consumers have moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Schema = Mapping[str, Any]

_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_MAX_DEPTH = 32
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


class _Walker:
    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.old_root, self.new_root = old_root, new_root
        self.problems: list[str] = []

    def resolve(self, schema: Schema, root: Schema) -> Schema:
        while "$ref" in schema:
            ref: str = schema["$ref"]
            if not ref.startswith("#/"):
                return schema
            node: Any = root
            for part in ref[2:].split("/"):
                node = node[part]
            schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def compare(self, old: Schema, new: Schema, path: str, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:  # a recursive model: deeper levels repeat what was checked
            return
        old, new = self.resolve(old, self.old_root), self.resolve(new, self.new_root)
        self._types(old, new, path)
        self._values(old, new, path)
        self._bounds(old, new, path)
        if "properties" in old or "properties" in new:
            self._object(old, new, path, depth)
        if "items" in old and "items" in new:
            self.compare(old["items"], new["items"], f"{path}[]", depth + 1)
        if isinstance(old.get("additionalProperties"), Mapping) and isinstance(
            new.get("additionalProperties"), Mapping
        ):
            self.compare(
                old["additionalProperties"], new["additionalProperties"], f"{path}{{}}", depth + 1
            )

    def types_of(self, schema: Schema, root: Schema) -> set[str] | None:
        schema = self.resolve(schema, root)
        if "anyOf" in schema or "oneOf" in schema:
            found: set[str] = set()
            for option in schema.get("anyOf", schema.get("oneOf", [])):
                types = self.types_of(option, root)
                if types is None:
                    return None
                found |= types
            return found
        declared = schema.get("type")
        if declared is None:
            return {"object"} if "properties" in schema else None
        return {declared} if isinstance(declared, str) else set(declared)

    def _types(self, old: Schema, new: Schema, path: str) -> None:
        old_types = self.types_of(old, self.old_root)
        new_types = self.types_of(new, self.new_root)
        if old_types is None:
            return
        if new_types is None:
            self.problems.append(f"{path}: type {sorted(old_types)} became unconstrained")
            return
        widened = {
            t for t in new_types - old_types if not (t == "integer" and "number" in old_types)
        }
        if widened:
            self.problems.append(
                f"{path}: type widened from {sorted(old_types)} to {sorted(new_types)}"
            )

    def _values(self, old: Schema, new: Schema, path: str) -> None:
        old_values = _allowed_values(old)
        if old_values is None:
            return
        new_values = _allowed_values(new)
        if new_values is None or not set(map(repr, new_values)) <= set(map(repr, old_values)):
            self.problems.append(
                f"{path}: allowed values widened from {old_values} to {new_values}"
            )

    def _bounds(self, old: Schema, new: Schema, path: str) -> None:
        for name in _LOWER_BOUNDS:
            if name in old and (name not in new or new[name] < old[name]):
                self.problems.append(f"{path}: {name} loosened ({old[name]} -> {new.get(name)})")
        for name in _UPPER_BOUNDS:
            if name in old and (name not in new or new[name] > old[name]):
                self.problems.append(f"{path}: {name} loosened ({old[name]} -> {new.get(name)})")

    def _object(self, old: Schema, new: Schema, path: str, depth: int) -> None:
        old_props: Mapping[str, Any] = old.get("properties", {})
        new_props: Mapping[str, Any] = new.get("properties", {})
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        for name, schema in old_props.items():
            where = f"{path}.{name}"
            if name not in new_props:
                self.problems.append(f"{where}: property removed")
                continue
            if name in old_required and name not in new_required:
                self.problems.append(f"{where}: no longer required")
            self.compare(schema, new_props[name], where, depth + 1)
        if old.get("additionalProperties") is False:
            for name in new_props.keys() - old_props.keys():
                self.problems.append(
                    f"{path}.{name}: property added to an object whose released schema "
                    "refuses unknown properties"
                )


def _allowed_values(schema: Schema) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def breaking_changes(released: Schema, current: Schema) -> list[str]:
    """What in ``current`` breaks consumers built for ``released`` (empty: compatible).
    Paths start at ``$`` (the message body)."""
    walker = _Walker(released, current)
    walker.compare(released, current, "$")
    return walker.problems


def check_released(
    released: Mapping[str, Schema], current: Mapping[str, Schema], version: str
) -> list[str]:
    """Breaking changes of ``current`` (type -> schema) against a released contract set;
    a released type that is no longer produced is one too."""
    problems: list[str] = []
    for name, schema in sorted(released.items()):
        if name not in current:
            problems.append(f"{name}: released in {version} but no longer produced")
            continue
        problems += [f"{name}: {p}" for p in breaking_changes(schema, current[name])]
    return problems
