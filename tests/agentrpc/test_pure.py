"""Pure cores of the agent RPC capability: manifest conversion, lifecycle reporter, metadata
scheduling, app-health state machine, version text, log sanitizing. No event loop."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from google.protobuf import duration_pb2

from coder_agent.agentrpc import apphealth, metadata
from coder_agent.agentrpc.logs import sanitize
from coder_agent.agentrpc.manifest import (
    REDACTED,
    convert,
    expand_directory,
    metadata_seconds,
    redacted,
)
from coder_agent.agentrpc.reporter import LifecycleReporter
from coder_agent.agentrpc.session import semver_version, subsystems_from_env
from coder_agent.devserver.rpc import _SEMVER
from coder_agent.errors import ProtocolError
from coder_agent.lifecycle import Lifecycle, State
from coder_agent.rpc.proto import agent_pb2

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
U = [uuid.uuid4() for _ in range(6)]


def _manifest() -> agent_pb2.Manifest:
    m = agent_pb2.Manifest(agent_id=U[0].bytes, workspace_id=U[1].bytes, agent_name="main", owner_username="alice",
                           workspace_name="ws", directory="$PROJ/src")
    m.environment_variables["PROJ"] = "~/proj"
    m.environment_variables["API_KEY"] = "hunter2"
    m.apps.append(agent_pb2.WorkspaceApp(
        id=U[2].bytes, slug="web", display_name="Web", health=agent_pb2.WorkspaceApp.INITIALIZING,
        healthcheck=agent_pb2.WorkspaceApp.Healthcheck(url="http://x/", interval=duration_pb2.Duration(seconds=2),
                                                       threshold=3)))
    m.scripts.append(agent_pb2.WorkspaceAgentScript(
        id=U[3].bytes, log_source_id=U[4].bytes, display_name="setup", script="echo hi", run_on_start=True,
        timeout=duration_pb2.Duration(seconds=90)))
    m.scripts.append(agent_pb2.WorkspaceAgentScript(log_source_id=U[4].bytes, script="old server, no id"))
    # coderd's quirk: 5 s interval, 2 s timeout sent as 5 and 2 nanoseconds.
    m.metadata.append(agent_pb2.WorkspaceAgentMetadata.Description(
        key="load", script="uptime", interval=duration_pb2.Duration(nanos=5), timeout=duration_pb2.Duration(nanos=2)))
    m.devcontainers.append(agent_pb2.WorkspaceAgentDevcontainer(id=U[5].bytes, workspace_folder="/w",
                                                                 config_path="/w/.devcontainer.json", name="dc"))
    m.secrets.append(agent_pb2.WorkspaceSecret(env_name="GH_TOKEN", value=b"s3cret"))
    return m


def test_manifest_conversion() -> None:
    c = convert(_manifest(), env={"HOME": "/home/alice"}, home="/home/alice")
    m = c.manifest
    assert m["agent_id"] == str(U[0]) and m["workspace_id"] == str(U[1])
    assert m["owner"] == "alice" and m["agent_name"] == "main"
    # $PROJ from the manifest env, then ~ → home
    assert m["directory"] == "/home/alice/proj/src"
    app = m["apps"][0]
    assert app["id"] == str(U[2]) and app["health"] == "initializing"
    assert app["healthcheck"] == {"url": "http://x/", "interval": 2.0, "threshold": 3}
    s0, s1 = m["scripts"]
    assert s0["id"] == str(U[3]) and s0["log_source_id"] == str(U[4]) and s0["timeout"] == 90.0
    assert s1["id"] == ""  # tolerated: old servers send no script id
    assert m["metadata"] == [{"key": "load", "display_name": "", "script": "uptime", "interval": 5, "timeout": 2}]
    assert m["devcontainers"][0]["workspace_folder"] == "/w" and m["devcontainers"][0]["id"] == str(U[5])
    assert m["secrets"] == [{"env_name": "GH_TOKEN", "file_path": ""}]
    assert "s3cret" not in repr(m)
    assert c.secrets[0]["value"] == b"s3cret"
    from coder_agent.childenv import agent_variables

    env = agent_variables({}, manifest=m, secrets=c.secrets)
    assert env["GH_TOKEN"] == "s3cret" and env["CODER"] == "true" and env["CODER_WORKSPACE_OWNER_NAME"] == "alice"
    assert "CODER_AGENT_TOKEN" not in env
    shown = redacted(m)
    assert shown["environment"] == {"PROJ": REDACTED, "API_KEY": REDACTED}
    assert m["environment"]["API_KEY"] == "hunter2"  # the original is untouched


@pytest.mark.parametrize("raw", [b"", bytes(16), b"short"])
def test_agent_id_must_be_a_real_uuid(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        convert(agent_pb2.Manifest(agent_id=raw), env={}, home="/h")


@pytest.mark.parametrize(("raw", "want"), [
    ("", ""), ("  ", ""), ("$UNSET", "/h"), ("~", "/h"), ("~/a", "/h/a"), ("rel/x", "/h/rel/x"), ("/abs/./y", "/abs/y"),
    ("$UNSET/x", "/x"), ("${A}/b", "/va/b"), ("$A", "/va"),
])
def test_expand_directory(raw: str, want: str) -> None:
    assert expand_directory(raw, {"A": "/va"}, "/h") == want


def test_metadata_durations_are_seconds_in_the_nanos() -> None:
    assert metadata_seconds(duration_pb2.Duration(nanos=5)) == 5
    assert metadata_seconds(duration_pb2.Duration(seconds=1, nanos=7)) == 1_000_000_007


def test_reporter_forward_only_and_replay_in_order() -> None:
    r = LifecycleReporter(Lifecycle())
    assert r.next_unsent() is None  # CREATED is never sent
    assert r.set(State.STARTING, T0)
    assert r.set(State.READY, T0 + dt.timedelta(seconds=1))
    assert not r.set(State.STARTING, T0)  # backwards: dropped, like setLifecycle
    assert not r.set(State.START_ERROR, T0)  # READY → START_ERROR is not in the table
    # nothing acknowledged (connection dropped): both replay, oldest first, with their times
    assert r.next_unsent() == (State.STARTING, T0)
    r.ack(State.STARTING)
    assert r.next_unsent() == (State.READY, T0 + dt.timedelta(seconds=1))
    r.ack(State.READY)
    assert r.settled and r.acknowledged == [State.STARTING, State.READY]
    assert r.set(State.SHUTTING_DOWN, T0) and r.set(State.OFF, T0)
    assert not r.set(State.SHUTDOWN_ERROR, T0)


def test_metadata_scheduler() -> None:
    s = metadata.MetadataScheduler([{"key": "a", "script": "x", "interval": 5},
                                    {"key": "once", "script": "y", "interval": 0},
                                    {"key": "t", "script": "z", "interval": 0, "timeout": 2}], tick=1.0)
    assert s.due(0) == ["a", "once", "t"] and s.next_due() == 0.0
    for k in ("a", "once", "t"):
        s.started(k, 0)
    assert s.due(10) == []  # all in flight: at most one collection per key
    assert s.next_due() is None  # nothing falls due until a result arrives
    r = metadata.Result("x\n", "", T0)
    s.finished("a", r)
    s.finished("once", r)
    assert s.due(4.9) == [] and s.due(5) == ["a"]  # interval 0: collected once only
    assert s.next_due() == 5  # the runner sleeps until then: no fixed tick
    assert s.has_new
    assert set(s.take_report()) == {"a", "once"} and s.take_report() == {}
    assert s.timeout_for("a") == 5 and s.timeout_for("t") == 2 and s.timeout_for("once") == 3
    req = metadata.report_request({"a": r})
    assert req.metadata[0].key == "a" and req.metadata[0].result.value == "x\n"
    # field 2 on the wire (tag 0x12), there is no field 1
    assert req.SerializeToString()[0] == 0x12


def test_metadata_output_truncated() -> None:
    value, err = metadata.truncate(b"x" * (metadata.MAX_OUTPUT + 5))
    assert len(value) == metadata.MAX_OUTPUT and "truncated" in err
    assert metadata.truncate(b"ok\n") == ("ok\n", "")


def test_app_health_state_machine() -> None:
    apps = [
        {"id": str(U[0]), "health": "initializing", "healthcheck": {"url": "http://x", "interval": 1, "threshold": 2}},
        {"id": str(U[1]), "health": "disabled", "healthcheck": {"url": "http://y", "interval": 1, "threshold": 2}},
        {"id": str(U[2]), "health": "initializing", "healthcheck": {"url": "", "interval": 0, "threshold": 0}},
    ]
    tr = apphealth.AppHealthTracker(apps)
    assert set(tr.health) == {str(U[0]), str(U[2])}  # disabled apps take no part
    (p,) = tr.probes  # only apps with url, interval and threshold are probed
    assert tr.take_report() is None
    tr.result(p, True)
    assert tr.take_report() == {str(U[0]): "healthy", str(U[2]): "initializing"}  # the full map
    for _ in range(2):  # threshold failures: still healthy
        tr.result(p, False)
    assert tr.take_report() is None
    tr.result(p, False)  # threshold + 1
    assert tr.take_report() == {str(U[0]): "unhealthy", str(U[2]): "initializing"}
    tr.result(p, True)
    assert tr.health[str(U[0])] == "healthy"


@pytest.mark.parametrize(("ours", "want"), [
    ("0.1.0", "v0.1.0"), ("1.2", "v1.2.0"), ("0.3.0.dev4", "v0.3.0-dev4"), ("2.0.0rc1", "v2.0.0-rc1"),
    ("0.1.0+local.x", "v0.1.0-local.x"), ("weird", "v0.0.0-weird"),
])
def test_semver_version_is_acceptable_to_coderd(ours: str, want: str) -> None:
    assert semver_version(ours) == want
    assert _SEMVER.match(want)


def test_subsystems_from_env() -> None:
    assert subsystems_from_env({"CODER_AGENT_SUBSYSTEM": "envbox, exectrace,bogus"}) == [
        agent_pb2.Startup.ENVBOX, agent_pb2.Startup.EXECTRACE]
    assert subsystems_from_env({}) == []


def test_sanitize_makes_proto_strings_valid() -> None:
    bad = b"ok \xff\xfe end\x00".decode("utf-8", "surrogateescape")
    out = sanitize(bad)
    assert out == "ok ❌❌ end❌"
    agent_pb2.Log(output=out).SerializeToString()  # would raise on lone surrogates
