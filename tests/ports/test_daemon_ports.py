"""The daemon as a real subprocess on a TCP local API with Prometheus on: its own ports never
appear, the ignore list applies, and the CLI prints what the API says."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from coder_agent.devserver import DevServer

from ..conftest import DaemonProcess, t
from .conftest import Listeners

V4 = {"family": 4, "host": "0.0.0.0"}
DUAL = {"family": 6, "host": "::", "v6only": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(d: DaemonProcess, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coder_agent", "ports", "--api-address", d.api_address, *args],
                          capture_output=True, text=True, timeout=t(timeout), env=d.env)


async def test_daemon_reports_ports_but_never_its_own(devserver: DevServer, daemon_env: Callable[..., Any],
                                                      spawn_daemon: Callable[..., DaemonProcess],
                                                      listen: Callable[..., Listeners]) -> None:
    ln = listen([V4, DUAL, V4], name="ca-daemon")
    ignored = ln.ports[2]
    api_port, prom_port = free_port(), free_port()
    env = daemon_env(devserver.url, devserver.agent.token,
                     CODER_AGENT_API_ADDRESS=f"127.0.0.1:{api_port}",
                     CODER_AGENT_PROMETHEUS_ADDRESS=f"127.0.0.1:{prom_port}",
                     CODER_AGENT_PORTS_IGNORE=str(ignored))
    d = spawn_daemon(env)
    # the devserver lives on this event loop: the blocking checks run in a thread
    await asyncio.to_thread(_check, d, ln, listen, api_port, prom_port, ignored)


def _check(d: DaemonProcess, ln: Listeners, listen: Callable[..., Listeners], api_port: int, prom_port: int,
           ignored: int) -> None:
    keep4, keep6, _ = ln.ports
    d.wait_ready()
    # the daemon's own sockets really exist and the kernel lists them...
    from coder_agent.ports.scan import ProcNetReader

    seen = {s.port for s in ProcNetReader().listeners()}
    assert {api_port, prom_port} <= seen
    # ...and the API leaves them out
    r = d.api("GET", "/api/v0/listening-ports")
    assert r.status_code == 200
    body = r.json()
    reported = {p["port"] for p in body["ports"]}
    assert api_port not in reported and prom_port not in reported
    assert [p for p in body["ports"] if p["port"] in ln.ports] == [
        {"process_name": "ca-daemon", "network": "tcp", "port": port} for port in sorted([keep4, keep6])]
    st = d.api("GET", "/api/v0/status").json()
    assert st["services"]["ports"]["state"] == "ok"

    # the CLI: JSON as the API answers it, and a table
    out = cli(d, "--json")
    assert out.returncode == 0, out.stderr
    assert {p["port"] for p in json.loads(out.stdout)["ports"]} >= {keep4, keep6}
    out = cli(d)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["PORT", "PROCESS", "NETWORK"]
    assert [str(keep4), "ca-daemon", "tcp"] in [ln_.split() for ln_ in lines]
    assert not any(ln_.split()[0] in (str(api_port), str(prom_port), str(ignored)) for ln_ in lines[1:])

    # --watch --json: the full list on connect, then again when a port opens
    proc = subprocess.Popen([sys.executable, "-m", "coder_agent", "ports", "--api-address", d.api_address,
                             "--watch", "--json"], stdout=subprocess.PIPE, text=True, env=d.env)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert keep4 in {p["port"] for p in first["ports"]}
        new = listen([V4], name="ca-late")
        while True:
            doc = json.loads(proc.stdout.readline())
            if {"process_name": "ca-late", "network": "tcp", "port": new.ports[0]} in doc["ports"]:
                break
    finally:
        proc.kill()
        proc.wait()


def test_cli_without_a_daemon_says_where_it_looked() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
    for extra in ([], ["--watch"]):
        out = subprocess.run([sys.executable, "-m", "coder_agent", "ports", "--api-address", f"127.0.0.1:{port}",
                              *extra], capture_output=True, text=True, timeout=t(20), env=env)
        assert out.returncode == 1
        assert f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr
