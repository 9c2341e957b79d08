"""Follow a file (``[[log_sources]]``) and ship its lines under a named source.

Rules:

* Polls every ``interval`` (250 ms): appends are read and split into lines
  (:class:`~coder_agent.logs.text.LineSplitter`); a partial last line waits for its newline.
* Rotation (the path now names another inode): the old file is read to its end first, then the
  new one from its start. Truncation (the file shrank below our offset): read again from 0.
  A missing file is waited for.
* The offset of the last complete line handed to the log sink (which has it on disk from then on)
  is kept in the state dir with the inode, so a daemon restart continues where it left off; if the
  file was rotated meanwhile, the rest of ``<path>.1`` (same inode) is read first. A file seen for
  the first time is read from its start (cloud-init's log was written before we started).
* :func:`resume_plan` is the pure decision; :class:`FileFollower` does the I/O.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, BinaryIO

from ..config import LogSourceConfig
from ..log import Collapse, get_logger
from ..logsink import LogSink, LogSource
from ..service import Health
from ..state import StateStore
from .text import LineSplitter

__all__ = ["FileFollower", "resume_plan"]

READ_PER_POLL = 4 << 20


def resume_plan(saved: tuple[int, int] | None, current: tuple[int, int] | None,
                rotated: tuple[int, int] | None) -> tuple[str, int]:
    """Where to start after a (re)start. Arguments are ``(inode, offset)`` saved and
    ``(inode, size)`` of the path and of ``<path>.1`` now (None when absent).

    Returns ``("current", offset)``, ``("rotated-then-current", offset in <path>.1)`` or
    ``("wait", 0)`` when the path does not exist yet.
    """
    if current is None:
        if saved is not None and rotated is not None and rotated[0] == saved[0]:
            return "rotated-then-current", min(saved[1], rotated[1])
        return "wait", 0
    if saved is None:
        return "current", 0
    ino, off = saved
    if current[0] == ino:
        return "current", off if off <= current[1] else 0  # shrank: truncated while we were away
    if rotated is not None and rotated[0] == ino:
        return "rotated-then-current", min(off, rotated[1])
    return "current", 0


class FileFollower:
    def __init__(self, cfg: LogSourceConfig, sink: LogSink, store: StateStore, *, interval: float = 0.25) -> None:
        self.cfg = cfg
        self.path = Path(os.path.expandvars(os.path.expanduser(cfg.path)))
        self.sink = sink
        self.store = store
        self.interval = interval
        self.name = f"log-source:{cfg.display_name}"
        self.health = Health()
        self._log = get_logger("logs.follow", source=cfg.display_name, path=str(self.path))
        self._collapse = Collapse(self._log)
        self._src: LogSource | None = None
        self._fh: BinaryIO | None = None
        self._ino = 0
        self._off = 0
        self._split = LineSplitter()
        self._saved: tuple[int, int] | None = None
        self._pending_rotated: tuple[Path, int] | None = None

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
        pos = (self._ino, self._off - self._split.pending)
        if pos != self._saved:
            self.store.put(self._key, {"ino": pos[0], "off": pos[1]})
            self._saved = pos

    def _read_all(self, fh: BinaryIO, limit: int = READ_PER_POLL) -> int:
        n = 0
        while n < limit:
            data = fh.read(min(1 << 20, limit - n))
            if not data:
                break
            n += len(data)
            self._off += len(data)
            self._emit(self._split.feed(data))
        return n

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
        return True

    def _start(self) -> None:
        doc = self.store.get(self._key)
        saved = (doc["ino"], doc["off"]) if isinstance(doc, dict) and isinstance(doc.get("ino"), int) \
            and isinstance(doc.get("off"), int) else None
        self._saved = saved
        cur = rot = None
        try:
            st = self.path.stat()
            cur = (st.st_ino, st.st_size)
        except FileNotFoundError:
            pass
        rpath = self.path.with_name(self.path.name + ".1")
        try:
            st = rpath.stat()
            rot = (st.st_ino, st.st_size)
        except FileNotFoundError:
            pass
        how, off = resume_plan(saved, cur, rot)
        if how == "rotated-then-current":
            try:
                with open(rpath, "rb") as f:
                    f.seek(off)
                    self._ino, self._off = os.fstat(f.fileno()).st_ino, off
                    self._read_all(f, limit=1 << 40)
                self._emit(self._split.close())
            except OSError:
                pass
            self._open_current(0)
        elif how == "current":
            self._open_current(off)

    def poll(self) -> None:
        """One step: notice rotation/truncation, read what was appended, save the offset."""
        if self._fh is None and not self._open_current(0):
            self.health.set("degraded", f"waiting for {self.path}")
            return
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
                return
        elif st is not None and st.st_size < self._off:
            self._emit(self._split.close())
            self._fh.seek(0)
            self._off = 0
            self._split = LineSplitter()
        assert self._fh is not None
        self._read_all(self._fh)
        self.health.set("ok", str(self.path))
        self._save()

    async def run(self) -> None:
        self._src = self.sink.source(self.cfg.display_name, self.cfg.icon)
        self._start()
        try:
            while True:
                try:
                    self.poll()
                except OSError as e:
                    self.health.set("degraded", str(e))
                    self._collapse.error("cannot follow a log file", str(e), error=str(e))
                await asyncio.sleep(self.interval)
        finally:
            if self._fh is not None:
                self._fh.close()

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "offset": self._off, "inode": self._ino}
