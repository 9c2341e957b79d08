"""Fixtures for the gitauth tests: a daemon subprocess on the devserver, a git repo server."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from coder_agent.devserver import DevServer
from coder_agent.devserver.gitauth import GitAuthState, gitauth_state

from ..conftest import DaemonProcess, apoll, t, unavailable


def require(*tools: str) -> None:
    """Fail under CI=true, skip elsewhere, when a system tool the test needs is missing."""
    missing = [x for x in tools if not (shutil.which(x) or os.path.exists(x))]
    if missing:
        unavailable(f"missing {missing}: run scripts/provision.sh as root")


@dataclass
class Env:
    ds: DevServer
    daemon: DaemonProcess
    state: GitAuthState
    tmp: Path
    home: Path

    def child_env(self) -> dict[str, str]:
        """What the daemon gives its scripts (through GET /api/v0/env, as ``coder-agent env`` does)."""
        r = self.daemon.api("GET", "/api/v0/env")
        assert r.status_code == 200, r.text
        env = r.json()["env"]
        assert isinstance(env, dict)
        return env

    def base_env(self, **extra: str) -> dict[str, str]:
        """A clean environment for git and the helpers: no user config, no terminal prompts."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "LANG": "C.UTF-8",
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "TMPDIR": str(self.tmp / "tmp")}
        env.update(self.child_env())
        env.update(extra)
        return env

    def logs(self) -> str:
        return self.daemon.stderr() + "".join(p.read_text(errors="replace") for p in (self.tmp / "logs").glob("*"))


@pytest.fixture
async def gitenv(devserver: DevServer, daemon_env: Callable[..., dict[str, str]],
                 spawn_daemon: Callable[..., DaemonProcess], short_tmp: Path) -> Env:
    require("git", "ssh", "ssh-keygen")
    home = short_tmp / "home"
    home.mkdir()
    (short_tmp / "tmp").mkdir()
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_LOG_LEVEL="debug"))

    def ready() -> bool:
        assert d.proc is not None
        if d.proc.poll() is not None:
            raise AssertionError(f"daemon exited: {d.stderr()}")
        try:
            return d.api("GET", "/api/v0/status").status_code == 200
        except httpx.HTTPError:
            return False

    await apoll(ready, 20)
    return Env(devserver, d, gitauth_state(devserver), short_tmp, home)


async def run(argv: list[str], env: dict[str, str], timeout: float = 30, stderr_path: Path | None = None,
              **kw: Any) -> tuple[int, str, str]:
    """Run a real child process without blocking the event loop (the devserver lives on it)."""
    err_file = open(stderr_path, "wb") if stderr_path else None  # noqa: SIM115
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=err_file or asyncio.subprocess.PIPE, start_new_session=True, **kw)
        out, err = await asyncio.wait_for(proc.communicate(), t(timeout))
    finally:
        if err_file:
            err_file.close()
    if stderr_path is not None:
        err = stderr_path.read_bytes()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), (err or b"").decode(errors="replace")
