"""Record two exchanges with wireguard-go for byte-exact replay tests (test_wireguard_vectors.py).

    sudo .venv/bin/python -m tests.tailnet.capture_wireguard_go   # rewrites vectors/wireguard_go.json

Both sides use fixed keys and our Device draws its randomness from a seeded stream
(``SeededEntropy``), so replaying the recorded calls (same ``now`` values) must reproduce every
datagram we sent, byte for byte, and wireguard-go accepted those. Scenarios: ``responder``
(the namespace pings us once) and ``initiator`` (we send an echo request to the namespace first).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import tempfile
import time
import uuid
from pathlib import Path

from coder_agent.tailnet import keys, packet
from coder_agent.tailnet.wireguard import Device

from .wgpeer import AgentSide, UdpLink, WgPeer

VECTORS = Path(__file__).parent / "vectors" / "wireguard_go.json"
# Test-only keys (never used anywhere else).
AGENT_PRIVATE = hashlib.sha256(b"coder-agent test vector: agent").digest()
WG_PRIVATE = hashlib.sha256(b"coder-agent test vector: wireguard-go").digest()
AGENT_ID = uuid.UUID("0b3a7d6e-2c1f-4e5a-9b8c-7d6e5f4a3b2c")


class SeededEntropy:
    """A deterministic ``entropy(n)`` for Device: SHAKE-256 of a seed and a call counter."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return hashlib.shake_256(self.seed + self.calls.to_bytes(4, "big")).digest(n)


def echo_request(src: bytes, dst: bytes, ident: int, data: bytes) -> bytes:
    body = bytes([128, 0, 0, 0]) + ident.to_bytes(2, "big") + b"\0\1" + data
    csum = packet.ipv6_checksum(src, dst, packet.NH_ICMPV6, body)
    return packet.build(src, dst, packet.NH_ICMPV6, body[:2] + csum.to_bytes(2, "big") + body[4:])


async def capture(scenario: str, tmp: Path) -> dict[str, object]:
    addrs = keys.addresses(AGENT_ID)
    async with WgPeer(tmp, private_key_b64=base64.b64encode(WG_PRIVATE).decode()) as wg:
        link = await UdpLink(wg.listen_port).open()
        wall_offset = time.time() - time.monotonic()
        device = Device(AGENT_PRIVATE, wall_offset=wall_offset, entropy=SeededEntropy(scenario.encode()))
        device.add_peer(wg.public_key, [f"{wg.address}/128"])
        agent = AgentSide(device, wg.public_key, link.send, {a.packed for a in addrs})
        agent.trace = []
        link.on_datagram = agent.datagram
        wg.set_peer(keys.public_from_private(AGENT_PRIVATE), [f"{a}/128" for a in addrs], link.endpoint)
        if scenario == "responder":
            r = await wg.ans("ping", "-6", "-n", "-c", "1", "-W", "5", str(addrs[0]))
            assert r.returncode == 0, r.stdout + r.stderr
        else:
            agent.send_packet(echo_request(addrs[0].packed, ipaddress.IPv6Address(wg.address).packed, 7, b"vec"))
            for _ in range(100):
                if agent.delivered:
                    break
                await asyncio.sleep(0.05)
            assert agent.delivered, "no echo reply from the namespace"
        await agent.close()
        link.close()
        trace = [(k, now, d.hex()) for k, now, d in agent.trace]
        return {"wall_offset": wall_offset, "wg_address": wg.address, "trace": trace}


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ca-", dir="/tmp") as tmp:
        out = {
            "agent_private": AGENT_PRIVATE.hex(), "wg_private": WG_PRIVATE.hex(), "agent_id": str(AGENT_ID),
            "responder": await capture("responder", Path(tmp)),
            "initiator": await capture("initiator", Path(tmp)),
        }
    VECTORS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {VECTORS}")


if __name__ == "__main__":
    asyncio.run(main())
