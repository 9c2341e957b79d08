"""Test harness: a TUN device in a fresh network namespace, pumped through a :class:`TcpStack`.

The test process opens the TUN (IFF_TUN|IFF_NO_PI) in the root namespace, moves the link into a
namespace of its own (the fd stays valid), addresses it fd7a:115c:a1e0::2/128 with a route for
fd7a:115c:a1e0::/48 and MTU 1280, and serves fd7a:115c:a1e0::1 from the core. Kernel clients run
in the namespace (``ip netns exec``). Small applications per port:

* 7: echo (backpressure: received bytes are consumed only once the echo went into the send buffer)
* 9: sink: sha256 of everything received, sent back as hex when the peer half-closes
* 19: source: the client sends ``SIZE\\n``, gets ``randbytes(SIZE)`` seeded by SIZE, then FIN
* 13: slow sink: as 9, but reads nothing for its first second (the window closes, the peer probes)
* anything else: refused (RST), as a closed workspace port
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import random
import shutil
import struct
import subprocess
from dataclasses import dataclass, field

from coder_agent.tailnet import tcp
from coder_agent.tailnet.tcp import ConnKey, TcpStack

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SERVER_IP = "fd7a:115c:a1e0::1"
CLIENT_IP = "fd7a:115c:a1e0::2"
ECHO, SINK, SLOW_SINK, SOURCE = 7, 9, 13, 19
SLOW_SINK_PAUSE = 1.0


def source_bytes(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def missing_tools() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for a TUN device and a network namespace"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    if shutil.which("ip") is None:
        return "no `ip` (iproute2)"
    return None


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class TunNamespace:
    """The TUN fd (ours) and its link inside namespace ``ns``; ``close()`` removes both."""

    def __init__(self, tag: str) -> None:
        self.ns = f"tcpns-{tag}"
        self.dev = f"tcpt{tag}"[:15]
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        try:
            fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", self.dev.encode(), IFF_TUN | IFF_NO_PI))
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)
            _run("ip", "netns", "add", self.ns)
            _run("ip", "link", "set", self.dev, "netns", self.ns)
            self.exec("ip", "link", "set", "lo", "up")
            self.exec("sysctl", "-qw", f"net.ipv6.conf.{self.dev}.disable_ipv6=0")
            self.exec("ip", "link", "set", self.dev, "mtu", "1280", "up")
            self.exec("ip", "-6", "addr", "add", f"{CLIENT_IP}/128", "dev", self.dev, "nodad")
            self.exec("ip", "-6", "route", "add", "fd7a:115c:a1e0::/48", "dev", self.dev)
        except BaseException:
            self.close()
            raise

    def exec(self, *args: str) -> None:
        _run("ip", "netns", "exec", self.ns, *args)

    def add_loss(self, fraction: float) -> str:
        """Drop ``fraction`` of the packets both ways on the kernel's side; returns how."""
        try:
            self.exec("tc", "qdisc", "add", "dev", self.dev, "root", "netem", "loss", f"{fraction * 100}%")
            return "netem"
        except subprocess.CalledProcessError:
            pass  # this kernel may lack sch_netem: the kernel's own firewall drops at random instead
        for chain in ("OUTPUT", "INPUT"):
            self.exec("ip6tables", "-A", chain, "-m", "statistic", "--mode", "random", "--probability",
                      str(fraction), "-j", "DROP")
        return "ip6tables statistic"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)


@dataclass
class _App:
    key: ConnKey
    port: int
    pending: bytearray = field(default_factory=bytearray)
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    peer_closed: bool = False
    out: bytes = b""
    out_pos: int = 0
    closing: bool = False
    paused: bool = False
    held: int = 0
    max_held: int = 0


@dataclass
class PumpStats:
    accepted: int = 0
    refused: int = 0
    closed: int = 0
    max_held: int = 0
    resets: list[str] = field(default_factory=list)
    packets_in: int = 0
    packets_out: int = 0


class Pump:
    """Moves packets between the TUN fd and the core; the core's timers drive one loop timer."""

    def __init__(self, fd: int, stack: TcpStack | None = None) -> None:
        self.fd = fd
        self.stack = stack or TcpStack()
        self.loop = asyncio.get_running_loop()
        self.apps: dict[ConnKey, _App] = {}
        self.stats = PumpStats()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.loop.add_reader(fd, self._readable)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        if self._timer:
            self._timer.cancel()

    def _readable(self) -> None:
        now = self.loop.time()
        events: list[tcp.TcpEvent] = []
        for _ in range(256):
            try:
                packet = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            self.stats.packets_in += 1
            events += self.stack.receive_packet(packet, now)
        self._dispatch(events, now)
        self._flush()

    def _on_timer(self) -> None:
        # asyncio may run a timer up to its clock resolution early: the deadline is what is due
        now = max(self.loop.time(), self._timer_at or 0.0)
        self._timer = None
        self._timer_at = None
        self._dispatch(self.stack.handle_timers(now), now)
        self._flush()

    def _flush(self) -> None:
        for p in self.stack.packets_to_send():
            self.stats.packets_out += 1
            try:
                os.write(self.fd, p)
            except BlockingIOError:
                pass  # a full queue is a lost packet: TCP retransmits
        at = self.stack.next_deadline()
        if at != self._timer_at:
            if self._timer:
                self._timer.cancel()
            self._timer = self.loop.call_at(at, self._on_timer) if at is not None else None
            self._timer_at = at

    def _dispatch(self, events: list[tcp.TcpEvent], now: float) -> None:
        st = self.stack
        for ev in events:
            if isinstance(ev, tcp.ConnectionRequested):
                if ev.key.local_port in (ECHO, SINK, SLOW_SINK, SOURCE):
                    self.apps[ev.key] = _App(ev.key, ev.key.local_port)
                    st.accept(ev.key, now)
                    self.stats.accepted += 1
                else:
                    st.refuse(ev.key)
                    self.stats.refused += 1
                continue
            app = self.apps.get(ev.key)
            if app is None:
                continue
            if isinstance(ev, tcp.Connected) and app.port == SLOW_SINK:
                app.paused = True
                self.loop.call_later(SLOW_SINK_PAUSE, self._resume, app)
            elif isinstance(ev, tcp.DataReceived):
                self._data(app, ev.data, now)
            elif isinstance(ev, tcp.PeerClosed):
                app.peer_closed = True
                if app.port in (SINK, SLOW_SINK):
                    app.out = app.hasher.hexdigest().encode()
                    app.closing = True
                elif app.port == ECHO:
                    app.closing = True
            elif isinstance(ev, tcp.ConnectionClosed):
                self.stats.closed += 1
                del self.apps[ev.key]
                continue
            elif isinstance(ev, tcp.ConnectionReset):
                self.stats.resets.append(ev.reason)
                del self.apps[ev.key]
                continue
            self._write(app, now)

    def _data(self, app: _App, data: bytes, now: float) -> None:
        if app.port == ECHO:
            app.pending += data
        elif app.port in (SINK, SLOW_SINK):
            app.hasher.update(data)
            app.held += len(data)
            app.max_held = max(app.max_held, app.held)
            self.stats.max_held = max(self.stats.max_held, app.held)
            if not app.paused:
                self.stack.consume(app.key, app.held, now)
                app.held = 0
        else:
            app.pending += data
            self.stack.consume(app.key, len(data), now)
            if b"\n" in app.pending and not app.out:
                app.out = source_bytes(int(app.pending.split(b"\n")[0]))
                app.closing = True
                app.pending.clear()

    def _resume(self, app: _App) -> None:
        app.paused = False
        if self.apps.get(app.key) is app and app.held:
            self.stack.consume(app.key, app.held, self.loop.time())
            app.held = 0
            self._flush()

    def _write(self, app: _App, now: float) -> None:
        st = self.stack
        if st.state(app.key) not in (tcp.State.ESTABLISHED, tcp.State.CLOSE_WAIT):
            return
        if app.port == ECHO and app.pending:
            n = st.send(app.key, bytes(app.pending), now)
            del app.pending[:n]
            st.consume(app.key, n, now)
        while app.out_pos < len(app.out):
            n = st.send(app.key, app.out[app.out_pos : app.out_pos + 65536], now)
            app.out_pos += n
            if n == 0:
                break
        if app.closing and not app.pending and app.out_pos == len(app.out):
            st.close(app.key, now)
