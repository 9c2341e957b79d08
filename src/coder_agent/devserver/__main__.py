"""``python -m coder_agent.devserver [--host H] [--port P]``: run the dev control plane alone.

Prints one JSON line ``{"url": ..., "token": ..., "agent_id": ...}`` on stdout once it listens,
then serves until SIGINT/SIGTERM. Handy for manual runs and for benchmarks in another process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

from . import derp
from .app import DevServer
from .state import DevAgent


async def _main(host: str, port: int, token: str | None, derp_refuse_upgrade: bool = False,
                tailnet: bool = False) -> None:
    agent = DevAgent(apps=[{"slug": "claude-code"}])
    if token:
        agent.token = token
    async with DevServer(host, port, agents=[agent], tailnet=tailnet) as ds:
        derp.relay(ds).refuse_raw = derp_refuse_upgrade
        print(json.dumps({"url": ds.url, "token": agent.token, "agent_id": agent.id}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m coder_agent.devserver")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default=None, help="the agent token to accept (default: a random UUID)")
    p.add_argument("--derp-refuse-upgrade", action="store_true",
                   help="answer /derp's 'Upgrade: DERP' with 426 so DERP clients fall back to WebSocket")
    p.add_argument("--tailnet", action="store_true",
                   help="put the DERP map into the manifest, so the agent joins the tailnet")
    a = p.parse_args()
    asyncio.run(_main(a.host, a.port, a.token, a.derp_refuse_upgrade, a.tailnet))


if __name__ == "__main__":
    main()
