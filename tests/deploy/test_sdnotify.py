"""The sd_notify protocol as systemd sees it, without systemd: a real daemon subprocess talks to a
unix datagram socket we bind (path and abstract ``@`` forms) with NOTIFY_SOCKET and
WATCHDOG_USEC set the way systemd sets them for a Type=notify unit with WatchdogSec.

test_systemd.py runs the same daemon under a real systemd; these run in a second and pin the
wire details: READY=1 only once the local API answers, WATCHDOG=1 every WATCHDOG_USEC/2 from
the event loop (so a stalled loop goes silent), STOPPING=1 on SIGTERM, pings only for our pid.
"""

from __future__ import annotations

import itertools
import signal
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DaemonProcess, poll, t

from .conftest import ThreadedDevServer


class NotifyReceiver:
    """Bind a datagram socket like systemd's notify socket; record (monotonic time, message)."""

    def __init__(self, address: str) -> None:
        self.address = address  # the NOTIFY_SOCKET value
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self.on_message: Callable[[str], None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            msg = data.decode()
            if self.on_message is not None:
                self.on_message(msg)
            self.messages.append((time.monotonic(), msg))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def times(self, line: str) -> list[float]:
        return [ts for ts, m in self.messages if line in m.splitlines()]

    def first(self, line: str) -> str | None:
        return next((m for _, m in self.messages if line in m.splitlines()), None)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[NotifyReceiver]:
    addr = str(short_tmp / "notify.sock") if request.param == "path" else f"@coder-agent-test-{uuid.uuid4().hex}"
    r = NotifyReceiver(addr)
    yield r
    r.close()


@pytest.fixture
def devserver_t() -> Iterator[ThreadedDevServer]:
    ds = ThreadedDevServer().start()
    yield ds
    ds.stop()


def api_answers(d: DaemonProcess) -> bool:
    try:
        return d.api("GET", "/api/v0/status").status_code == 200
    except httpx.HTTPError:
        return False


def test_ready_after_api_then_watchdog_then_stopping(
    receiver: NotifyReceiver, devserver_t: ThreadedDevServer, daemon_env, spawn_daemon  # type: ignore[no-untyped-def]
) -> None:
    env = daemon_env(devserver_t.url, devserver_t.token, NOTIFY_SOCKET=receiver.address,
                     WATCHDOG_USEC="400000")
    answered_at_ready: list[bool] = []
    d: DaemonProcess | None = None

    def check(msg: str) -> None:
        # Runs on the receiver thread the moment READY=1 lands: the API must already answer.
        if "READY=1" in msg.splitlines() and d is not None:
            answered_at_ready.append(api_answers(d))

    receiver.on_message = check
    d = spawn_daemon(env)
    poll(lambda: answered_at_ready, 20)
    assert answered_at_ready == [True]
    ready = receiver.first("READY=1")
    assert ready is not None and "STATUS=local API at unix:" in ready

    # WATCHDOG_USEC=400 ms: a ping every 200 ms from the event loop.
    poll(lambda: len(receiver.times("WATCHDOG=1")) >= 8, 10)
    pings = receiver.times("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # every 200 ms; one late ping on a loaded machine is tolerated, a missing one is not
    assert 0.15 < statistics.median(gaps) < 0.3 and max(gaps) < t(0.6), gaps

    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0
    stopping = receiver.times("STOPPING=1")
    assert len(stopping) == 1 and stopping[0] > receiver.times("READY=1")[0]


def test_stalled_loop_stops_the_pings(
    receiver: NotifyReceiver, devserver_t: ThreadedDevServer, daemon_env, spawn_daemon  # type: ignore[no-untyped-def]
) -> None:
    # The stall starts 1 s after READY and blocks the loop for 1.5 s.
    env = daemon_env(devserver_t.url, devserver_t.token, NOTIFY_SOCKET=receiver.address,
                     WATCHDOG_USEC="200000", CODER_AGENT_DEBUG_STALL_LOOP="1.5")
    d = spawn_daemon(env)
    poll(lambda: receiver.times("READY=1"), 20)
    ready = receiver.times("READY=1")[0]
    poll(lambda: [p for p in receiver.times("WATCHDOG=1") if p > ready + 3.0], 15)
    pings = receiver.times("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) >= 1.4, gaps  # silent while stalled (systemd would kill us here)
    assert statistics.median(gaps) < 0.2, gaps  # and steady (every 100 ms) otherwise
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0


def test_no_watchdog_pings_for_another_pid(
    short_tmp: Path, devserver_t: ThreadedDevServer, daemon_env, spawn_daemon  # type: ignore[no-untyped-def]
) -> None:
    r = NotifyReceiver(str(short_tmp / "n.sock"))
    try:
        # systemd sets WATCHDOG_PID to the main pid; a child that inherits the env must not ping.
        env = daemon_env(devserver_t.url, devserver_t.token, NOTIFY_SOCKET=r.address,
                         WATCHDOG_USEC="200000", WATCHDOG_PID="1")
        d = spawn_daemon(env)
        poll(lambda: r.times("READY=1"), 20)
        time.sleep(t(0.6))  # three would-be ping periods
        assert not r.times("WATCHDOG=1")
        d.signal(signal.SIGTERM)
        assert d.wait(20) == 0
    finally:
        r.close()
