"""Interop: our yamux client (core + asyncio transport) against hashicorp's real yamux server.

tests/rpc/goyamux/peer.go runs yamux.Server(DefaultConfig) behind a websocket the way
coderd does. It is built from Debian's Go packages (scripts/install-go-peer-deps.sh).
Without them the tests skip locally and FAIL when CI=true: CI must run them.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from coder_agent.rpc.transport import ConnectionClosedError, Stream, YamuxConnection
from tests.conftest import unavailable

HERE = Path(__file__).parent
PEER_SRC = HERE / "goyamux" / "peer.go"
GOPATH = "/usr/share/gocode"
REQUIRED = [
    Path(GOPATH, "src/github.com/hashicorp/yamux"),
    Path(GOPATH, "src/nhooyr.io/websocket"),
]
# Lines in the Go peer's log that mean we broke the protocol. Not listed: "frame for
# missing stream", which Go logs when our window credit crosses its FIN on the wire (the
# stream is gone on its side while we still read); Go's own clients race the same way.
GO_COMPLAINTS = (
    "receive window exceeded",
    "Invalid protocol version",
    "Invalid msg type",
    "duplicate stream",
    "unexpected FIN",
    "unexpected flag",
    "keepalive",
    "Discarding data",
    "protocol error",
)


def _missing_toolchain() -> str | None:
    if shutil.which("go") is None:
        return "the Go toolchain (golang-go) is not installed"
    for path in REQUIRED:
        if not path.is_dir():
            return f"{path} is missing (Debian Go packages for the peer are not installed)"
    return None


@pytest.fixture(scope="module")
def go_peer_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _missing_toolchain()
    if reason is not None:
        message = f"{reason}; run scripts/install-go-peer-deps.sh"
        unavailable(message, ci_reason=f"Go interop peer cannot be built in CI: {message}")
    out = tmp_path_factory.mktemp("goyamux") / "peer"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH}
    result = subprocess.run(
        ["go", "build", "-o", str(out), str(PEER_SRC)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"building the Go peer failed:\n{result.stdout}\n{result.stderr}")
    return out


class Peer:
    def __init__(self, binary: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        # A peer that never prints its port must not hang the suite.
        watchdog = threading.Timer(30, self.proc.kill)
        watchdog.start()
        try:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
        finally:
            watchdog.cancel()
        if not line.startswith("PORT "):
            raise RuntimeError(f"Go peer did not start: {line!r}; log:\n{self.log()}")
        self.url = f"ws://127.0.0.1:{int(line.split()[1])}/api/v2/workspaceagents/me/rpc"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # the peer exits on stdin EOF
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def go_peer(go_peer_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    peer = Peer(go_peer_binary, tmp_path_factory.mktemp("goyamux-log") / "peer.log")
    yield peer
    peer.stop()


@pytest.fixture
async def conn(go_peer: Peer, timeout_scale: float) -> AsyncIterator[YamuxConnection]:
    log_before = len(go_peer.log())
    async with connect(
        go_peer.url, compression=None, max_size=4 << 20, open_timeout=10 * timeout_scale
    ) as ws:
        c = YamuxConnection(ws, client=True)
        yield c
        await c.close()
    complaints = [
        line
        for line in go_peer.log()[log_before:].splitlines()
        if any(marker in line for marker in GO_COMPLAINTS)
    ]
    assert not complaints, "the Go peer complained:\n" + "\n".join(complaints)


async def read_all(stream: Stream) -> bytes:
    parts = []
    while chunk := await stream.read():
        parts.append(chunk)
    return b"".join(parts)


async def echo(conn: YamuxConnection, payload: bytes) -> bytes:
    stream = await conn.open_stream()
    stream.write(b"E")

    async def writer() -> None:
        # Write in slices so reading and writing interleave like a real client.
        for i in range(0, len(payload), 100_000):
            stream.write(payload[i : i + 100_000])
            await stream.drain()
        await stream.close()

    write_task = asyncio.create_task(writer())
    got = await read_all(stream)
    await write_task
    return got


async def test_concurrent_echo_streams(conn: YamuxConnection, timeout_scale: float) -> None:
    rng = random.Random(1)
    payloads = [rng.randbytes(rng.randint(1, 80_000)) for _ in range(8)]
    results = await asyncio.wait_for(asyncio.gather(*(echo(conn, p) for p in payloads)), 30 * timeout_scale)
    assert results == payloads


async def test_large_echo_through_windows(conn: YamuxConnection, timeout_scale: float) -> None:
    payload = random.Random(2).randbytes(1_500_000)
    got = await asyncio.wait_for(echo(conn, payload), 30 * timeout_scale)
    assert got == payload


async def test_large_download_needs_our_window_updates(conn: YamuxConnection, timeout_scale: float) -> None:
    size = 2 * 1024 * 1024 + 17
    stream = await conn.open_stream()
    stream.write(b"B" + size.to_bytes(4, "big"))
    got = await asyncio.wait_for(read_all(stream), 30 * timeout_scale)
    assert len(got) == size
    assert got == bytes(i % 251 for i in range(size))
    await stream.close()


async def test_go_pings_us_and_we_ping_go(conn: YamuxConnection, timeout_scale: float) -> None:
    stream = await conn.open_stream()
    stream.write(b"P")
    await stream.close()
    # Go's Ping() only returns "ok" if our core answered with a matching ACK.
    assert await asyncio.wait_for(read_all(stream), 20 * timeout_scale) == b"ok"
    rtt = await conn.ping(10 * timeout_scale)
    assert 0 <= rtt < 10 * timeout_scale


async def test_go_away_from_go(conn: YamuxConnection, timeout_scale: float) -> None:
    stream = await conn.open_stream()
    stream.write(b"G")
    await stream.close()
    assert await asyncio.wait_for(read_all(stream), 20 * timeout_scale) == b"ok"
    # The GoAway frame precedes the stream's reply on the wire.
    assert conn.session.remote_go_away == 0
    with pytest.raises(ConnectionClosedError, match="going away"):
        await conn.open_stream()
    assert not conn.closed.done()  # a normal GoAway does not end the session


async def test_reset_stream_is_tolerated(conn: YamuxConnection, timeout_scale: float) -> None:
    stream = await conn.open_stream()
    stream.write(b"E" + b"x" * 1000)
    stream.reset()
    # The session stays healthy for new streams.
    assert await asyncio.wait_for(echo(conn, b"after reset"), 20 * timeout_scale) == b"after reset"
