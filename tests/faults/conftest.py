"""The fault suite's harness: a daemon subprocess running a numbered-lines start script against the
devserver, and the received-vs-printed check every scenario ends with.

CI mode is short (outages of a few seconds); ``CODER_AGENT_FAULTS_LONG=1`` runs the long mode
(a 60 s control-plane outage, more lines). Scenarios are parametrised by the log transport:
``rest`` (PATCH /me/logs, which the REST-route faults hit) by default, and ``rpc``
(BatchCreateLogs over dRPC/yamux/websocket) for the RPC scenarios that ask for it.

Every scenario records one line (what was tried, what held) that is printed in the terminal
summary under "fault-injection results".
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coder_agent.devserver import DevServer
from coder_agent.devserver.rpc import control as rpc_control
from coder_agent.logsink import source_id_for

from ..conftest import DaemonProcess, apoll, t
from .checker import Report, check, numbered

LONG = os.environ.get("CODER_AGENT_FAULTS_LONG", "") not in ("", "0", "false")
# Scenarios fault the REST routes, so they run with the REST log transport; the RPC log
# transport (BatchCreateLogs) has its own scenarios (test_rpc_transport.py, transport "rpc").
TRANSPORTS = ["rest"]
SCRIPT_NAME = "Fault lines"
RESULTS: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS:
        terminalreporter.section("fault-injection results")
        for line in RESULTS:
            terminalreporter.write_line(line)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def transport_env(transport: str) -> dict[str, str]:
    """Environment that makes the daemon use ``transport`` for logs."""
    if transport in ("rest", "rpc"):
        return {}  # the choice is made on the devserver side (see ``scenario``)
    raise NotImplementedError(transport)


@dataclass
class Lines:
    """A start script printing ``prefix1..prefixN`` with a pause between lines."""

    n: int
    pause: float = 0.01
    prefix: str = "line-"
    once_marker: Path | None = None  # when set, a second run (after a restart) prints nothing

    @property
    def printed(self) -> list[str]:
        return numbered(self.prefix, self.n)

    def script(self) -> str:
        body = f"for i in $(seq 1 {self.n}); do echo {self.prefix}$i; sleep {self.pause}; done"
        if self.once_marker is not None:
            body = f"[ -e {self.once_marker} ] && exit 0; touch {self.once_marker}; {body}"
        return body


@dataclass
class Run:
    """One scenario: the devserver, the daemon(s), the script, the outcome."""

    ds: DevServer
    lines: Lines
    tmp: Path
    env: dict[str, str]
    spawn: Callable[..., DaemonProcess]
    daemons: list[DaemonProcess] = field(default_factory=list)

    @property
    def source_id(self) -> str:
        return source_id_for(SCRIPT_NAME)

    @property
    def daemon(self) -> DaemonProcess:
        return self.daemons[-1]

    def start(self, **extra_env: str) -> DaemonProcess:
        d = self.spawn({**self.env, **extra_env})
        self.daemons.append(d)
        return d

    async def ready(self) -> None:
        await asyncio.to_thread(self.daemon.wait_ready)

    def received(self) -> list[str]:
        return [r["output"] for r in self.ds.agent.logs if r["log_source_id"] == self.source_id]

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = self.daemon.api("GET", "/api/v0/status").json()
        return st

    def alive(self) -> None:
        d = self.daemon
        assert d.proc is not None
        assert d.proc.poll() is None, f"daemon exited {d.proc.returncode} on a transient fault: {d.stderr()[-2000:]}"

    async def all_received(self, timeout: float = 30, printed: list[str] | None = None) -> None:
        want = set(printed if printed is not None else self.lines.printed)
        try:
            await apoll(lambda: want <= set(self.received()), timeout=timeout)
        except AssertionError:
            rep = check(printed or self.lines.printed, self.received())
            raise AssertionError(f"not everything arrived: {rep.summary()}; "
                                 f"{rep.problems(max_replays=99)}\n{self.daemon.stderr()[-3000:]}") from None

    def local_lines(self) -> list[str]:
        """The source's entries in the local log file(s), oldest first."""
        from coder_agent.logs.text import parse_entry

        logs = Path(self.env["CODER_AGENT_LOG_DIR"])
        files = sorted(logs.glob("Fault-lines.log*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit()
                       else 0)
        out = []
        for f in files:
            for raw in f.read_text(errors="replace").splitlines():
                e = parse_entry(raw)
                if e is not None:
                    out.append(e[2])
        return out

    async def finish(self, tried: str, *, max_replays: int, printed: list[str] | None = None,
                     stop: bool = True, late_ok: bool = False) -> Report:
        """Check received vs printed, stop the daemon (exit 0), record the outcome."""
        printed = printed if printed is not None else self.lines.printed
        rep = check(printed, self.received())
        problems = rep.problems(max_replays=max_replays, late_ok=late_ok)
        code: int | None = None
        if stop:
            self.alive()
            self.daemon.signal(signal.SIGTERM)
            code = await asyncio.to_thread(self.daemon.wait, 30)
        held = "held" if not problems and code in (None, 0) else "FAILED"
        RESULTS.append(f"{tried}: {rep.summary()}; exit {code} -> {held}")
        assert not problems, f"{tried}: {problems}\n{self.daemon.stderr()[-3000:]}"
        assert code in (None, 0), f"exit {code}: {self.daemon.stderr()[-3000:]}"
        return rep


def write_config(tmp: Path, lines: Lines, extra: str = "") -> Path:
    p = tmp / "faults.toml"
    script = lines.script().replace("\\", "\\\\").replace('"', '\\"')
    p.write_text(f'{extra}\n[[scripts]]\ndisplay_name = "{SCRIPT_NAME}"\nscript = "{script}"\n')
    return p


@pytest.fixture
def scenario(short_tmp: Path, daemon_env: Callable[..., dict[str, str]], spawn_daemon: Callable[..., DaemonProcess],
             transport: str) -> Iterator[Callable[..., Run]]:
    """``scenario(ds, lines, config_extra="", **env)`` builds a :class:`Run` (not started)."""

    def make(ds: DevServer, lines: Lines, config_extra: str = "", token: str | None = None, **env: str) -> Run:
        cfg = write_config(short_tmp, lines, config_extra)
        if transport == "rest":
            # The agent RPC connects (it is the control-plane state), but this coderd "lacks"
            # BatchCreateLogs, so log batches take the REST route (PATCH /me/logs) these scenarios fault.
            rpc_control(ds).unknown.add("BatchCreateLogs")
        e = daemon_env(ds.url, ds.agent.token if token is None else token, CODER_AGENT_CONFIG=str(cfg),
                       CODER_AGENT_SHUTDOWN_TIMEOUT="10", **transport_env(transport))
        e.update(env)
        return Run(ds, lines, short_tmp, e, spawn_daemon)

    yield make


__all__ = ["LONG", "Lines", "Run", "t"]
