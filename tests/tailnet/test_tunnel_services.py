"""Services inside the tunnel of the REAL daemon: the agent HTTP API on port 4, the speedtest on
port 3, and UpdateStats counting tunnel connections (coder-tailnet.md §7, §8).

The client is curl / Python with the kernel's TCP in wireguard-go's namespace (rig.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.rpc import control, record

from ..conftest import apoll, t
from .rig import Tunnelled

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SPEEDTEST = r"""
import json, socket, sys, time
host, direction, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
version = int(sys.argv[4]) if len(sys.argv) > 4 else 2
s = socket.create_connection((host, 3), timeout=30)
s.sendall(json.dumps({"version": version, "time": int(seconds * 1e9), "direction": direction}).encode() + b"\n")
f = s.makefile("rb")
answer = json.loads(f.readline())
n = 0
t0 = time.monotonic()
if "error" not in answer:
    if direction == 0:
        while chunk := f.read1(1 << 16):
            n += len(chunk)
    else:
        block = b"x" * (1 << 16)
        while time.monotonic() - t0 < seconds:
            s.sendall(block)
            n += len(block)
        s.shutdown(socket.SHUT_WR)
        rest = s.recv(10)
        assert rest == b"", rest
print(json.dumps({"answer": answer, "bytes": n, "seconds": time.monotonic() - t0}))
"""

HOLD = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b"hi")
time.sleep(float(sys.argv[3]))
s.close()
print("{}")
"""


@pytest.fixture
async def tunnelled(daemon_env: Any, spawn_daemon: Any, short_tmp: Path) -> AsyncIterator[Tunnelled]:
    agent = DevAgent(id=str(uuid.uuid4()))
    async with DevServer(agents=[agent], tailnet=True) as ds:
        control(ds).report_interval = 0.5
        d = spawn_daemon(daemon_env(ds.url, ds.agent.token, CODER_AGENT_DEVCONTAINERS_ENABLE="false"))
        d.wait_ready()
        async with Tunnelled(ds, d, short_tmp) as rig:
            yield rig


async def curl(rig: Tunnelled, path: str, *args: str) -> tuple[int, Any]:
    r = await rig.wg.ans("curl", "-sS", "-g", "-m", "20", "-w", "\n%{http_code}", *args,
                         f"http://[{rig.agent_ip}]:4{path}", timeout=40)
    assert r.returncode == 0, r.stderr
    body, _, code = r.stdout.rpartition("\n")
    try:
        return int(code), json.loads(body)
    except ValueError:
        return int(code), body


async def test_agent_http_api_on_port_4(tunnelled: Tunnelled) -> None:
    rig = tunnelled
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        code, body = await curl(rig, "/api/v0/listening-ports")
        assert code == 200, body
        ports = {p["port"] for p in body["ports"]}
        if port not in ports:  # the scan may be cached for a moment: ask until it is seen
            async def seen() -> bool:
                c, b = await curl(rig, "/api/v0/listening-ports")
                return c == 200 and port in {p["port"] for p in b["ports"]}
            deadline = asyncio.get_running_loop().time() + t(20)
            while not await seen():
                assert asyncio.get_running_loop().time() < deadline, body
                await asyncio.sleep(0.5)
            code, body = await curl(rig, "/api/v0/listening-ports")
        assert all(p["network"] == "tcp" for p in body["ports"])
        # the daemon's own loopback listener for port 4 is never one of the workspace's ports
        st = rig.daemon.api("GET", "/api/v0/status").json()["tailnet"]
        own = st["http_api_loopback_port"]
        assert own not in {p["port"] for p in body["ports"]}, (own, body)
        assert st["tcp"]["ports"] == [1, 2, 3, 4, 22] and st["tcp"]["connections"] >= 0
    finally:
        listener.close()

    code, body = await curl(rig, "/api/v0/containers")
    assert code == 403 and body["message"], body
    code, body = await curl(rig, "/api/v0/netcheck")
    assert code == 200 and body["derp"]["home_region"] == 999, body
    code, body = await curl(rig, "/api/v0/list-directory", "-X", "POST", "-d",
                            json.dumps({"path": [], "relativity": "root"}))
    assert code == 200 and body["absolute_path_string"] == "/" and body["absolute_path"] == [], body
    names = [e["name"] for e in body["contents"]]
    assert "tmp" in names and "etc" in names
    dirs = [e["is_dir"] for e in body["contents"]]
    assert dirs == sorted(dirs, reverse=True)  # directories first
    code, body = await curl(rig, "/api/v0/list-directory", "-X", "POST", "-d",
                            json.dumps({"path": ["no-such-dir-here"], "relativity": "root"}))
    assert code == 404, body
    code, body = await curl(rig, "/debug/manifest")
    assert code == 200 and body["agent_id"] == str(rig.agent_id), body
    code, body = await curl(rig, "/debug/prometheus")
    assert code == 200 and "coder_agent_tailnet_packets_total" in body, body[:500]
    code, body = await curl(rig, "/")
    assert code == 200, body
    # only the Go routes coderd calls: the local API's other routes stay on the unix socket
    for path in ("/api/v0/status", "/api/v0/manifest", "/api/v0/env", "/api/v0/gitsshkey"):
        code, body = await curl(rig, path)
        assert code == 404, (path, body)
    # the same handler answers on the local API
    r = rig.daemon.api("POST", "/api/v0/list-directory", json={"path": ["tmp"], "relativity": "root"})
    assert r.status_code == 200 and r.json()["absolute_path_string"] == "/tmp"


async def test_speedtest_on_port_3(tunnelled: Tunnelled) -> None:
    rig = tunnelled
    down = await rig.ns_python(SPEEDTEST, rig.agent_ip, 0, 1.0)
    assert down["answer"] == {} and down["bytes"] >= 2 * 1024 * 1024, down
    assert down["seconds"] < t(20), down
    up = await rig.ns_python(SPEEDTEST, rig.agent_ip, 1, 1.0)
    assert up["answer"] == {} and up["bytes"] > 0, up
    bad = await rig.ns_python(SPEEDTEST, rig.agent_ip, 0, 1.0, 1)
    assert "version mismatch" in bad["answer"]["error"], bad
    print(f"speedtest: down {down['bytes'] / down['seconds'] / 1e6:.1f} MB/s, "
          f"up {up['bytes'] / up['seconds'] / 1e6:.1f} MB/s")


async def test_update_stats_count_tunnel_connections(tunnelled: Tunnelled) -> None:
    rig = tunnelled
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hold = asyncio.ensure_future(rig.ns_python(HOLD, rig.agent_ip, port, 8))
    try:
        stats = await apoll(lambda: [s for s in record(rig.ds.agent).stats if s.get("connection_count", 0) > 0],
                            timeout=t(30))
        s = stats[-1]
        assert s["connections_by_proto"] == {"TCP": s["connection_count"]}, s
        assert s["rx_packets"] > 0 and s["tx_packets"] > 0 and s["rx_bytes"] > 0 and s["tx_bytes"] > 0, s
    finally:
        await hold
        server.close()
