"""Byte-exact replay of exchanges recorded with wireguard-go (tests/tailnet/capture_wireguard_go.py).

Our Device drew its randomness from a seeded stream when recording, so given the same calls with
the same ``now`` it must send exactly the datagrams wireguard-go accepted then, and decrypt
exactly what wireguard-go sent (the kernel's ICMPv6 echo request/reply inside).
"""

from __future__ import annotations

import ipaddress
import json
import uuid

import pytest

from coder_agent.tailnet import keys, packet
from coder_agent.tailnet.wireguard import Device

from .capture_wireguard_go import VECTORS, SeededEntropy

DATA = json.loads(VECTORS.read_text())


@pytest.mark.parametrize("scenario", ["responder", "initiator"])
def test_replay_byte_exact(scenario: str) -> None:
    rec = DATA[scenario]
    wg_public = keys.public_from_private(bytes.fromhex(DATA["wg_private"]))
    device = Device(bytes.fromhex(DATA["agent_private"]), wall_offset=rec["wall_offset"],
                    entropy=SeededEntropy(scenario.encode()))
    device.add_peer(wg_public, [rec["wg_address"] + "/128"])
    expected = [bytes.fromhex(d) for kind, _, d in rec["trace"] if kind == "out"]
    produced: list[bytes] = []
    delivered: list[bytes] = []
    for kind, now, data in rec["trace"]:
        d = bytes.fromhex(data)
        if kind == "in":
            r = device.receive(wg_public, d, now)
        elif kind == "send":
            r = device.send(d, now)
        elif kind == "tick":
            r = device.tick(now)
        else:
            continue
        produced += [x for key, x in r.to_send if key == wg_public]
        delivered += r.packets_in
    assert produced == expected
    assert [p[0] for p in produced][:1] == ([2] if scenario == "responder" else [1])
    # What wireguard-go carried is the kernel's ICMPv6: a request to us, or the reply to ours.
    agent = keys.addresses(uuid.UUID(DATA["agent_id"]))[0]
    hdr, body = packet.parse(delivered[0])
    assert hdr.next_header == packet.NH_ICMPV6
    assert hdr.src == ipaddress.IPv6Address(rec["wg_address"]).packed and hdr.dst == agent.packed
    assert packet.ipv6_checksum(hdr.src, hdr.dst, packet.NH_ICMPV6, body) == 0
    assert body[0] == (128 if scenario == "responder" else 129)
