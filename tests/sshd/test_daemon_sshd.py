"""The daemon as a real subprocess: its SSH and reconnecting-PTY listeners start when the tailnet
comes up (a manifest with a DERP map), are the daemon's own ports (never workspace listening ports)
and serve nothing but the tunnel: a local client straight to the SSH loopback port gets
"Permission denied"."""

from __future__ import annotations

import asyncio
import getpass
import subprocess
from collections.abc import Callable
from typing import Any

from coder_agent.devserver import DevServer

from ..conftest import DaemonProcess, poll, t


async def test_daemon_ssh_listener_is_own_and_refuses_local_clients(
        daemon_env: Callable[..., Any], spawn_daemon: Callable[..., DaemonProcess]) -> None:
    async with DevServer(tailnet=True) as devserver:
        d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token))
        await asyncio.to_thread(_check, d)


def _check(d: DaemonProcess) -> None:
    d.wait_ready()

    def listening() -> Any:
        st = d.api("GET", "/api/v0/status").json()
        return st if st.get("sshd", {}).get("listening") and st.get("rpty", {}).get("listening") else None

    st = poll(listening, t(30))
    ssh_port, pty_port = st["sshd"]["port"], st["rpty"]["port"]
    assert st["services"]["sshd"]["state"] == "ok" and st["services"]["rpty"]["state"] == "ok"
    assert "key" not in str(st["sshd"]).lower()
    from coder_agent.ports.scan import ProcNetReader

    assert {ssh_port, pty_port} <= {s.port for s in ProcNetReader().listeners()}  # really listening...
    reported = {p["port"] for p in d.api("GET", "/api/v0/listening-ports").json()["ports"]}
    assert ssh_port not in reported and pty_port not in reported  # ...but the daemon's own
    out = subprocess.run(
        ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
         "-p", str(ssh_port), f"{getpass.getuser()}@127.0.0.1", "echo leaked"],
        capture_output=True, text=True, timeout=t(30), stdin=subprocess.DEVNULL)
    assert out.returncode == 255 and "Permission denied" in out.stderr and "leaked" not in out.stdout
