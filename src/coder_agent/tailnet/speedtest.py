"""The speedtest server on tunnel port 3 (tailscale ``net/speedtest`` version 2, ``coder speedtest``).

Wire (coder-tailnet.md §7): the client sends one JSON object
``{"version": 2, "time": <duration in ns>, "direction": 0|1}`` (direction as the client sees
it: 0 download, 1 upload). The server answers one JSON line: ``{}`` to start, or
``{"error": "..."}`` (bad JSON, version mismatch) and closes. Client download: the server
writes 2 MiB blocks of random bytes for ``time`` and closes. Client upload: the server reads
until EOF (or ``time`` + 5 s, Go's read deadline). There is no result message: each side
measures what it saw. ``time`` is capped at 30 s here (tailscale's MaxDuration; Go's server
trusts the client).

:func:`parse_config` is the pure part; :func:`serve` runs one connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .tunnel import TunnelConn

__all__ = ["BLOCK_SIZE", "VERSION", "parse_config", "serve"]

VERSION: Final = 2
BLOCK_SIZE: Final = 2 * 1024 * 1024
MAX_DURATION: Final = 30.0
DOWNLOAD: Final = 0
UPLOAD: Final = 1


def parse_config(line: bytes) -> tuple[int, float] | str:
    """(client direction, seconds) or the error text to send back."""
    try:
        conf = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        return f"invalid config: {e}"
    if not isinstance(conf, dict):
        return "invalid config: not a JSON object"
    version = conf.get("version")
    if version != VERSION:
        return f"version mismatch! Server is version {VERSION}, client is version {version}"
    direction = conf.get("direction", DOWNLOAD)
    duration = conf.get("time", 0)
    if direction not in (DOWNLOAD, UPLOAD) or not isinstance(duration, int) or duration < 0:
        return "invalid config: direction must be 0 or 1 and time a duration in ns"
    return direction, min(duration / 1e9, MAX_DURATION)


async def _read_config(conn: TunnelConn, limit: int = 4096) -> bytes:
    """The first JSON value: Go's client encodes it with a trailing newline."""
    buf = bytearray()
    while b"\n" not in buf and len(buf) < limit:
        chunk = await conn.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf.split(b"\n", 1)[0])


async def serve(conn: TunnelConn) -> None:
    parsed = parse_config(await asyncio.wait_for(_read_config(conn), 10.0))
    if isinstance(parsed, str):
        conn.write(json.dumps({"error": parsed}).encode() + b"\n")
        await conn.drain()
        conn.close()
        return
    direction, seconds = parsed
    conn.write(b"{}\n")
    await conn.drain()
    if direction == DOWNLOAD:  # the server uploads
        block = os.urandom(BLOCK_SIZE)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            conn.write(block)
            await conn.drain()
    else:
        async def sink() -> None:
            while await conn.read():
                pass

        try:
            await asyncio.wait_for(sink(), seconds + 5.0)
        except TimeoutError:
            pass
    conn.close()
