"""Pure tests of the coordination controller (no event loop, no clock): Go's
BasicCoordinationController{SendAcks: true} behaviour, coder-tailnet.md §2."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from coder_agent.rpc.proto import tailnet_pb2
from coder_agent.tailnet.coordination import (
    LOST_TIMEOUT,
    CoordinationController,
    CoordinatorError,
    PeerLost,
    RemovePeer,
    UpsertPeer,
)

Kind = tailnet_pb2.CoordinateResponse.PeerUpdate
NOW = dt.datetime(2026, 12, 7, 12, 0, 0, tzinfo=dt.UTC)
NODE_KEY = bytes(range(32))
DISCO_KEY = bytes(range(100, 132))
ADDRESSES = ["fd7a:115c:a1e0:4a2b:8c3d:4e5f:6071:8293/128", "fd60:627a:a42b:4a2b:8c3d:4e5f:6071:8293/128"]


def controller(**kw: object) -> CoordinationController:
    c = CoordinationController(node_id=4242, node_key=NODE_KEY, disco_key=DISCO_KEY, addresses=ADDRESSES,
                               **kw)  # type: ignore[arg-type]
    c.stream_started()
    return c


def peer_node(key_byte: int = 7, derp: int = 999, allowed: str = "fd7a:115c:a1e0::55/128") -> tailnet_pb2.Node:
    return tailnet_pb2.Node(id=77, key=b"np" + bytes([key_byte]) * 32, disco="discokey:" + "cd" * 32,
                            preferred_derp=derp, addresses=[allowed], allowed_ips=[allowed])


def response(*updates: tuple[uuid.UUID | bytes, int, tailnet_pb2.Node | None], error: str = ""
             ) -> tailnet_pb2.CoordinateResponse:
    resp = tailnet_pb2.CoordinateResponse(error=error)
    for pid, kind, node in updates:
        u = resp.peer_updates.add(id=pid.bytes if isinstance(pid, uuid.UUID) else pid, kind=kind)
        if node is not None:
            u.node.CopyFrom(node)
    return resp


def _which(r: tailnet_pb2.CoordinateRequest) -> str:
    fields = [f.name for f, _ in r.ListFields()]
    return "+".join(fields)


def test_no_update_self_while_preferred_derp_is_zero() -> None:
    c = controller()
    assert not c.wants_to_send
    assert c.requests_to_send(NOW) == []
    c.set_derp_latency({999: 0.012})
    c.set_addresses(ADDRESSES[::-1])  # same set: no change
    assert c.requests_to_send(NOW) == []
    c.set_preferred_derp(999)
    assert c.wants_to_send
    [req] = c.requests_to_send(NOW)
    assert _which(req) == "update_self"
    # Only once: nothing changed since.
    assert c.requests_to_send(NOW) == []
    c.set_preferred_derp(0)
    assert c.requests_to_send(NOW) == []


def test_published_node_fields() -> None:
    c = controller()
    c.set_preferred_derp(999)
    c.set_derp_latency({999: 0.0123, 1000: 0.5})
    c.set_derp_forced_websocket(999, "got 426")
    [req] = c.requests_to_send(NOW)
    n = req.update_self.node
    assert n.id == 4242
    assert n.as_of.ToDatetime(tzinfo=dt.UTC) == NOW
    assert n.key == b"np" + NODE_KEY and len(n.key) == 34
    assert n.disco == "discokey:" + DISCO_KEY.hex() and len(n.disco) == 9 + 64
    assert n.preferred_derp == 999
    assert dict(n.derp_latency) == {"999-v4": 0.0123, "1000-v4": 0.5}
    assert dict(n.derp_forced_websocket) == {999: "got 426"}
    assert list(n.addresses) == ADDRESSES and list(n.allowed_ips) == ADDRESSES
    assert list(n.endpoints) == []


def test_changes_are_coalesced_and_only_real_changes_count() -> None:
    c = controller()
    c.set_preferred_derp(999)
    c.set_derp_latency({999: 0.01})
    c.set_derp_latency({999: 0.02})
    [req] = c.requests_to_send(NOW)
    assert dict(req.update_self.node.derp_latency) == {"999-v4": 0.02}
    c.set_derp_latency({999: 0.02})
    c.set_preferred_derp(999)
    c.set_keys(NODE_KEY, DISCO_KEY)
    assert c.requests_to_send(NOW) == []
    c.set_keys(bytes(32), DISCO_KEY)
    [req] = c.requests_to_send(NOW)
    assert req.update_self.node.key == b"np" + bytes(32)


def test_every_new_stream_republishes_the_node() -> None:
    c = controller()
    c.set_preferred_derp(999)
    assert len(c.requests_to_send(NOW)) == 1
    c.stream_lost(1.0)
    c.stream_started()
    [req] = c.requests_to_send(NOW)
    assert req.update_self.node.preferred_derp == 999


def test_wakeup_is_called_when_there_is_something_to_send() -> None:
    c = controller()
    calls: list[int] = []
    c.wakeup = lambda: calls.append(1)
    c.set_derp_latency({999: 0.1})
    assert calls == []  # nothing sendable yet (preferred_derp 0)
    c.set_preferred_derp(999)
    assert calls == [1]


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="node_key"):
        CoordinationController(node_id=1, node_key=b"short", disco_key=DISCO_KEY, addresses=[])
    c = controller()
    with pytest.raises(ValueError, match="disco_key"):
        c.set_keys(NODE_KEY, b"x" * 33)


def test_ready_for_handshake_lists_every_node_update() -> None:
    c = controller()
    a, b, gone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    events = c.receive_response(response(
        (a, Kind.NODE, peer_node(1)),
        (b, Kind.NODE, peer_node(2, derp=0)),  # unreachable: no peer, but still acknowledged
        (gone, Kind.DISCONNECTED, None),
    ), 0.0)
    assert [type(e) for e in events] == [UpsertPeer]
    [req] = c.requests_to_send(NOW)  # preferred_derp 0: no UpdateSelf, only the acks
    assert _which(req) == "ready_for_handshake"
    assert [r.id for r in req.ready_for_handshake] == [a.bytes, b.bytes]
    # A response without NODE updates asks for no acknowledgement.
    c.receive_response(response((gone, Kind.LOST, None)), 0.0)
    assert c.requests_to_send(NOW) == []


def test_one_ack_request_per_response() -> None:
    c = controller()
    ids = [uuid.uuid4() for _ in range(3)]
    c.receive_response(response((ids[0], Kind.NODE, peer_node(1))), 0.0)
    c.receive_response(response((ids[1], Kind.NODE, peer_node(2)), (ids[2], Kind.NODE, peer_node(3))), 0.0)
    reqs = c.requests_to_send(NOW)
    assert [[r.id for r in req.ready_for_handshake] for req in reqs] == [
        [ids[0].bytes], [ids[1].bytes, ids[2].bytes]]


def test_node_update_upserts_the_peer_only_when_it_changed() -> None:
    c = controller()
    p = uuid.uuid4()
    [up] = c.receive_response(response((p, Kind.NODE, peer_node(9))), 0.0)
    assert up == UpsertPeer(p, bytes([9]) * 32, bytes.fromhex("cd" * 32), ("fd7a:115c:a1e0::55/128",),
                            ("fd7a:115c:a1e0::55/128",), 999)
    assert c.receive_response(response((p, Kind.NODE, peer_node(9))), 0.0) == []
    [up2] = c.receive_response(response((p, Kind.NODE, peer_node(9, derp=1000))), 0.0)
    assert isinstance(up2, UpsertPeer) and up2.preferred_derp == 1000


def test_malformed_updates_are_skipped() -> None:
    c = controller()
    bad_key = tailnet_pb2.Node(key=b"xx" + bytes(32), preferred_derp=999)
    events = c.receive_response(response((b"short", Kind.NODE, peer_node()), (uuid.uuid4(), Kind.NODE, bad_key)), 0.0)
    assert events == [] and c.peers == {}


def test_disconnected_removes_the_peer() -> None:
    c = controller()
    p = uuid.uuid4()
    c.receive_response(response((p, Kind.NODE, peer_node(5))), 0.0)
    events = c.receive_response(response((p, Kind.DISCONNECTED, None)), 0.0)
    assert events == [RemovePeer(p, bytes([5]) * 32, "disconnected")]
    assert p not in c.peers
    assert c.receive_response(response((p, Kind.DISCONNECTED, None)), 0.0) == []


def test_lost_peer_is_kept_until_15_minutes_after_its_last_handshake() -> None:
    c = controller()
    p = uuid.uuid4()
    c.receive_response(response((p, Kind.NODE, peer_node(5))), 0.0)
    c.note_handshake(p, 100.0)
    [lost] = c.receive_response(response((p, Kind.LOST, None)), 200.0)
    assert lost == PeerLost(p, 100.0 + LOST_TIMEOUT)
    assert c.peers[p].lost
    assert c.next_deadline() == 100.0 + LOST_TIMEOUT
    assert c.tick(100.0 + LOST_TIMEOUT - 1) == []
    # A handshake while lost (the peer still talks to us through DERP) moves the deadline.
    c.note_handshake(p, 500.0)
    assert c.tick(100.0 + LOST_TIMEOUT + 1) == []
    assert c.next_deadline() == 500.0 + LOST_TIMEOUT
    assert c.tick(500.0 + LOST_TIMEOUT) == [RemovePeer(p, bytes([5]) * 32, "lost")]
    assert c.peers == {} and c.next_deadline() is None


def test_lost_peer_that_never_handshook_goes_at_once() -> None:
    c = controller()
    p = uuid.uuid4()
    c.receive_response(response((p, Kind.NODE, peer_node(5))), 0.0)
    assert c.receive_response(response((p, Kind.LOST, None)), 1.0) == [RemovePeer(p, bytes([5]) * 32, "lost")]


def test_node_update_clears_lost() -> None:
    c = controller()
    p = uuid.uuid4()
    c.receive_response(response((p, Kind.NODE, peer_node(5))), 0.0)
    c.note_handshake(p, 10.0)
    c.receive_response(response((p, Kind.LOST, None)), 20.0)
    assert c.receive_response(response((p, Kind.NODE, peer_node(5))), 30.0) == []
    assert not c.peers[p].lost and c.next_deadline() is None
    assert c.tick(10.0 + LOST_TIMEOUT + 1) == []


def test_stream_loss_marks_every_peer_lost() -> None:
    c = controller()
    a, b = uuid.uuid4(), uuid.uuid4()
    c.receive_response(response((a, Kind.NODE, peer_node(1)), (b, Kind.NODE, peer_node(2))), 0.0)
    c.note_handshake(a, 5.0)
    events = c.stream_lost(6.0)
    assert PeerLost(a, 5.0 + LOST_TIMEOUT) in events
    assert RemovePeer(b, bytes([2]) * 32, "lost") in events
    assert list(c.peers) == [a] and c.peers[a].lost
    # Acks queued before the loss are not sent on the next stream.
    c.stream_started()
    assert c.requests_to_send(NOW) == []


def test_coordinator_error_is_an_event_not_a_failure() -> None:
    c = controller()
    events = c.receive_response(response(error='you do not share a tunnel with "x"'), 0.0)
    assert events == [CoordinatorError('you do not share a tunnel with "x"')]


def test_stop_sends_disconnect_last_and_nothing_after() -> None:
    c = controller()
    c.set_preferred_derp(999)
    c.requests_to_send(NOW)
    p = uuid.uuid4()
    c.receive_response(response((p, Kind.NODE, peer_node(1))), 0.0)
    c.set_derp_latency({999: 0.3})
    c.stop()
    assert c.wants_to_send
    reqs = c.requests_to_send(NOW)
    # The pending ack still goes; the node change does not (Go ignores node updates once closed).
    assert [_which(r) for r in reqs] == ["ready_for_handshake", "disconnect"]
    assert not c.wants_to_send
    c.receive_response(response((uuid.uuid4(), Kind.NODE, peer_node(2))), 0.0)
    c.set_preferred_derp(1000)
    assert c.requests_to_send(NOW) == []
    c.stop()
    assert c.requests_to_send(NOW) == []


def test_stop_before_any_stream_disconnects_on_the_next_one() -> None:
    c = CoordinationController(node_id=1, node_key=NODE_KEY, disco_key=DISCO_KEY, addresses=ADDRESSES)
    c.set_preferred_derp(999)
    c.stop()
    c.stream_started()
    assert [_which(r) for r in c.requests_to_send(NOW)] == ["disconnect"]
