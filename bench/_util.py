"""Shared helpers for benchmarks: medians, RSS from /proc, a devserver in a child process."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
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


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


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
