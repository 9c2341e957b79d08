"""JetBrains Gateway detection (Go's ``agentssh`` JetBrains channel watcher).

JetBrains opens hundreds of short SSH sessions but keeps one forwarded TCP channel to its IDE
backend, so Go counts (and reports) JetBrains through that channel: a ``direct-tcpip`` channel is
JetBrains when the process listening on its destination port has ``idea.vendor.name=JetBrains``
in its command line (case-insensitive). :func:`is_jetbrains` is pure; :func:`listening_cmdline`
reads the process table (blocking: call it from a thread).
"""

from __future__ import annotations

__all__ = ["MARKER", "is_jetbrains", "listening_cmdline"]

MARKER = "idea.vendor.name=JetBrains"


def is_jetbrains(cmdline: str) -> bool:
    return MARKER.lower() in cmdline.lower()


def listening_cmdline(port: int) -> str:
    """The command line of the process listening on TCP ``port`` ("" when none is visible)."""
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
