"""Retry the control-plane connection when the network changes (USER-PAIN 25).

While coderd is unreachable the connection loop backs off up to 10 s between attempts. A network
change (a link coming up, an address or a route added or removed: a VPN, DHCP, a laptop waking)
is the moment a retry is most likely to work, so it skips the wait, as SIGHUP does. The kernel
pushes these events on a netlink socket: nothing is polled, and an idle machine costs nothing.
Only a failing connection is retried: a connected one is left alone (a dead one is found by its
pings). So the netlink socket is open only while ``wanted()`` says so (coderd unreachable): a
connected daemon does not even wake for the route and link messages of a busy host (containers
starting, veths coming and going). :meth:`NetWatch.poke` makes it look at ``wanted()`` again.

:func:`parse_types` is the sans-I/O part (netlink framing); :class:`NetWatch` the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

from .log import get_logger
from .service import Health

__all__ = ["CHANGE_TYPES", "NetWatch", "parse_types"]

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE = 16, 17, 20, 21, 24, 25
CHANGE_TYPES = frozenset({RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE})
# rtnetlink multicast groups: links, IPv4/IPv6 addresses, IPv4/IPv6 routes.
GROUPS = 0x1 | 0x10 | 0x100 | 0x40 | 0x400
DEBOUNCE = 0.5  # an interface coming up sends a burst: one retry for the burst


def parse_types(data: bytes) -> list[int]:
    """The message types in one netlink datagram (several messages, each 4-byte aligned)."""
    out: list[int] = []
    off = 0
    while off + _HEADER.size <= len(data):
        length, mtype, _flags, _seq, _pid = _HEADER.unpack_from(data, off)
        if length < _HEADER.size or off + length > len(data):
            break  # malformed or truncated: keep what was whole
        out.append(mtype)
        off += (length + 3) & ~3
    return out


class NetWatch:
    name = "netwatch"

    def __init__(self, on_change: Callable[[], None], debounce: float = DEBOUNCE,
                 wanted: Callable[[], bool] = lambda: True) -> None:
        self.on_change = on_change
        self.debounce = debounce
        self.wanted = wanted
        self.listening = False  # the netlink socket is open (tests, status)
        self._poke = asyncio.Event()
        self.health = Health()
        self.changes = 0  # debounced bursts seen (for status and tests)
        self._log = get_logger("netwatch")

    def _open(self) -> socket.socket | None:
        if not hasattr(socket, "AF_NETLINK"):
            return None
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        except OSError as e:
            self._log.info("network changes are not watched", error=str(e))
            return None
        try:
            sock.bind((0, GROUPS))
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            self._log.info("network changes are not watched", error=str(e))
            return None
        return sock

    def poke(self) -> None:
        """Look at ``wanted()`` again (the control plane's state changed)."""
        self._poke.set()

    async def run(self) -> None:
        while True:
            if not self.wanted():
                self.health.set("ok", "idle while coderd is reachable")
                self._poke.clear()
                await self._poke.wait()
                continue
            sock = self._open()
            if sock is None:
                self.health.set("stopped", "netlink is not available here; retries follow the backoff only")
                await asyncio.Event().wait()
                return
            try:
                self.listening = True
                await self._listen(sock)
            finally:
                self.listening = False

    async def _listen(self, sock: socket.socket) -> None:
        """Report changes until ``wanted()`` turns false (checked on every poke)."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def readable() -> None:
            try:
                while True:
                    if any(t in CHANGE_TYPES for t in parse_types(sock.recv(65536))):
                        event.set()
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:  # ENOBUFS: we fell behind; whatever it was, it was a change
                self._log.debug("netlink read", error=str(e))
                event.set()

        loop.add_reader(sock.fileno(), readable)
        self.health.set("ok", "watching network changes")
        try:
            while True:
                self._poke.clear()
                if not self.wanted():
                    return
                change = asyncio.ensure_future(event.wait())
                poke = asyncio.ensure_future(self._poke.wait())
                try:
                    await asyncio.wait({change, poke}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    change.cancel()
                    poke.cancel()
                if not event.is_set():
                    continue
                await asyncio.sleep(self.debounce)
                event.clear()
                self.changes += 1
                self.on_change()
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()
