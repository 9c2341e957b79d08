"""rpc.websocket.RpcClientConnection against a real websockets server on loopback.

Binary messages reach the receiver from the protocol callback (fragments joined, messages that
came before ``set_receiver`` first, in order), text keeps websockets' queue, and ``send_now``
writes at once or declines when the connection cannot take it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from coder_agent.rpc.websocket import RpcClientConnection


class Inbox:
    """A receiver that records messages and wakes a waiter once it holds ``n`` of them."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, data: bytes) -> None:
        self.got.append(data)
        self._changed.set()

    async def wait_for(self, n: int, timeout: float) -> list[bytes]:
        async with asyncio.timeout(timeout):
            while len(self.got) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.got


@asynccontextmanager
async def server(handler: Callable[[ServerConnection], Awaitable[None]]) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, compression=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


async def test_binary_messages_reach_the_receiver_in_order_and_text_keeps_the_queue(timeout_scale: float) -> None:
    sent = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(b"early")  # before the client sets its receiver
        await ws.send([b"ab", b"cd", b"ef"])  # one message in three frames
        await ws.send(b"xyz")
        await ws.send("a text message")
        sent.set()
        await ws.wait_closed()

    async with server(handler) as url, connect(url, create_connection=RpcClientConnection,
                                               compression=None) as ws:
        assert isinstance(ws, RpcClientConnection)
        await asyncio.wait_for(sent.wait(), 5 * timeout_scale)
        # The text message arrives last: once recv has it, every binary frame was processed too,
        # before any receiver existed.
        assert await asyncio.wait_for(ws.recv(), 5 * timeout_scale) == "a text message"
        inbox = Inbox()
        ws.set_receiver(inbox)
        assert await inbox.wait_for(3, 5 * timeout_scale) == [b"early", b"abcdef", b"xyz"]


async def test_send_now_writes_at_once_and_declines_once_closed(timeout_scale: float) -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with server(echo) as url:
        ws: Any = await connect(url, create_connection=RpcClientConnection, compression=None)
        inbox = Inbox()
        ws.set_receiver(inbox)
        assert ws.send_now(b"hello") is True
        assert await inbox.wait_for(1, 5 * timeout_scale) == [b"hello"]
        await ws.close()
        assert ws.send_now(b"late") is False
