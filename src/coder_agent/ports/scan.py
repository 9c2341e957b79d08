"""Finding listening sockets and their processes (blocking I/O; call from a thread).

Rules:

* :class:`SockDiagReader` is the fast path on Linux (``/proc`` of our own namespace): a netlink
  ``NETLINK_SOCK_DIAG`` dump of the TCP sockets in LISTEN (:mod:`.sockdiag`), which costs the
  kernel a walk of its listening table only (~0.2 ms a scan against 6-15 ms for the files below
  on a big host). Where netlink is refused it gives way, for good and silently, to:
* :class:`ProcNetReader`: read ``<root>/net/tcp`` (required) and
  ``<root>/net/tcp6`` (optional: missing when IPv6 is off), keep the LISTEN lines (parsing only
  lines not seen at the previous read), and name the process of each socket through
  :class:`OwnerCache`. When nothing changed it returns the very same list object, so the
  selection downstream can be skipped too: a steady-state scan costs little more than the read.
  Both readers share the owner lookup:
* :class:`OwnerCache` maps socket inode → pid by walking ``<root>/<pid>/fd`` — but only for
  inodes it has not seen, stopping as soon as all are found, so a steady state costs no walk at
  all. Inodes nobody owns in our pid namespace (a socket from another namespace, a process we may
  not inspect) are remembered as unowned and retried at the next walk or after
  :data:`NEGATIVE_TTL`. Names come from psutil, which reads the full name past the kernel's
  15-character ``comm`` limit; a process that is gone or forbidden yields ``""``, never a crash.
* :class:`PsutilReader` (``psutil.net_connections``) is the fallback: other platforms, and a
  Linux whose ``/proc/net`` the fast path cannot read. Using it is reported as a warning.
* :class:`Scanner` tries the readers in order; :class:`ScanError` when none works.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import sockdiag
from .procnet import ListenTable, Socket
from .select import Listener

__all__ = ["NEGATIVE_TTL", "OwnerCache", "ProcNetReader", "PsutilReader", "ReaderUnavailable", "ScanError",
           "ScanResult", "Scanner", "SockDiagReader", "default_scanner"]

NEGATIVE_TTL = 30.0


class ScanError(Exception):
    """No reader could list the listening sockets; the message says why."""


class ReaderUnavailable(ScanError):
    """This reader cannot work here (missing or forbidden /proc files, unsupported platform)."""


class Reader(Protocol):
    name: str

    def listeners(self) -> list[Listener]: ...


def _psutil_name(pid: int) -> str | None:
    """The process name; ``""`` when we may not look, ``None`` when the process is gone."""
    import psutil

    try:
        return psutil.Process(pid).name()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except (psutil.AccessDenied, OSError):
        return ""


@dataclass
class OwnerCache:
    """Socket inode → owning pid → process name (see the module rules).

    A steady state (same inodes as last time, same owners alive under the same names) costs one
    name lookup per distinct owning pid and returns the previous answer object.
    """

    root: Path = Path("/proc")
    name_of: Callable[[int], str | None] = _psutil_name
    clock: Callable[[], float] = time.monotonic
    walks: int = 0  # how many /proc walks so far (tests and the bench look at it)
    _pid_of: dict[int, int | None] = field(default_factory=dict)
    _inodes: set[int] = field(default_factory=set)
    _by_pid: dict[int, list[int]] | None = None  # None: recompute from _pid_of
    _pid_names: dict[int, str | None] | None = None  # None: rebuild the answer
    _names: dict[int, str] = field(default_factory=dict)
    _last_walk: float = float("-inf")

    def resolve(self, inodes: set[int]) -> dict[int, str]:
        """Names of the processes owning ``inodes`` (absent when unknown). Do not mutate the answer."""
        want: set[int] = set()
        if inodes != self._inodes:
            for ino in [i for i in self._pid_of if i not in inodes]:
                del self._pid_of[ino]
            want = {i for i in inodes if i not in self._pid_of}
            self._inodes = set(inodes)
            self._by_pid = None
        if want or self.clock() - self._last_walk > NEGATIVE_TTL:
            want |= {i for i, pid in self._pid_of.items() if pid is None}
        if want:
            self._walk(want)
        for _ in range(2):
            if self._by_pid is None:
                by_pid: dict[int, list[int]] = {}
                for ino, pid in self._pid_of.items():
                    if pid is not None:
                        by_pid.setdefault(pid, []).append(ino)
                self._by_pid = by_pid
                self._pid_names = None
            pid_names = {pid: self.name_of(pid) for pid in self._by_pid}
            gone = [pid for pid, name in pid_names.items() if name is None]
            if gone:
                # the cached owner exited: the socket may live on in a process that inherited it
                self._walk({ino for pid in gone for ino in self._by_pid[pid]})
                continue
            if pid_names != self._pid_names:
                self._pid_names = pid_names
                self._names = {ino: name for pid, inos in self._by_pid.items()
                               if (name := pid_names[pid]) for ino in inos}
            return self._names
        return self._names

    def _walk(self, want: set[int]) -> None:
        self.walks += 1
        self._last_walk = self.clock()
        self._by_pid = None
        remaining = set(want)
        for ino in want:
            self._pid_of[ino] = None
        try:
            pids = sorted(int(n) for n in os.listdir(self.root) if n.isdigit())
        except OSError:
            return
        for pid in pids:
            fd_dir = f"{self.root}/{pid}/fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue  # gone, or not ours to inspect
            for fd in fds:
                try:
                    link = os.readlink(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if not link.startswith("socket:["):
                    continue
                try:
                    ino = int(link[8:-1])
                except ValueError:
                    continue
                if ino in remaining:
                    self._pid_of[ino] = pid
                    remaining.discard(ino)
                    if not remaining:
                        return


class ProcNetReader:
    """Listening sockets from ``<root>/net/tcp`` and ``tcp6``, names through an :class:`OwnerCache`."""

    name = "procfs"

    def __init__(self, root: str | Path = "/proc", owners: OwnerCache | None = None) -> None:
        self.root = Path(root)
        self.owners = owners or OwnerCache(self.root)
        self.tcp6_available: bool | None = None
        self._t4 = ListenTable(4)
        self._t6 = ListenTable(6)
        self._socks: list[Socket] = []
        self._inodes: set[int] = set()
        self._memo: tuple[dict[int, str], list[Listener]] | None = None

    def _read(self, name: str) -> bytes | None:
        path = self.root / "net" / name
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ReaderUnavailable(f"cannot read {path}: {e.strerror or e}") from None

    def _sockets(self) -> list[Socket]:
        v4 = self._read("tcp")
        if v4 is None:
            raise ReaderUnavailable(f"cannot read {self.root / 'net' / 'tcp'}: no such file")
        v6 = self._read("tcp6")
        self.tcp6_available = v6 is not None
        return self._t4.update(v4) + (self._t6.update(v6) if v6 else [])

    def listeners(self) -> list[Listener]:
        socks = self._sockets()
        if socks != self._socks:
            self._socks = socks
            self._inodes = {s.inode for s in socks}
            self._memo = None
        names = self.owners.resolve(self._inodes)
        if self._memo is not None and self._memo[0] is names:
            return self._memo[1]  # nothing changed: the same list object (callers may memoise on it)
        out = [Listener(s.family, s.address, s.port, names.get(s.inode, "")) for s in socks]
        self._memo = (names, out)
        return out


class SockDiagReader(ProcNetReader):
    """The listening sockets from a ``NETLINK_SOCK_DIAG`` dump (:mod:`.sockdiag`): the kernel walks
    only its listening table, where ``/proc/net/tcp`` walks every connection's bucket. Names as
    :class:`ProcNetReader` (the same :class:`OwnerCache`). A kernel without it (or a sandbox that
    forbids netlink) makes it unavailable, and the procfs reader answers."""

    name = "sock_diag"
    optional = True  # unavailable: the procfs reader answers, and that is not reported as degraded

    def __init__(self, root: str | Path = "/proc", owners: OwnerCache | None = None) -> None:
        super().__init__(root, owners)
        self.unavailable = ""  # why, once it failed: not tried again

    def _sockets(self) -> list[Socket]:
        if self.unavailable:
            raise ReaderUnavailable(self.unavailable)
        try:
            return self._dump()
        except ReaderUnavailable as e:
            self.unavailable = str(e)
            raise

    def _dump(self) -> list[Socket]:
        try:
            nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, sockdiag.NETLINK_SOCK_DIAG)
        except (OSError, AttributeError) as e:
            raise ReaderUnavailable(f"no sock_diag netlink socket: {getattr(e, 'strerror', None) or e}") from None
        try:
            nl.settimeout(5.0)
            out: list[Socket] = []
            for family in (4, 6):
                nl.sendto(sockdiag.dump_request(family, family), (0, 0))
                while True:
                    try:
                        socks, done = sockdiag.parse_dump(nl.recv(65536), family)
                    except sockdiag.SockDiagError as e:
                        if family == 6 and e.errno in (errno.EAFNOSUPPORT, errno.ENOENT, errno.EINVAL):
                            break  # IPv6 off: no tcp6 either
                        raise
                    out.extend(socks)
                    if done:
                        break
            return out
        except OSError as e:
            raise ReaderUnavailable(f"sock_diag dump failed: {e.strerror or e}") from None
        finally:
            nl.close()


class PsutilReader:
    """``psutil.net_connections("tcp")`` filtered to LISTEN; pid None → ``""``."""

    name = "psutil"

    def __init__(self, name_of: Callable[[int], str | None] = _psutil_name) -> None:
        self.name_of = name_of

    def listeners(self) -> list[Listener]:
        import psutil

        try:
            conns = psutil.net_connections("tcp")
        except (psutil.Error, OSError) as e:
            raise ReaderUnavailable(f"psutil.net_connections failed: {type(e).__name__}: {e}") from None
        names: dict[int, str] = {}
        out: list[Listener] = []
        for c in conns:
            if c.status != psutil.CONN_LISTEN or not c.laddr:
                continue
            name = ""
            if c.pid is not None:
                if c.pid not in names:
                    names[c.pid] = self.name_of(c.pid) or ""
                name = names[c.pid]
            family = 6 if ":" in c.laddr.ip else 4
            out.append(Listener(family, c.laddr.ip, c.laddr.port, name))
        return out


@dataclass
class ScanResult:
    listeners: list[Listener]
    reader: str
    warning: str = ""  # set when a fallback had to be used, saying why


class Scanner:
    """Tries each reader in order; the first that works answers."""

    def __init__(self, readers: Sequence[Reader]) -> None:
        if not readers:
            raise ValueError("at least one reader")
        self.readers = list(readers)

    def scan(self) -> ScanResult:
        """Raises :class:`ScanError` (with every reader's reason) when none works."""
        reasons: list[str] = []
        for reader in self.readers:
            try:
                found = reader.listeners()
            except ReaderUnavailable as e:
                if not getattr(reader, "optional", False):  # a faster path missing is no degradation
                    reasons.append(str(e))
                continue
            except ScanError as e:
                reasons.append(str(e))
                continue
            warning = ""
            if reasons:
                warning = "; ".join(reasons) + f"; using {reader.name} instead (slower)"
            return ScanResult(found, reader.name, warning)
        raise ScanError("; ".join(reasons))


def default_scanner(proc_root: str | Path = "/proc") -> Scanner:
    """procfs first on Linux, psutil as the fallback (and the only reader elsewhere)."""
    import sys

    if sys.platform.startswith("linux"):
        if Path(proc_root) == Path("/proc"):  # our own network namespace: netlink sees the same sockets
            return Scanner([SockDiagReader(proc_root), ProcNetReader(proc_root), PsutilReader()])
        return Scanner([ProcNetReader(proc_root), PsutilReader()])
    return Scanner([PsutilReader()])
