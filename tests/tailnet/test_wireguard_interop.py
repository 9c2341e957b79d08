"""Our WireGuard Device against Debian's wireguard-go, the Linux kernel's IPv6 stack as the client.

wireguard-go runs here with its TUN link in a fresh network namespace (tests/tailnet/wgpeer.py);
the namespace pings our agent address, sends TSMP pings from a raw socket, and talks to our
Device over a loopback UDP link.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coder_agent.tailnet import keys, packet
from coder_agent.tailnet.wireguard import Device, HandshakeComplete, Timers

from ..conftest import apoll, t
from .wgpeer import AgentSide, UdpLink, WgPeer, require_wireguard_go

pytestmark = pytest.mark.timeout(180)

TSMP_CLIENT = """
import os, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 99)
s.settimeout(float(sys.argv[2]))
ping = b"p" + os.urandom(8)
s.sendto(ping, (sys.argv[1], 0))
while True:
    data, addr = s.recvfrom(4096)
    if data[:1] == b"o":
        print(ping.hex(), data.hex(), addr[0])
        break
"""


@dataclass
class Rig:
    wg: WgPeer
    link: UdpLink
    agent: AgentSide
    device: Device
    addrs: tuple[ipaddress.IPv6Address, ipaddress.IPv6Address]
    node: keys.NodeKey

    def connect(self) -> None:
        self.wg.set_peer(self.node.public, [f"{a}/128" for a in self.addrs], self.link.endpoint)


@contextlib.asynccontextmanager
async def make_rig(tmp: Path, timers: Timers | None = None) -> AsyncIterator[Rig]:
    require_wireguard_go()
    node = keys.NodeKey.generate()
    addrs = keys.addresses(uuid.uuid4())
    async with WgPeer(tmp) as wg:
        link = await UdpLink(wg.listen_port).open()
        device = Device(node.private, timers, wall_offset=time.time() - time.monotonic())
        device.add_peer(wg.public_key, [f"{wg.address}/128"])
        agent = AgentSide(device, wg.public_key, link.send, {a.packed for a in addrs})
        link.on_datagram = agent.datagram
        rig = Rig(wg, link, agent, device, addrs, node)
        rig.connect()
        try:
            yield rig
        finally:
            await agent.close()
            link.close()


@pytest.fixture
async def rig(short_tmp: Path) -> AsyncIterator[Rig]:
    async with make_rig(short_tmp) as r:
        yield r


async def ping(rig: Rig, addr: ipaddress.IPv6Address, count: int = 3, wait: int = 5) -> bool:
    r = await rig.wg.ans("ping", "-6", "-n", "-c", str(count), "-W", str(wait), str(addr), timeout=count * wait + 10)
    return r.returncode == 0


async def test_handshake_icmpv6_echo_and_tsmp(rig: Rig) -> None:
    assert await ping(rig, rig.addrs[0]), rig.wg.log()
    assert rig.wg.latest_handshake(rig.node.public) > 0
    stats = rig.device.peers[rig.wg.public_key].stats
    assert stats.handshakes >= 1 and stats.rx_packets >= 1 and stats.tx_packets >= 1
    assert HandshakeComplete(rig.wg.public_key, initiator=False) in rig.agent.events
    # The Coder service address answers too.
    assert await ping(rig, rig.addrs[1], count=1)
    # TSMP from a raw IPv6 socket (next header 99) gets 'o' + the same 8 bytes + port 0.
    r = await rig.wg.ans(sys.executable, "-c", TSMP_CLIENT, str(rig.addrs[0]), str(t(10)))
    assert r.returncode == 0, r.stderr
    sent, got, src = r.stdout.split()
    assert bytes.fromhex(got) == b"o" + bytes.fromhex(sent)[1:9] + b"\0\0"
    assert ipaddress.IPv6Address(src) == rig.addrs[0]


async def test_address_outside_allowed_ips_is_not_answered(rig: Rig) -> None:
    """wireguard-go routes the whole /48 to us, but we only answer our own addresses; and a
    source outside the peer's allowed IPs is dropped before any answer."""
    assert await ping(rig, rig.addrs[0], count=1)
    other = ipaddress.IPv6Address(keys.TAILSCALE_SERVICE_PREFIX.network_address.packed[:6] + os.urandom(10))
    assert not await ping(rig, other, count=1, wait=2)
    # Narrow the peer's allowed IPs so the namespace's address is no longer its source.
    rig.device.add_peer(rig.wg.public_key, ["fd7a:115c:a1e0::99/128"])
    dropped = rig.device.dropped
    assert not await ping(rig, rig.addrs[0], count=1, wait=2)
    assert rig.device.dropped > dropped


async def test_removed_peer_gets_no_answer(rig: Rig) -> None:
    assert await ping(rig, rig.addrs[0], count=1)
    rig.device.remove_peer(rig.wg.public_key)
    seen: list[bytes] = []

    def tap(d: bytes) -> None:
        seen.append(d)
        rig.agent.datagram(d)

    rig.link.on_datagram = tap
    assert not await ping(rig, rig.addrs[0], count=2, wait=2)
    assert seen, "wireguard-go sent nothing: the test proves nothing"
    assert not rig.agent.delivered


async def test_rekey_initiated_by_us_after_rekey_after_time(short_tmp: Path) -> None:
    """With our RekeyAfterTime shortened to 3 s, our side (the initiator: it sends first) starts a
    new handshake while traffic flows; wireguard-go accepts it and traffic continues."""
    timers = Timers(rekey_after_time=3.0)
    async with make_rig(short_tmp, timers) as rig:
        src, dst = rig.addrs[0].packed, ipaddress.IPv6Address(rig.wg.address).packed
        body = bytes([128, 0, 0, 0]) + b"\x12\x34\x00\x01" + b"rekey"
        csum = packet.ipv6_checksum(src, dst, packet.NH_ICMPV6, body)
        echo = packet.build(src, dst, packet.NH_ICMPV6, body[:2] + csum.to_bytes(2, "big") + body[4:])
        rig.agent.send_packet(echo)
        await apoll(lambda: rig.agent.delivered, timeout=15)  # the kernel's echo reply
        reply_hdr, reply = packet.parse(rig.agent.delivered[0])
        assert reply[0] == 129 and reply_hdr.src == dst
        assert rig.agent.events[0] == HandshakeComplete(rig.wg.public_key, initiator=True)
        first = await apoll(lambda: rig.wg.latest_handshake(rig.node.public), timeout=10)
        # Traffic for longer than RekeyAfterTime: our echo replies are sent on an aging session.
        pinger = asyncio.ensure_future(ping(rig, rig.addrs[0], count=12, wait=2))
        await apoll(lambda: sum(isinstance(e, HandshakeComplete) and e.initiator for e in rig.agent.events) >= 2,
                    timeout=30)
        await apoll(lambda: rig.wg.latest_handshake(rig.node.public) > first, timeout=10)
        assert await pinger
        assert rig.device.peers[rig.wg.public_key].stats.handshakes >= 2


async def test_cookie_reply_under_load(rig: Rig) -> None:
    """Under load we answer wireguard-go's initiation with a cookie reply; its retry (after
    RekeyTimeout, 5 s) carries mac2 from that cookie and completes the handshake."""
    rig.device.force_under_load = True
    cookies: list[bytes] = []
    send = rig.link.send

    def tap(d: bytes) -> None:
        if d[0] == 3:
            cookies.append(d)
        send(d)

    rig.agent.transmit = tap
    assert await ping(rig, rig.addrs[0], count=1, wait=15), rig.wg.log()
    assert cookies, "no cookie reply was sent: the test proves nothing"
    assert rig.device.peers[rig.wg.public_key].stats.handshakes == 1
