"""``coder-agent app-status`` as a real subprocess against an in-process daemon: exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from coder_agent.devserver import Fault

from ..conftest import t
from .conftest import Running


async def _cli(running: Running | None, *args: str, address: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    addr = address or f"unix:{running.sock}"  # type: ignore[union-attr]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CODER_AGENT_", "CODER_MCP_"))}
    full_env.update(env or {})
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "coder_agent", "app-status", "--api-address", addr, *args],
        capture_output=True, text=True, env=full_env, timeout=t(60),
    )


async def test_accepted_exits_0_and_is_delivered(running: Running) -> None:
    p = await _cli(running, "--slug", "claude-code", "--state", "working", "--message", "reading")
    assert p.returncode == 0, p.stderr
    assert "accepted" in p.stdout
    p = await _cli(running, "--state", "idle", "--json", env={"CODER_MCP_APP_STATUS_SLUG": "aider"})
    assert p.returncode == 0, p.stderr
    answer = json.loads(p.stdout)
    assert answer["app_slug"] == "aider" and answer["state"] == "idle" and answer["delivery"] == "pending"
    p = await _cli(running, "--slug", "claude-code", "--state", "complete", "--uri", "https://x/pr/2", "--wait")
    assert p.returncode == 0, p.stderr
    assert "delivered" in p.stdout
    # --wait returned only once coderd had it
    assert ("claude-code", "complete", "") in running.received()


async def test_invalid_exits_2_with_the_reason(running: Running) -> None:
    p = await _cli(running, "--slug", "claude-code", "--state", "busy")
    assert p.returncode == 2
    assert "Invalid state provided" in p.stderr and "state:" in p.stderr
    p = await _cli(running, "--slug", "claude-code", "--state", "working", "--message", "é" * 81)  # 162 bytes
    assert p.returncode == 2
    assert "Message is too long" in p.stderr
    p = await _cli(running, "--state", "working")  # no slug anywhere
    assert p.returncode == 2 and "--slug" in p.stderr
    assert running.patches() == []


async def test_daemon_down_exits_1(short_tmp: Path) -> None:
    p = await _cli(None, "--slug", "x", "--state", "working", address=f"unix:{short_tmp / 'nobody.sock'}")
    assert p.returncode == 1
    assert "not answering" in p.stderr


async def test_wait_exits_1_when_coderd_refuses(running: Running) -> None:
    p = await _cli(running, "--slug", "ghost", "--state", "working", "--wait")
    assert p.returncode == 1
    assert "failed" in p.stderr and "No app found" in p.stderr


async def test_wait_timeout_exits_3_while_coderd_is_down(running: Running) -> None:
    running.ds.add_fault(Fault(path="/me/app-status", status=503))
    p = await _cli(running, "--slug", "claude-code", "--state", "working", "--wait", "--timeout", "1s")
    assert p.returncode == 3
    assert "still pending" in p.stderr and "503" in p.stderr
