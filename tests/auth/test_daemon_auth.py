"""The daemon as a real subprocess with CODER_AGENT_AUTH=aws-instance-identity: status shows the
method, when the token was obtained and the last auth error; the session token never leaks."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from typing import Any

from coder_agent.devserver import DevServer
from coder_agent.devserver.metadata import MetadataServer

from ..conftest import apoll, t


async def test_daemon_aws_identity_status(ms: MetadataServer, ids: DevServer, daemon_env: Any,
                                          spawn_daemon: Any) -> None:
    me = next(a for a in ids.state.agents if a.name == "aws")
    env = daemon_env(ids.url, "", CODER_AGENT_AUTH="aws-instance-identity",
                     AWS_EC2_METADATA_SERVICE_ENDPOINT=ms.url + "/")
    env.pop("CODER_AGENT_TOKEN")
    ms.fail("/instance-identity/document", 500, "imds exploded")
    d = spawn_daemon(env)
    await asyncio.to_thread(d.wait_ready)

    def status() -> dict[str, Any]:
        st: dict[str, Any] = d.api("GET", "/api/v0/status").json()
        return st

    # the probe retries on its own, so "failing" alternates with "connecting": wait for both facts at once
    st = await apoll(lambda: (s := status())["auth"]["last_error"] and s["control_plane"]["state"] == "failing"
                     and s, timeout=20)
    auth = st["auth"]
    assert auth["method"] == "aws-instance-identity" and auth["token_obtained_at"] is None
    assert f"{ms.url}/latest/dynamic/instance-identity/document" in auth["last_error"]
    assert "HTTP 500" in auth["last_error"] and "imds exploded" in auth["last_error"]
    assert st["control_plane"]["state"] == "failing"

    # `coder-agent status` says the same in words
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "coder_agent", "status", "--api-address", d.api_address],
        capture_output=True, text=True, timeout=t(20), env=env)
    assert out.returncode == 0, out.stderr
    assert "auth          aws-instance-identity; token obtained never" in out.stdout
    assert "auth error" in out.stdout and "imds exploded" in out.stdout

    ms.faults.clear()
    st = await apoll(lambda: (s := status())["auth"]["token_obtained_at"] and s, timeout=30)
    assert st["auth"]["last_error"] is None
    await apoll(lambda: status()["control_plane"]["state"] == "connected", timeout=30)
    (ex,) = ids.requests_to("/aws-instance-identity")
    assert ex.status == 200 and "Coder-Session-Token" not in ex.headers and "agent_name" not in ex.body

    # a reconnect re-exchanges the identity (SIGHUP makes the agent RPC redial now)
    d.signal(signal.SIGHUP)
    await apoll(lambda: len(ids.requests_to("/aws-instance-identity")) == 2, timeout=20)
    await apoll(lambda: status()["control_plane"]["state"] == "connected", timeout=30)
    status_text = d.api("GET", "/api/v0/status").text

    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0
    logs = d.stderr() + "".join(p.read_text() for p in (d.tmp / "logs").glob("*.log"))
    assert me.token not in logs and me.token not in status_text
    events = [json.loads(ln) for ln in d.stderr().splitlines() if ln.startswith("{")]
    assert any(e.get("event") == "agent session token obtained" for e in events)


async def test_daemon_rereads_token_file_on_reconnect(devserver: DevServer, daemon_env: Any, spawn_daemon: Any,
                                                      short_tmp: Any) -> None:
    """A rotated token file is picked up on the next reconnect, without a restart."""
    import uuid

    tok_file = short_tmp / "token"
    tok_file.write_text(devserver.agent.token + "\n")
    env = daemon_env(devserver.url, "", CODER_AGENT_TOKEN_FILE=str(tok_file))
    env.pop("CODER_AGENT_TOKEN")
    d = spawn_daemon(env)
    await asyncio.to_thread(d.wait_ready)
    first = (await apoll(lambda: d.api("GET", "/api/v0/status").json()["auth"]["token_obtained_at"]))
    new = str(uuid.uuid4())
    tok_file.write_text(f"  {new}\n")
    d.signal(signal.SIGHUP)  # the agent RPC redials now, re-reading the file
    await apoll(lambda: d.api("GET", "/api/v0/status").json()["auth"]["token_obtained_at"] != first, timeout=20)
    assert d.api("GET", "/api/v0/status").json()["auth"]["last_error"] is None
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0
    assert new not in d.stderr()


async def test_refused_credentials_exit_77_after_auth_exit_after(devserver: DevServer, daemon_env: Any,
                                                                 spawn_daemon: Any) -> None:
    """USER-PAIN 5: a token coderd keeps refusing (an old build's) ends in a distinct exit code
    once CODER_AGENT_AUTH_EXIT_AFTER has passed, so systemd restarts it with fresh credentials.
    Until then the daemon keeps retrying and says why."""
    import uuid

    refused = str(uuid.uuid4())  # a well-formed token coderd does not know: 401 on every dial
    d = spawn_daemon(daemon_env(devserver.url, refused, CODER_AGENT_AUTH_EXIT_AFTER="3s"))
    await asyncio.to_thread(d.wait_ready)
    assert await asyncio.to_thread(d.wait) == 77
    assert len(devserver.requests_to("/api/v2/workspaceagents/me/rpc")) >= 2  # it did retry first
    events = [json.loads(ln) for ln in d.stderr().splitlines() if ln.startswith("{")]
    (said,) = [e for e in events if e.get("event") == "exiting"]
    assert said["exit_code"] == 77 and "refused the agent's credentials" in said["reason"]
    assert refused not in d.stderr()
