"""The ``screen`` backend (Go's ``screen.go``): GNU screen keeps the terminal and redraws it.

Rules:

* Used when the header asks for it (``BackendType`` "screen", any case) and ``screen`` is on the
  command's ``PATH``; otherwise the buffered backend serves the session.
* The session has a random 8-hex-digit screen name and Go's config file
  (``$TMPDIR/coder-screen/config``: no startup message, no message wait, xterm scrollback,
  alternate screen, ``^S`` as the escape key). Nothing runs until a connection attaches.
* Each connection runs its own screen client in its own PTY, sized as the header says (24x80
  when a size is zero): ``screen -S <name> -UxRRqc <config> <command…>``, which starts the screen
  session with the command the first time and attaches to it later. Attaches are serialised and
  each waits until ``screen -x <name> -X version`` succeeds (every 250 ms, up to
  ``attach_timeout``), so two quick attaches never start two sessions.
* The client's output goes to its connection only (screen redraws on attach: no ring); when the
  client exits (the command ended, or screen was quit) the connection closes. Closing the
  connection kills its client; the screen session stays for the next attach.
* Closing the session (timeout, :meth:`close`) runs ``screen -x <name> -X quit`` ("No screen
  session found" counts as done).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .protocol import InitRequest
from .ptyproc import PtyProcess
from .session import Command, RptySettings, Session, SessionClosed

if TYPE_CHECKING:
    from ..clock import Clock

__all__ = ["SETTINGS", "ScreenSession", "screen_config"]

SETTINGS = [
    "startup_message off",
    "msgminwait 0",
    "msgwait 0",
    "termcapinfo xterm* ti@:te@",
    "altscreen on",
    "escape ^Ss",
]
RETRY = 0.25


def screen_config() -> Path:
    """Write Go's screen config (0600 in a 0700 directory); returns its path. Raises OSError."""
    path = Path(tempfile.gettempdir()) / "coder-screen" / "config"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".config.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, "\n".join(SETTINGS).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


class ScreenSession(Session):
    backend = "screen"

    def __init__(self, sid: str, settings: RptySettings, clock: Clock,
                 forget: Callable[[Session], None]) -> None:
        super().__init__(sid, settings, clock, forget)
        self.name = secrets.token_hex(4)
        self.config = Path()
        self.cmd: Command | None = None
        self.clients: dict[str, PtyProcess] = {}
        self._attach_lock = asyncio.Lock()

    async def start(self, cmd: Command, init: InitRequest) -> None:
        if self.closing:
            raise SessionClosed("reconnecting pty closed before start")
        self.config = screen_config()
        self.cmd = cmd
        self._log.info("reconnecting pty ready", backend=self.backend, screen=self.name, argv0=cmd.argv[0],
                       container=init.container or None)
        await super().start(cmd, init)

    async def _screen(self, env: Mapping[str, str], *args: str) -> tuple[int, str]:
        assert self.cmd is not None
        proc = await asyncio.create_subprocess_exec(
            "screen", "-x", self.name, "-c", str(self.config), "-X", *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dict(env), cwd=self.cmd.cwd)
        try:
            out, _ = await proc.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace")

    async def _until(self, command: str, ok_if: str = "", stop: Callable[[], bool] = lambda: False) -> bool:
        """Run ``screen -X command`` until it succeeds (True) or ``attach_timeout``/``stop()``."""
        assert self.cmd is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.attach_timeout
        while True:
            rc, out = await self._screen(self.cmd.env, command)
            if rc == 0 or (ok_if and ok_if in out):
                return True
            if stop() or loop.time() >= deadline:
                self._log.warning("screen command failed", command=command, output=out.strip()[:200])
                return False
            await asyncio.sleep(RETRY)

    async def attach(self, cid: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     init: InitRequest, rest: bytes) -> None:
        if self.closing or self.cmd is None:
            raise SessionClosed("reconnecting pty closed before connection")
        cmd = self.cmd
        self._attached(cid, (reader, writer))
        client: PtyProcess | None = None
        pump: asyncio.Task[None] | None = None
        try:
            async with self._attach_lock:
                if self.closing:
                    return
                argv = ["screen", "-S", self.name, "-UxRRqc", str(self.config), *cmd.argv]
                client = PtyProcess(argv, cmd.env, cmd.cwd, init.height or 24, init.width or 80)
                self.clients[cid] = client
                pump = asyncio.create_task(self._pump(cid, client, reader, writer))
                if not await self._until("version", stop=lambda: pump is None or pump.done()):
                    return
            await self._input_loop(client, cid, reader, rest)
        finally:
            self.clients.pop(cid, None)
            if client is not None:
                await client.kill(self.settings.kill_grace)
            if pump is not None:
                await asyncio.gather(pump, return_exceptions=True)
            self._detached(cid)

    async def _pump(self, cid: str, client: PtyProcess, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await client.read()
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # The client exited (the command ended, screen quit) or the connection broke: end it.
            reader.feed_eof()
            writer.close()

    async def _shutdown(self) -> None:
        for client in list(self.clients.values()):
            await client.kill(self.settings.kill_grace)
        if self.cmd is not None:
            await self._until("quit", ok_if="No screen session found")
