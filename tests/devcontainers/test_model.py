"""Inspect data → codersdk JSON, filters, and merging devcontainers (pure)."""

import datetime as dt
from typing import Any

import pytest

from coder_agent.coderapi.models import WorkspaceAgentContainer, WorkspaceAgentListContainersResponse
from coder_agent.devcontainers.model import (
    LabelFilterError,
    Runtime,
    Source,
    assemble,
    container_from_inspect,
    devcontainer_id,
    parse_docker_time,
    parse_label_filters,
    port_warnings,
)
from coder_agent.devcontainers.status import Status


def inspect(cid: str = "a" * 64, name: str = "/c1", running: bool = True,
            created: str = "2025-01-02T03:04:05.123456789Z", labels: dict[str, str] | None = None,
            exit_code: int = 0, error: str = "", ports: Any = None, status: str = "") -> dict[str, Any]:
    return {
        "Id": cid, "Name": name, "Created": created,
        "Config": {"Image": "local/busybox:latest", "Labels": labels or {}},
        "State": {"Running": running, "ExitCode": exit_code, "Error": error,
                  "Status": status or ("running" if running else "exited")},
        "Mounts": [{"Source": "/home/u/p", "Destination": "/workspaces/p"}],
        "NetworkSettings": {"Ports": ports or {}},
    }


def test_container_fields_match_the_schema() -> None:
    c = container_from_inspect(inspect(ports={"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"},
                                                           {"HostIp": "::", "HostPort": "32768"}],
                                              "9000/tcp": None}))
    assert c.name == "c1"
    m = WorkspaceAgentContainer.model_validate(c.api)
    assert m.ports[0].port == 8080 and m.ports[0].host_port == 32768 and len(m.ports) == 1
    assert m.volumes == {"/home/u/p": "/workspaces/p"}
    assert m.created_at == dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert m.status == "running"


@pytest.mark.parametrize(("code", "err", "state", "text"), [
    (0, "", "exited", "exited successfully"),
    (137, "", "exited", "exited with code 137"),
    (1, "oom", "exited", "exited with code 1: oom"),
    (0, "", "created", "created"),
])
def test_status_text(code: int, err: str, state: str, text: str) -> None:
    assert container_from_inspect(inspect(running=False, exit_code=code, error=err, status=state)).api["status"] == text


def test_docker_time_with_nanoseconds_and_garbage() -> None:
    assert parse_docker_time("2025-01-02T03:04:05.999999999Z").microsecond == 999999
    assert parse_docker_time("nonsense").year == 1970


def test_label_filters() -> None:
    assert parse_label_filters(["a=b", "c=d=e", "e="]) == {"a": "b", "c": "d=e", "e": ""}
    for bad in (["novalue"], ["=x"]):
        with pytest.raises(LabelFilterError):
            parse_label_filters(bad)


def test_port_warning_for_shared_host_port() -> None:
    p = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
    cs = [container_from_inspect(inspect("a" * 64, "/x", ports=p)),
          container_from_inspect(inspect("b" * 64, "/y", ports=p))]
    assert port_warnings(cs) == ["host port 8080/tcp is mapped to several containers: x, y"]


LF = "devcontainer.local_folder"
CF = "devcontainer.config_file"


def test_running_newest_container_wins_and_others_are_warned_about() -> None:
    labels = {LF: "/w/p", CF: "/w/p/.devcontainer/devcontainer.json"}
    old_running = container_from_inspect(inspect("1" * 64, "/old", True, "2025-01-01T00:00:00Z", labels))
    new_stopped = container_from_inspect(inspect("2" * 64, "/new", False, "2025-06-01T00:00:00Z", labels))
    newer_running = container_from_inspect(inspect("3" * 64, "/newer", True, "2025-03-01T00:00:00Z", labels))
    devs, warns = assemble([old_running, new_stopped, newer_running], [], {}, {}, exists=lambda p: True)
    assert len(devs) == 1
    assert devs[0].container is not None and devs[0].container.name == "newer"
    assert devs[0].status is Status.RUNNING
    assert len(warns) == 1 and "old" in warns[0] and "new" in warns[0]


def test_id_is_stable_and_test_runs_are_ignored() -> None:
    labels = {LF: "/w/p", CF: "/w/p/.devcontainer/devcontainer.json"}
    a = container_from_inspect(inspect("1" * 64, "/a", True, labels=labels))
    b = container_from_inspect(inspect("2" * 64, "/b", True, labels=labels))
    t = container_from_inspect(inspect("3" * 64, "/t", True, labels={LF: "/w/t", "devcontainer.is_test_run": "true"}))
    d1, _ = assemble([a, t], [], {}, {}, exists=lambda p: True)
    d2, _ = assemble([b], [], {}, {}, exists=lambda p: True)
    assert [d.id for d in d1] == [d.id for d in d2] == [devcontainer_id("/w/p", "/w/p/.devcontainer/devcontainer.json")]


def test_discovered_and_labelled_merge_and_manifest_id_wins() -> None:
    labels = {LF: "/w/p", CF: "/w/p/.devcontainer/devcontainer.json"}
    c = container_from_inspect(inspect(labels=labels))
    srcs = [Source("/w/p", ".devcontainer/devcontainer.json", "manifest", id="mid", name="main"),
            Source("/w/p", "/w/p/.devcontainer/devcontainer.json", "discovery"),
            Source("/w/q", "/w/q/.devcontainer.json", "discovery")]
    devs, _ = assemble([c], srcs, {}, {}, exists=lambda p: True)
    assert [(d.id, d.name, d.status.value) for d in devs] == [
        ("mid", "main", "running"), (devcontainer_id("/w/q", "/w/q/.devcontainer.json"), "q", "stopped")]
    WorkspaceAgentListContainersResponse.model_validate(
        {"containers": [c.api], "devcontainers": [d.api() for d in devs], "warnings": []})


def test_dirty_when_config_is_newer_than_the_container() -> None:
    labels = {LF: "/w/p", CF: "/w/p/.devcontainer/devcontainer.json"}
    c = container_from_inspect(inspect(labels=labels, created="2025-01-01T00:00:00Z"))
    created = dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()
    cfg = "/w/p/.devcontainer/devcontainer.json"
    assert assemble([c], [], {}, {cfg: created - 5}, exists=lambda p: True)[0][0].dirty is False
    assert assemble([c], [], {}, {cfg: created + 5}, exists=lambda p: True)[0][0].dirty is True


def test_names_extend_with_parents_on_conflict() -> None:
    srcs = [Source("/a/x/proj", "/a/x/proj/.devcontainer.json", "discovery"),
            Source("/b/y/proj", "/b/y/proj/.devcontainer.json", "discovery")]
    devs, _ = assemble([], srcs, {}, {}, exists=lambda p: True)
    assert sorted(d.name for d in devs) == ["proj", "y-proj"]


def test_error_sticks_until_a_newer_container_appears() -> None:
    labels = {LF: "/w/p", CF: "/w/p/.devcontainer/devcontainer.json"}
    c = container_from_inspect(inspect(labels=labels, created="2025-01-01T00:00:00Z"))
    dc_id = devcontainer_id("/w/p", "/w/p/.devcontainer/devcontainer.json")
    rt = {dc_id: Runtime(Status.ERROR, "boom", dt.datetime(2025, 2, 1, tzinfo=dt.UTC))}
    devs, _ = assemble([c], [], rt, {}, exists=lambda p: True)
    assert devs[0].status is Status.ERROR and devs[0].error == "boom"
    newer = container_from_inspect(inspect("9" * 64, labels=labels, created="2025-03-01T00:00:00Z"))
    devs, _ = assemble([newer], [], rt, {}, exists=lambda p: True)
    assert devs[0].status is Status.RUNNING and devs[0].error == ""
