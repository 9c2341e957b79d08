"""The sock_diag reader: its pure parser on crafted netlink messages, and against the real kernel
(the same listeners, addresses and inodes as /proc/net/tcp{,6}, the procfs reader taking over
silently where netlink is refused)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest

from coder_agent.ports import sockdiag
from coder_agent.ports.procnet import LISTEN, Socket
from coder_agent.ports.scan import ProcNetReader, PsutilReader, ReaderUnavailable, Scanner, SockDiagReader

from ..conftest import poll
from .conftest import Listeners

V4 = {"family": 4, "host": "0.0.0.0"}
LO4 = {"family": 4, "host": "127.0.0.1"}
V6ONLY = {"family": 6, "host": "::", "v6only": True}
DUAL = {"family": 6, "host": "::", "v6only": False}
LO6 = {"family": 6, "host": "::1", "v6only": True}


def _msg(mtype: int, body: bytes, seq: int = 1) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, mtype, 2, seq, 0) + body + b"\0" * ((4 - length % 4) % 4)


def _diag(af: int, state: int, port: int, raw_addr: bytes, inode: int) -> bytes:
    sockid = struct.pack(">HH", port, 0) + raw_addr.ljust(16, b"\0") + b"\0" * 16 + b"\0" * 12
    return struct.pack("=BBBB", af, state, 0, 0) + sockid + struct.pack("=IIIII", 0, 0, 0, 1000, inode)


def test_request_asks_for_tcp_listeners_of_one_family() -> None:
    req = sockdiag.dump_request(6, 42)
    length, mtype, flags, seq, _ = struct.unpack_from("=IHHII", req)
    assert (length, mtype, seq) == (len(req), sockdiag.SOCK_DIAG_BY_FAMILY, 42) and len(req) == 16 + 56
    assert flags == sockdiag.NLM_F_REQUEST | sockdiag.NLM_F_DUMP
    af, proto, _, _, states = struct.unpack_from("=BBBBI", req, 16)
    assert (af, proto, states) == (socket.AF_INET6, socket.IPPROTO_TCP, 1 << LISTEN)


def test_parse_sockets_then_done() -> None:
    data = (_msg(sockdiag.SOCK_DIAG_BY_FAMILY, _diag(socket.AF_INET, LISTEN, 8080, bytes([127, 0, 0, 1]), 77))
            + _msg(sockdiag.SOCK_DIAG_BY_FAMILY, _diag(socket.AF_INET, LISTEN, 22, bytes(4), 78)))
    assert sockdiag.parse_dump(data, 4) == ([Socket(4, "127.0.0.1", 8080, LISTEN, 77),
                                             Socket(4, "0.0.0.0", 22, LISTEN, 78)], False)
    v6 = _msg(sockdiag.SOCK_DIAG_BY_FAMILY, _diag(socket.AF_INET6, LISTEN, 443, socket.inet_pton(
        socket.AF_INET6, "::1"), 9)) + _msg(sockdiag.NLMSG_DONE, struct.pack("=i", 0))
    assert sockdiag.parse_dump(v6, 6) == ([Socket(6, "::1", 443, LISTEN, 9)], True)


def test_parse_error_and_garbage() -> None:
    with pytest.raises(sockdiag.SockDiagError) as e:
        sockdiag.parse_dump(_msg(sockdiag.NLMSG_ERROR, struct.pack("=i", -13) + b"\0" * 16), 4)
    assert e.value.errno == 13
    assert sockdiag.parse_dump(b"", 4) == ([], False)
    assert sockdiag.parse_dump(b"\xff" * 40, 4) == ([], True)  # a length past the buffer
    short = _msg(sockdiag.SOCK_DIAG_BY_FAMILY, b"\0" * 10)  # too short for an inet_diag_msg: skipped
    assert sockdiag.parse_dump(short, 4) == ([], False)


def test_same_sockets_as_procfs(listen: Callable[..., Listeners]) -> None:
    ln = listen([V4, LO4, V6ONLY, DUAL, LO6], name="ca-sockdiag")
    nl, proc = SockDiagReader(), ProcNetReader()

    def ours(reader: ProcNetReader) -> set[Socket]:
        return {s for s in reader._sockets() if s.port in ln.ports}

    got = ours(nl)
    assert {s.port for s in got} == set(ln.ports) and not nl.unavailable
    assert all(s.state == LISTEN and s.inode > 0 for s in got)
    poll(lambda: ours(nl) == ours(proc), 10)  # the same families, addresses, ports and inodes
    names = {(p.port, p.process_name) for p in nl.listeners() if p.port in ln.ports}
    assert names == {(p, "ca-sockdiag") for p in ln.ports}


def test_unavailable_gives_way_to_procfs_without_a_warning(listen: Callable[..., Listeners]) -> None:
    ln = listen([LO4], name="ca-fallback")
    nl = SockDiagReader()
    nl.unavailable = "no sock_diag netlink socket: protocol not supported"
    result = Scanner([nl, ProcNetReader(), PsutilReader()]).scan()
    assert result.reader == "procfs" and result.warning == ""
    assert ln.ports[0] in {x.port for x in result.listeners}
    with pytest.raises(ReaderUnavailable):
        nl.listeners()
