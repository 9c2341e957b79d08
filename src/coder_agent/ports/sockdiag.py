"""Listening TCP sockets through Linux's ``NETLINK_SOCK_DIAG`` (the kernel's ``ss``), pure part.

Why: reading ``/proc/net/tcp{,6}`` makes the kernel walk its whole established-connections hash
table, whatever is in it — milliseconds per read on a big host even when the table is nearly
empty (6-8 ms each on the build machine), and the idle daemon's port scan did it twice every few
seconds. A ``SOCK_DIAG_BY_FAMILY`` dump asking only for ``TCP_LISTEN`` walks the listening table
alone (``inet_diag_dump_icsk`` skips the established one), tens of microseconds.

Rules:

* No I/O here: :func:`dump_request` gives the bytes to send, :func:`parse_dump` reads what came
  back into :class:`~.procnet.Socket` tuples (the same ones the procfs reader yields: textual
  address, host-order port, state, inode) and says when the dump is over.
* A netlink error message raises :class:`SockDiagError` with the kernel's errno; a malformed or
  truncated message ends the parse of that buffer (garbage never raises anything else).
"""

from __future__ import annotations

import socket
import struct
from typing import Literal

from .procnet import LISTEN, Socket

__all__ = ["NETLINK_SOCK_DIAG", "SockDiagError", "dump_request", "parse_dump"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
# inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid (48 bytes, zero: any)
_REQ = struct.Struct("=BBBBI48x")
# inet_diag_msg: family, state, timer, retrans (4 bytes); sockid: sport, dport (big-endian), src,
# dst (16 bytes each, network order), interface, cookie (48 bytes); expires, rqueue, wqueue, uid,
# inode (host order, 20 bytes)
_MSG_LEN = 72


class SockDiagError(OSError):
    """The kernel refused the dump (``errno`` is set)."""


def dump_request(family: Literal[4, 6], seq: int) -> bytes:
    """A ``SOCK_DIAG_BY_FAMILY`` dump of the TCP sockets of ``family`` in state LISTEN."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    body = _REQ.pack(af, socket.IPPROTO_TCP, 0, 0, 1 << LISTEN)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse_dump(data: bytes, family: Literal[4, 6]) -> tuple[list[Socket], bool]:
    """The sockets in one datagram of the answer, and whether the dump is done (``NLMSG_DONE``)."""
    out: list[Socket] = []
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            return out, True  # malformed: nothing more can be read from this answer
        body = off + _NLMSGHDR.size
        if mtype == NLMSG_DONE:
            return out, True
        if mtype == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, body) if length >= _NLMSGHDR.size + 4 else (0,)
            if err:
                raise SockDiagError(-err, f"sock_diag dump refused: {_strerror(-err)}")
            return out, True
        if mtype == SOCK_DIAG_BY_FAMILY and length - _NLMSGHDR.size >= _MSG_LEN:
            sock = _socket(data, body, family)
            if sock is not None:
                out.append(sock)
        off += (length + 3) & ~3
    return out, False


def _socket(data: bytes, at: int, family: Literal[4, 6]) -> Socket | None:
    af, state = data[at], data[at + 1]
    if af != (socket.AF_INET if family == 4 else socket.AF_INET6):
        return None
    (port,) = struct.unpack_from(">H", data, at + 4)
    raw = data[at + 8:at + 8 + (4 if family == 4 else 16)]
    (inode,) = struct.unpack_from("=I", data, at + 68)
    address = socket.inet_ntop(af, raw)
    return Socket(family, address, port, state, inode)


def _strerror(errno: int) -> str:
    import os

    try:
        return os.strerror(errno).lower()
    except ValueError:
        return f"errno {errno}"
