"""``coder-agent log --source NAME [--icon URL] [-- CMD ARGS...]``: ship a command's output.

Rules:

* With a command: runs it directly (never through a shell), passes its stdout/stderr through to
  ours, ships stdout lines at info and stderr lines at error, and exits with its exit code
  (128+N when a signal N killed it). SIGINT/SIGTERM/SIGHUP are forwarded to it.
* Without a command: reads stdin to its end, echoing it to stdout (``--quiet`` turns echo off).
* Lines go to the daemon's ``POST /api/v0/logs`` in batches (100 lines or 250 ms). The daemon
  not answering never breaks the command: one warning on stderr, then lines are kept (up to
  ``--buffer`` bytes, older ones dropped with a count) and retried.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import signal
import sys
from typing import Any

from .common import api_address_arg

EXIT_USAGE = 2


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, metavar="NAME", help="the log source's display name")
    p.add_argument("--icon", default="", metavar="URL", help="the log source's icon")
    p.add_argument("--source-id", default=None, metavar="UUID", help="a fixed log source id (default: from NAME)")
    p.add_argument("--quiet", action="store_true", help="do not echo the output")
    p.add_argument("--buffer", type=int, default=8 << 20, metavar="BYTES",
                   help="output kept while the daemon does not answer (default 8 MiB)")
    api_address_arg(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command (default: read stdin)")


class Shipper:
    """Batches lines and posts them to the local API; never raises into the command's path."""

    def __init__(self, address: str, source: dict[str, Any], buffer_bytes: int) -> None:
        from ..localapi.client import async_local_client

        self._http = async_local_client(address, timeout=10.0)
        self.address = address
        self.source = source
        self.buffer_bytes = buffer_bytes
        self.queue: list[dict[str, str]] = []
        self.queued_bytes = 0
        self.dropped = 0
        self.warned = False
        self.ever_ok = False
        self._wake = asyncio.Event()
        self._closing = False

    def add(self, lines: list[str], level: str) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for ln in lines:
            self.queue.append({"output": ln, "level": level, "created_at": now})
            self.queued_bytes += len(ln) + 64
        while self.queued_bytes > self.buffer_bytes and len(self.queue) > 1:
            old = self.queue.pop(0)
            self.queued_bytes -= len(old["output"]) + 64
            self.dropped += 1
        if len(self.queue) >= 100:
            self._wake.set()

    async def _post(self, batch: list[dict[str, str]]) -> bool:
        import httpx

        try:
            r = await self._http.post("/api/v0/logs", json={"source": self.source, "logs": batch})
        except httpx.HTTPError as e:
            self._warn(f"the coder-agent daemon is not answering at {self.address} ({type(e).__name__}); "
                       "output is kept and retried")
            return False
        if r.status_code == 202:
            return True
        if 400 <= r.status_code < 500:
            self._warn(f"the daemon refused the log lines: {r.status_code} {r.text[:200]}")
            return True  # not retryable: drop this batch
        self._warn(f"the daemon answered {r.status_code}; retrying")
        return False

    def _warn(self, text: str) -> None:
        if not self.warned:
            self.warned = True
            print(f"coder-agent log: {text}", file=sys.stderr, flush=True)

    async def run(self) -> None:
        """Post batches until :meth:`finish` says stop and the queue is empty."""
        delay = 0.25
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            delay = 0.25
            while self.queue:
                batch: list[dict[str, str]] = []
                size = 0
                for item in self.queue[:100]:
                    n = len(item["output"]) + 64
                    if batch and size + n > 256 * 1024:
                        break
                    batch.append(item)
                    size += n
                if not await self._post(batch):
                    delay = 1.0
                    break
                self.ever_ok = True
                del self.queue[:len(batch)]
                self.queued_bytes = max(0, self.queued_bytes - size)
            if self._closing and not self.queue:
                return

    async def finish(self, task: asyncio.Task[None]) -> None:
        """Deliver what is queued (10 s at most; 2 s if the daemon never answered), then close."""
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout(10.0 if self.ever_ok else 2.0):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self.queue:
                print(f"coder-agent log: {len(self.queue)} line(s) could not be delivered to the daemon",
                      file=sys.stderr)
        if self.dropped:
            print(f"coder-agent log: {self.dropped} older line(s) dropped while the daemon was not answering",
                  file=sys.stderr)
        await self._http.aclose()


async def _pump(stream: asyncio.StreamReader, echo: Any, shipper: Shipper, level: str) -> None:
    from ..logs.text import LineSplitter

    split = LineSplitter()
    while True:
        data = await stream.read(64 * 1024)
        if not data:
            break
        if echo is not None:
            with contextlib.suppress(OSError):
                echo.write(data)
                echo.flush()
        shipper.add(split.feed(data), level)
    shipper.add(split.close(), level)


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    return reader


async def _main(args: argparse.Namespace, command: list[str]) -> int:
    from ..config import client_api_address

    source: dict[str, Any] = {"display_name": args.source, "icon": args.icon}
    if args.source_id:
        source["id"] = args.source_id
    shipper = Shipper(args.api_address or client_api_address(), source, args.buffer)
    ship_task = asyncio.create_task(shipper.run())
    out = None if args.quiet else sys.stdout.buffer
    err = None if args.quiet else sys.stderr.buffer
    code = 0
    if not command:
        await _pump(await _stdin_reader(), out, shipper, "info")
    else:
        try:
            proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            print(f"coder-agent log: cannot run {command[0]}: {e.strerror or e}", file=sys.stderr)
            shipper.add([f"coder-agent log: cannot run {command[0]}: {e.strerror or e}"], "error")
            await shipper.finish(ship_task)
            return 127 if isinstance(e, FileNotFoundError) else 126
        loop = asyncio.get_running_loop()

        def forward(sig: int) -> None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, forward, sig)
        assert proc.stdout is not None and proc.stderr is not None
        await asyncio.gather(_pump(proc.stdout, out, shipper, "info"), _pump(proc.stderr, err, shipper, "error"))
        rc = await proc.wait()
        code = rc if rc >= 0 else 128 - rc
    await shipper.finish(ship_task)
    return code


def run(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not args.source.strip():
        print("coder-agent log: --source must not be empty", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_main(args, command))
    except KeyboardInterrupt:
        return 130
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
