"""The asyncio transport between two of our own connections over an in-memory websocket.

The server half is the same code our fake control plane uses (YamuxConnection in the
server role + drpc.ServerStream); the Go interop test covers a foreign peer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from coder_agent.rpc import drpc, yamux
from coder_agent.rpc.proto import agent_pb2
from coder_agent.rpc.transport import (
    ConnectionClosedError,
    RpcError,
    RpcUnimplemented,
    Stream,
    StreamResetError,
    YamuxConnection,
    bidi_stream,
    server_stream,
    unary_call,
)


class MemSocket:
    """One end of an in-memory websocket that re-chunks every message it sends."""

    def __init__(self, rng: random.Random) -> None:
        self.inbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.peer: MemSocket | None = None
        self.rng = rng
        self.sent_sizes: list[int] = []
        self.is_closed = False

    async def send(self, message: bytes, /) -> None:
        if self.is_closed:
            raise ConnectionError("closed")
        assert isinstance(message, bytes)
        self.sent_sizes.append(len(message))
        assert self.peer is not None
        i = 0
        while i < len(message):
            n = self.rng.randint(1, 5000)
            self.peer.inbox.put_nowait(message[i : i + n])
            i += n

    async def close(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            self.inbox.put_nowait(None)
            assert self.peer is not None
            self.peer.inbox.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
        while True:
            m = await self.inbox.get()
            if m is None:
                return
            yield m


def socket_pair(seed: int = 0) -> tuple[MemSocket, MemSocket]:
    a, b = MemSocket(random.Random(seed)), MemSocket(random.Random(seed + 1))
    a.peer, b.peer = b, a
    return a, b


Handler = Callable[[bytes], Awaitable[bytes]]


class FakeServer:
    """A minimal dRPC server on a server-role YamuxConnection (one call per stream)."""

    def __init__(self, conn: YamuxConnection, handlers: dict[str, Handler]) -> None:
        self.conn = conn
        self.handlers = handlers
        self.resets = 0
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        tasks = set()
        while True:
            try:
                stream = await self.conn.accept_stream()
            except ConnectionClosedError:
                return
            t = asyncio.create_task(self._one(stream))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    async def _one(self, stream: Stream) -> None:
        server = drpc.ServerStream()
        try:
            while True:
                data = await stream.read()
                if not data:
                    break
                for ev in server.receive_data(data):
                    if isinstance(ev, drpc.RequestReceived):
                        handler = self.handlers.get(ev.method)
                        if handler is None:
                            server.reply_error(0, f'protocol error: unknown rpc: "{ev.method}"')
                        else:
                            try:
                                server.reply(await handler(ev.request))
                            except RpcError as exc:
                                server.reply_error(exc.code, exc.message)
                        stream.write(server.data_to_send())
            await stream.close()
        except StreamResetError:
            self.resets += 1


async def wait_until(pred: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[YamuxConnection, YamuxConnection]]:
    a, b = socket_pair()
    client = YamuxConnection(a, client=True)
    server = YamuxConnection(b, client=False)
    yield client, server
    await client.close()
    await server.close()


async def test_unary_calls_concurrently_with_big_manifest(
    pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float
) -> None:
    client, server_conn = pair
    manifest = agent_pb2.Manifest(agent_id=bytes(range(16)), directory="~/work")
    rng = random.Random(5)
    manifest.scripts.add(log_source_id=bytes(16), script=rng.randbytes(700_000).hex())
    body = manifest.SerializeToString()
    assert len(body) > 1024 * 1024
    seen: list[bytes] = []

    async def get_manifest(req: bytes) -> bytes:
        agent_pb2.GetManifestRequest.FromString(req)
        return body

    async def logs(req: bytes) -> bytes:
        seen.append(req)
        return agent_pb2.BatchCreateLogsResponse().SerializeToString()

    FakeServer(
        server_conn,
        {"/coder.agent.v2.Agent/GetManifest": get_manifest, "/coder.agent.v2.Agent/BatchCreateLogs": logs},
    )
    big_logs = agent_pb2.BatchCreateLogsRequest(
        log_source_id=bytes(16), logs=[agent_pb2.Log(output="x" * 1000) for _ in range(1500)]
    ).SerializeToString()
    results = await asyncio.gather(
        *[unary_call(client, "/coder.agent.v2.Agent/GetManifest", b"", 10 * timeout_scale) for _ in range(3)],
        *[
            unary_call(client, "/coder.agent.v2.Agent/BatchCreateLogs", big_logs, 10 * timeout_scale)
            for _ in range(3)
        ],
    )
    assert results[:3] == [body] * 3
    assert seen == [big_logs] * 3
    assert agent_pb2.Manifest.FromString(results[0]) == manifest
    # Streams are opened with fresh odd ids and are all closed again.
    assert client.session.open_stream() == 13
    await wait_until(lambda: not client._streams, 5 * timeout_scale)


async def test_rpc_errors(pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float) -> None:
    client, server_conn = pair

    async def unimplemented(req: bytes) -> bytes:
        raise RpcError(12, "Unimplemented")

    async def failing(req: bytes) -> bytes:
        raise RpcError(0, "version must be semver")

    FakeServer(
        server_conn,
        {
            "/coder.agent.v2.Agent/PushContextState": unimplemented,
            "/coder.agent.v2.Agent/UpdateStartup": failing,
        },
    )
    with pytest.raises(RpcUnimplemented) as info:
        await unary_call(client, "/coder.agent.v2.Agent/PushContextState", b"", 5 * timeout_scale)
    assert info.value.code == 12
    with pytest.raises(RpcUnimplemented, match="unknown rpc"):
        await unary_call(client, "/coder.agent.v2.Agent/ReportChatRunnerStatus", b"", 5 * timeout_scale)
    with pytest.raises(RpcError) as err:
        await unary_call(client, "/coder.agent.v2.Agent/UpdateStartup", b"", 5 * timeout_scale)
    assert type(err.value) is RpcError and err.value.message == "version must be semver"
    # The connection survives RPC errors.
    assert await client.ping(5 * timeout_scale) >= 0


async def test_timeout_resets_the_stream(
    pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float
) -> None:
    client, server_conn = pair
    never = asyncio.Event()

    async def hang(req: bytes) -> bytes:
        await never.wait()
        return b""

    server = FakeServer(server_conn, {"/coder.agent.v2.Agent/UpdateStats": hang})
    with pytest.raises(TimeoutError):
        await unary_call(client, "/coder.agent.v2.Agent/UpdateStats", b"", 0.2)
    never.set()
    await wait_until(lambda: server.resets == 1, 5 * timeout_scale)


async def test_pings_both_ways(pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float) -> None:
    client, server = pair
    rtt = await client.ping(5 * timeout_scale)
    assert 0 <= rtt < 5 * timeout_scale
    assert await server.ping(5 * timeout_scale) >= 0


async def test_stream_echo_and_half_close(
    pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float
) -> None:
    client, server = pair
    stream = await client.open_stream()
    payload = random.Random(8).randbytes(700_000)
    stream.write(payload)
    await stream.close()
    accepted = await asyncio.wait_for(server.accept_stream(), 5 * timeout_scale)
    got = b""
    while True:
        chunk = await accepted.read(10_000)
        if not chunk:
            break
        assert len(chunk) <= 10_000
        got += chunk
    assert got == payload
    accepted.write(b"bye")
    await accepted.close()
    assert await stream.read() == b"bye"
    assert await stream.read() == b""


async def test_writes_never_exceed_the_message_limit(timeout_scale: float) -> None:
    a, b = socket_pair(3)
    client = YamuxConnection(a, client=True, max_message=4096)
    server = YamuxConnection(b, client=False)

    async def drain_one() -> int:
        stream = await server.accept_stream()
        total = 0
        while chunk := await stream.read():
            total += len(chunk)
        return total

    readers = [asyncio.create_task(drain_one()) for _ in range(3)]
    streams = [await client.open_stream() for _ in range(3)]
    for s in streams:
        s.write(b"z" * 300_000)
    # Drain only completes once the server has read enough to return window credit.
    for s in streams:
        await asyncio.wait_for(s.drain(), 5 * timeout_scale)
        await s.close()
    assert await asyncio.wait_for(asyncio.gather(*readers), 5 * timeout_scale) == [300_000] * 3
    assert max(a.sent_sizes) <= 4096
    await client.close()
    await server.close()


async def test_peer_close_fails_pending_reads(
    pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float
) -> None:
    client, server = pair
    stream = await client.open_stream()
    reader = asyncio.create_task(stream.read())
    await asyncio.wait_for(server.accept_stream(), 5 * timeout_scale)
    await server.close()
    reason = await asyncio.wait_for(client.closed, 5 * timeout_scale)
    assert "closed" in reason
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(reader, 5 * timeout_scale)
    with pytest.raises(ConnectionClosedError):
        await client.open_stream()
    with pytest.raises(ConnectionClosedError):
        stream.write(b"x")


async def test_go_away_from_peer(pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float) -> None:
    client, server = pair
    server.session.go_away(yamux.GoAwayCode.PROTOCOL_ERROR)
    server._flush()
    reason = await asyncio.wait_for(client.closed, 5 * timeout_scale)
    assert "GoAway with code 1" in reason


async def test_protocol_error_sends_go_away_and_closes(timeout_scale: float) -> None:
    a, b = socket_pair()
    client = YamuxConnection(a, client=True)
    await b.send(b"\x07" + bytes(11))  # bad version
    reason = await asyncio.wait_for(client.closed, 5 * timeout_scale)
    assert "protocol error" in reason
    got = b""
    while len(got) < 12:
        m = await asyncio.wait_for(b.inbox.get(), 5 * timeout_scale)
        assert isinstance(m, bytes)
        got += m
    assert got[:12] == bytes.fromhex("00 03 00 00 00 00 00 00 00 00 00 01")


async def test_text_message_ends_the_connection(timeout_scale: float) -> None:
    a, b = socket_pair()
    client = YamuxConnection(a, client=True)
    assert a.peer is b
    a.inbox.put_nowait("hello")
    reason = await asyncio.wait_for(client.closed, 5 * timeout_scale)
    assert "text message" in reason


# ---- streaming calls ----------------------------------------------------------------------

WATCH = "/test.v1.Svc/Watch"
CHAT = "/test.v1.Svc/Chat"


async def accept_streaming(server: YamuxConnection, timeout: float) -> tuple[Stream, drpc.ServerStream]:
    stream = await asyncio.wait_for(server.accept_stream(), timeout)
    return stream, drpc.ServerStream(streaming={WATCH, CHAT})


async def read_events(stream: Stream, ss: drpc.ServerStream, until: type) -> list[drpc.ServerEvent]:
    events: list[drpc.ServerEvent] = []
    while not any(isinstance(e, until) for e in events):
        data = await stream.read()
        assert data, "client ended the stream early"
        events += ss.receive_data(data)
    return events


async def test_server_stream_yields_until_close_send(
    pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float
) -> None:
    client, server = pair
    big = random.Random(9).randbytes(300_000)  # more than a yamux window and several dRPC frames

    async def serve() -> None:
        stream, ss = await accept_streaming(server, 5 * timeout_scale)
        events = await read_events(stream, ss, drpc.CloseSendReceived)
        assert events == [drpc.InvokeReceived(WATCH), drpc.MessageReceived(b"req"), drpc.CloseSendReceived()]
        for m in (b"one", big, b""):
            ss.send_message(m)
            stream.write(ss.data_to_send())
        ss.close_send()
        stream.write(ss.data_to_send())
        await stream.close()

    task = asyncio.create_task(serve())
    got = [m async for m in server_stream(client, WATCH, b"req")]
    await task
    assert got == [b"one", big, b""]


async def test_server_stream_error_and_early_exit(
    pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float
) -> None:
    client, server = pair

    async def serve_error() -> None:
        stream, ss = await accept_streaming(server, 5 * timeout_scale)
        await read_events(stream, ss, drpc.CloseSendReceived)
        ss.send_message(b"x")
        ss.send_error(12, "Unimplemented")
        stream.write(ss.data_to_send())

    task = asyncio.create_task(serve_error())
    got: list[bytes] = []
    with pytest.raises(RpcUnimplemented):
        async for m in server_stream(client, WATCH, b""):
            got.append(m)
    await task
    assert got == [b"x"]

    # Leaving the loop early abandons the stream with dRPC Close and FIN, as Go's client does.
    closed = asyncio.get_running_loop().create_future()

    async def serve_forever() -> None:
        stream, ss = await accept_streaming(server, 5 * timeout_scale)
        await read_events(stream, ss, drpc.CloseSendReceived)
        ss.send_message(b"first")
        stream.write(ss.data_to_send())
        events = await read_events(stream, ss, drpc.CloseReceived)
        closed.set_result((events, await stream.read()))

    task = asyncio.create_task(serve_forever())
    gen = server_stream(client, WATCH, b"")
    async for m in gen:
        assert m == b"first"
        break
    await gen.aclose()
    events, tail = await asyncio.wait_for(closed, 5 * timeout_scale)
    await task
    assert events == [drpc.CloseReceived()] and tail == b""  # then the FIN


async def test_bidi_stream_both_ways(pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float) -> None:
    client, server = pair

    async def serve() -> None:
        stream, ss = await accept_streaming(server, 5 * timeout_scale)
        while True:
            data = await stream.read()
            if not data:
                return
            for ev in ss.receive_data(data):
                if isinstance(ev, drpc.MessageReceived):
                    ss.send_message(ev.data.upper())
                elif isinstance(ev, drpc.CloseSendReceived):
                    ss.close()  # hang up, as coderd's Coordinate does after Disconnect
                stream.write(ss.data_to_send())

    task = asyncio.create_task(serve())
    bidi = await bidi_stream(client, CHAT)
    await bidi.send(b"hello")
    assert await bidi.recv() == b"HELLO"
    await bidi.send(b"again")
    assert await bidi.recv() == b"AGAIN"
    await bidi.close_send()
    with pytest.raises(RuntimeError):
        await bidi.send(b"late")
    assert await bidi.recv() is None
    assert bidi.ended == drpc.StreamEnded("close")
    assert await bidi.recv() is None  # stays ended
    await bidi.close()
    await asyncio.wait_for(task, 5 * timeout_scale)


async def test_bidi_stream_transport_loss_raises(
    pair: tuple[YamuxConnection, YamuxConnection], timeout_scale: float
) -> None:
    client, server = pair
    bidi = await bidi_stream(client, CHAT)
    await asyncio.wait_for(server.accept_stream(), 5 * timeout_scale)
    reader = asyncio.create_task(bidi.recv())
    await asyncio.sleep(0)
    await server.close()
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(reader, 5 * timeout_scale)
