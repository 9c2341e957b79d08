"""Linux inotify through libc (ctypes): learn that a file or directory changed without polling it.

Shared infrastructure: followed log files (logs/follow.py) and devcontainer discovery
(devcontainers/watch.py).

Two parts:

* :func:`decode` is pure: the bytes ``read(2)`` returns from an inotify descriptor in, the
  :class:`Event` records out (``struct inotify_event``: ``int wd; uint32 mask, cookie, len;``
  then ``len`` bytes of NUL-padded name). A truncated record at the end is returned as the
  rest, to be prefixed to the next read (the kernel never splits one, but the decoder does not
  rely on it).
* :class:`Inotify` owns the descriptor (``inotify_init1(IN_NONBLOCK | IN_CLOEXEC)``), adds and
  removes watches and reads what is there; the asyncio layer registers :meth:`Inotify.fileno`
  with ``loop.add_reader``. Where inotify is unavailable (not Linux, no libc symbol, a
  sandbox's ENOSYS, the per-user instance limit) the constructor raises OSError and the caller
  falls back to polling.

No third-party package: a wrapper would call the same three libc functions, and this is ~100
lines whose decoding is tested directly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass

__all__ = [
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_IGNORED",
    "IN_ISDIR",
    "IN_MODIFY",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_MOVE_SELF",
    "IN_ONLYDIR",
    "IN_Q_OVERFLOW",
    "Event",
    "Inotify",
    "decode",
]

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000  # the kernel's queue overflowed: events were lost (wd is -1)
IN_IGNORED = 0x00008000  # the watch was removed (explicitly, or its inode is gone)
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000  # in an event's mask: the entry is a directory
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_HEADER = struct.Struct("iIII")
READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class Event:
    wd: int
    mask: int
    cookie: int
    name: str  # the entry's name for a directory watch; "" for the watched inode itself


def decode(data: bytes) -> tuple[list[Event], bytes]:
    """The complete events in ``data`` and the bytes of an incomplete last one (usually b"")."""
    events: list[Event] = []
    pos = 0
    size = _HEADER.size
    while len(data) - pos >= size:
        wd, mask, cookie, length = _HEADER.unpack_from(data, pos)
        end = pos + size + length
        if end > len(data):
            break
        raw = data[pos + size:end].split(b"\0", 1)[0]
        events.append(Event(wd, mask, cookie, os.fsdecode(raw)))
        pos = end
    return events, data[pos:]


def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c") or "libc.so.6"
    libc = ctypes.CDLL(name, use_errno=True)
    for fn in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch"):
        if not hasattr(libc, fn):
            raise OSError(f"libc has no {fn}")
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.inotify_rm_watch.restype = ctypes.c_int
    return libc


def _failed(call: str, path: str | None = None) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{call}: {os.strerror(err)}", path)


class Inotify:
    """One inotify descriptor. Raises OSError when the system has no usable inotify."""

    def __init__(self) -> None:
        self._lib = _libc()
        fd = self._lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise _failed("inotify_init1")
        self._fd = int(fd)
        self._rest = b""

    def fileno(self) -> int:
        return self._fd

    def add_watch(self, path: str | os.PathLike[str], mask: int) -> int:
        """The watch descriptor for ``path``'s inode (the same one again for the same inode)."""
        wd = int(self._lib.inotify_add_watch(self._fd, os.fsencode(path), mask))
        if wd < 0:
            raise _failed("inotify_add_watch", os.fspath(path))
        return wd

    def rm_watch(self, wd: int) -> None:
        """Remove a watch; a watch already gone (its inode deleted) is not an error."""
        self._lib.inotify_rm_watch(self._fd, wd)

    def read(self) -> list[Event]:
        """Every event queued now (none when there is nothing: the descriptor is non-blocking)."""
        out: list[Event] = []
        while True:
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return out
            if not data:
                return out
            events, self._rest = decode(self._rest + data)
            out.extend(events)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
