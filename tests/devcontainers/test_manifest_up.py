"""Go-agent parity (issue 20, item 10): a devcontainer declared in the manifest comes up on a real
engine after the start scripts, with the Dev Containers CLI, its output under its own log source,
and a ScriptCompleted for coderd's placeholder script (same id), which itself never runs."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from coder_agent.devserver import DevServer

from ..conftest import apoll
from .conftest import IMAGE, git_repo


async def test_manifest_devcontainer_comes_up_and_its_placeholder_never_runs(
        devserver: DevServer, daemon_env: Any, spawn_daemon: Any, short_tmp: Path, docker_client: Any,
        cli_path: str, tag: str) -> None:
    repo = git_repo(short_tmp / "ws" / "app", {".devcontainer/devcontainer.json": json.dumps({"image": IMAGE})})
    dc_id = str(uuid.uuid4())
    devserver.agent.extra["devcontainers"] = [{"id": dc_id, "workspace_folder": str(repo), "name": "app",
                                               "config_path": str(repo / ".devcontainer/devcontainer.json")}]
    devserver.agent.scripts = [{"id": dc_id, "display_name": "app devcontainer", "script": "echo placeholder-ran"},
                               {"display_name": "first", "script": "echo first-ran"}]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_DEVCONTAINERS_ENABLE="true",
                                CODER_AGENT_DEVCONTAINERS_CLI=cli_path,
                                CODER_AGENT_DEVCONTAINERS_PROJECT_DISCOVERY_ENABLE="false"))
    await asyncio.to_thread(d.wait_ready)
    rec = devserver.agent.extra

    def completed() -> dict[str, Any] | None:
        return next((c for c in rec["rpc"].script_completions if c["script_id"] == dc_id), None) if "rpc" in rec \
            else None

    done = await apoll(completed, timeout=180)
    said = [ln for ln in d.stderr().splitlines() if "devcontainer" in ln]
    assert done["status"] == "ok" and done["stage"] == "start", said
    # READY follows the devcontainer's ScriptCompleted (the start phase ends after the bring-up)
    await apoll(lambda: "ready" in [e["state"] for e in devserver.agent.lifecycle], timeout=30)
    running = [c for c in docker_client.containers.list(sparse=True)
               if (c.attrs.get("Labels") or {}).get("devcontainer.local_folder") == str(repo)]
    assert running
    outputs = [r["output"] for r in devserver.agent.logs]
    assert "placeholder-ran" not in outputs and "first-ran" in outputs
    assert any("devcontainer app is running" in o for o in outputs)
    # as Go at start: a plain `devcontainer up`, which reuses a container that already exists
    starts = [o for o in outputs if o.startswith("Starting devcontainer app")]
    assert len(starts) == 1 and "--remove-existing-container" not in starts[0], starts
