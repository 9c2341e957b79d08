"""The pydantic models: codersdk wire models, the local API's own shapes, settings (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from coder_agent.coderapi import models
from coder_agent.config import ScriptConfig, Settings
from coder_agent.localapi import models as local


def test_wire_models_ignore_unknown_keys_and_accept_go_aliases() -> None:
    ev = models.ReinitializationEvent.model_validate({"workspaceID": "w", "reason": "prebuild_claimed", "new": 1})
    assert ev.workspace_id == "w" and ev.owner_id is None


def test_go_nanosecond_times_are_read_and_written_as_rfc3339_utc() -> None:
    c = models.WorkspaceAgentLogSource.model_validate(
        {"id": "i", "display_name": "d", "created_at": "2025-01-02T03:04:05.123456789Z"})
    assert c.created_at == dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    logs = models.PatchLogs(log_source_id="s", logs=[models.Log(created_at=dt.datetime(2025, 1, 2, tzinfo=dt.UTC),
                                                                  output="x")])
    assert logs.model_dump(mode="json")["logs"][0] == {"created_at": "2025-01-02T00:00:00Z", "output": "x",
                                                        "level": "info"}


@pytest.mark.parametrize(("data", "where"), [
    ({"public_key": "ssh-ed25519 AAAA", "private_key": 5}, "private_key: Input should be a valid string"),
    ({"public_key": "ssh-ed25519 AAAA"}, "private_key: Field required"),
    ([1, 2], "body: Input should be"),
])
def test_explain_names_the_field_in_one_line_without_the_value(data: Any, where: str) -> None:
    with pytest.raises(ValidationError) as ei:
        models.GitSSHKey.model_validate(data)
    text = models.explain(ei.value)
    assert text.startswith(where) and "\n" not in text and "AAAA" not in text


def test_settings_secrets_never_print() -> None:
    s = Settings.model_validate({"url": "http://x", "token": "s3cret-token", "headers": {"X-K": "hdr-s3cret"},
                                 "log_dir": "/l", "state_dir": "/s"})
    assert "s3cret" not in repr(s) and "s3cret" not in str(s) and "s3cret" not in str(s.model_dump())
    assert s.secret_values() == ["hdr-s3cret", "s3cret-token"]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a loaded machine is not a failure
@given(st.dictionaries(st.sampled_from(["display_name", "script", "timeout", "run_on_start", "cron", "junk"]),
                       st.one_of(st.none(), st.text(max_size=5), st.integers(), st.floats(), st.booleans(),
                                 st.lists(st.integers(), max_size=2)), max_size=6))
def test_any_script_table_validates_or_names_one_field(data: dict[str, Any]) -> None:
    try:
        ScriptConfig.model_validate(data)
    except ValidationError as e:
        assert "\n" not in models.explain(e)


def test_schemas_describe_fields_refs_and_required() -> None:
    top = models.WorkspaceAgentListContainersResponse.model_json_schema(ref_template="#/d/{model}")
    assert top["required"] == ["containers"]
    assert top["properties"]["containers"]["items"] == {"$ref": "#/d/WorkspaceAgentContainer"}
    dev = top["$defs"]["WorkspaceAgentDevcontainer"]["properties"]
    assert dev["status"]["enum"] == ["running", "stopped", "starting", "stopping", "deleting", "error"]
    assert {"$ref": "#/d/WorkspaceAgentContainer"} in dev["container"]["anyOf"]
    assert top["$defs"]["WorkspaceAgentContainer"]["properties"]["created_at"]["format"] == "date-time"
    req = local.LogsRequest.model_json_schema()
    assert req["properties"]["logs"]["minItems"] == 1 and set(req["required"]) == {"source", "logs"}
