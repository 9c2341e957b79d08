"""WireGuard through the sans-I/O core: packets/s of 1280-byte IP packets encrypted by one Device
and decrypted by another (``Device.send`` then ``Device.receive``: routing, padding, counters,
replay window, allowed-IP check), against the same number of raw ``ChaCha20Poly1305``
encrypt+decrypt pairs of the same size measured in the same run. The ratio says what the core
costs on top of the AEAD itself (the floor for any Python WireGuard).

    python -m bench.wireguard [--quick] [--packets 50000]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import time


def main(n: int) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from coder_agent.tailnet import packet
    from coder_agent.tailnet.keys import NodeKey
    from coder_agent.tailnet.wireguard import Device

    ka, kb = NodeKey.generate(), NodeKey.generate()
    a, b = Device(ka.private), Device(kb.private)
    a.add_peer(kb.public, ["fd7a:115c:a1e0::b/128"])
    b.add_peer(ka.public, ["fd7a:115c:a1e0::a/128"])
    src = ipaddress.IPv6Address("fd7a:115c:a1e0::a").packed
    dst = ipaddress.IPv6Address("fd7a:115c:a1e0::b").packed
    ip = packet.build(src, dst, packet.NH_UDP, os.urandom(packet.MTU - packet.HEADER_LEN))
    assert len(ip) == 1280
    # Handshake (not timed).
    pending = [(a, d) for _, d in a.send(ip, 0.0).to_send]
    while pending:
        frm, d = pending.pop(0)
        to = b if frm is a else a
        pending += [(to, x) for _, x in to.receive(frm.public_key, d, 0.0).to_send]

    now = 1.0
    got = 0
    t0 = time.perf_counter()
    for _ in range(n):
        for _, d in a.send(ip, now).to_send:
            got += len(b.receive(ka.public, d, now).packets_in)
    core = time.perf_counter() - t0
    assert got == n, f"only {got} of {n} packets arrived"

    aead_a, aead_b = ChaCha20Poly1305(os.urandom(32)), None
    aead_b = aead_a
    t0 = time.perf_counter()
    for i in range(n):
        nonce = b"\0\0\0\0" + i.to_bytes(8, "little")
        aead_b.decrypt(nonce, aead_a.encrypt(nonce, ip, None), None)
    raw = time.perf_counter() - t0

    core_rate, raw_rate = n / core, n / raw
    print("| measure | core | raw ChaCha20Poly1305 | ratio |\n|---|---|---|---|")
    print(f"| 1280-byte packets/s, encrypt+decrypt | {core_rate:,.0f} | {raw_rate:,.0f} | "
          f"{core_rate / raw_rate:.2f}x |")
    print(f"| MiB/s of IP packets | {core_rate * 1280 / (1 << 20):,.1f} | {raw_rate * 1280 / (1 << 20):,.1f} | "
          f"{core_rate / raw_rate:.2f}x |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="10,000 packets")
    ap.add_argument("--packets", type=int, default=50_000)
    a = ap.parse_args()
    main(10_000 if a.quick else a.packets)
