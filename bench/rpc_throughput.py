"""Agent RPC over loopback: unary round-trips per second and bytes/s of a 4 MiB manifest, against a
raw websocket echo of the same bytes measured in the same run.

Ours: websockets client → yamux → dRPC → the devserver's /me/rpc (aiohttp, yamux server, dRPC
server, protobuf), all in this process. Baseline: the same websockets client against an aiohttp
websocket that echoes each message back (same process, same loop): a small message for the
round-trip figure, the manifest's serialized bytes for the transfer figure. The ratio says what
yamux + dRPC + protobuf cost on top of the websocket itself.

    python -m bench.rpc_throughput [--quick] [--seconds 3] [--manifest-mib 3.9]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any


async def _timed(fn: Any, seconds: float) -> tuple[int, float]:
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await fn()
        n += 1
    return n, time.perf_counter() - t0


async def _echo_server() -> tuple[Any, str]:
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=8 << 20, compress=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"ws://127.0.0.1:{port}/echo"


async def main(seconds: float, manifest_mib: float) -> None:
    from websockets.asyncio.client import connect

    from coder_agent.agentrpc.connection import ConnectionLoop, RpcClient
    from coder_agent.config import load_settings
    from coder_agent.daemon import Daemon
    from coder_agent.devserver import DevAgent, DevServer
    from coder_agent.devserver.rpc import build_manifest
    from coder_agent.log import configure_logging
    from coder_agent.rpc.proto import agent_pb2

    configure_logging(level="warning")
    # Hex text keeps the payload incompressible-looking and valid UTF-8 for the proto string.
    big = os.urandom(int(manifest_mib * (1 << 20)) // 2).hex()
    agent = DevAgent(environment={"BIG": big})
    async with DevServer(agents=[agent]) as ds:
        manifest_bytes = build_manifest(agent).SerializeToString()
        settings = load_settings({}, env={"CODER_AGENT_URL": ds.url, "CODER_AGENT_TOKEN": agent.token,
                                          "CODER_AGENT_LOG_DIR": "/tmp", "CODER_AGENT_STATE_DIR": "/tmp"})
        loop = ConnectionLoop(Daemon(settings).agent_parts(), lambda c: asyncio.sleep(0))
        conn = await loop.dial(agent.token)
        client = RpcClient(conn, loop.version, set())
        stats = agent_pb2.UpdateStatsRequest()

        async def rpc_small() -> None:
            await client.call("UpdateStats", stats, agent_pb2.UpdateStatsResponse)

        async def rpc_manifest() -> None:
            m = await client.call("GetManifest", agent_pb2.GetManifestRequest(), agent_pb2.Manifest)
            assert len(m.environment_variables["BIG"]) == len(big)

        rpc_n, rpc_t = await _timed(rpc_small, seconds)
        man_n, man_t = await _timed(rpc_manifest, seconds)
        # concurrency: 16 calls in flight
        t0 = time.perf_counter()
        par = 0
        while time.perf_counter() - t0 < seconds:
            await asyncio.gather(*(rpc_small() for _ in range(16)))
            par += 16
        par_t = time.perf_counter() - t0
        await conn.close()

    runner, url = await _echo_server()
    try:
        async with connect(url, compression=None, max_size=8 << 20, ping_interval=None) as ws:
            small = b"x" * 64

            async def echo_small() -> None:
                await ws.send(small)
                await ws.recv()

            async def echo_big() -> None:
                await ws.send(manifest_bytes)
                got = await ws.recv()
                assert len(got) == len(manifest_bytes)

            echo_n, echo_t = await _timed(echo_small, seconds)
            big_n, big_t = await _timed(echo_big, seconds)
    finally:
        await runner.cleanup()

    rpc_rate, echo_rate = rpc_n / rpc_t, echo_n / echo_t
    man_bps, echo_bps = man_n * len(manifest_bytes) / man_t, big_n * len(manifest_bytes) / big_t
    size = f"{len(manifest_bytes) / (1 << 20):.2f} MiB"
    print(f"| measure | agent RPC | raw websocket echo | ratio |\n|---|---|---|---|\n"
          f"| round-trips/s (sequential) | {rpc_rate:,.0f} | {echo_rate:,.0f} | {rpc_rate / echo_rate:.2f} |\n"
          f"| round-trips/s (16 in flight) | {par / par_t:,.0f} | — | — |\n"
          f"| manifest {size}: MiB/s | {man_bps / (1 << 20):,.1f} | {echo_bps / (1 << 20):,.1f} | "
          f"{man_bps / echo_bps:.2f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="1 s per measurement")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--manifest-mib", type=float, default=3.9, help="manifest size (dRPC's limit is 4 MiB)")
    a = ap.parse_args()
    asyncio.run(main(1.0 if a.quick else a.seconds, a.manifest_mib))
