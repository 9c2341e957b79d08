"""What an idle daemon never loads (issue 24: idle RSS), read from the running daemon's own
``sys.modules``: ``coder-agent run`` in a real subprocess, through a wrapper that writes the
module names to a file on SIGUSR1.

* A manifest without a DERP map (the devserver's default): no tailnet engine, no WireGuard, no
  cryptography / PyNaCl, no SSH server (asyncssh).
* A Docker engine on a unix socket, followed (listing and events): no docker SDK, requests or
  urllib3 — they load only for an action (stop, remove, recreate).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from coder_agent.devserver import DevServer

from .conftest import DaemonProcess, poll, t, unavailable

WRAPPER = """
import os, runpy, signal, sys

def dump(*_):
    names = sorted(n for n, m in list(sys.modules.items()) if m is not None)
    tmp = os.environ["DUMP_MODULES"] + ".tmp"
    with open(tmp, "w") as f:
        f.write("\\n".join(names))
    os.replace(tmp, os.environ["DUMP_MODULES"])

signal.signal(signal.SIGUSR1, dump)
sys.argv = ["coder-agent", *sys.argv[1:]]
runpy.run_module("coder_agent", run_name="__main__", alter_sys=True)
"""

TAILNET = ("coder_agent.tailnet.engine", "coder_agent.tailnet.wireguard")
DOCKER_SDK = ("docker", "requests", "urllib3")


class ModulesDaemon(DaemonProcess):
    def start(self) -> ModulesDaemon:
        self.dump_path = self.tmp / "modules.txt"
        self.env["DUMP_MODULES"] = str(self.dump_path)
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "run", *self.args], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=self._err, start_new_session=True)
        return self

    def modules(self) -> set[str]:
        self.dump_path.unlink(missing_ok=True)
        self.signal(signal.SIGUSR1)
        poll(self.dump_path.exists, 10)
        return set(self.dump_path.read_text().split())


def _idle_modules(env: dict[str, str], tmp: Path, ready: Any) -> set[str]:
    d = ModulesDaemon(env, [], tmp).start()
    try:
        d.wait_ready()
        poll(lambda: ready(d.api("GET", "/api/v0/status").json()), 30)
        return d.modules()
    finally:
        d.stop()


def _connected_without_tailnet(st: dict[str, Any]) -> bool:
    return (st["control_plane"]["state"] == "connected" and st["lifecycle"] == "ready"
            and st.get("tailnet", {}).get("state") == "off")


async def test_idle_daemon_without_derp_map_loads_no_tailnet_engine(
        devserver: DevServer, daemon_env: Any, short_tmp: Path) -> None:
    env = daemon_env(devserver.url, devserver.agent.token)
    mods = await asyncio.to_thread(_idle_modules, env, short_tmp, _connected_without_tailnet)
    assert "coder_agent.agentrpc.session" in mods  # the check is meaningful: the session runs
    assert [m for m in mods if m.split(".")[0] in ("cryptography", "nacl", "asyncssh")
            or m in TAILNET] == []


def _docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        unavailable(f"DOCKER_HOST is not a unix socket: {host}")
    import http.client
    import socket

    path = host[len("unix://"):]
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(t(10))
        s.connect(path)
        s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        resp = http.client.HTTPResponse(s)
        resp.begin()
        s.close()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
    except OSError as e:
        unavailable(f"no Docker engine answers at {host}: {e}")
    return host


async def test_idle_daemon_follows_the_engine_without_the_docker_sdk(
        devserver: DevServer, daemon_env: Any, short_tmp: Path) -> None:
    host = _docker_socket()
    ws = short_tmp / "ws"
    (ws / "p" / ".devcontainer").mkdir(parents=True)
    (ws / "p" / ".devcontainer" / "devcontainer.json").write_text('{"image": "busybox"}')
    subprocess.run(["git", "init", "-q", str(ws / "p")], check=True)
    env = daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_DEVCONTAINERS_ENABLE="true",
                     CODER_AGENT_DIRECTORY=str(ws), DOCKER_HOST=host)

    def ready(st: dict[str, Any]) -> bool:
        dc = st.get("devcontainers") or {}
        return _connected_without_tailnet(st) and dc.get("state") == "ok" and dc.get("devcontainers") == 1

    mods = await asyncio.to_thread(_idle_modules, env, short_tmp, ready)
    assert "coder_agent.devcontainers.engine" in mods
    assert [m for m in mods if m.split(".")[0] in DOCKER_SDK] == []
