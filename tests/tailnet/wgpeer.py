"""A real WireGuard peer for tests: Debian's ``wireguard-go`` with its TUN link in a fresh network
namespace, so the kernel's IPv6 stack there is the "client" (coder-tailnet.md §10(b)).

``wireguard-go -f`` runs in this (root) namespace, so its UDP socket is on our loopback; only its
TUN link moves into the namespace, where ``ip netns exec`` runs ``ping -6``, raw sockets, curl...
Everything is cleaned up by PID and by the link and namespace names created here.

The transport to wireguard-go is pluggable: ``WgPeer.set_peer(..., endpoint=...)`` names whoever
speaks UDP to it. ``UdpLink`` is the direct one (a loopback UDP socket: ``send(datagram)`` and a
``on_datagram`` callback); a DERP bridge can take its place with the same two ends.

``AgentSide`` feeds a ``Device`` from a link: datagrams in, our replies (TSMP pong, ICMPv6 echo
reply) out, and timers slept exactly until ``next_deadline()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from coder_agent.tailnet import packet
from coder_agent.tailnet.wireguard import Device, Event, Result

from ..conftest import t, unavailable

_COUNTER = itertools.count()
_SOCK_DIR = Path("/var/run/wireguard")


def require_wireguard_go() -> None:
    """Skip (fail under CI) unless wireguard-go, wg, ip, ping, root and /dev/net/tun are here."""
    missing = [tool for tool in ("wireguard-go", "wg", "ip", "ping") if shutil.which(tool) is None]
    if missing:
        unavailable(f"needs {', '.join(missing)} (apt-get install wireguard-go wireguard-tools iproute2 "
                    "iputils-ping; scripts/provision.sh does)")
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        unavailable("needs root and /dev/net/tun for wireguard-go's TUN device")


class WgPeer:
    """wireguard-go + a network namespace holding its TUN link. Use as an async context manager."""

    def __init__(self, tmp: Path, *, address: str = "fd7a:115c:a1e0::2", mtu: int = 1280,
                 private_key_b64: str | None = None) -> None:
        n = f"{os.getpid() % 100000}{next(_COUNTER)}"
        self.dev = f"cawg{n}"[:15]  # link names: at most 15 characters
        self.netns = f"cawg-ns-{n}"
        self.address = address
        self.mtu = mtu
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / f"{self.dev}.log"
        self.private_key = (private_key_b64.encode() if private_key_b64
                            else subprocess.run(["wg", "genkey"], capture_output=True, check=True).stdout.strip())
        self.public_key_b64 = subprocess.run(["wg", "pubkey"], input=self.private_key, capture_output=True,
                                             check=True).stdout.strip().decode()
        self.listen_port = 0

    @property
    def public_key(self) -> bytes:
        import base64

        return base64.b64decode(self.public_key_b64)

    async def __aenter__(self) -> WgPeer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self.ns("ip", "link", "set", "lo", "up")
        log = open(self.log_path, "wb")  # noqa: SIM115
        # Foreground mode: daemon mode dies silently on these machines (coder-tailnet.md §9).
        self.proc = subprocess.Popen(["wireguard-go", "-f", self.dev], stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        sock = _SOCK_DIR / f"{self.dev}.sock"
        deadline = time.monotonic() + t(10)
        while not sock.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"wireguard-go exited {self.proc.returncode}: {self.log_path.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError("wireguard-go made no UAPI socket")
            time.sleep(0.02)
        keyfile = self.tmp / f"{self.dev}.key"
        keyfile.touch(mode=0o600)
        keyfile.write_bytes(self.private_key + b"\n")
        self.wg("set", self.dev, "private-key", str(keyfile), "listen-port", "0")
        keyfile.unlink()
        self.listen_port = int(self.wg("show", self.dev, "listen-port").strip())
        subprocess.run(["ip", "link", "set", self.dev, "netns", self.netns], check=True)
        self.ns("ip", "-6", "addr", "add", f"{self.address}/128", "dev", self.dev)
        self.ns("ip", "link", "set", self.dev, "mtu", str(self.mtu), "up")
        self.ns("ip", "-6", "route", "add", "fd7a:115c:a1e0::/48", "dev", self.dev)
        self.ns("ip", "-6", "route", "add", "fd60:627a:a42b::/48", "dev", self.dev)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(t(5))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.netns], check=False, capture_output=True)
        # A TUN link dies with its process; these catch what a crash may leave.
        subprocess.run(["ip", "link", "del", self.dev], check=False, capture_output=True)
        with contextlib.suppress(FileNotFoundError):
            (_SOCK_DIR / f"{self.dev}.sock").unlink()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- commands -------------------------------------------------------------------------------

    def wg(self, *args: str) -> str:
        return subprocess.run(["wg", *args], capture_output=True, text=True, check=True).stdout

    def ns(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *args], capture_output=True, text=True,
                              check=check, timeout=t(timeout))

    async def ans(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.ns, *args, check=False, timeout=timeout)

    def set_peer(self, public_key: bytes, allowed_ips: list[str], endpoint: str,
                 persistent_keepalive: int | None = None) -> None:
        import base64

        args = ["set", self.dev, "peer", base64.b64encode(public_key).decode(), "allowed-ips", ",".join(allowed_ips),
                "endpoint", endpoint]
        if persistent_keepalive:
            args += ["persistent-keepalive", str(persistent_keepalive)]
        self.wg(*args)

    def latest_handshake(self, public_key: bytes) -> int:
        """``wg show DEV latest-handshakes`` for that peer (unix seconds, 0 = never)."""
        import base64

        want = base64.b64encode(public_key).decode()
        for line in self.wg("show", self.dev, "latest-handshakes").splitlines():
            key, _, value = line.partition("\t")
            if key == want:
                return int(value)
        return 0


class UdpLink(asyncio.DatagramProtocol):
    """Direct transport: a loopback UDP socket that speaks to wireguard-go's listen port."""

    def __init__(self, wg_port: int) -> None:
        self.wg_addr = ("127.0.0.1", wg_port)
        self.on_datagram: Callable[[bytes], None] = lambda _d: None
        self.transport: asyncio.DatagramTransport | None = None

    async def open(self) -> UdpLink:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        return self

    @property
    def endpoint(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if addr[:2] == self.wg_addr:
            self.on_datagram(data)

    def send(self, datagram: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(datagram, self.wg_addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class AgentSide:
    """Our Device on one end of a link to one wireguard-go peer (``peer_key``): receive, answer
    TSMP/ICMPv6 for ``local`` addresses, and run the timers exactly at ``next_deadline()``."""

    def __init__(self, device: Device, peer_key: bytes, send: Callable[[bytes], None], local: set[bytes]) -> None:
        self.device = device
        self.peer_key = peer_key
        self.transmit = send  # replaceable (e.g. to tap what we send)
        self.local = local
        self.events: list[Event] = []
        self.delivered: list[bytes] = []  # packets that were not for our own answers
        self.answer = True
        # (kind, now, bytes): "in" datagram, "send" packet, "tick", "out" datagram; for replays.
        self.trace: list[tuple[str, float, bytes]] | None = None
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._timers())

    def _note(self, kind: str, now: float, data: bytes) -> None:
        if self.trace is not None:
            self.trace.append((kind, now, data))

    def datagram(self, data: bytes) -> None:
        now = time.monotonic()
        self._note("in", now, data)
        self._apply(self.device.receive(self.peer_key, data, now))

    def send_packet(self, ip_packet: bytes) -> None:
        now = time.monotonic()
        self._note("send", now, ip_packet)
        self._apply(self.device.send(ip_packet, now))

    def _apply(self, r: Result) -> None:
        self.events += r.events
        for key, d in r.to_send:
            if key == self.peer_key:
                self._note("out", 0.0, d)
                self.transmit(d)
        for p in r.packets_in:
            reply = packet.local_reply(p, self.local) if self.answer else None
            if reply is None:
                self.delivered.append(p)
            else:
                now = time.monotonic()
                self._note("send", now, reply)
                self._apply(self.device.send(reply, now))
        self._wake.set()

    async def _timers(self) -> None:
        while True:
            self._wake.clear()
            deadline = self.device.next_deadline()
            delay = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self._note("tick", now, b"")
                self._apply(self.device.tick(now))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
