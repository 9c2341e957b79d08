"""coder_agent.typed: decode, encode and describe dataclasses (pure)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coder_agent.coderapi import models
from coder_agent.typed import Invalid, Secret, decode, encode, json_schema, rules


@dataclass(kw_only=True)
class Inner:
    n: int
    tags: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Outer:
    FORBID_EXTRA: ClassVar[bool] = True
    name: str = field(metadata=rules(min_length=1))
    mode: Literal["a", "b"] = "a"
    ratio: float = field(default=1.0, metadata=rules(gt=0))
    count: int = field(default=0, metadata=rules(ge=0))
    when: dt.datetime | None = None
    where: Path | None = None
    secret: Secret | None = None
    inner: list[Inner] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    upper: str = field(default="", metadata=rules(before=lambda v: v.upper() if isinstance(v, str) else v))


def test_decodes_nested_values_with_lenient_text_conversions() -> None:
    o = decode(Outer, {"name": "x", "mode": "b", "ratio": "2.5", "count": "3", "when": "2025-01-02T03:04:05.123456789Z",
                       "where": "/tmp", "secret": "s3cret", "inner": [{"n": 1.0}, {"n": 2, "tags": ["t"]}],
                       "extra": {"k": [1]}, "upper": "abc"})
    assert o.mode == "b" and o.ratio == 2.5 and o.count == 3 and o.upper == "ABC"
    assert o.when == dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert o.where == Path("/tmp") and o.inner == [Inner(n=1), Inner(n=2, tags=["t"])]
    assert o.secret is not None and o.secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(o) and "s3cret" not in str(o.secret)


@pytest.mark.parametrize(("data", "loc", "fragment"), [
    ({}, ("name",), "required"),
    ({"name": ""}, ("name",), "at least 1 character"),
    ({"name": 5}, ("name",), "expected a string"),
    ({"name": "x", "mode": "c"}, ("mode",), "expected 'a' or 'b'"),
    ({"name": "x", "ratio": 0}, ("ratio",), "greater than 0"),
    ({"name": "x", "ratio": "nan"}, ("ratio",), "finite"),
    ({"name": "x", "count": -1}, ("count",), "greater than or equal to 0"),
    ({"name": "x", "count": True}, ("count",), "whole number"),
    ({"name": "x", "when": "yesterday"}, ("when",), "RFC 3339"),
    ({"name": "x", "inner": [{"n": 1}, {"tags": []}]}, ("inner", 1, "n"), "required"),
    ({"name": "x", "inner": {"n": 1}}, ("inner",), "expected a list"),
    ({"name": "x", "bogus": 1}, ("bogus",), "unknown key"),
    ("not a table", (), "expected an object"),
])
def test_errors_name_the_path_and_never_echo_the_value(data: Any, loc: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(Invalid) as ei:
        decode(Outer, data)
    assert ei.value.loc == loc
    assert fragment in ei.value.msg
    assert "yesterday" not in str(ei.value)


def test_wire_models_ignore_unknown_keys_and_accept_go_aliases() -> None:
    ev = decode(models.ReinitializationEvent, {"workspaceID": "w", "reason": "prebuild_claimed", "new": 1})
    assert ev.workspace_id == "w" and ev.owner_id is None


def test_encode_is_json_ready_and_round_trips() -> None:
    o = Outer(name="x", when=dt.datetime(2025, 1, 2, tzinfo=dt.UTC), where=Path("/p"), secret=Secret("k"),
              inner=[Inner(n=1)])
    data = encode(o)
    assert data["when"] == "2025-01-02T00:00:00Z" and data["where"] == "/p" and data["secret"] == "[REDACTED]"
    assert data["inner"] == [{"n": 1, "tags": []}] and data["extra"] == {}
    assert "FORBID_EXTRA" not in data
    data["secret"] = "k"
    assert decode(Outer, data) == o


@given(st.dictionaries(st.sampled_from(["name", "mode", "ratio", "count", "when", "inner", "junk"]),
                       st.one_of(st.none(), st.text(max_size=5), st.integers(), st.floats(), st.booleans(),
                                 st.lists(st.integers(), max_size=2)), max_size=6))
def test_any_input_decodes_or_raises_invalid(data: dict[str, Any]) -> None:
    try:
        decode(Outer, data)
    except Invalid as e:
        assert "\n" not in str(e)


def test_schema_describes_fields_refs_and_required() -> None:
    defs = json_schema([models.WorkspaceAgentListContainersResponse], "#/d/{model}")
    top = defs["WorkspaceAgentListContainersResponse"]
    assert top["required"] == ["containers"]
    assert top["properties"]["containers"] == {"type": "array", "items": {"$ref": "#/d/WorkspaceAgentContainer"}}
    dev = defs["WorkspaceAgentDevcontainer"]["properties"]
    assert dev["status"]["enum"] == ["running", "stopped", "starting", "stopping", "deleting", "error"]
    assert dev["container"] == {"anyOf": [{"$ref": "#/d/WorkspaceAgentContainer"}, {"type": "null"}]}
    assert defs["WorkspaceAgentContainer"]["properties"]["created_at"] == {"type": "string", "format": "date-time"}
    assert defs["WorkspaceAgentContainer"]["properties"]["labels"] == {
        "type": "object", "additionalProperties": {"type": "string"}}
