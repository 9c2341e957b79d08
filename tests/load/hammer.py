"""Load on the local API: N concurrent clients against a real daemon, with latency and cost figures.

The daemon (``coder-agent run``) and the devserver run as child processes; the clients are
aiohttp sessions on the daemon's unix socket in this process. Each client loops over the mix
(listening ports, containers, app-status POST then GET, status) until the time is up, and
records the latency and status code of every request. Meanwhile a sampler reads the daemon's
RSS and CPU time from /proc every 250 ms, and a monitor asks ``/api/v0/status`` on its own
connection so a stall of the control plane shows even if the clients' requests were slow.

``python -m tests.load.hammer [--long] [--seconds S] [--clients N] [--no-devcontainers]`` runs it
alone and prints the report (``--long``: 60 s; default 10 s, the CI mode of tests/load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

SLUG = "claude-code"  # the devserver agent's app
MIX = ("listening-ports", "containers", "app-status POST", "app-status GET", "status")


def rss_kib(pid: int) -> int:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stack:
    """The devserver and a daemon as child processes, in a temp dir of their own."""

    def __init__(self, devcontainers: bool = True) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ca-load-", dir="/tmp"))
        self.ds = subprocess.Popen([sys.executable, "-m", "coder_agent.devserver"], stdout=subprocess.PIPE,
                                   text=True)
        assert self.ds.stdout is not None
        info = json.loads(self.ds.stdout.readline())
        self.sock = self.tmp / "api.sock"
        (self.tmp / "work").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
        env.update({
            "CODER_AGENT_URL": info["url"], "CODER_AGENT_TOKEN": info["token"],
            "CODER_AGENT_API_ADDRESS": f"unix:{self.sock}", "CODER_AGENT_LOG_DIR": str(self.tmp / "logs"),
            "CODER_AGENT_STATE_DIR": str(self.tmp / "state"), "CODER_AGENT_PROMETHEUS_ADDRESS": "",
            "CODER_AGENT_LOG_FORMAT": "json", "CODER_AGENT_LOG_LEVEL": "warning",
            "CODER_AGENT_DEVCONTAINERS_ENABLE": "true" if devcontainers else "false",
            "CODER_AGENT_DIRECTORY": str(self.tmp / "work"),
        })
        self.stderr_path = self.tmp / "daemon.stderr"
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self.daemon = subprocess.Popen([sys.executable, "-m", "coder_agent", "run"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=self._err, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> int | None:
        code = None
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                code = self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()
        else:
            code = self.daemon.returncode
        self._err.close()
        self.ds.terminate()
        self.ds.wait(10)
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)
        return code


@dataclass
class Report:
    seconds: float
    clients: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    codes: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # transport errors by type
    rss_kib: list[int] = field(default_factory=list)
    cpu_seconds: float = 0.0
    control_plane: Counter[str] = field(default_factory=Counter)  # states seen by the monitor
    last_app_status: dict[str, Any] | None = None  # the outcome of the last POST, after the run

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def all_latencies(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]

    def server_errors(self) -> list[tuple[str, int, int]]:
        return [(k, c, n) for (k, c), n in self.codes.items() if c >= 500]

    @staticmethod
    def pct(xs: list[float], p: float) -> float:
        if not xs:
            return float("nan")
        xs = sorted(xs)
        return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]

    def p99(self) -> float:
        return self.pct(self.all_latencies(), 99)

    def table(self) -> str:
        rows = ["| request | count | p50 ms | p99 ms | max ms | status codes |",
                "|---|---:|---:|---:|---:|---|"]
        for name in [*MIX, "all"]:
            xs = self.all_latencies() if name == "all" else self.latencies.get(name, [])
            codes = ", ".join(f"{c}×{n}" for (k, c), n in sorted(self.codes.items())
                              if name == "all" or k == name)
            rows.append(f"| {name} | {len(xs)} | {self.pct(xs, 50) * 1e3:.1f} | {self.pct(xs, 99) * 1e3:.1f} | "
                        f"{(max(xs) if xs else float('nan')) * 1e3:.1f} | {codes if name != 'all' else ''} |")
        rss = self.rss_kib or [0]
        return "\n".join([
            *rows, "",
            f"{self.clients} clients for {self.seconds:.0f} s: {self.requests} requests "
            f"({self.requests / self.seconds:.0f}/s), transport errors: {dict(self.errors) or 'none'}",
            f"daemon RSS: start {rss[0] / 1024:.1f} MiB, peak {max(rss) / 1024:.1f} MiB, "
            f"end {rss[-1] / 1024:.1f} MiB; CPU {self.cpu_seconds:.1f} s "
            f"({100 * self.cpu_seconds / self.seconds:.0f}% of one core)",
            f"control plane states seen by the monitor: {dict(self.control_plane)}; "
            f"last app status: {(self.last_app_status or {}).get('delivery')}",
        ])


async def _wait_connected(session: aiohttp.ClientSession, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            async with session.get("http://agent/api/v0/status") as r:
                last = await r.json()
            if last["control_plane"]["state"] == "connected":
                return last
        except (aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"daemon not connected within {timeout} s: {last}")


async def run_load(stack: Stack, seconds: float, clients: int, ready_timeout: float = 30.0) -> Report:
    rep = Report(seconds, clients)
    connector = aiohttp.UnixConnector(path=str(stack.sock), limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await _wait_connected(session, ready_timeout)
        stop = time.monotonic() + seconds
        last_post: list[str] = []

        async def one(name: str, method: str, path: str, body: Any = None) -> Any:
            t0 = time.perf_counter()
            try:
                async with session.request(method, "http://agent" + path, json=body) as r:
                    data = await r.read()
                    code = r.status
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                rep.errors[type(e).__name__] += 1
                return None
            rep.latencies[name].append(time.perf_counter() - t0)
            rep.codes[(name, code)] += 1
            return json.loads(data) if data else None

        async def client(i: int) -> None:
            n = 0
            while time.monotonic() < stop:
                n += 1
                await one("listening-ports", "GET", "/api/v0/listening-ports")
                await one("containers", "GET", "/api/v0/containers")
                state = "working" if n % 2 else "idle"
                got = await one("app-status POST", "POST", "/api/v0/app-status",
                                {"app_slug": SLUG, "state": state, "message": f"client {i} step {n}"})
                if isinstance(got, dict) and "id" in got:
                    last_post[:] = [got["id"]]
                    await one("app-status GET", "GET", f"/api/v0/app-status?id={got['id']}")
                st = await one("status", "GET", "/api/v0/status")
                if isinstance(st, dict):
                    rep.control_plane[st["control_plane"]["state"]] += 1

        async def sampler() -> None:
            cpu0 = cpu_seconds(stack.pid)
            while time.monotonic() < stop:
                rep.rss_kib.append(rss_kib(stack.pid))
                await asyncio.sleep(0.25)
            rep.cpu_seconds = cpu_seconds(stack.pid) - cpu0
            rep.rss_kib.append(rss_kib(stack.pid))

        async def monitor() -> None:
            # its own connection, so it is not queued behind the clients' pool
            conn = aiohttp.UnixConnector(path=str(stack.sock))
            async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
                while time.monotonic() < stop:
                    async with s.get("http://agent/api/v0/status") as r:
                        rep.control_plane[(await r.json())["control_plane"]["state"]] += 1
                    await asyncio.sleep(0.25)

        t0 = time.monotonic()
        await asyncio.gather(sampler(), monitor(), *(client(i) for i in range(clients)))
        rep.seconds = time.monotonic() - t0
        if last_post:
            # the newest status must reach coderd once the storm is over (long-poll, 30 s)
            async with session.get(f"http://agent/api/v0/app-status?id={last_post[0]}&wait=30") as r:
                rep.last_app_status = await r.json()
    return rep


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.load.hammer")
    ap.add_argument("--long", action="store_true", help="60 s instead of 10 s")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--no-devcontainers", action="store_true", help="without the Docker engine")
    a = ap.parse_args()
    seconds = a.seconds or (60.0 if a.long else 10.0)
    stack = Stack(devcontainers=not a.no_devcontainers)
    try:
        rep = asyncio.run(run_load(stack, seconds, a.clients))
    finally:
        code = stack.close()
    print(rep.table())
    print(f"daemon exit code {code}; 5xx: {rep.server_errors() or 'none'}; p50 "
          f"{statistics.median(rep.all_latencies()) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
