"""What an idle daemon never loads (issue 24: idle RSS), read from the running daemon's own
``sys.modules``: ``coder-agent run`` in a real subprocess, through a wrapper that writes the
module names to a file on SIGUSR1.

* A manifest without a DERP map (the devserver's default): no tailnet engine, no WireGuard, no
  cryptography / PyNaCl, no SSH server (asyncssh).

(The docker SDK stays loaded while the daemon follows an engine: it is the library the project
uses to speak to the engine, and the brief forbids replacing it with hand-written HTTP to save
its ~3.5 MiB.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from coder_agent.devserver import DevServer

from .conftest import ModulesDaemon, poll

TAILNET = ("coder_agent.tailnet.engine", "coder_agent.tailnet.wireguard")


def _idle_modules(env: dict[str, str], tmp: Path, ready: Any) -> set[str]:
    d = ModulesDaemon(env, [], tmp).start()
    try:
        d.wait_ready()
        poll(lambda: ready(d.api("GET", "/api/v0/status").json()), 30)
        return set(d.modules())
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
