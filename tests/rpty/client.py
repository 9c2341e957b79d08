"""A small reconnecting-PTY client for the tests: what coderd's web terminal proxy sends."""

from __future__ import annotations

import asyncio
import re
import time

from coder_agent.rpty.protocol import InitRequest, encode_init, encode_input

from ..conftest import t


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.out = bytearray()
        self.eof = False

    @classmethod
    async def open(cls, port: int, sid: str, command: str = "", height: int = 24, width: int = 80,
                   **kw: str) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(encode_init(InitRequest(id=sid, height=height, width=width, command=command, **kw)))
        await w.drain()
        return cls(r, w)

    async def send(self, data: str = "", height: int = 0, width: int = 0) -> None:
        self.writer.write(encode_input(data, height, width))
        await self.writer.drain()

    async def _read(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; output so far: {bytes(self.out)!r}")
        try:
            data = await asyncio.wait_for(self.reader.read(65536), left)
        except TimeoutError:
            raise AssertionError(f"timed out; output so far: {bytes(self.out)!r}") from None
        except ConnectionError:
            data = b""
        if not data:
            self.eof = True
        self.out += data

    async def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[bytes]:
        """Wait until the output so far matches ``pattern`` (a regex over bytes)."""
        deadline = time.monotonic() + t(timeout)
        rx = re.compile(pattern.encode())
        while True:
            m = rx.search(self.out)
            if m:
                return m
            if self.eof:
                raise AssertionError(f"connection closed; output: {bytes(self.out)!r}")
            await self._read(deadline)

    async def closed(self, timeout: float = 10.0) -> bytes:
        """Wait for the server to close the connection; returns all output."""
        deadline = time.monotonic() + t(timeout)
        while not self.eof:
            await self._read(deadline)
        return bytes(self.out)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass
