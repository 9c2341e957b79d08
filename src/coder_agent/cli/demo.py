"""``coder-agent demo [--for DURATION]``: the devserver and the daemon, side by side, in one process.

Shows live what the control plane receives (lifecycle, log lines, app statuses, requests) and,
with ``--for``, runs that long, prints a summary and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 10s, 2m, 500ms)")
    value = float(m.group(1))
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--for", dest="duration", type=parse_duration, default=None,
                   help="run this long (e.g. 10s), print a summary and exit")
    p.add_argument("--log-level", default="warning", help="the daemon's own log level during the demo")


DEMO_SCRIPT = (
    "echo 'demo: preparing the workspace'; "
    "for i in 1 2 3; do echo \"demo: step $i of 3\"; sleep 0.2; done; "
    "echo 'demo: ready'"
)


def _out(line: str) -> None:
    print(line, flush=True)


class Watcher:
    """Prints what the devserver received since the last look."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self.seen_logs = 0
        self.seen_status = 0
        self.seen_lifecycle = 0
        self.seen_requests = 0
        self.seen_connection: tuple[int, bool] = (0, False)

    def poll(self) -> None:
        agent = self.ds.agent
        from ..devserver.rpc import record

        rpc = record(agent)
        conn_line = ""
        if (rpc.connections, rpc.connected) != self.seen_connection:
            self.seen_connection = (rpc.connections, rpc.connected)
            version = rpc.upgrades[-1]["query"].get("version", "?") if rpc.upgrades else "?"
            conn_line = (f"  agent       → {'connected' if rpc.connected else 'disconnected'}"
                         f" (RPC API {version}, connection #{rpc.connections})")
        if conn_line and rpc.connected:
            _out(conn_line)
        for lc in agent.lifecycle[self.seen_lifecycle:]:
            _out(f"  lifecycle   → {lc.get('state')}")
        self.seen_lifecycle = len(agent.lifecycle)
        if conn_line and not rpc.connected:
            _out(conn_line)
        sources = {k: v.get("display_name", "?") for k, v in agent.log_sources.items()}
        for row in agent.logs[self.seen_logs:]:
            _out(f"  log [{sources.get(row['log_source_id'], '?')}] {row['output']}")
        self.seen_logs = len(agent.logs)
        for st in agent.app_statuses[self.seen_status:]:
            _out(f"  app-status  {st['app_slug']}: {st['state']} {st['message']}")
        self.seen_status = len(agent.app_statuses)
        for extra_key, value in sorted(agent.extra.items()):
            if extra_key.startswith("demo:"):
                _out(f"  {extra_key[5:]}: {value}")
                agent.extra.pop(extra_key, None)


class Tool:
    """Plays a tool in the workspace: reports app statuses, starts a server, reads the local API."""

    def __init__(self, address: str, labels: dict[int, str]) -> None:
        from ..localapi.client import async_local_client

        self.labels = labels
        self.http = async_local_client(address)
        self.ports_seen: set[int] = set()
        self.containers = "not checked"

    async def _wait_api(self) -> None:
        import httpx

        while True:
            try:
                if (await self.http.get("/api/v0/status")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)

    async def _status(self, state: str, message: str) -> None:
        r = await self.http.post("/api/v0/app-status", json={"app_slug": "claude-code", "state": state,
                                                               "message": message})
        _out(f"  tool        → app-status {state} {message!r}: HTTP {r.status_code}")

    async def _ports(self) -> None:
        r = await self.http.get("/api/v0/listening-ports")
        if r.status_code != 200:
            return
        now = {p["port"]: p["process_name"] for p in r.json()["ports"]}
        for port in sorted(set(now) - self.ports_seen):
            label = f" — {self.labels[port]}" if port in self.labels else ""
            _out(f"  local API   port {port} open ({now[port] or '?'}){label}")
        for port in sorted(self.ports_seen - set(now)):
            _out(f"  local API   port {port} closed")
        self.ports_seen = set(now)

    async def play(self) -> None:
        await self._wait_api()
        r = await self.http.get("/api/v0/containers")
        body = r.json()
        if r.status_code == 200:
            warn = f" ({body['warnings'][0]})" if body.get("warnings") else ""
            self.containers = f"{len(body['containers'])} containers, {len(body['devcontainers'])} devcontainers{warn}"
        else:
            self.containers = f"HTTP {r.status_code}: {body.get('message')}"
        _out(f"  local API   containers: {self.containers}")
        await self._status("working", "Reading the code")
        await self._ports()
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.labels[port] = "the tool's web server"
        _out(f"  tool        started a web server on port {port}")
        for _ in range(20):
            await asyncio.sleep(0.25)
            await self._ports()
        await self._status("working", "Writing the fix")
        await self._status("complete", "Opened a pull request")
        server.close()
        await server.wait_closed()
        while True:
            await asyncio.sleep(1)
            await self._ports()


async def _demo(duration: float | None, log_level: str) -> int:
    from ..config import load_settings
    from ..daemon import Daemon
    from ..devserver import DevAgent, DevServer
    from ..log import configure_logging
    from ..tasks import reap

    tmp = Path(tempfile.mkdtemp(prefix="coder-agent-demo-"))
    agent = DevAgent(name="demo", apps=[{"slug": "claude-code", "display_name": "Claude Code"}])
    async with DevServer(agents=[agent], tailnet=True) as ds:
        _out(f"devserver (the dev control plane) at {ds.url}")
        cfg = tmp / "config.toml"
        cfg.write_text(
            f'url = "{ds.url}"\n'
            f'token = "{agent.token}"\n'
            f'log_dir = "{tmp / "logs"}"\n'
            f'state_dir = "{tmp / "state"}"\n'
            'prometheus_address = ""\n'
            f'[api]\naddress = "unix:{tmp / "api.sock"}"\n'
            "[[scripts]]\n"
            'display_name = "Demo setup"\n'
            f"script = {json.dumps(DEMO_SCRIPT)}\n"
        )
        settings = load_settings({}, env={}, config_file=cfg)
        redactor = configure_logging(fmt="console", level=log_level, log_file=settings.log_dir / "coder-agent.log")
        daemon = Daemon(settings, redactor=redactor)
        _out(f"coder-agent daemon starting; local API at {settings.api_address}")
        _out(f"  (try: coder-agent status --api-address {settings.api_address})")
        run = asyncio.create_task(daemon.run())
        tool = Tool(settings.api_address, {ds.port: "the devserver"})
        play = asyncio.create_task(tool.play())
        tunnel = asyncio.create_task(_tunnel(ds, uuid.UUID(agent.id)))
        watcher = Watcher(ds)
        connection = "disconnected"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration if duration is not None else None
        try:
            while not run.done():
                watcher.poll()
                if deadline is not None and loop.time() >= deadline:
                    break
                await asyncio.sleep(0.25)
        finally:
            await reap(play, tunnel)
            await tool.http.aclose()
            connection = daemon.controlplane.state.value  # while running: after the stop it is "disconnected"
            tailnet_seen = _tailnet_summary(daemon.status().get("tailnet"))  # likewise: stopped after
            daemon.request_stop()
            code = await run
            watcher.poll()
        st = daemon.status()
        summary = {
            "connection": connection,
            "lifecycle": st["lifecycle"],
            "log_sources": len(agent.log_sources),
            "log_lines": len(agent.logs),
            "app_statuses": len(agent.app_statuses),
            "listening_ports": ", ".join(map(str, sorted(tool.ports_seen))) or "none",
            "containers": tool.containers,
            "tailnet": tailnet_seen,
            "requests_seen": len(ds.state.requests),
            "daemon_exit_code": code,
        }
        _out("summary:")
        for k, v in summary.items():
            _out(f"  {k:<18}{v}")
        _out(f"files kept in {tmp}")
        return 0 if code == 0 else 1


async def _tunnel(ds: Any, agent_id: uuid.UUID) -> None:
    """A Coder client of our own reaches the agent through the tailnet, as ``coder ssh`` would first."""
    from ..devserver.tunnelpeer import reach_agent

    try:
        r = await reach_agent(ds, agent_id, timeout=30.0)
    except (TimeoutError, OSError) as e:
        _out(f"tailnet: a client peer could not reach the agent ({type(e).__name__}: {e})")
        return
    _out(f"tailnet: the agent is at [{r.agent_address}], DERP home region {r.agent_home_region}; a client peer "
         f"handshook with it over WireGuard in {r.handshake_ms:.0f} ms and got its TSMP pong in "
         f"{r.tsmp_pong_ms:.0f} ms")


def _tailnet_summary(st: Any) -> str:
    if not isinstance(st, dict) or st.get("home_region") is None:
        return str((st or {}).get("state", "off")) if isinstance(st, dict) else "off"
    peers = [p for p in st.get("peers", []) if p.get("last_handshake")]
    return f"home region {st['home_region']}, DERP {st.get('derp_connection')}, {len(peers)} peer(s) handshook"


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_demo(args.duration, args.log_level))
    except KeyboardInterrupt:
        print("demo stopped", file=sys.stderr)
        return 0
