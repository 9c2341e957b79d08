"""Authentication and naming faults: the token rotates mid-run (token file re-read; instance identity
re-exchanged), the control plane's host does not resolve. None of them is fatal; only
configuration faults end the daemon, with exit 78."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.metadata import MetadataServer

from ..conftest import apoll, t
from .conftest import RESULTS, Lines

LOGS = "/api/v2/workspaceagents/me/logs"


async def test_token_file_rotated_mid_run(devserver: DevServer, scenario, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """coderd starts refusing the old token (401) while lines stream; the new token appears in the
    token file a moment later: the daemon re-reads it and ships on with it."""
    tok_file = short_tmp / "token"
    tok_file.write_text(devserver.agent.token + "\n")
    lines = Lines(n=300, pause=0.01)
    run = scenario(devserver, lines, token="", CODER_AGENT_TOKEN_FILE=str(tok_file))
    run.start()
    await run.ready()
    await apoll(lambda: len(run.received()) >= 30, timeout=20)
    new = str(uuid.uuid4())
    devserver.agent.token = new  # coderd rotated it...
    await apoll(lambda: any(r.status == 401 for r in devserver.requests_to(LOGS)), timeout=10)
    tok_file.write_text(f"{new}\n")  # ...and the file follows a moment later
    await run.all_received(timeout=30)
    refused = [r for r in devserver.requests_to(LOGS) if r.status == 401]
    assert refused and all(r.headers["Coder-Session-Token"] != new for r in refused)
    st = run.status()
    assert st["auth"]["last_error"] is None
    await run.finish(f"401 mid-run, token file rotated ({len(refused)} requests refused)", max_replays=0)
    assert new not in run.daemon.stderr()


async def test_instance_identity_reexchanged_on_401(scenario) -> None:  # type: ignore[no-untyped-def]
    """With AWS instance identity, a 401 mid-run makes the daemon exchange its identity again
    (the fake IMDS and coderd's exchange route speak the real protocols)."""
    async with MetadataServer() as ms:
        agent = DevAgent(instance_id=ms.aws_instance_id)
        async with DevServer(agents=[agent]) as ds:
            lines = Lines(n=300, pause=0.01)
            run = scenario(ds, lines, token="", CODER_AGENT_AUTH="aws-instance-identity",
                           AWS_EC2_METADATA_SERVICE_ENDPOINT=ms.url + "/")
            run.start()
            await run.ready()
            await apoll(lambda: len(run.received()) >= 30, timeout=20)
            assert len(ds.requests_to("/aws-instance-identity")) == 1
            old = agent.token
            agent.token = str(uuid.uuid4())  # a new build: the old session token is refused
            await run.all_received(timeout=30)
            assert len(ds.requests_to("/aws-instance-identity")) >= 2
            refused = [r for r in ds.requests_to(LOGS) if r.status == 401]
            assert refused and all(r.headers["Coder-Session-Token"] == old for r in refused)
            await run.finish(f"401 mid-run, instance identity re-exchanged "
                             f"({len(ds.requests_to('/aws-instance-identity'))} exchanges)", max_replays=0)
            for secret in (old, agent.token):
                assert secret not in run.daemon.stderr()


async def test_dns_failure_is_diagnosed_not_fatal(scenario, devserver: DevServer) -> None:  # type: ignore[no-untyped-def]
    """An unresolvable host: status says "dns failed"; scripts run; their lines wait in the
    local file; SIGTERM stops it cleanly (exit 0) within the shutdown budget."""
    lines = Lines(n=100, pause=0.005)
    run = scenario(devserver, lines, CODER_AGENT_URL="http://coder.invalid:8080",
                   CODER_AGENT_SHUTDOWN_TIMEOUT="2")
    run.start()
    await run.ready()
    st = await apoll(lambda: (s := run.status())["control_plane"]["state"] == "failing" and s, timeout=20)
    assert st["control_plane"]["last_error"].startswith("dns failed"), st["control_plane"]

    def source() -> dict[str, Any]:
        return next(s for s in run.status()["logs"]["sources"] if s["display_name"] == "Fault lines")

    await apoll(lambda: source()["accepted_lines"] == lines.n, timeout=20)
    src = source()
    assert src["shipped_lines"] == 0 and src["pending_bytes"] > 0
    st = run.status()
    assert st["services"]["logs"]["state"] == "degraded" and "dns failed" in st["services"]["logs"]["message"]
    assert run.local_lines() == lines.printed
    await run.finish("unresolvable control-plane host (lines kept in the local file)", max_replays=0,
                     printed=[])


CONFIG_FAULTS = [
    ("url scheme", {"CODER_AGENT_URL": "ftp://coder.example.com"}, "must start with http:// or https://"),
    ("no token", {"CODER_AGENT_TOKEN": ""}, "CODER_AGENT_TOKEN or CODER_AGENT_TOKEN_FILE must be set"),
    ("token file missing", {"CODER_AGENT_TOKEN": "", "CODER_AGENT_TOKEN_FILE": "/nonexistent/token"},
     "cannot read /nonexistent/token"),
    ("remote API without opt-in", {"CODER_AGENT_API_ADDRESS": "0.0.0.0:0"}, "CODER_AGENT_API_ADDRESS"),
    ("bad auth method", {"CODER_AGENT_AUTH": "password"}, "CODER_AGENT_AUTH"),
    ("log dir not creatable", {"CODER_AGENT_LOG_DIR": "/proc/coder-agent-logs"}, "CODER_AGENT_LOG_DIR"),
]


@pytest.mark.parametrize(("name", "env", "says"), CONFIG_FAULTS, ids=[c[0] for c in CONFIG_FAULTS])
async def test_configuration_faults_exit_78(devserver: DevServer, daemon_env, name: str,  # type: ignore[no-untyped-def]
                                            env: dict[str, str], says: str) -> None:
    """Configuration faults, and only they, end the daemon: exit 78 with a one-line reason."""
    e = daemon_env(devserver.url, devserver.agent.token, **env)
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "coder_agent", "run"], env=e,
                                   capture_output=True, text=True, timeout=t(30))
    assert proc.returncode == 78, (proc.returncode, proc.stderr[-2000:])
    assert says in proc.stderr, proc.stderr[-2000:]
    RESULTS.append(f"configuration fault ({name}): exit {proc.returncode}")
