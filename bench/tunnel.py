"""TCP through the tunnel: one forwarded connection's throughput against Go's WireGuard over the
same relay, and the daemon's memory with 200 idle tunnelled connections.

Ours: the kernel's TCP in wireguard-go's namespace → wireguard-go → UDP<->DERP bridge → the
devserver's DERP relay → the REAL daemon (its WireGuard, its TCP in userspace, the forward) →
a sink process on 127.0.0.1. Baseline, same run, same relay and bridges: the kernel's TCP in one
wireguard-go namespace → DERP → a second wireguard-go whose namespace runs the same sink (Go's
WireGuard and the kernel's TCP on both ends). Both transfers: ``--mb`` MiB uploaded, sha256
checked by the sink. The relay and the bridges run in this process for both.

Memory: the daemon's RSS once the tunnel is up and idle, then with 200 connections held open
through the tunnel to a forwarded port (each one a tunnel TCP connection, a local socket and
its splice).

    python -m bench.tunnel [--quick] [--mb 32]

Needs root, /dev/net/tun, wireguard-go and wg (as the tests in tests/tailnet do).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._util import cpu_seconds, row, rss_kib, tunnelled_daemon

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tests" / "tailnet" / "tcp_client.py"

SINK = r"""
import hashlib, socket, sys, threading
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1024)
print("ready", flush=True)

def serve(c):
    h = hashlib.sha256()
    while chunk := c.recv(1 << 18):
        h.update(chunk)
    c.sendall(h.hexdigest().encode())
    c.close()

while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

GETS = r"""
import http.client, json, statistics, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
samples = []
for _ in range(n):
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(host, port, timeout=20)
    c.request("GET", "/api/v0/netcheck")
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
    c.close()
    samples.append(time.perf_counter() - t0)
print(json.dumps({"median": statistics.median(samples)}))
"""

HOLD = r"""
import socket, sys, time
conns = [socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60) for _ in range(int(sys.argv[3]))]
for c in conns:
    c.sendall(b"x")
print("held", flush=True)
sys.stdin.read()
"""


def _client_ip() -> str:
    from coder_agent.tailnet import keys

    return str(ipaddress.IPv6Address(keys.TAILSCALE_SERVICE_PREFIX.network_address.packed[:6] + os.urandom(10)))


async def _upload(wg: Any, host: str, port: int, mb: int) -> float:
    r = await wg.ans(sys.executable, str(CLIENT), "upload", host, str(port), str(mb << 20), timeout=900)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["ok"], res
    return mb / float(res["seconds"])


async def _start(*argv: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    assert line.strip() in (b"ready", b"held"), line
    return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def go_baseline(tmp: Path, mb: int) -> float:
    from coder_agent.devserver import DevServer
    from tests.tailnet.derpbridge import DerpBridge
    from tests.tailnet.wgpeer import WgPeer

    async with DevServer(tailnet=True) as ds:
        a_ip, b_ip = _client_ip(), _client_ip()
        async with WgPeer(tmp, address=a_ip) as a, WgPeer(tmp, address=b_ip) as b:
            ba = await DerpBridge(ds, a.private_key, a.listen_port).start()
            bb = await DerpBridge(ds, b.private_key, b.listen_port).start()
            ba.agent_key, bb.agent_key = b.public_key, a.public_key
            a.set_peer(b.public_key, [f"{b_ip}/128"], ba.endpoint)
            b.set_peer(a.public_key, [f"{a_ip}/128"], bb.endpoint)
            sink = await _start("ip", "netns", "exec", b.netns, sys.executable, "-c", SINK, "::", "7000")
            try:
                r = await a.ans("ping", "-6", "-c", "2", "-W", "5", b_ip, timeout=30)
                assert r.returncode == 0, r.stdout + r.stderr
                return await _upload(a, b_ip, 7000, mb)
            finally:
                await _stop(sink)
                await ba.close()
                await bb.close()


async def ours(tmp: Path, mb: int, idle: int) -> tuple[float, int, int, float, float, float]:
    async with tunnelled_daemon(tmp) as (d, rig):
        assert d.proc is not None
        sink = await _start(sys.executable, "-c", SINK, "127.0.0.1", "7001")
        try:
            cpu0 = cpu_seconds(d.proc.pid)
            rate = await _upload(rig.wg, rig.agent_ip, 7001, mb)
            busy = (cpu_seconds(d.proc.pid) - cpu0) / (mb / rate)
            r = await rig.wg.ans(sys.executable, "-c", GETS, rig.agent_ip, "4", "30", timeout=120)
            assert r.returncode == 0, r.stderr
            via_tunnel = float(json.loads(r.stdout)["median"])
            loop_port = d.api("GET", "/api/v0/status").json()["tailnet"]["http_api_loopback_port"]
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", GETS, "127.0.0.1",
                                                        str(loop_port), "30", stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            direct = float(json.loads(out)["median"])
            await asyncio.sleep(2)
            rss_idle = rss_kib(d.proc.pid)
            hold = await _start("ip", "netns", "exec", rig.wg.netns, sys.executable, "-c", HOLD,
                                rig.agent_ip, "7001", str(idle))
            try:
                await asyncio.sleep(2)
                rss_held = rss_kib(d.proc.pid)
                st = d.api("GET", "/api/v0/status").json()["tailnet"]["tcp"]
                assert st["connections"] >= idle, st
            finally:
                await _stop(hold)
        finally:
            await _stop(sink)
        return rate, rss_idle, rss_held, via_tunnel, direct, busy


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mb", type=int, default=32)
    ap.add_argument("--idle", type=int, default=200)
    args = ap.parse_args()
    mb = 8 if args.quick else args.mb
    with tempfile.TemporaryDirectory(prefix="ca-bt-", dir="/tmp") as d:
        tmp = Path(d)
        base = await go_baseline(tmp, mb)
        rate, rss_idle, rss_held, via_tunnel, direct, busy = await ours(tmp, mb, args.idle)
    print(f"one forwarded TCP connection, {mb} MiB upload, kernel → wireguard-go → DERP relay → X")
    print("| measure | ours | baseline | ratio |")
    print("|---|---|---|---|")
    print(row("throughput: daemon (our WireGuard + TCP + forward) vs wireguard-go peer", rate, base, "MiB/s"))
    print(row(f"daemon RSS with {args.idle} idle tunnelled connections vs idle", rss_held / 1024,
              rss_idle / 1024, "MiB"))
    print(row("port 4 GET /api/v0/netcheck, new connection each: through the tunnel vs the loopback hop alone",
              via_tunnel * 1000, direct * 1000, "ms"))
    print(f"per idle connection: {(rss_held - rss_idle) / args.idle:.1f} KiB; "
          f"daemon CPU during the transfer: {busy * 100:.0f}% of one core")


if __name__ == "__main__":
    asyncio.run(main())
