"""Shared fixtures: the devserver on loopback, temp dirs, a daemon in a real subprocess.

Timeouts scale with CODER_AGENT_TEST_TIMEOUT_FACTOR (default 1) so slow CI can stretch them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.tunnelports import TunnelService, splice

FACTOR = float(os.environ.get("CODER_AGENT_TEST_TIMEOUT_FACTOR", "1"))


def t(seconds: float) -> float:
    """A test timeout, scaled for slow machines."""
    return seconds * FACTOR


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy ``src`` to ``dst`` until EOF (or a reset), then close ``dst``."""
    with contextlib.suppress(ConnectionError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.close()


async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An ``asyncio.start_server`` handler that echoes until EOF."""
    await pipe(reader, writer)


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (gone, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def poll(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Wait (synchronously) until ``cond()`` is truthy; return it, or fail the test."""
    deadline = time.monotonic() + t(timeout)
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {t(timeout)} s")
        time.sleep(interval)


async def apoll(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + t(timeout)
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {t(timeout)} s")
        await asyncio.sleep(interval)


@pytest.fixture
async def devserver() -> AsyncIterator[DevServer]:
    async with DevServer(agents=[DevAgent(apps=[{"slug": "claude-code"}])]) as ds:
        yield ds


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str, *, ci_reason: str | None = None) -> NoReturn:
    """What a test needs is not here: under CI (which provisions everything) that is a failure,
    elsewhere a skip. ``ci_reason`` words the failure when it should say more (e.g. the fix)."""
    if IN_CI:
        pytest.fail(ci_reason or reason, pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def mount_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``where`` (e.g. ``size=1m`` for a disk that fills, ``ro`` for one that
    refuses every write even to root). Needs root; under CI=true that is a failure, not a skip."""
    if os.geteuid() != 0:
        unavailable("needs root to mount a tmpfs")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir (unix socket paths are limited to 108 bytes)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="ca-", dir="/tmp"))
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


class DaemonProcess:
    """``coder-agent run`` as a real child process with its own env."""

    def __init__(self, env: dict[str, str], args: list[str], tmp: Path) -> None:
        self.env = env
        self.args = args
        self.tmp = tmp
        self.stderr_path = tmp / f"daemon-stderr-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_address(self) -> str:
        return self.env["CODER_AGENT_API_ADDRESS"]

    def start(self) -> DaemonProcess:
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coder_agent", "run", *self.args],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self._err, start_new_session=True,
        )
        return self

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        addr = self.api_address
        transport = httpx.HTTPTransport(uds=addr[5:]) if addr.startswith("unix:") else None
        base = "http://agent" if transport else f"http://{addr}"
        with httpx.Client(transport=transport, base_url=base, timeout=10) as c:
            return c.request(method, path, **kw)

    def wait_ready(self, timeout: float = 20) -> None:
        def ok() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.stderr()}")
            try:
                return self.api("GET", "/api/v0/status").status_code == 200
            except httpx.HTTPError:
                return False

        poll(ok, timeout)

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(t(timeout))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(t(30))
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._err.close()
        return self.proc.returncode


CLIENT_IP = "fd7a:115c:a1e0:49d6:b259:b7ac:b1b2:48f4"  # the tunnel address coderd's client has
AGENT_IP = "fd7a:115c:a1e0:4353:89d9:4ca8:9c42:8d2d"


class Splicer:
    """A stand-in for the tunnel's port: each accepted connection is handed to
    :func:`~coder_agent.tunnelports.splice`, as the tailnet will (client ports 40000, 40001, ...)."""

    def __init__(self, svc: TunnelService, agent_port: int) -> None:
        self.svc = svc
        self.agent_port = agent_port
        self.next_port = 40000
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._splice, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _splice(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client_port, self.next_port = self.next_port, self.next_port + 1
        await splice(self.svc, reader, writer, (CLIENT_IP, client_port), (AGENT_IP, self.agent_port))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


_MODULES_WRAPPER = """
import os, runpy, signal, sys

def dump(*_):
    names = [n if m is not None else "-" + n for n, m in list(sys.modules.items())]
    tmp = os.environ["DUMP_MODULES"] + ".tmp"
    with open(tmp, "w") as f:
        f.write("\\n".join(names))
    os.replace(tmp, os.environ["DUMP_MODULES"])

signal.signal(signal.SIGUSR1, dump)
sys.argv = ["coder-agent", *sys.argv[1:]]
runpy.run_module("coder_agent", run_name="__main__", alter_sys=True)
"""


class ModulesDaemon(DaemonProcess):
    """``coder-agent run`` through a wrapper that writes the names in its ``sys.modules`` (import
    order) to a file on SIGUSR1: what a running daemon has loaded (test_idle_imports, bench.idle),
    and the names it blocked (``None`` entries: ``cli/run.py``'s unused optional packages)."""

    def start(self) -> ModulesDaemon:
        self.dump_path = self.tmp / "modules.txt"
        self.env["DUMP_MODULES"] = str(self.dump_path)
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-c", _MODULES_WRAPPER, "run", *self.args], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=self._err, start_new_session=True)
        return self

    def modules(self) -> list[str]:
        """The loaded modules' names, in import order."""
        return [n for n in self._dump() if not n.startswith("-")]

    def blocked_modules(self) -> list[str]:
        return [n[1:] for n in self._dump() if n.startswith("-")]

    def _dump(self) -> list[str]:
        self.dump_path.unlink(missing_ok=True)
        self.signal(signal.SIGUSR1)
        poll(self.dump_path.exists, 10)
        return self.dump_path.read_text().split()


@pytest.fixture
def daemon_env(short_tmp: Path) -> Callable[..., dict[str, str]]:
    """Build an environment for a daemon subprocess against ``url`` with ``token``."""

    def make(url: str, token: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
        env.update({
            "CODER_AGENT_URL": url,
            "CODER_AGENT_TOKEN": token,
            "CODER_AGENT_API_ADDRESS": f"unix:{short_tmp / 'api.sock'}",
            "CODER_AGENT_LOG_DIR": str(short_tmp / "logs"),
            "CODER_AGENT_STATE_DIR": str(short_tmp / "state"),
            "CODER_AGENT_PROMETHEUS_ADDRESS": "",
            "CODER_AGENT_LOG_FORMAT": "json",
            "CODER_AGENT_DEVCONTAINERS_ENABLE": "false",
        })
        env.update(extra)
        return env

    return make


@pytest.fixture
def spawn_daemon(short_tmp: Path) -> Iterator[Callable[..., DaemonProcess]]:
    procs: list[DaemonProcess] = []

    def spawn(env: dict[str, str], *args: str) -> DaemonProcess:
        d = DaemonProcess(env, list(args), short_tmp).start()
        procs.append(d)
        return d

    yield spawn
    for d in procs:
        d.stop()
