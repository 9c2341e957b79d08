"""Kernel-TCP client for test_tcp_kernel.py, run inside the test's network namespace.

    python tcp_client.py MODE HOST PORT [SIZE] [COUNT]

Prints one JSON object: ``ok`` plus what was measured. Stdlib only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import time


def source_bytes(size: int) -> bytes:
    return random.Random(size).randbytes(size)


async def upload(host: str, port: int, size: int) -> dict[str, object]:
    data = random.Random(size + 1).randbytes(size)
    t0 = time.monotonic()
    r, w = await asyncio.open_connection(host, port)
    w.write(data)
    await w.drain()
    w.write_eof()
    digest = await r.read()
    w.close()
    return {"ok": digest.decode() == hashlib.sha256(data).hexdigest(), "seconds": time.monotonic() - t0}


async def download(host: str, port: int, size: int) -> dict[str, object]:
    t0 = time.monotonic()
    r, w = await asyncio.open_connection(host, port)
    w.write(b"%d\n" % size)
    await w.drain()
    h = hashlib.sha256()
    n = 0
    while chunk := await r.read(1 << 16):
        h.update(chunk)
        n += len(chunk)
    w.close()
    ok = n == size and h.hexdigest() == hashlib.sha256(source_bytes(size)).hexdigest()
    return {"ok": ok, "bytes": n, "seconds": time.monotonic() - t0}


async def echo(host: str, port: int, size: int, seed: int = 0) -> dict[str, object]:
    data = random.Random(seed).randbytes(size)
    t0 = time.monotonic()
    r, w = await asyncio.open_connection(host, port)

    async def writer() -> None:
        for i in range(0, size, 1 << 16):
            w.write(data[i : i + (1 << 16)])
            await w.drain()
        w.write_eof()

    task = asyncio.create_task(writer())
    got = bytearray()
    while chunk := await r.read(1 << 16):
        got += chunk
    await task
    w.close()
    return {"ok": bytes(got) == data, "bytes": len(got), "seconds": time.monotonic() - t0}


async def refused(host: str, port: int) -> dict[str, object]:
    t0 = time.monotonic()
    try:
        _, w = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return {"ok": True, "seconds": time.monotonic() - t0}
    w.close()
    return {"ok": False, "seconds": time.monotonic() - t0}


async def many(host: str, port: int, size: int, count: int) -> dict[str, object]:
    """``count`` connections open at once: all connect first, then all echo, then all close."""
    t0 = time.monotonic()
    conns = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(count)))
    opened = time.monotonic() - t0

    async def one(i: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        data = random.Random(i).randbytes(size)
        w.write(data)
        await w.drain()
        w.write_eof()
        got = await r.read()
        w.close()
        return got == data

    results = await asyncio.gather(*(one(i, r, w) for i, (r, w) in enumerate(conns)))
    return {"ok": all(results), "completed": sum(results), "open_seconds": opened,
            "seconds": time.monotonic() - t0}


def main() -> None:
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    if mode == "upload":
        res = asyncio.run(upload(host, port, size))
    elif mode == "download":
        res = asyncio.run(download(host, port, size))
    elif mode == "echo":
        res = asyncio.run(echo(host, port, size))
    elif mode == "refused":
        res = asyncio.run(refused(host, port))
    elif mode == "many":
        res = asyncio.run(many(host, port, size, int(sys.argv[5])))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
