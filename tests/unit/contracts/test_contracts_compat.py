"""The compatibility checker catches each kind of backward-incompatible change (synthetic schemas)."""

from __future__ import annotations

import copy
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from fleet_contracts import export
from fleet_contracts.compat import ChangeKind, Incompatibility, incompatibilities

pytestmark = pytest.mark.unit


def obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or [], "additionalProperties": False}


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
NULLABLE_STR = {"anyOf": [STR, {"type": "null"}]}


def kinds(found: list[Incompatibility]) -> list[tuple[ChangeKind, str]]:
    return [(f.kind, f.path) for f in found]


def test_identical_schemas_are_compatible() -> None:
    schema = obj(["a"], a=STR, b=INT)
    assert incompatibilities(schema, copy.deepcopy(schema)) == []


def test_new_optional_field_is_compatible() -> None:
    assert incompatibilities(obj(["a"], a=STR), obj(["a"], a=STR, b=INT)) == []


def test_removed_field() -> None:
    assert kinds(incompatibilities(obj(["a"], a=STR, b=INT), obj(["a"], a=STR))) == [
        (ChangeKind.REMOVED_FIELD, "b")
    ]


def test_retyped_field() -> None:
    found = incompatibilities(obj(["a"], a=STR), obj(["a"], a=INT))
    assert kinds(found) == [(ChangeKind.RETYPED_FIELD, "a")]
    assert "string" in found[0].detail
    assert "integer" in found[0].detail


def test_integer_to_number_widens_but_number_to_integer_narrows() -> None:
    assert incompatibilities(obj(a=INT), obj(a=NUM)) == []
    assert kinds(incompatibilities(obj(a=NUM), obj(a=INT))) == [(ChangeKind.RETYPED_FIELD, "a")]


def test_making_a_field_nullable_is_compatible_but_not_the_reverse() -> None:
    assert incompatibilities(obj(a=STR), obj(a=NULLABLE_STR)) == []
    assert kinds(incompatibilities(obj(a=NULLABLE_STR), obj(a=STR))) == [(ChangeKind.RETYPED_FIELD, "a")]


def test_typing_a_free_form_value_is_a_retype() -> None:
    assert kinds(incompatibilities(obj(a={}), obj(a=STR))) == [(ChangeKind.RETYPED_FIELD, "a")]
    assert incompatibilities(obj(a=STR), obj(a={})) == []


def test_new_required_field() -> None:
    assert kinds(incompatibilities(obj(["a"], a=STR), obj(["a", "b"], a=STR, b=INT))) == [
        (ChangeKind.NEW_REQUIRED_FIELD, "b")
    ]


def test_optional_field_becoming_required() -> None:
    found = incompatibilities(obj([], a=STR), obj(["a"], a=STR))
    assert kinds(found) == [(ChangeKind.NEW_REQUIRED_FIELD, "a")]
    assert found[0].detail == "was optional"


def test_narrowed_enum() -> None:
    old = obj(a={"type": "string", "enum": ["x", "y", "z"]})
    new = obj(a={"type": "string", "enum": ["x", "y"]})
    found = incompatibilities(old, new)
    assert kinds(found) == [(ChangeKind.NARROWED_ENUM, "a")]
    assert '"z"' in found[0].detail


def test_widened_enum_is_compatible() -> None:
    old = obj(a={"enum": [0, 1]})
    new = obj(a={"enum": [0, 1, 2]})
    assert incompatibilities(old, new) == []


def test_an_open_string_becoming_an_enum_is_narrowing() -> None:
    assert kinds(incompatibilities(obj(a=STR), obj(a={"type": "string", "enum": ["x"]}))) == [
        (ChangeKind.NARROWED_ENUM, "a")
    ]


def test_a_changed_const_is_narrowing() -> None:
    found = incompatibilities(
        obj(a={"const": "v1", "type": "string"}), obj(a={"const": "v2", "type": "string"})
    )
    assert kinds(found) == [(ChangeKind.NARROWED_ENUM, "a")]


def test_changes_are_found_through_refs_arrays_and_maps() -> None:
    old = {
        "$defs": {
            "Dp": obj(["code"], code=STR, kind={"$ref": "#/$defs/Kind"}),
            "Kind": {"type": "string", "enum": ["bool", "enum", "raw"]},
        },
        **obj(
            ["data"],
            data=obj(
                ["dps"],
                dps={"type": "array", "items": {"$ref": "#/$defs/Dp"}},
                counts={"additionalProperties": INT, "type": "object"},
            ),
        ),
    }
    new = copy.deepcopy(old)
    new["$defs"]["Kind"]["enum"] = ["bool", "enum"]
    new["$defs"]["Dp"]["properties"]["code"] = INT
    new["properties"]["data"]["properties"]["counts"]["additionalProperties"] = STR
    assert sorted(kinds(incompatibilities(old, new))) == sorted(
        [
            (ChangeKind.RETYPED_FIELD, "data.dps[].code"),
            (ChangeKind.NARROWED_ENUM, "data.dps[].kind"),
            (ChangeKind.RETYPED_FIELD, "data.counts.*"),
        ]
    )


def test_recursive_schemas_terminate() -> None:
    tree = {
        "$defs": {"Node": obj(children={"type": "array", "items": {"$ref": "#/$defs/Node"}})},
        "$ref": "#/$defs/Node",
    }
    assert incompatibilities(tree, copy.deepcopy(tree)) == []


def test_unresolvable_refs_are_errors() -> None:
    with pytest.raises(ValueError, match="cannot resolve"):
        incompatibilities(obj(a={"$ref": "other.json#/X"}), obj(a=STR))


# The same rules on schemas pydantic generates (optional enums in $defs, anyOf with null, nesting).


class Cause(StrEnum):
    A = "a"
    B = "b"


class CauseV2(StrEnum):
    A = "a"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Inner(_M):
    code: str


class InnerV2(_M):
    code: int


class V1(_M):
    inner: Inner
    cause: Cause | None = None
    note: str | None = None
    count: int = 0


class V2Removed(_M):
    inner: Inner
    cause: Cause | None = None
    count: int = 0


class V2Narrowed(_M):
    inner: Inner
    cause: CauseV2 | None = None
    note: str | None = None
    count: int = 0


class V2Required(_M):
    inner: Inner
    cause: Cause | None = None
    note: str | None = None
    count: int = 0
    region: str


class V2Retyped(_M):
    inner: InnerV2
    cause: Cause | None = None
    note: str | None = None
    count: int = 0


class V2Compatible(_M):
    inner: Inner
    cause: Cause | str | None = None
    note: str | None = None
    count: float = 0
    extra_optional: list[int] = []


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (V2Removed, [(ChangeKind.REMOVED_FIELD, "note")]),
        (V2Narrowed, [(ChangeKind.NARROWED_ENUM, "cause")]),
        (V2Required, [(ChangeKind.NEW_REQUIRED_FIELD, "region")]),
        (V2Retyped, [(ChangeKind.RETYPED_FIELD, "inner.code")]),
        (V2Compatible, []),
    ],
)
def test_pydantic_generated_schemas(new: type[BaseModel], expected: list[tuple[ChangeKind, str]]) -> None:
    assert kinds(incompatibilities(V1.model_json_schema(), new.model_json_schema())) == expected


CURRENT = export.event_schemas()


@given(event_type=st.sampled_from(sorted(CURRENT)), other=st.sampled_from(sorted(CURRENT)))
def test_real_contracts_are_compatible_with_themselves_and_flag_swaps(event_type: str, other: str) -> None:
    assert incompatibilities(CURRENT[event_type], CURRENT[event_type]) == []
    if other != event_type:
        # A different event type is never a compatible replacement: at least its `type` const changed.
        assert (ChangeKind.NARROWED_ENUM, "type") in kinds(
            incompatibilities(CURRENT[event_type], CURRENT[other])
        )


@given(
    props=st.dictionaries(
        st.from_regex(r"[a-z]{1,6}", fullmatch=True),
        st.sampled_from([STR, INT, NUM, NULLABLE_STR, {"enum": ["x", "y"]}]),
        min_size=1,
        max_size=6,
    ),
    data=st.data(),
)
def test_dropping_any_property_is_flagged(props: dict[str, Any], data: st.DataObject) -> None:
    victim = data.draw(st.sampled_from(sorted(props)))
    old = obj(sorted(props), **props)
    remaining = {k: v for k, v in props.items() if k != victim}
    new = obj(sorted(remaining), **remaining)
    assert (ChangeKind.REMOVED_FIELD, victim) in kinds(incompatibilities(old, new))
    assert all(kind is ChangeKind.REMOVED_FIELD for kind, _ in kinds(incompatibilities(old, new)))
