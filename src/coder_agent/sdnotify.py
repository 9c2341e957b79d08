"""systemd's notify protocol (sd_notify), without libsystemd.

Rules: a no-op unless ``NOTIFY_SOCKET`` is set; supports path and abstract (``@``) sockets;
send errors are swallowed (systemd going away must never crash the daemon).
``watchdog_interval()`` is half of ``WATCHDOG_USEC`` when the watchdog is meant for this pid.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr: str | bytes | None = None
        if addr.startswith("@"):
            self._addr = b"\0" + addr[1:].encode()
        elif addr.startswith("/"):
            self._addr = addr
        self._watchdog: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self._watchdog = int(usec) / 1_000_000 / 2
        self.sent: list[str] = []

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def watchdog_interval(self) -> float | None:
        return self._watchdog

    def notify(self, *lines: str) -> None:
        msg = "\n".join(lines)
        self.sent.append(msg)
        if self._addr is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self._addr)
                s.sendall(msg.encode())
        except OSError:
            pass

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")
