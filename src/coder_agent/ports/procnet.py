"""Pure readers of Linux ``/proc/net/tcp`` and ``/proc/net/tcp6`` text.

Rules:

* Input is the file's text; output is :class:`Socket` tuples. No I/O here.
* Each data line is ``sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...``. ``local``
  is ``ADDR:PORT`` in hex: ``PORT`` is the port number (already in host order), ``ADDR`` is the
  raw ``in_addr`` / ``in6_addr`` printed as 32-bit words in the *kernel's* byte order, so on a
  little-endian host every 4-byte word is reversed. :func:`decode_address` undoes that.
* Only state ``0A`` (``TCP_LISTEN``) matters for listening ports; :func:`parse_listeners` picks
  those lines with a C-level substring test, so a table full of established connections costs
  no Python ``split`` per line; :class:`ListenTable` also skips re-parsing lines it saw at the
  previous read (a steady state re-parses nothing).
* Garbage never raises: the header, short lines, bad hex and out-of-range values are skipped.
"""

from __future__ import annotations

import binascii
import functools
import ipaddress
import socket
import sys
from typing import Literal, NamedTuple

__all__ = ["LISTEN", "ListenTable", "Socket", "decode_address", "is_loopback", "parse_listeners", "parse_sockets"]

LISTEN = 0x0A

Family = Literal[4, 6]


class Socket(NamedTuple):
    family: Family
    address: str  # textual IP ("0.0.0.0", "::", "::ffff:127.0.0.1")
    port: int
    state: int
    inode: int


def decode_address(hexaddr: str | bytes, *, byteorder: str = sys.byteorder) -> str:
    """The textual IP of a /proc/net address field (8 hex digits for IPv4, 32 for IPv6).

    Raises ValueError on anything else. Memoised: a host has few distinct listening addresses.
    """
    if isinstance(hexaddr, str):
        hexaddr = hexaddr.encode("ascii", "replace")
    return _decode(hexaddr, byteorder)


@functools.lru_cache(maxsize=4096)
def _decode(hexaddr: bytes, byteorder: str) -> str:
    try:
        raw = binascii.unhexlify(hexaddr)
    except (binascii.Error, ValueError):
        raise ValueError(f"not hex: {hexaddr!r}") from None
    if len(raw) not in (4, 16):
        raise ValueError(f"address must be 4 or 16 bytes, got {len(raw)}")
    if byteorder == "little":
        # the kernel prints each 32-bit word of the address as a host-order integer
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    return socket.inet_ntop(socket.AF_INET6, raw)  # spells v4-mapped as ::ffff:127.0.0.1


@functools.lru_cache(maxsize=4096)
def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _parse_line(fields: list[str], family: Family, byteorder: str) -> Socket | None:
    local = fields[1]
    addr, sep, port_hex = local.rpartition(":")
    if not sep or len(addr) != (8 if family == 4 else 32) or len(port_hex) != 4:
        return None
    try:
        state = int(fields[3], 16)
        port = int(port_hex, 16)
        inode = int(fields[9])
        address = decode_address(addr, byteorder=byteorder)
    except ValueError:
        return None
    if inode < 0:
        return None
    return Socket(family, address, port, state, inode)


def parse_sockets(text: str | bytes, family: Family, *, byteorder: str = sys.byteorder) -> list[Socket]:
    """Every well-formed socket line in ``text`` (any state)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    out: list[Socket] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or not fields[0].endswith(":"):
            continue
        sock = _parse_line(fields, family, byteorder)
        if sock is not None:
            out.append(sock)
    return out


def _listen_lines(text: bytes) -> list[bytes]:
    # " 0A " (spaces both sides) only occurs as the state column: every other column is
    # decimal, or hex glued to ":" or 8+ digits wide. So this C-level test finds the LISTEN
    # lines of a table full of connections without a Python split per line.
    return [ln for ln in text.split(b"\n") if b" 0A " in ln]


def _parse_listen_line(line: bytes, family: Family, byteorder: str) -> Socket | None:
    fields = line.decode("ascii", "replace").split()
    if len(fields) < 10 or not fields[0].endswith(":") or fields[3] != "0A":
        return None
    return _parse_line(fields, family, byteorder)


def parse_listeners(text: str | bytes, family: Family, *, byteorder: str = sys.byteorder) -> list[Socket]:
    """The sockets in state LISTEN in ``text`` (the raw file, bytes or str).

    Same answer as ``[s for s in parse_sockets(text) if s.state == LISTEN]``, faster.
    """
    if isinstance(text, str):
        text = text.encode("ascii", "replace")
    out: list[Socket] = []
    for line in _listen_lines(text):
        sock = _parse_listen_line(line, family, byteorder)
        if sock is not None:
            out.append(sock)
    return out


class ListenTable:
    """:func:`parse_listeners` for repeated reads of the same table.

    A LISTEN line hardly changes between reads (only the accept-queue length does, under load),
    so lines seen at the previous read map to their parsed :class:`Socket` without parsing; only
    new lines are parsed. The cache holds exactly the previous read's lines.
    """

    def __init__(self, family: Family, *, byteorder: str = sys.byteorder) -> None:
        self.family: Family = family
        self.byteorder = byteorder
        self.parsed = 0  # lines parsed so far (the rest came from the cache)
        self._cache: dict[bytes, Socket | None] = {}

    def update(self, text: bytes) -> list[Socket]:
        old = self._cache
        new: dict[bytes, Socket | None] = {}
        out: list[Socket] = []
        for line in _listen_lines(text):
            if line in old:
                sock = old[line]
            else:
                sock = _parse_listen_line(line, self.family, self.byteorder)
                self.parsed += 1
            new[line] = sock
            if sock is not None:
                out.append(sock)
        self._cache = new
        return out
