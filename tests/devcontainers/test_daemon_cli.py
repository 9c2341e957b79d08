"""The capability wired into the real daemon, and ``coder-agent devcontainers`` against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..conftest import poll, t
from .conftest import IMAGE, git_repo

TOKEN = "5b9f2c4e-8d1a-4f6b-9c3e-2a7d8e1f0b4c"


def cli(d: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coder_agent", "devcontainers", *args],
                          env=d.env, capture_output=True, text=True, timeout=t(90), check=False)


def test_disabled_answers_403_like_the_go_agent(daemon_env: Any, spawn_daemon: Any) -> None:
    d = spawn_daemon(daemon_env("http://127.0.0.1:9", TOKEN, CODER_AGENT_DEVCONTAINERS_ENABLE="false"))
    d.wait_ready()
    for method, path in (("GET", "/api/v0/containers"), ("GET", "/api/v0/containers/watch"),
                         ("POST", "/api/v0/containers/devcontainers/x/recreate")):
        r = d.api(method, path)
        assert r.status_code == 403
        assert r.json() == {"message": "Dev Container feature not enabled.",
                            "detail": "To enable this feature, set CODER_AGENT_DEVCONTAINERS_ENABLE=true in your "
                                      "template."}
    assert d.api("GET", "/api/v0/status").json()["devcontainers"] == {"state": "disabled"}


@pytest.mark.docker
def test_cli_list_recreate_delete(daemon_env: Any, spawn_daemon: Any, short_tmp: Path, docker_client: Any,
                                  cli_path: str, tag: str) -> None:
    ws = short_tmp / "ws"
    repo = git_repo(ws / "app", {".devcontainer/devcontainer.json": json.dumps({"image": IMAGE})})
    d = spawn_daemon(daemon_env("http://127.0.0.1:9", TOKEN, CODER_AGENT_DEVCONTAINERS_ENABLE="true",
                                CODER_AGENT_DIRECTORY=str(ws), CODER_AGENT_DEVCONTAINERS_CLI=cli_path))
    d.wait_ready()
    st = poll(lambda: (s := d.api("GET", "/api/v0/status").json())["devcontainers"]["state"] == "ok" and s, 20)
    assert st["services"]["devcontainers"]["state"] == "ok"

    listed = cli(d, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    dc = next(x for x in json.loads(listed.stdout)["devcontainers"] if x["workspace_folder"] == str(repo))
    assert dc["status"] == "stopped"
    assert "app" in cli(d, "list").stdout

    rec = cli(d, "recreate", "app")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert "app: running in container" in rec.stdout
    assert "app: starting" in rec.stderr  # progress lines (not a terminal)
    after = d.api("GET", "/api/v0/containers").json()
    now = next(x for x in after["devcontainers"] if x["workspace_folder"] == str(repo))
    assert now["id"] == dc["id"] and now["status"] == "running"

    rm = cli(d, "delete", dc["id"], "--json")
    assert rm.returncode == 0, rm.stderr
    assert json.loads(rm.stdout) == {"id": dc["id"], "deleted": True}
    assert not [c for c in docker_client.containers.list(all=True, sparse=True) if c.id == now["container"]["id"]]
    unknown = cli(d, "delete", "nope")
    assert unknown.returncode == 1 and "no devcontainer with id or name 'nope'" in unknown.stderr
