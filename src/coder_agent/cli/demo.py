"""``coder-agent demo [--for DURATION]``: the devserver and the daemon, side by side, in one process.

Shows live what the control plane receives (lifecycle, log lines, app statuses, connection
reports, requests) and, with ``--for``, runs that long, prints a summary and exits 0.

The devserver joins the agent's tailnet as a Coder client would (:mod:`..devserver.tunnelpeer`):
once its TSMP ping is answered, a local port is forwarded over that tunnel to the agent's SSH
port 1 (:mod:`..devserver.portforward`) and the demo prints the ``ssh`` line that uses it (it
works while the demo runs), then plays a short web-terminal session on port 2 (the reconnecting
PTY: header, one typed command, ``exit``) and prints what came back. The demo workspace's
``$HOME`` (the demo process's, so the daemon's: every session's and sftp's) and its directory are
a fresh temporary directory, so a login shell there reads none of the invoking user's dotfiles
and a file copied with a relative path lands there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..devserver.tunnelpeer import ClientPeer
    from ..tailnet.tunnel import TunnelConn


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
        self.seen_reports = 0
        self.seen_connection: tuple[int, bool] = (0, False)

    def poll(self) -> None:
        agent = self.ds.agent
        from ..devserver.rpc import record

        rpc = record(agent)
        for c in rpc.connection_reports[self.seen_reports:]:
            end = f", status {c['status_code']}" if c["action"] == "DISCONNECT" else ""
            _out(f"  connection  → {c['type']} {c['action'].lower()} from [{c['ip']}]{end}")
        self.seen_reports = len(rpc.connection_reports)
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


async def _demo(tmp: Path, duration: float | None, log_level: str) -> int:
    from ..config import load_settings
    from ..daemon import Daemon
    from ..devserver import DevAgent, DevServer
    from ..log import configure_logging
    from ..tasks import reap

    agent = DevAgent(name="demo", apps=[{"slug": "claude-code", "display_name": "Claude Code"}],
                     directory=os.environ["HOME"])
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
        forwarded: dict[str, Any] = {}
        tunnel = asyncio.create_task(_tunnel(ds, uuid.UUID(agent.id), tool.labels, forwarded))
        watcher = Watcher(ds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration if duration is not None else None

        def running_view(seen: tuple[str, str]) -> tuple[str, str]:
            """The connection and tailnet while running (after the stop both read as stopped)."""
            st = daemon.status()
            if st.get("lifecycle") in ("shutting_down", "shutdown_timeout", "shutdown_error", "off"):
                return seen
            return daemon.controlplane.state.value, _tailnet_summary(st.get("tailnet"))

        view = running_view(("disconnected", "off"))
        try:
            ticks = 0
            while not run.done():
                watcher.poll()
                if deadline is not None and loop.time() >= deadline:
                    break
                if ticks % 4 == 0:  # a stop signal (Ctrl-C) goes to the daemon first: keep a recent view
                    view = running_view(view)
                ticks += 1
                await asyncio.sleep(0.25)
        finally:
            await reap(play, tunnel)
            await tool.http.aclose()
            if not run.done():  # --for ended (Ctrl-C goes to the daemon itself: it is stopping by then)
                view = running_view(view)
                daemon.request_stop()
            connection, tailnet_seen = view
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
            "ssh_forward": (f"127.0.0.1:{forwarded['port']}, {forwarded['fwd'].accepted} connection(s)"
                            if forwarded else "none"),
            "requests_seen": len(ds.state.requests),
            "daemon_exit_code": code,
        }
        _out("summary:")
        for k, v in summary.items():
            _out(f"  {k:<18}{v}")
        _out(f"files kept in {tmp}")
        return 0 if code == 0 else 1


async def _tunnel(ds: Any, agent_id: uuid.UUID, labels: dict[int, str], forwarded: dict[str, Any]) -> None:
    """A Coder client of our own reaches the agent through the tailnet, as ``coder ssh`` would
    first; then a local port is forwarded to its SSH server and the web terminal is shown."""
    from ..devserver.portforward import PortForward
    from ..devserver.tunnelpeer import join

    try:
        peer = await join(ds, agent_id, timeout=30.0)
    except (TimeoutError, OSError) as e:
        _out(f"tailnet: a client peer could not join the agent's tailnet ({type(e).__name__}: {e})")
        return
    async with peer:
        try:
            pong_ms = await peer.ping(timeout=30.0)
        except TimeoutError:
            _out("tailnet: a client peer got no TSMP pong from the agent in 30 s")
            return
        _out(f"tailnet: the agent is at [{peer.agent_address}], DERP home region {peer.agent_home_region}; a "
             f"client peer handshook with it over WireGuard in {peer.handshake_ms:.0f} ms and got its TSMP pong "
             f"in {pong_ms:.0f} ms")
        async with PortForward(peer, 1) as fwd:
            labels[fwd.port] = "the devserver's ssh forward"
            forwarded.update(port=fwd.port, fwd=fwd)
            _out(f"ssh: 127.0.0.1:{fwd.port} is forwarded through that tunnel to the agent's SSH server (port 1);"
                 " while the demo runs, try:")
            _out(f"  {ssh_command(fwd.port)}")
            await _web_terminal(peer)
            await asyncio.Event().wait()  # until the demo ends (cancelled)


def ssh_command(port: int) -> str:
    """The line printed for the user: the agent's host key is per workspace and not worth keeping."""
    return (f"ssh -p {port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
            "coder@127.0.0.1")


WEB_TERMINAL_COMMAND = "echo hello from the web terminal"
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


class _Screen:
    """What a web terminal shows, as plain lines: the PTY's bytes without escape sequences."""

    def __init__(self) -> None:
        self.raw = bytearray()

    def text(self) -> str:
        return _ANSI.sub("", self.raw.decode(errors="replace")).replace("\r\n", "\n")

    def lines(self) -> list[str]:
        out = []
        for line in self.text().split("\n"):
            line = line.rsplit("\r", 1)[-1] if line.rstrip("\r") else ""  # a carriage return redraws
            if line.strip():
                out.append(line.rstrip())
        return out


async def _read_until(conn: TunnelConn, screen: _Screen, done: Callable[[str], bool], timeout: float,
                      quiet: float = 0.0) -> bool:
    """Read into ``screen`` until ``done(text)`` holds (and, with ``quiet``, no byte came for that
    long: a prompt is complete), EOF or the timeout; whether ``done`` held at the end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        met = done(screen.text())
        wait = deadline - loop.time()
        if met and not quiet:
            return True
        if wait <= 0:
            return met
        try:
            chunk = await asyncio.wait_for(conn.read(), min(wait, quiet) if met else wait)
        except TimeoutError:
            if met:
                return True
            continue
        if not chunk:
            return done(screen.text())
        screen.raw += chunk


async def _web_terminal(peer: ClientPeer) -> None:
    """What the dashboard's terminal does, scripted: port 2, a new session, one command, exit."""
    from ..rpty.protocol import InitRequest, encode_init, encode_input

    session = str(uuid.uuid4())
    _out(f"web terminal: reconnecting PTY on the agent's port 2 through the tunnel, session {session[:8]}…, "
         f"typing {WEB_TERMINAL_COMMAND!r} then 'exit':")
    try:
        conn = await peer.open(2)
    except (OSError, TimeoutError) as e:
        _out(f"  web terminal could not connect ({type(e).__name__}: {e})")
        return
    screen = _Screen()
    ok = False
    try:
        conn.write(encode_init(InitRequest(id=session, height=24, width=100)))
        await conn.drain()
        await _read_until(conn, screen, lambda t: bool(t.strip()), 20.0, quiet=0.5)  # the prompt
        conn.write(encode_input(WEB_TERMINAL_COMMAND + "\r"))
        await conn.drain()
        answer = WEB_TERMINAL_COMMAND.removeprefix("echo ")  # a line of its own: the output, not the typing
        ok = await _read_until(conn, screen, lambda _t: answer in screen.lines(), 20.0, quiet=0.5)
        conn.write(encode_input("exit\r"))
        await conn.drain()
        await _read_until(conn, screen, lambda _t: False, 10.0)  # until the shell exits: EOF
    except (ConnectionError, OSError) as e:
        _out(f"  web terminal connection ended: {type(e).__name__}: {e}")
    finally:
        conn.close()
    for line in screen.lines():
        _out(f"  web terminal │ {line}")
    _out(f"web terminal: {'the command ran' if ok else 'the command output did not arrive'}; session closed")


def _tailnet_summary(st: Any) -> str:
    if not isinstance(st, dict) or st.get("home_region") is None:
        return str((st or {}).get("state", "off")) if isinstance(st, dict) else "off"
    peers = [p for p in st.get("peers", []) if p.get("last_handshake")]
    return f"home region {st['home_region']}, DERP {st.get('derp_connection')}, {len(peers)} peer(s) handshook"


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="coder-agent-demo-"))
    (tmp / "home").mkdir()
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp / "home")  # the demo workspace's home: see the module docstring
    try:
        return asyncio.run(_demo(tmp, args.duration, args.log_level))
    except KeyboardInterrupt:
        print("demo stopped", file=sys.stderr)
        return 0
    finally:
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved
