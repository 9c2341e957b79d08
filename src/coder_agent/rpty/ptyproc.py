"""One process in its own pseudo-terminal, driven from asyncio.

Rules:

* The process runs in a new session and process group whose controlling terminal is the PTY (so
  job control, ^C and SIGWINCH work), with the given argv, environment and directory; the window
  size is set before it starts when both sizes are non-zero.
* :meth:`PtyProcess.read` returns ``b""`` once every holder of the terminal has closed it (the
  process and any background child) or after :meth:`kill`; :meth:`write` writes everything, one
  caller at a time (messages from several connections never interleave); both wait on the event
  loop, never block it.
* :meth:`kill`: SIGHUP to the process group (a shell ignores SIGTERM), SIGKILL to what is left
  after ``grace`` seconds, then the terminal is closed and the process reaped. Waiting readers and
  writers wake up (:class:`PtyClosed` for writers). Idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Mapping

from ..scripts.runner import wait_exit

__all__ = ["PtyClosed", "PtyProcess"]


class PtyClosed(RuntimeError):
    """The terminal was closed."""


def _set_ctty() -> None:  # in the child between fork and exec, after setsid: stdin becomes the ctty
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _winsize(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PtyProcess:
    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: str, height: int = 0, width: int = 0) -> None:
        """Start ``argv``; raises OSError when it cannot start."""
        master, slave = os.openpty()
        try:
            if height and width:
                _winsize(slave, height, width)
            self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=dict(env),
                                         start_new_session=True, preexec_fn=_set_ctty)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.fd = master
        self.pid = self.proc.pid
        self.closed = False
        self._lock = asyncio.Lock()
        self._waiters: set[asyncio.Future[None]] = set()
        self._exit: asyncio.Task[int] = asyncio.create_task(wait_exit(self.proc))

    async def wait(self) -> int:
        """The process's exit code (negative: killed by that signal)."""
        return await asyncio.shield(self._exit)

    @property
    def exited(self) -> bool:
        return self._exit.done()

    async def _ready(self, write: bool) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        (loop.add_writer if write else loop.add_reader)(self.fd, ready)
        self._waiters.add(fut)
        try:
            await fut
        finally:
            self._waiters.discard(fut)
            if not self.closed:
                (loop.remove_writer if write else loop.remove_reader)(self.fd)

    async def read(self) -> bytes:
        while not self.closed:
            try:
                return os.read(self.fd, 65536)
            except BlockingIOError:
                await self._ready(False)
            except OSError as e:
                if e.errno == errno.EIO:  # every holder of the terminal closed it
                    return b""
                raise
        return b""

    async def write(self, data: bytes) -> None:
        async with self._lock:
            view = memoryview(data)
            while view:
                if self.closed:
                    raise PtyClosed("the terminal is closed")
                try:
                    view = view[os.write(self.fd, view):]
                except BlockingIOError:
                    await self._ready(True)

    def resize(self, height: int, width: int) -> None:
        """Set the window size (the kernel sends SIGWINCH); raises OSError."""
        if not self.closed:
            _winsize(self.fd, height, width)

    async def kill(self, grace: float) -> None:
        if self.closed:
            await asyncio.gather(self._exit, return_exceptions=True)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGHUP)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline and not (self._exit.done() and not _group_alive(self.pid)):  # noqa: ASYNC110 - no event says "group gone"
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if not self.closed:
            self.closed = True
            loop.remove_reader(self.fd)
            loop.remove_writer(self.fd)
            for fut in list(self._waiters):
                if not fut.done():
                    fut.set_result(None)
            os.close(self.fd)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exit), 5.0)
