"""Wire checks of the generated coder.tailnet.v2 coordination messages.

Expected bytes are hand-assembled from the field numbers of coder/coder's tailnet.proto
(coder-tailnet.md §2), so a renumbered field fails here rather than against coderd.
"""

from __future__ import annotations

import struct

from coder_agent.rpc import drpc
from coder_agent.rpc.proto import tailnet_pb2


def tag(field: int, wire_type: int) -> bytes:
    return drpc.encode_varint(field << 3 | wire_type)


def ld(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + drpc.encode_varint(len(payload)) + payload


def vi(field: int, value: int) -> bytes:
    return tag(field, 0) + drpc.encode_varint(value)


def test_node_field_numbers() -> None:
    key = b"np" + bytes(range(32))
    raw = (
        vi(1, 12345)
        + ld(2, vi(1, 1_700_000_000) + vi(2, 5))
        + ld(3, key)
        + ld(4, b"discokey:" + b"ab" * 32)
        + vi(5, 999)
        + ld(6, ld(1, b"999-v4") + tag(2, 1) + struct.pack("<d", 0.012))
        + ld(7, vi(1, 999) + ld(2, b"forced"))
        + ld(8, b"fd7a:115c:a1e0::1/128")
        + ld(9, b"fd7a:115c:a1e0::1/128")
        + ld(10, b"1.2.3.4:41641")
    )
    n = tailnet_pb2.Node.FromString(raw)
    assert (n.id, n.as_of.seconds, n.as_of.nanos, n.key) == (12345, 1_700_000_000, 5, key)
    assert n.disco == "discokey:" + "ab" * 32 and n.preferred_derp == 999
    assert dict(n.derp_latency) == {"999-v4": 0.012}
    assert dict(n.derp_forced_websocket) == {999: "forced"}
    assert list(n.addresses) == list(n.allowed_ips) == ["fd7a:115c:a1e0::1/128"]
    assert list(n.endpoints) == ["1.2.3.4:41641"]
    assert n.SerializeToString() == raw


def test_coordinate_request_field_numbers() -> None:
    peer = bytes(range(16))
    raw = (
        ld(1, ld(1, vi(1, 7)))  # update_self{node{id 7}}
        + ld(2, b"")  # disconnect{}
        + ld(3, ld(1, peer))  # add_tunnel
        + ld(4, ld(1, peer))  # remove_tunnel
        + ld(5, ld(1, peer))  # ready_for_handshake (repeated)
        + ld(5, ld(1, peer[::-1]))
    )
    req = tailnet_pb2.CoordinateRequest.FromString(raw)
    assert req.update_self.node.id == 7
    assert req.HasField("disconnect")
    assert req.add_tunnel.id == req.remove_tunnel.id == peer
    assert [r.id for r in req.ready_for_handshake] == [peer, peer[::-1]]
    assert req.SerializeToString() == raw


def test_coordinate_response_field_numbers() -> None:
    peer = bytes(range(16))
    raw = (
        ld(1, ld(1, peer) + ld(2, vi(1, 9)) + vi(3, 1) + ld(4, b"node update"))
        + ld(1, ld(1, peer) + vi(3, 4))
        + ld(2, b"you do not share a tunnel")
    )
    resp = tailnet_pb2.CoordinateResponse.FromString(raw)
    kinds = tailnet_pb2.CoordinateResponse.PeerUpdate
    assert [u.kind for u in resp.peer_updates] == [kinds.NODE, kinds.READY_FOR_HANDSHAKE]
    assert (kinds.KIND_UNSPECIFIED, kinds.NODE, kinds.DISCONNECTED, kinds.LOST, kinds.READY_FOR_HANDSHAKE) == (
        0, 1, 2, 3, 4)
    assert resp.peer_updates[0].node.id == 9 and resp.peer_updates[0].reason == "node update"
    assert resp.error == "you do not share a tunnel"
    assert resp.SerializeToString() == raw


def test_service_methods() -> None:
    service = tailnet_pb2.DESCRIPTOR.services_by_name["Tailnet"]
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods == {
        "StreamDERPMaps": ("StreamDERPMapsRequest", "DERPMap"),
        "Coordinate": ("CoordinateRequest", "CoordinateResponse"),
    }
    assert tailnet_pb2.StreamDERPMapsRequest().SerializeToString() == b""
