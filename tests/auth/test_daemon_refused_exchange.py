"""Issue 19: the daemon as a real subprocess with CODER_AGENT_AUTH=aws-instance-identity against a
devserver that refuses the identity exchange (401 bad signature, 404 unknown instance, 409 several
agents). The refusal is reported by the token provider only (at most twice in all the daemon's
output, even at debug level, over >= 3 attempts), ``status`` shows it as ``auth.last_error``, and
the reinit watcher keeps waiting for authentication instead of taking the exchange's 409 for the
reinit endpoint's: once the exchange succeeds, a prebuild claim is handled."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.metadata import MetadataServer
from coder_agent.devserver.reinit import hub, mark_prebuild

from ..conftest import apoll, t

PING = 0.2


def _refuse(how: str, ms: MetadataServer, ids: DevServer, me: DevAgent) -> tuple[str, Callable[[], None]]:
    """Make the exchange answer ``how``; return the server's message and how to undo it."""
    if how == "401":
        ms.key = b"a key coderd does not know"

        def undo() -> None:
            ms.key = MetadataServer.key
        return "Invalid AWS identity.", undo
    if how == "404":
        me.instance_id = "i-somewhere-else"

        def undo() -> None:
            me.instance_id = ms.aws_instance_id
        return "Instance with id", undo
    dup = DevAgent(name="dup", instance_id=ms.aws_instance_id)
    ids.state.agents.append(dup)

    def undo() -> None:
        ids.state.agents.remove(dup)
    return "Multiple agents found with instance ID", undo


@pytest.mark.parametrize("how", ["401", "404", "409"])
async def test_refused_exchange_is_one_report_and_reinit_keeps_watching(
    how: str, ms: MetadataServer, ids: DevServer, daemon_env: Any, spawn_daemon: Any
) -> None:
    me = next(a for a in ids.state.agents if a.name == "aws")
    mark_prebuild(me)
    reinit = hub(ids)
    reinit.ping_interval = PING
    said, undo = _refuse(how, ms, ids, me)
    env = daemon_env(ids.url, "", CODER_AGENT_AUTH="aws-instance-identity",
                     AWS_EC2_METADATA_SERVICE_ENDPOINT=ms.url + "/", CODER_AGENT_LOG_LEVEL="debug",
                     CODER_AGENT_REINIT_PING_INTERVAL=str(PING), CODER_AGENT_SHUTDOWN_TIMEOUT="5")
    env.pop("CODER_AGENT_TOKEN")
    d = spawn_daemon(env)
    await asyncio.to_thread(d.wait_ready)

    def status() -> dict[str, Any]:
        st: dict[str, Any] = d.api("GET", "/api/v0/status").json()
        return st

    exchanges = lambda: [r for r in ids.requests_to("/aws-instance-identity") if r.status == int(how)]  # noqa: E731
    await apoll(lambda: len(exchanges()) >= 3, timeout=30)
    st = status()
    assert st["auth"]["last_error"] and said in st["auth"]["last_error"]
    assert st["control_plane"]["state"] == "failing"
    assert "waiting for authentication" in st["control_plane"]["last_error"]
    assert st["reinit"]["state"] != "not_applicable" and st["services"]["reinit"]["state"] != "stopped"
    assert not ids.requests_to("/me/reinit")  # nothing was sent without a token
    # `coder-agent status` names the cause once: the auth error; the control plane waits for it
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "coder_agent", "status", "--api-address", d.api_address],
        capture_output=True, text=True, timeout=t(20), env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(said) == 1 and "auth: waiting for authentication" in out.stdout, out.stdout

    undo()  # the operator fixes it: the exchange succeeds on the next (paced) attempt
    await apoll(lambda: status()["reinit"]["state"] == "watching", timeout=30)
    assert status()["auth"]["last_error"] is None
    reinit.claim("new-owner", agent_id=me.id)
    st = await apoll(lambda: (s := status())["reinit"]["reinits"] == 1 and s["session_generation"] == 2 and s,
                     timeout=30)
    assert st["reinit"]["last_claim"]["owner_id"] == "new-owner"

    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0
    output = d.stderr() + "".join(p.read_text() for p in (d.tmp / "logs").glob("*.log"))
    attempts = len(exchanges())
    assert attempts >= 3
    assert 1 <= output.count(said) <= 2, (attempts, [ln for ln in output.splitlines() if said in ln])
    events = [json.loads(ln) for ln in d.stderr().splitlines() if ln.startswith("{")]
    assert any(e.get("event") == "waiting for authentication" for e in events)
    assert not any("terminal 409" in str(e.get("event")) for e in events)
    assert me.token not in output
