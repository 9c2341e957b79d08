"""Shared helpers for benchmarks: medians, RSS from /proc, a devserver in a child process, the real
daemon with a wireguard-go client tunnelled to it (tests/tailnet/rig.py)."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any


def median_time(fn: Callable[[], Any], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def bare_python_rss_kib() -> int:
    """RSS of a bare ``python`` (this interpreter) sleeping: the baseline for the daemon's idle RSS."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        return rss_kib(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


_FLOOR = """
import importlib, json, sys, time, warnings

warnings.filterwarnings("ignore", message="Unable to find acceptable character detection dependency")

def rss():
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))

wanted = json.loads(sys.stdin.readline())
for name in wanted["blocked"]:
    sys.modules.setdefault(name, None)
shares, failed = {}, []
for name in wanted["modules"]:
    if name in sys.modules:
        continue
    before = rss()
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name)
        continue
    top = name.split(".")[0]
    shares[top] = shares.get(top, 0) + rss() - before
print(json.dumps({"shares": shares, "failed": failed}), flush=True)
time.sleep(120)
"""


def library_floor(modules: list[str], blocked: list[str]) -> tuple[int, dict[str, int], list[str]]:
    """What ``modules`` cost a bare ``python``: a child blocks the names the daemon blocks (so an
    import of them fails as in the daemon), imports ``modules`` in the given order, then sleeps
    like the bare baseline. Returns its RSS (KiB, read from /proc as :func:`bare_python_rss_kib`
    does), the RSS each top-level package added as it was imported (with what it pulled in that was
    not loaded yet), and the names that would not import on their own."""
    child = subprocess.Popen([sys.executable, "-c", _FLOOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps({"modules": modules, "blocked": blocked}) + "\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
        return rss_kib(child.pid), report["shares"], report["failed"]
    finally:
        child.kill()
        child.wait()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU time (ns, the scheduler's ``sum_exec_runtime``) of each live thread of ``pid``: finer than
    :func:`cpu_seconds`' clock ticks (10 ms), which an idle daemon's minute does not even fill."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return out


def cpu_seconds_between(before: dict[int, int], after: dict[int, int]) -> float | None:
    """CPU seconds spent between two :func:`thread_cpu_ns` samples, or None when a thread of the
    first sample ended in between (its last share is lost: use :func:`cpu_seconds` then)."""
    if not set(before) <= set(after):
        return None
    return sum(ns - before.get(tid, 0) for tid, ns in after.items()) / 1e9


class DevServerProcess:
    """``python -m coder_agent.devserver`` in a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "coder_agent.devserver"], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.url: str = info["url"]
        self.token: str = info["token"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def row(name: str, value: float, baseline: float, unit: str) -> str:
    ratio = value / baseline if baseline else float("inf")
    return f"| {name} | {value:.4g} {unit} | {baseline:.4g} {unit} | {ratio:.2f}x |"


@contextlib.asynccontextmanager
async def tunnelled_daemon(tmp: Path, **env: str) -> AsyncIterator[tuple[Any, Any]]:
    """The devserver (tailnet, DERP relay) in this process, the real daemon as a child with ``env``
    on top of its settings, and tests/tailnet/rig.py's wireguard-go client in a network namespace
    tunnelled to it: yields ``(daemon, rig)`` (a ``tests.conftest.DaemonProcess``, a
    ``tests.tailnet.rig.Tunnelled``). The relay and the bridges run on this event loop: keep it free
    (blocking work in a thread). Needs root, /dev/net/tun, wireguard-go and wg."""
    import asyncio
    import uuid

    from coder_agent.devserver import DevAgent, DevServer
    from tests.conftest import DaemonProcess
    from tests.tailnet.rig import Tunnelled

    async with DevServer(agents=[DevAgent(id=str(uuid.uuid4()))], tailnet=True) as ds:
        full = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
        full.update({"CODER_AGENT_URL": ds.url, "CODER_AGENT_TOKEN": ds.agent.token,
                     "CODER_AGENT_API_ADDRESS": f"unix:{tmp / 'api.sock'}", "CODER_AGENT_LOG_DIR": str(tmp / "logs"),
                     "CODER_AGENT_STATE_DIR": str(tmp / "state"), "CODER_AGENT_PROMETHEUS_ADDRESS": "",
                     "CODER_AGENT_DEVCONTAINERS_ENABLE": "false", "CODER_AGENT_PORTS_ENABLE": "false"})
        full.update(env)
        d = DaemonProcess(full, [], tmp).start()
        try:
            await asyncio.to_thread(d.wait_ready)
            async with Tunnelled(ds, d, tmp) as rig:
                yield d, rig
        finally:
            await asyncio.to_thread(d.stop)
