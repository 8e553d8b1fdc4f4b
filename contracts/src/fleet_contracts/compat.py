"""Backward-compatibility check between a committed JSON Schema and the current one.

The question asked: can a consumer on the *current* contract still read every message the *committed*
contract allowed? Replays, dead-letter re-drives and lagging producers all put old messages in front of new
code, and our models forbid unknown keys, so these break it:

- removed field: old messages carry it and the new model rejects it as an unknown key;
- retyped field: a value of the old type no longer validates;
- new required field: old messages lack it;
- narrowed enum: an old value is no longer allowed.

Adding an optional field, widening a type (`str` -> `str | None`) or adding enum values are compatible.
Length/range constraints are not compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

Schema = Mapping[str, Any]


class ChangeKind(StrEnum):
    REMOVED_FIELD = "removed field"
    RETYPED_FIELD = "retyped field"
    NEW_REQUIRED_FIELD = "new required field"
    NARROWED_ENUM = "narrowed enum"


@dataclass(frozen=True)
class Incompatibility:
    kind: ChangeKind
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.path or '<root>'}: {self.detail}"


_ANY = "any"


def incompatibilities(old: Schema, new: Schema) -> list[Incompatibility]:
    """Backward-incompatible changes from `old` to `new` (both whole JSON Schema documents)."""
    found: list[Incompatibility] = []
    _compare(_Side(old, old), _Side(new, new), "", found, set())
    return found


@dataclass(frozen=True)
class _Side:
    node: Schema
    root: Schema

    def resolve(self) -> _Side:
        node, seen = self.node, set[str]()
        while "$ref" in node:
            ref = str(node["$ref"])
            if ref in seen or not ref.startswith("#/"):
                raise ValueError(f"cannot resolve $ref {ref!r}")
            seen.add(ref)
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            # Keywords beside $ref (e.g. a description) do not change what validates.
            node = target
        return _Side(node, self.root)

    def branches(self) -> list[_Side]:
        side = self.resolve()
        alternatives = side.node.get("anyOf") or side.node.get("oneOf")
        if not alternatives:
            return [side]
        out: list[_Side] = []
        for alt in alternatives:
            out.extend(_Side(alt, self.root).branches())
        return out


def _types_of(side: _Side) -> set[str]:
    node = side.node
    if "const" in node:
        return {_json_type(node["const"])}
    if "enum" in node:
        return {_json_type(v) for v in node["enum"]}
    declared = node.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {str(t) for t in declared}
    if "properties" in node or "additionalProperties" in node:
        return {"object"}
    if "items" in node:
        return {"array"}
    return {_ANY}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_set(branches: list[_Side]) -> set[str]:
    types: set[str] = set()
    for branch in branches:
        types |= _types_of(branch)
    return types


def _allowed_values(branches: list[_Side]) -> set[bytes] | None:
    """The finite set of allowed values (JSON-encoded), or None when some branch is not an enumeration."""
    values: set[bytes] = set()
    for branch in branches:
        node = branch.node
        if "const" in node:
            values.add(orjson.dumps(node["const"]))
        elif "enum" in node:
            values.update(orjson.dumps(v) for v in node["enum"])
        elif node.get("type") == "null":
            values.add(b"null")
        else:
            return None
    return values


def _compare(
    old: _Side, new: _Side, path: str, found: list[Incompatibility], seen: set[tuple[int, int]]
) -> None:
    old_branches, new_branches = old.branches(), new.branches()
    pair = (id(old.resolve().node), id(new.resolve().node))
    if pair in seen:  # recursive schemas
        return
    seen = seen | {pair}

    old_types, new_types = _type_set(old_branches), _type_set(new_branches)
    if _ANY not in new_types:
        lost = old_types - new_types
        if "number" in new_types:
            lost.discard("integer")
        if lost or _ANY in old_types:
            found.append(
                Incompatibility(
                    ChangeKind.RETYPED_FIELD, path, f"was {sorted(old_types)}, now {sorted(new_types)}"
                )
            )
            return

    new_values = _allowed_values(new_branches)
    if new_values is not None:
        old_values = _allowed_values(old_branches)
        if old_values is None:
            found.append(
                Incompatibility(ChangeKind.NARROWED_ENUM, path, "an open value became an enumeration")
            )
        elif dropped := old_values - new_values:
            found.append(
                Incompatibility(ChangeKind.NARROWED_ENUM, path, f"values no longer allowed: {_show(dropped)}")
            )

    old_obj, new_obj = _single(old_branches, "object"), _single(new_branches, "object")
    if old_obj is not None and new_obj is not None:
        _compare_objects(old_obj, new_obj, path, found, seen)
    old_arr, new_arr = _single(old_branches, "array"), _single(new_branches, "array")
    if old_arr is not None and new_arr is not None:
        old_items, new_items = old_arr.node.get("items"), new_arr.node.get("items")
        if isinstance(old_items, Mapping) and isinstance(new_items, Mapping):
            _compare(_Side(old_items, old.root), _Side(new_items, new.root), f"{path}[]", found, seen)


def _compare_objects(
    old: _Side, new: _Side, path: str, found: list[Incompatibility], seen: set[tuple[int, int]]
) -> None:
    old_props: Mapping[str, Any] = old.node.get("properties", {})
    new_props: Mapping[str, Any] = new.node.get("properties", {})
    old_required = set(old.node.get("required", []))
    prefix = f"{path}." if path else ""
    for name in old_props:
        if name not in new_props:
            found.append(Incompatibility(ChangeKind.REMOVED_FIELD, prefix + name, "field no longer exists"))
    for name in new.node.get("required", []):
        if name not in old_required:
            detail = "was optional" if name in old_props else "did not exist"
            found.append(Incompatibility(ChangeKind.NEW_REQUIRED_FIELD, prefix + name, detail))
    for name, old_prop in old_props.items():
        if name in new_props:
            _compare(_Side(old_prop, old.root), _Side(new_props[name], new.root), prefix + name, found, seen)
    old_extra, new_extra = old.node.get("additionalProperties"), new.node.get("additionalProperties")
    if isinstance(old_extra, Mapping):
        if isinstance(new_extra, Mapping):
            _compare(_Side(old_extra, old.root), _Side(new_extra, new.root), f"{prefix}*", found, seen)
        elif new_extra is False:
            found.append(
                Incompatibility(ChangeKind.REMOVED_FIELD, f"{prefix}*", "free-form keys no longer allowed")
            )


def _single(branches: list[_Side], json_type: str) -> _Side | None:
    matching = [b for b in branches if json_type in _types_of(b)]
    return matching[0] if len(matching) == 1 else None


def _show(values: set[bytes]) -> str:
    return ", ".join(sorted(v.decode() for v in values))
