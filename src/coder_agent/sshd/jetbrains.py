"""JetBrains Gateway detection (Go's ``agentssh`` JetBrains channel watcher).

JetBrains opens hundreds of short SSH sessions but keeps one forwarded TCP channel to its IDE
backend, so Go counts (and reports) JetBrains through that channel: a ``direct-tcpip`` channel is
JetBrains when the process listening on its destination port has ``idea.vendor.name=JetBrains``
in its command line (case-insensitive).

:func:`is_jetbrains` is pure. :class:`ListenerCmdlines` answers "whose command line listens on
port P" for every forwarded channel (VS Code opens many), so it stays cheap: an answer is reused
for ``ttl`` seconds per port; else ``/proc/net/tcp`` and ``tcp6`` give the listening socket's
inode, and an inode seen before costs nothing more; a new one walks ``/proc/<pid>/fd`` once.
Blocking: call it from a thread. Off Linux, psutil.
"""

from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from ..ports.procnet import parse_listeners

__all__ = ["MARKER", "ListenerCmdlines", "is_jetbrains"]

MARKER = "idea.vendor.name=JetBrains"
_CACHE = 256


def is_jetbrains(cmdline: str) -> bool:
    return MARKER.lower() in cmdline.lower()


class ListenerCmdlines:
    def __init__(self, proc: str | Path = "/proc", *, ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.proc = Path(proc)
        self.ttl = ttl
        self.clock = clock
        self._by_inode: OrderedDict[int, str] = OrderedDict()
        self._by_port: dict[int, tuple[float, str]] = {}

    def __call__(self, port: int) -> str:
        """The command line of the process listening on TCP ``port`` ("" when none is visible)."""
        now = self.clock()
        hit = self._by_port.get(port)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        if len(self._by_port) > _CACHE:
            self._by_port = {p: v for p, v in self._by_port.items() if now - v[0] < self.ttl}
        cmdline = self._lookup(port)
        self._by_port[port] = (now, cmdline)
        return cmdline

    def _lookup(self, port: int) -> str:
        if not sys.platform.startswith("linux"):
            return _psutil_cmdline(port)
        inodes = []
        for name, family in (("tcp", 4), ("tcp6", 6)):
            try:
                text = (self.proc / "net" / name).read_bytes()
            except OSError:
                continue
            inodes += [s.inode for s in parse_listeners(text, family) if s.port == port and s.inode]  # type: ignore[arg-type]
        for inode in inodes:
            if inode in self._by_inode:
                self._by_inode.move_to_end(inode)
                return self._by_inode[inode]
        for inode in inodes:
            cmdline = self._walk(inode)
            if cmdline is not None:
                self._by_inode[inode] = cmdline
                while len(self._by_inode) > _CACHE:
                    self._by_inode.popitem(last=False)
                return cmdline
        return ""

    def _walk(self, inode: int) -> str | None:
        target = f"socket:[{inode}]"
        for pid in os.listdir(self.proc):
            if not pid.isdigit():
                continue
            fd_dir = self.proc / pid / "fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(fd_dir / fd) == target:
                        raw = (self.proc / pid / "cmdline").read_bytes()
                        return raw.replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    continue
        return None


def _psutil_cmdline(port: int) -> str:
    import psutil

    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return ""
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            try:
                return " ".join(psutil.Process(c.pid).cmdline())
            except (psutil.Error, OSError):
                return ""
    return ""
