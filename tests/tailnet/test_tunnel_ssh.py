"""SSH (ports 1 and 22) and the web terminal (port 2) through the tunnel to the REAL daemon.

The client is OpenSSH's own ``ssh`` and a small reconnecting-PTY client, both on the kernel's TCP
in wireguard-go's namespace (rig.py); the daemon splices each tunnel connection to its loopback
SSH / PTY listener after registering the tunnel peer (coder_agent.tunnelports).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.rpc import record

from ..conftest import apoll, t
from .rig import Tunnelled

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"]

RPTY_CLIENT = r"""
import json, socket, struct, sys, time
s = socket.create_connection((sys.argv[1], 2), timeout=30)
init = json.dumps({"ID": sys.argv[2], "Height": 24, "Width": 80}).encode()
s.sendall(struct.pack("<H", len(init)) + init)
s.sendall(json.dumps({"data": "echo rpty-$((6*7))\r"}).encode())
out = b""
deadline = time.monotonic() + 30
while b"rpty-42" not in out and time.monotonic() < deadline:
    chunk = s.recv(4096)
    if not chunk:
        break
    out += chunk
s.close()
print(json.dumps({"seen": b"rpty-42" in out}))
"""


@pytest.fixture
async def tunnelled(daemon_env: Any, spawn_daemon: Any, short_tmp: Path) -> AsyncIterator[Tunnelled]:
    agent = DevAgent(id=str(uuid.uuid4()))
    home = short_tmp / "home"  # the sessions' bash reads this ~/.bashrc (none), not the machine's
    home.mkdir()
    async with DevServer(agents=[agent], tailnet=True) as ds:
        d = spawn_daemon(daemon_env(ds.url, ds.agent.token, HOME=str(home)))
        d.wait_ready()
        async with Tunnelled(ds, d, short_tmp) as rig:
            yield rig


async def ssh(rig: Tunnelled, port: int, *command: str) -> Any:
    return await rig.wg.ans("ssh", *SSH_OPTS, "-p", str(port), f"coder@{rig.agent_ip}", *command, timeout=60)


async def test_ssh_and_web_terminal_through_the_tunnel(tunnelled: Tunnelled) -> None:
    rig = tunnelled
    r = await ssh(rig, 1, "exit 7")
    assert r.returncode == 7, r.stderr
    r = await ssh(rig, 22, "env")
    assert r.returncode == 0, r.stderr
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert env["CODER"] == "true"
    assert env["SSH_CLIENT"].split()[0] == rig.client_ip  # the client's tunnel address
    assert env["SSH_CONNECTION"].split()[2:] == [rig.agent_ip, "22"]

    got = await rig.ns_python(RPTY_CLIENT, rig.agent_ip, str(uuid.uuid4()), timeout=60)
    assert got["seen"]

    # coderd hears of each connection, with the client's tunnel address.
    rec = record(rig.ds.agent)
    reports = await apoll(lambda: [c for c in rec.connection_reports if c["action"] == "DISCONNECT"]
                          if len([c for c in rec.connection_reports if c["action"] == "DISCONNECT"]) >= 3
                          else None, timeout=t(30))
    assert {c["type"] for c in reports} == {"SSH", "RECONNECTING_PTY"}
    assert all(c["ip"] == rig.client_ip for c in rec.connection_reports)
