"""Follow a file (``[[log_sources]]``) and ship its lines under a named source.

Rules:

* Woken by inotify (:mod:`.inotify`): IN_MODIFY, IN_ATTRIB, IN_MOVE_SELF, IN_DELETE_SELF on the
  followed file, IN_CREATE and IN_MOVED_TO of its name in its directory. An idle file costs no
  wake-ups. Where inotify is unavailable (said once per process), or while the file's directory
  does not exist, we poll every ``interval`` (250 ms) instead. Each wake-up reads what was
  appended (at most :data:`READ_PER_POLL` bytes, then again at once) and splits it into lines
  (:class:`~coder_agent.logs.text.LineSplitter`); a partial last line waits for its newline.
* Rotation by rename (the path now names another inode): the old file is read to its end first,
  then the new one from its start. A missing file is waited for.
* Truncation or rewrite in place (same inode), by size *and by content*: we keep the file's first
  :data:`FINGERPRINT` bytes and the last bytes we read before our offset, and compare them with
  the file on every change. The file shrank below our offset, or those bytes differ: it was
  rewritten (truncated and written again, to the same size or beyond our offset within one
  wake-up): it is read again from its start. If ``<path>.1`` is another inode holding the same
  bytes up to our offset (``copytruncate``), the rest of that copy is read first, so the lines
  written between our last read and the copy are not lost.
* The offset of the last complete line handed to the log sink (which has it on disk from then on)
  is kept in the state dir with the inode and digests of the two fingerprints, so a daemon
  restart continues where it left off when the file still holds what we read; if it does not,
  and ``<path>.k`` (k <= 9) is ours (same inode: renamed; or the same bytes: copied), the rest of
  it is read first, then ``<path>.k-1`` … ``<path>.1`` whole, then the path from its start (so
  rotations while we were down, or one we had not seen yet when we stopped, lose nothing; names
  other than ``.k``, e.g. ``dateext`` or compressed ones, are not looked for). A file seen for the
  first time is read from its start (cloud-init's log was written before we started).
* Duplicates, only these: a file rewritten in place is shipped again from its start, so lines the
  rewrite kept (a tool that rewrites its whole log) are shipped twice. Not detected: a rewrite
  that leaves the head and the bytes before our offset byte-identical (it looks unchanged), and
  lines ``copytruncate`` itself destroys (written after its copy, before its truncate) that we
  had not read yet; a copy made while we were down when we had stopped at offset 0 (nothing to
  recognise it by). inotify does not see writes made by another machine (NFS): follow local files.
  A symlinked path is followed to its target, but only the link's directory is watched.
* :func:`resume_point` and :func:`relevant` are pure decisions; :class:`FileFollower` does the I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ..config import LogSourceConfig
from ..inotify import (
    IN_ATTRIB,
    IN_CREATE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    Event,
    Inotify,
)
from ..log import Collapse, get_logger
from ..logsink import LogSink, LogSource
from ..service import Health
from ..state import StateStore
from .text import LineSplitter

__all__ = ["FINGERPRINT", "FileFollower", "relevant", "resume_plan", "resume_point"]

READ_PER_POLL = 4 << 20
ROTATED_BACK = 9  # at a restart, our file is looked for as <path>.1 … <path>.9
FINGERPRINT = 64  # bytes of the file's head, and before our offset, compared on every change
FILE_EVENTS = IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF
DIR_EVENTS = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR
_said_polling = False  # "inotify unavailable" is said once per process


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relevant(events: Iterable[Event], dir_wd: int | None, name: str) -> bool:
    """Whether ``events`` may have changed the followed file: anything on the file's own watch,
    a queue overflow, or an entry named ``name`` appearing in its directory."""
    for ev in events:
        if ev.mask & IN_Q_OVERFLOW:
            return True
        if ev.wd == dir_wd:
            if ev.name == name:
                return True
            continue
        return True
    return False


def resume_point(saved: tuple[int, int] | None, current: tuple[int, int] | None,
                 rotated: Sequence[tuple[int, int] | None], *, current_same: bool = True,
                 rotated_same: Sequence[bool] = (), rotated_prefix: Sequence[bool] = ()) -> tuple[int, int]:
    """Where to start after a (re)start: ``(k, offset)``.

    ``saved`` is the ``(inode, offset)`` we kept; ``current`` and ``rotated[k-1]`` the
    ``(inode, size)`` of the path and of ``<path>.k`` now (None when absent). ``current_same``:
    the path still holds the bytes we read before the saved offset (its fingerprints match, or
    none were saved); ``rotated_same[k-1]``: ``<path>.k`` holds them (a ``copytruncate`` copy);
    ``rotated_prefix[k-1]``: ``<path>.k`` is shorter than the saved offset but has our head (a
    copy of what we had read past: we stopped between the copy and noticing the truncation).
    Full matches win over prefixes, the nearest first.

    ``k == 0``: read the path from ``offset``. ``k >= 1``: our file is now ``<path>.k`` (renamed,
    or copied); read it from ``offset``, then ``<path>.k-1`` … ``<path>.1`` whole, then the path
    from its start. ``k == -1``: nothing to read yet (wait for the path).
    """
    start_over = (0, 0) if current is not None else (-1, 0)
    if saved is None:
        return start_over
    ino, off = saved
    if current is not None and current[0] == ino and off <= current[1] and current_same:
        return 0, off
    for k, rot in enumerate(rotated, 1):
        same = k <= len(rotated_same) and rotated_same[k - 1]
        if rot is not None and (rot[0] == ino or same):
            return k, min(off, rot[1])
    for k, rot in enumerate(rotated, 1):
        if rot is not None and k <= len(rotated_prefix) and rotated_prefix[k - 1]:
            return k, min(off, rot[1])  # nothing left to read in it; the newer ones whole
    return start_over  # shrank or rewritten while we were away, rotated out of reach: start over


def resume_plan(saved: tuple[int, int] | None, current: tuple[int, int] | None,
                rotated: tuple[int, int] | None, *, current_same: bool = True,
                rotated_same: bool = False) -> tuple[str, int]:
    """:func:`resume_point` with ``<path>.1`` only, in words: ``("current", offset)``,
    ``("rotated-then-current", offset in <path>.1)`` or ``("wait", 0)``."""
    k, off = resume_point(saved, current, [rotated], current_same=current_same, rotated_same=[rotated_same])
    return ("wait", 0) if k < 0 else ("current", off) if k == 0 else ("rotated-then-current", off)


class _Watch:
    """inotify on the followed path (its current inode) and on its directory."""

    def __init__(self, ino: Inotify, path: Path) -> None:
        self.ino = ino
        self.path = path
        self.changed = asyncio.Event()
        self.dir_wd: int | None = None
        self.file_wd: int | None = None
        self.file_ino = 0

    def on_readable(self) -> None:
        try:
            events = self.ino.read()
        except OSError:  # cannot say what changed: look
            self.changed.set()
            return
        for ev in events:
            if ev.mask & IN_IGNORED:  # that watch is gone (its inode deleted): armed again next step
                if ev.wd == self.file_wd:
                    self.file_wd = None
                elif ev.wd == self.dir_wd:
                    self.dir_wd = None
        if relevant(events, self.dir_wd, self.path.name):
            self.changed.set()

    def arm(self) -> bool:
        """(Re)watch the path as it is now; False while its directory cannot be watched."""
        if self.dir_wd is None:
            try:
                self.dir_wd = self.ino.add_watch(self.path.parent, DIR_EVENTS)
            except OSError:
                return False
        try:
            st = os.stat(self.path)
        except OSError:
            return True  # the directory's watch says when it appears
        if self.file_wd is None or st.st_ino != self.file_ino:
            old = self.file_wd
            try:
                self.file_wd = self.ino.add_watch(self.path, FILE_EVENTS)
            except OSError:
                return False
            self.file_ino = st.st_ino
            if old is not None and old != self.file_wd:
                self.ino.rm_watch(old)
        return True

    def close(self) -> None:
        self.ino.close()


class FileFollower:
    def __init__(self, cfg: LogSourceConfig, sink: LogSink, store: StateStore, *, interval: float = 0.25,
                 inotify: Callable[[], Inotify] = Inotify) -> None:
        self.cfg = cfg
        self.path = Path(os.path.expandvars(os.path.expanduser(cfg.path)))
        self.sink = sink
        self.store = store
        self.interval = interval
        self.name = f"log-source:{cfg.display_name}"
        self.health = Health()
        self.wakeups = 0  # polls done (an idle file under inotify costs none)
        self.watching = False  # inotify in use (else: polling every ``interval``)
        self._inotify = inotify
        self._log = get_logger("logs.follow", source=cfg.display_name, path=str(self.path))
        self._collapse = Collapse(self._log)
        self._src: LogSource | None = None
        self._fh: BinaryIO | None = None
        self._ino = 0
        self._off = 0
        self._split = LineSplitter()
        self._head = b""  # the file's first bytes (up to FINGERPRINT), as we read them
        self._recent = bytearray()  # the last bytes we read, ending at _off (FINGERPRINT + pending)
        self._saved: dict[str, Any] | None = None

    @property
    def _key(self) -> str:
        assert self._src is not None
        return f"logs-follow-{self._src.id}"

    def _emit(self, lines: list[str]) -> None:
        if not lines:
            return
        assert self._src is not None
        wl = getattr(self.sink, "write_lines", None)
        if wl is not None:
            wl(self._src, lines)
        else:
            for ln in lines:
                self.sink.write(self._src, ln)

    def _save(self) -> None:
        pending = self._split.pending
        off = self._off - pending
        n = min(FINGERPRINT, off)
        done = self._recent[:len(self._recent) - pending]
        doc = {"ino": self._ino, "off": off, "head": digest(self._head[:n]),
               "tail": digest(bytes(done[len(done) - n:]))}
        if doc != self._saved:  # the fingerprints too: a rewrite may come back to the same offset
            self.store.put(self._key, doc)
            self._saved = doc

    def _read_all(self, fh: BinaryIO, limit: int = READ_PER_POLL) -> int:
        n = 0
        while n < limit:
            data = fh.read(min(1 << 20, limit - n))
            if not data:
                break
            n += len(data)
            if self._off < FINGERPRINT and self._off == len(self._head):
                self._head += data[:FINGERPRINT - self._off]
            self._off += len(data)
            self._recent += data
            self._emit(self._split.feed(data))
            keep = FINGERPRINT + self._split.pending
            if len(self._recent) > keep:
                del self._recent[:len(self._recent) - keep]
        return n

    def _holds_what_we_read(self, fd: int) -> bool:
        """The file behind ``fd`` has our head and, before our offset, the bytes we read last."""
        n = len(self._recent)
        if n and os.pread(fd, n, self._off - n) != self._recent:
            return False
        return not self._head or os.pread(fd, len(self._head), 0) == self._head

    @staticmethod
    def _holds(path: Path, off: int, head: str, tail: str | None) -> bool:
        """``path`` has the fingerprints saved for offset ``off`` (the head only when ``tail`` is None)."""
        n = min(FINGERPRINT, off)
        try:
            with open(path, "rb") as f:
                fd = f.fileno()
                if digest(os.pread(fd, n, 0)) != head:
                    return False
                return tail is None or digest(os.pread(fd, n, off - n)) == tail
        except OSError:
            return False

    def _open_current(self, offset: int) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open to follow rotation
        except FileNotFoundError:
            return False
        st = os.fstat(fh.fileno())
        if offset > st.st_size:
            offset = 0
        fh.seek(offset)
        self._fh, self._ino, self._off = fh, st.st_ino, offset
        self._split = LineSplitter()
        n = min(FINGERPRINT, offset)  # resuming: what we read before, as the file has it
        self._head = os.pread(fh.fileno(), n, 0)
        self._recent = bytearray(os.pread(fh.fileno(), n, offset - n))
        return True

    def _start(self) -> None:
        doc = self.store.get(self._key)
        saved = (doc["ino"], doc["off"]) if isinstance(doc, dict) and isinstance(doc.get("ino"), int) \
            and isinstance(doc.get("off"), int) else None
        fps = (doc["head"], doc["tail"]) if saved is not None and isinstance(doc, dict) \
            and isinstance(doc.get("head"), str) and isinstance(doc.get("tail"), str) else None
        self._saved = doc if saved is not None else None

        def stat(p: Path) -> tuple[int, int] | None:
            try:
                st = p.stat()
            except FileNotFoundError:
                return None
            return st.st_ino, st.st_size

        cur = stat(self.path)
        chain = [self.path.with_name(f"{self.path.name}.{k}") for k in range(1, ROTATED_BACK + 1)]
        rots = [stat(p) for p in chain]
        current_same = True
        rotated_same: list[bool] = []
        rotated_prefix: list[bool] = []
        if saved is not None and fps is not None:
            off = saved[1]
            current_same = cur is not None and self._holds(self.path, off, *fps)
            rotated_same = [r is not None and off <= r[1] and self._holds(p, off, *fps)
                            for p, r in zip(chain, rots, strict=True)]
            rotated_prefix = [r is not None and r[1] < off and self._holds(p, off, fps[0], None)
                              for p, r in zip(chain, rots, strict=True)]
        k, off = resume_point(saved, cur, rots, current_same=current_same, rotated_same=rotated_same,
                              rotated_prefix=rotated_prefix)
        if k > 0:
            for i in range(k, 0, -1):  # ours from the saved offset, then the newer ones whole
                try:
                    with open(chain[i - 1], "rb") as f:
                        start = off if i == k else 0
                        f.seek(start)
                        self._ino, self._off = os.fstat(f.fileno()).st_ino, start
                        self._read_all(f, limit=1 << 40)
                    self._emit(self._split.close())
                except OSError:
                    pass
            self._open_current(0)
        elif k == 0:
            self._open_current(off)

    def _read_copy(self) -> None:
        """After a rewrite: when ``<path>.1`` is a copy of what we read (``copytruncate``), read the
        rest of it, the lines written between our last read and the copy."""
        try:
            with open(self.path.with_name(self.path.name + ".1"), "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino == self._ino or st.st_size <= self._off or not self._holds_what_we_read(f.fileno()):
                    return
                f.seek(self._off)
                self._read_all(f, limit=1 << 40)
        except OSError:
            return

    def poll(self) -> bool:
        """One step: notice rotation/truncation/rewrite, read what was appended, save the offset.
        Returns True when it stopped at :data:`READ_PER_POLL` (more is waiting)."""
        self.wakeups += 1
        if self._fh is None and not self._open_current(0):
            self.health.set("degraded", f"waiting for {self.path}")
            return False
        assert self._fh is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        if st is not None and st.st_ino != self._ino:
            self._read_all(self._fh, limit=1 << 40)  # the rotated file's last lines first
            self._emit(self._split.close())
            self._fh.close()
            self._fh = None
            if not self._open_current(0):
                return False
        elif st is not None and (st.st_size < self._off or not self._holds_what_we_read(self._fh.fileno())):
            self._read_copy()
            self._emit(self._split.close())
            self._log.info("log file truncated or rewritten; reading it from the start", offset=self._off)
            self._fh.seek(0)
            self._off = 0
            self._split = LineSplitter()
            self._head = b""
            self._recent.clear()
        assert self._fh is not None
        more = self._read_all(self._fh) >= READ_PER_POLL
        self.health.set("ok", str(self.path))
        self._save()
        return more

    def _watch(self) -> _Watch | None:
        global _said_polling
        try:
            w = _Watch(self._inotify(), self.path)
        except OSError as e:
            if not _said_polling:
                _said_polling = True
                self._log.info("inotify is unavailable; polling followed log files", interval=self.interval,
                               error=str(e))
            return None
        asyncio.get_running_loop().add_reader(w.ino.fileno(), w.on_readable)
        return w

    def _step(self, watch: _Watch | None) -> bool:
        """Arm the watches, then poll (a change after the read wakes us again). True: more waits."""
        self.watching = watch is not None and watch.arm()
        if watch is not None:
            watch.changed.clear()
        try:
            return self.poll()
        except OSError as e:
            self.health.set("degraded", str(e))
            self._collapse.error("cannot follow a log file", str(e), error=str(e))
            return False

    def start(self) -> None:
        """Register the source and decide where to resume (then :meth:`poll` reads)."""
        self._src = self.sink.source(self.cfg.display_name, self.cfg.icon)
        self._start()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    async def run(self) -> None:
        self.start()
        watch = self._watch()
        try:
            while True:
                if self._step(watch):
                    await asyncio.sleep(0)  # more to read: go on after letting others run
                elif watch is not None and self.watching:
                    await watch.changed.wait()
                else:
                    await asyncio.sleep(self.interval)
        finally:
            if watch is not None:
                asyncio.get_running_loop().remove_reader(watch.ino.fileno())
                watch.close()
            self.close()

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "offset": self._off, "inode": self._ino,
                "watch": "inotify" if self.watching else "poll"}
