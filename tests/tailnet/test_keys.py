"""Keys, wire forms, service addresses and NodeID (known values from the Go rules)."""

from __future__ import annotations

import uuid

import pytest

from coder_agent.tailnet import keys

AGENT = uuid.UUID("0b3a7d6e-2c1f-4e5a-9b8c-7d6e5f4a3b2c")


def test_x25519_public_from_private_rfc7748() -> None:
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    assert keys.public_from_private(private).hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"


def test_wire_forms() -> None:
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    node, disco = keys.NodeKey(private), keys.DiscoKey(private)
    assert node.wire == b"np" + bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert disco.wire == "discokey:8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert keys.node_key_from_wire(node.wire) == node.public
    assert keys.disco_from_wire(disco.wire) == disco.public
    for bad in (b"np" + bytes(31), b"nq" + bytes(32), bytes(34)):
        with pytest.raises(ValueError):
            keys.node_key_from_wire(bad)
    with pytest.raises(ValueError):
        keys.disco_from_wire("nodekey:" + "00" * 32)


def test_generated_keys_are_per_process_and_never_shown() -> None:
    a, b = keys.NodeKey.generate(), keys.NodeKey.generate()
    assert a.private != b.private and len(a.public) == 32
    assert keys.public_from_private(a.private) == a.public
    for k in (a, keys.DiscoKey.generate()):
        text = repr(k) + str(k) + f"{k}"
        assert k.private.hex() not in text and k.public.hex() not in text
        assert "nodekey" not in text


def test_service_addresses() -> None:
    ts, coder = keys.addresses(AGENT)
    assert str(ts) == "fd7a:115c:a1e0:4e5a:9b8c:7d6e:5f4a:3b2c"
    assert str(coder) == "fd60:627a:a42b:4e5a:9b8c:7d6e:5f4a:3b2c"
    assert ts in keys.TAILSCALE_SERVICE_PREFIX and coder in keys.CODER_SERVICE_PREFIX


@pytest.mark.parametrize(("tail", "want"), [
    ("0000000000000001", 1),
    ("ffffffffffffffff", 1),  # -1
    ("7fffffffffffffff", (1 << 63) - 1),
    ("8000000000000001", (1 << 63) - 1),  # -(2**63 - 1)
    ("8000000000000000", -(1 << 63)),  # no absolute value in int64: Go leaves it
    ("9b8c7d6e5f4a3b2c", 7238272588092654804),
])
def test_node_id_as_go(tail: str, want: int) -> None:
    assert keys.node_id(uuid.UUID(bytes=bytes(8) + bytes.fromhex(tail))) == want


def test_node_id_of_agent() -> None:
    # int64(0x9b8c7d6e5f4a3b2c) = -7238272588092654804 -> its absolute value
    assert keys.node_id(AGENT) == 7238272588092654804
