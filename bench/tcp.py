"""The userspace TCP core end to end over a TUN device, against the kernel's loopback TCP.

Ours: a kernel TCP client in a network namespace → TUN (MTU 1280) → tests/tailnet/tunpump.Pump →
``coder_agent.tailnet.tcp.TcpStack`` → a sink (sha256) / source application, all in this process.
Baseline: the same client and the same applications over the kernel's TCP on 127.0.0.1 (asyncio
streams in this process, default MTU of lo). The ratio is what the Python TCP costs against the
kernel's, per direction. Needs root (TUN, netns); prints why not otherwise.

    python -m bench.tcp [--quick] [--mib 32]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tests" / "tailnet" / "tcp_client.py"


async def _client(prefix: list[str], *args: object) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(*prefix, sys.executable, str(CLIENT), *map(str, args),
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    res: dict[str, Any] = json.loads(out)
    assert res["ok"], res
    return res


async def _kernel_server() -> tuple[asyncio.Server, asyncio.Server]:
    from tests.tailnet.tunpump import source_bytes

    async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        h = hashlib.sha256()
        while chunk := await r.read(1 << 16):
            h.update(chunk)
        w.write(h.hexdigest().encode())
        await w.drain()
        w.close()

    async def source(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        size = int(await r.readline())
        w.write(source_bytes(size))
        await w.drain()
        w.close()

    return (await asyncio.start_server(sink, "127.0.0.1", 0), await asyncio.start_server(source, "127.0.0.1", 0))


async def main(mib: int) -> None:
    from coder_agent.tailnet.tcp import TcpStack
    from tests.tailnet.tunpump import SERVER_IP, SINK, SOURCE, Pump, TunNamespace, missing_tools

    reason = missing_tools()
    if reason:
        print(f"bench.tcp: skipped: {reason}")
        return
    size = mib << 20
    ns = TunNamespace(f"b{os.getpid() % 10000}")
    pump = Pump(ns.fd, TcpStack())
    try:
        netns = ["ip", "netns", "exec", ns.ns]
        ours_up = await _client(netns, "upload", SERVER_IP, SINK, size)
        ours_down = await _client(netns, "download", SERVER_IP, SOURCE, size)
    finally:
        pump.close()
        ns.close()
    sink, source = await _kernel_server()
    try:
        kport_sink = sink.sockets[0].getsockname()[1]
        kport_source = source.sockets[0].getsockname()[1]
        base_up = await _client([], "upload", "127.0.0.1", kport_sink, size)
        base_down = await _client([], "download", "127.0.0.1", kport_source, size)
    finally:
        sink.close()
        source.close()
    print(f"{mib} MiB each way; ours: kernel client → TUN → TcpStack; baseline: kernel loopback TCP\n")
    print("| measure | ours | baseline | ratio |")
    print("|---|---|---|---|")
    for name, ours, base in (("upload to the core", ours_up, base_up), ("download from the core", ours_down,
                                                                          base_down)):
        o, b = mib / ours["seconds"], mib / base["seconds"]
        print(f"| {name} | {o:.1f} MiB/s | {b:.1f} MiB/s | {o / b:.2f}x |")
    print(f"\npackets through the TUN: {pump.stats.packets_in} in, {pump.stats.packets_out} out")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mib", type=int, default=None)
    a = ap.parse_args()
    asyncio.run(main(a.mib or (16 if a.quick else 64)))
