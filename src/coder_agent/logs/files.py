"""The local copy of each log source, which is also the shipper's durable queue.

Rules:

* One file per source, ``<log_dir>/<name>.log``, one entry per line (format in
  :mod:`coder_agent.logs.text`). When it reaches ``max_bytes`` it is renamed ``<name>.log.1``
  (older ones shift up) and a new one starts, always at a line boundary. Which backups stay is
  :class:`~coder_agent.retention.Retention`'s rule (by age and total size; ``backups=n``
  alone means exactly n), applied at every rotation and when the file is opened.
* Reopening a non-empty file (a daemon restart) first writes a ``# <marker>`` line, so a reader
  sees where each process began.
* Positions are *logical*: bytes written to the source since the oldest file still known, so a
  position survives rotation. On disk (state dir) a position is kept as ``(inode, offset)``
  because inodes survive the rename; :meth:`SourceFile.locate` maps one back.
* Writes go straight to the OS (one ``write(2)`` per call, no user-space buffer), so a line
  accepted is in the file even if the process is SIGKILLed the next instant.
* When the OS refuses a write (disk full, quota, I/O error) the bytes it did not take are kept
  in memory, in order, as the file's *unwritten tail*: they keep their logical positions, the
  :class:`Reader` serves them from memory (so they still reach Coder) and :meth:`SourceFile.flush`
  retries putting them on disk (the shipper calls it every tick). The tail is bounded by
  ``max_unwritten`` bytes; beyond it new writes are refused whole (counted in ``dropped_bytes``
  and ``dropped_lines``) — never half a line. Rotation waits until the tail is on disk.
* :class:`Reader` walks the files oldest to newest from a position, keeping an open handle so a
  rotation (rename) under it changes nothing. It reads in chunks: memory stays bounded however
  much is waiting on disk.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..retention import Retention, existing_backups, prune_set, rotate_set

__all__ = ["Reader", "SourceFile", "read_region"]


@dataclass
class _Gen:
    ino: int
    start: int  # logical position of the file's first byte
    size: int


class SourceFile:
    def __init__(self, path: Path, *, max_bytes: int = 32 << 20, backups: int = 8, marker: str = "",
                 retention: Retention | None = None, max_unwritten: int = 8 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.retention = retention or Retention.count(backups)
        self.gens: list[_Gen] = []
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.kept = prune_set(path, self.retention, time.time(),
                              existing_backups(path))  # backups on disk now
        start = 0
        for k in range(self.kept, 0, -1):  # oldest first
            try:
                st = self._rotated(k).stat()
            except FileNotFoundError:
                continue
            self.gens.append(_Gen(st.st_ino, start, st.st_size))
            start += st.st_size
        self.max_unwritten = max_unwritten
        self._unwritten = bytearray()  # accepted, not yet taken by the OS: the file's tail
        self.write_error: str | None = None  # why the tail is not on disk (None: all on disk)
        self.dropped_bytes = 0
        self.dropped_lines = 0
        self._fd = self._open_fd()
        st = os.fstat(self._fd)
        self.gens.append(_Gen(st.st_ino, start, st.st_size))
        if st.st_size:
            with open(path, "rb") as f:
                f.seek(st.st_size - 1)
                if f.read(1) != b"\n":  # a crash left half a line: never glue the next one to it
                    self._write(b"\n")
            if marker:
                self._write(f"# {marker}\n".encode())

    def _rotated(self, k: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{k}")

    @property
    def total(self) -> int:
        """Logical position after the last byte written."""
        g = self.gens[-1]
        return g.start + g.size

    @property
    def active_gen(self) -> int:
        return len(self.gens) - 1

    def _open_fd(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def _put(self, data: bytes | bytearray) -> int:
        """Hand ``data`` to the OS; how many bytes it took (it stops at the first refusal)."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                n = os.write(self._fd, view[done:])
            except InterruptedError:
                continue
            except OSError as e:
                self.write_error = os.strerror(e.errno) if e.errno else str(e)
                if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS):
                    self.write_error = f"{self.write_error} ({e.errno})"
                break
            done += n
        return done

    def _write(self, data: bytes) -> bool:
        """Append ``data`` (whole lines) to the file or, if the OS refuses, to the unwritten tail.
        False when the tail is full and ``data`` was dropped."""
        if self._unwritten:
            self.flush()
        if self._unwritten:
            if len(self._unwritten) + len(data) > self.max_unwritten:
                self.dropped_bytes += len(data)
                self.dropped_lines += data.count(b"\n")
                return False
            self._unwritten += data
        else:
            took = self._put(data)
            if took < len(data):
                self._unwritten += data[took:]
        self.gens[-1].size += len(data)
        return True

    def write(self, data: bytes) -> bool:
        """Append whole lines; rotates afterwards when the file is full. False when dropped
        (the OS refuses writes and the unwritten tail is full)."""
        ok = self._write(data)
        if self.gens[-1].size >= self.max_bytes and not self._unwritten:
            self.rotate()
        return ok

    @property
    def unwritten(self) -> int:
        """Bytes accepted but not on disk (held in memory)."""
        return len(self._unwritten)

    def unwritten_from(self, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of the unwritten tail from ``offset`` in the active file."""
        start = offset - (self.gens[-1].size - len(self._unwritten))
        if start < 0 or start >= len(self._unwritten):
            return b""
        return bytes(self._unwritten[start:start + limit])

    def flush(self) -> None:
        """Retry putting the unwritten tail on disk (a no-op when there is none)."""
        if not self._unwritten:
            return
        took = self._put(self._unwritten)
        del self._unwritten[:took]
        if not self._unwritten:
            self.write_error = None

    def rotate(self) -> None:
        self.flush()
        if self._unwritten:
            return  # the tail must reach this file first; rotate on a later write
        os.close(self._fd)
        rotate_set(self.path, self.kept)
        self.kept = prune_set(self.path, self.retention, time.time(), self.kept + 1)
        self._fd = self._open_fd()
        st = os.fstat(self._fd)
        self.gens.append(_Gen(st.st_ino, self.total, 0))

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def path_of(self, gen: int) -> Path | None:
        """Where generation ``gen`` lives now (None when rotated away)."""
        k = self.active_gen - gen
        if k < 0 or k > self.kept:
            return None
        p = self.path if k == 0 else self._rotated(k)
        try:
            if p.stat().st_ino == self.gens[gen].ino:
                return p
        except FileNotFoundError:
            pass
        return None

    def locate(self, ino: int, offset: int) -> int | None:
        """The logical position of ``(inode, offset)``, or None when that file is gone.

        Only files that still exist are searched, newest first: a deleted file's inode may be reused.
        """
        for g in reversed(self.gens[-(self.kept + 1):]):
            if g.ino == ino:
                return g.start + min(offset, g.size)
        return None

    def where(self, pos: int) -> tuple[int, int]:
        """``(generation, offset)`` of a logical position."""
        for i in range(len(self.gens) - 1, -1, -1):
            if pos >= self.gens[i].start:
                return i, pos - self.gens[i].start
        return 0, 0

    def disk_position(self, pos: int) -> tuple[int, int]:
        gen, off = self.where(pos)
        return self.gens[gen].ino, off

    @property
    def oldest(self) -> int:
        return self.gens[0].start


class Reader:
    """Reads complete lines from a logical position onwards. ``next_line`` returns
    ``(line, position after it)`` or None at the end of what was written."""

    CHUNK = 64 * 1024

    def __init__(self, sf: SourceFile, pos: int) -> None:
        self.sf = sf
        self.pos = pos  # logical position of the next unread line
        self._fh: BinaryIO | None = None
        self._gen = -1
        self._buf = b""
        self._i = 0

    def _open(self) -> bool:
        gen, off = self.sf.where(self.pos)
        path = self.sf.path_of(gen)
        while path is None and gen < self.sf.active_gen:
            gen += 1  # that file was rotated away: continue with the next one that exists
            self.pos = self.sf.gens[gen].start
            off = 0
            path = self.sf.path_of(gen)
        if path is None:
            return False
        self.close()
        f = open(path, "rb")  # noqa: SIM115 - kept open across rotations on purpose
        f.seek(off)
        self._fh, self._gen, self._buf, self._i = f, gen, b"", 0
        return True

    def next_line(self) -> tuple[bytes, int] | None:
        while True:
            j = self._buf.find(b"\n", self._i)
            if j >= 0:
                line = self._buf[self._i:j]
                self.pos += j + 1 - self._i
                self._i = j + 1
                return line, self.pos
            if self._fh is None and not self._open():
                return None
            assert self._fh is not None
            data = self._fh.read(self.CHUNK)
            if data:
                self._buf = self._buf[self._i:] + data
                self._i = 0
                continue
            if self._gen < self.sf.active_gen:
                if self._i < len(self._buf):  # a torn tail in a rotated file: skip it
                    self.pos += len(self._buf) - self._i
                self.pos = max(self.pos, self.sf.gens[self._gen + 1].start)
                self.close()
                continue
            if self.pos + len(self._buf) - self._i < self.sf.total:
                # accepted but not on disk: try to put it there, else read it from memory
                self.sf.flush()
                data = self._fh.read(self.CHUNK)
                if not data:
                    at = self._fh.tell()
                    data = self.sf.unwritten_from(at, self.CHUNK)
                    self._fh.seek(at + len(data))  # past it: once on disk it is not read twice
                if data:
                    self._buf = self._buf[self._i:] + data
                    self._i = 0
                    continue
            return None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_region(sf: SourceFile, start: int, end: int, block: int = 256 << 10) -> Iterator[tuple[int, bytes]]:
    """Whole lines between logical positions ``start`` and ``end`` (both line boundaries), as
    ``(position of the block's first byte, block)`` of at most about ``block`` bytes each.

    Files rotated away are skipped (the position jumps); a torn last line of a rotated file is
    dropped, as :class:`Reader` does. Handles stay open while the caller iterates, so a
    rotation in between changes nothing.
    """
    sf.flush()
    pos = max(start, sf.oldest)
    while pos < end:
        gen, off = sf.where(pos)
        last = gen >= sf.active_gen
        gen_end = end if last else min(end, sf.gens[gen + 1].start)
        path = sf.path_of(gen)
        if path is None:
            pos = gen_end
            continue
        with open(path, "rb") as f:
            f.seek(off)
            carry = b""
            while pos + len(carry) < gen_end:
                data = f.read(min(block, gen_end - pos - len(carry)))
                if not data:
                    break
                data = carry + data
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                if cut:
                    yield pos, data[:cut]
                    pos += cut
        pos = max(pos, gen_end)  # a torn or missing end of a rotated file is skipped
