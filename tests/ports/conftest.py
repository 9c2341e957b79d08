"""Real listeners in child processes, with a process name we choose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..conftest import t

# The child: names itself (comm; what psutil.name() reads), opens the listeners, prints their
# ports as one JSON line, and lives until its stdin closes.
CHILD = r"""
import json, os, socket, sys
name, specs = sys.argv[1], json.loads(sys.argv[2])
if name:
    with open("/proc/self/comm", "w") as f:
        f.write(name)
socks, ports = [], []
for spec in specs:
    fam = socket.AF_INET6 if spec["family"] == 6 else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if spec.get("v6only") else 0)
    port = spec.get("port", 0)
    if port == "same":
        port = ports[-1]
    candidates = spec.get("candidates") or [port]
    for cand in candidates:
        try:
            s.bind((spec["host"], cand))
            break
        except OSError:
            if cand == candidates[-1]:
                raise
    s.listen(16)
    socks.append(s)
    ports.append(s.getsockname()[1])
print(json.dumps(ports), flush=True)
sys.stdin.read()
"""


@dataclass
class Listeners:
    proc: subprocess.Popen[str]
    ports: list[int]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(t(10))
        if self.proc.stdin:
            self.proc.stdin.close()
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def listen() -> Iterator[Callable[..., Listeners]]:
    """``listen(specs, name="", executable=sys.executable) -> Listeners`` (ports in spec order)."""
    started: list[Listeners] = []

    def start(specs: list[dict[str, Any]], name: str = "", executable: str | Path = sys.executable) -> Listeners:
        proc = subprocess.Popen([str(executable), "-c", CHILD, name, json.dumps(specs)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(t(10))
            raise AssertionError(f"listener child failed (exit {proc.returncode})")
        ln = Listeners(proc, json.loads(line))
        started.append(ln)
        return ln

    yield start
    for ln in started:
        ln.close()


def is_root() -> bool:
    return os.geteuid() == 0
