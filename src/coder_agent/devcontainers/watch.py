"""Learn of new and changed ``devcontainer.json`` files through inotify, without polling.

Rules:

* :func:`classify` is pure: inotify events (and which directory each watch is) in, what they
  mean out — a config file written (re-stat the configs: the ``dirty`` flag), the project set
  possibly changed (run discovery again), new directories to watch, watches gone.
* :class:`DirWatch` owns one inotify descriptor registered with ``loop.add_reader``: no thread,
  no timer; the loop wakes only when the kernel has events. It watches the directories
  discovery names (:func:`.discovery.scan`), and every directory created under a watched one
  (recursively, skipping ``.git`` and :data:`SKIP`: dependency and cache trees a tool fills
  with thousands of directories, never a project's config), up to ``limit`` watches.
* When inotify is unavailable (not Linux, a sandbox, the per-user instance limit) or the watches
  run out (``limit``, or the kernel's ``max_user_watches``: ENOSPC) the caller falls back to a
  slow poll; :class:`WatchUnavailable` carries the one-line reason for ``status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .. import inotify as ino

__all__ = ["DIR_MASK", "SKIP", "Change", "DirWatch", "WatchUnavailable", "classify"]

DIR_MASK = (ino.IN_CREATE | ino.IN_DELETE | ino.IN_MOVED_FROM | ino.IN_MOVED_TO | ino.IN_CLOSE_WRITE
            | ino.IN_ATTRIB | ino.IN_DELETE_SELF | ino.IN_MOVE_SELF | ino.IN_ONLYDIR)
_ENTRIES = ino.IN_CREATE | ino.IN_DELETE | ino.IN_MOVED_FROM | ino.IN_MOVED_TO
# names whose appearance, removal or change may change the set of projects
_DISCOVERY_NAMES = (".git", ".gitignore", ".devcontainer", "devcontainer.json", ".devcontainer.json")


SKIP = frozenset({".git", "node_modules", ".venv", "venv", "__pycache__", ".cache", ".tox", ".mypy_cache",
                  ".pytest_cache", ".ruff_cache", ".gradle", ".m2"})


class WatchUnavailable(Exception):
    """inotify cannot serve here (any more); ``str()`` says why, once, in status."""


@dataclass
class Change:
    config: bool = False  # a devcontainer.json was written: re-stat the configs
    discovery: bool = False  # projects may have appeared or gone: discover again
    new_dirs: list[str] = field(default_factory=list)  # directories created under a watched one
    gone: list[int] = field(default_factory=list)  # watch descriptors the kernel dropped
    overflow: bool = False  # events were lost: discover again, re-stat everything


def classify(events: Iterable[ino.Event], dirs: dict[int, str]) -> Change:
    """What a batch of events means (``dirs``: watch descriptor → its directory)."""
    out = Change()
    for ev in events:
        if ev.mask & ino.IN_Q_OVERFLOW:
            out.overflow = out.discovery = out.config = True
            continue
        if ev.mask & ino.IN_IGNORED:
            out.gone.append(ev.wd)
            continue
        base = dirs.get(ev.wd)
        if base is None:
            continue
        if ev.mask & (ino.IN_DELETE_SELF | ino.IN_MOVE_SELF):
            out.discovery = out.config = True
            continue
        name = ev.name
        is_config = name.endswith("devcontainer.json")
        if ev.mask & ino.IN_ISDIR:
            if name == ".git":
                out.discovery = True
                continue
            if name in SKIP:
                continue
            if ev.mask & (ino.IN_CREATE | ino.IN_MOVED_TO):
                out.new_dirs.append(f"{base}/{name}")
            if ev.mask & _ENTRIES:
                out.discovery = True  # a moved-in tree may hold projects; a removed one held some
            continue
        if is_config:
            out.config = True
            if ev.mask & _ENTRIES:
                out.discovery = True
        elif name in _DISCOVERY_NAMES or (name == "exclude" and base.endswith("/.git/info")):
            out.discovery = True
    return out


class DirWatch:
    """Directory watches on one inotify descriptor; ``on_change`` gets each batch's :class:`Change`."""

    def __init__(self, on_change: Callable[[Change], None], limit: int) -> None:
        self.on_change = on_change
        self.limit = limit
        self._ino: ino.Inotify | None = None
        self._dirs: dict[int, str] = {}
        self._wds: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def count(self) -> int:
        return len(self._dirs)

    def start(self) -> None:
        """Open the descriptor and register it with the running loop; raises WatchUnavailable."""
        try:
            self._ino = ino.Inotify()
        except OSError as e:
            raise WatchUnavailable(f"inotify unavailable: {e.strerror or e}") from None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._ino.fileno(), self._readable)

    def close(self) -> None:
        if self._ino is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._ino.fileno())
            self._ino.close()
            self._ino = None
        self._dirs.clear()
        self._wds.clear()

    def watch(self, dirs: Iterable[str]) -> None:
        """Add watches for ``dirs`` not watched yet; raises WatchUnavailable past the limit."""
        for d in dirs:
            self._add(d)

    def watch_tree(self, top: str) -> None:
        """Watch ``top`` and every directory under it (not ``.git``); raises WatchUnavailable."""
        stack = [top]
        while stack:
            d = stack.pop()
            if not self._add(d):
                continue
            try:
                with os.scandir(d) as it:
                    stack.extend(e.path for e in it
                                 if e.name not in SKIP and e.is_dir(follow_symlinks=False))
            except OSError:
                continue

    def _add(self, d: str) -> bool:
        assert self._ino is not None
        if d in self._wds:
            return False
        if len(self._dirs) >= self.limit:
            raise WatchUnavailable(f"more than {self.limit} directories to watch "
                                   "(devcontainers.watch_limit)")
        try:
            wd = self._ino.add_watch(d, DIR_MASK)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise WatchUnavailable("the kernel's inotify watch limit is reached "
                                       "(fs.inotify.max_user_watches)") from None
            return False  # gone already, not a directory, or not ours to read
        old = self._dirs.get(wd)
        if old is not None:
            self._wds.pop(old, None)  # the same inode under a new name (moved)
        self._dirs[wd] = d
        self._wds[d] = wd
        return True

    def _readable(self) -> None:
        assert self._ino is not None
        try:
            events = self._ino.read()
        except OSError:
            events = []
        if not events:
            return
        change = classify(events, self._dirs)
        for wd in change.gone:
            d = self._dirs.pop(wd, None)
            if d is not None and self._wds.get(d) == wd:
                del self._wds[d]
        self.on_change(change)
