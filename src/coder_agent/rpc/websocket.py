"""websockets' client connection with a synchronous lane for the RPC transport.

:class:`RpcClientConnection` is what the agent dials the RPC websocket with
(``connect(..., create_connection=RpcClientConnection)``). It stays websockets' own connection
(handshake, pings, close, text messages, size limits, flow control) and adds the two optional
methods :class:`~coder_agent.rpc.transport.YamuxConnection` looks for:

* ``set_receiver(fn)``: every binary message is handed to ``fn`` from the protocol's
  ``data_received`` itself (fragments joined first), instead of going through websockets' message
  queue to a task that awaits ``recv``: one event-loop pass and a queue less per message. Binary
  messages that arrive before ``set_receiver`` (right after the handshake) are held and handed
  over first, in order; so this connection is for a transport that calls it, not for ``recv``.
  Text messages still take the queue (the transport ends the connection on them).
* ``send_now(message)``: write a binary message at once and return True, or return False
  when that would mean waiting (connection not open, writes paused, a fragmented send in
  progress); the caller then uses the ordinary ``send``.

Both reach into websockets' asyncio connection (``process_event``, ``protocol``, ``send_data``,
``paused``): an attribute a future version lacks turns the lane off (messages take the queue,
``send_now`` says False), it never breaks the connection. This module imports websockets: import
it where the connection is dialed, not at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State

__all__ = ["RpcClientConnection"]


class RpcClientConnection(ClientConnection):
    """A websockets ClientConnection with ``set_receiver`` and ``send_now`` (module docstring)."""

    _receiver: Callable[[bytes], None] | None = None
    _fragments: list[bytes] | None = None
    _held: list[bytes] | None = None

    def set_receiver(self, receiver: Callable[[bytes], None]) -> None:
        self._receiver = receiver
        held, self._held = self._held, None
        for data in held or ():
            receiver(data)

    def _deliver(self, data: bytes) -> None:
        if self._receiver is not None:
            self._receiver(data)
        elif self._held is None:
            self._held = [data]
        else:
            self._held.append(data)

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame):
            if event.opcode is Opcode.BINARY:
                if event.fin:
                    self._deliver(_as_bytes(event.data))
                else:
                    self._fragments = [_as_bytes(event.data)]
                return
            if event.opcode is Opcode.CONT and self._fragments is not None:
                self._fragments.append(_as_bytes(event.data))
                if event.fin:
                    data = b"".join(self._fragments)
                    self._fragments = None
                    self._deliver(data)
                return
        super().process_event(event)

    def send_now(self, message: bytes) -> bool:
        protocol = getattr(self, "protocol", None)
        if (protocol is None or protocol.state is not State.OPEN or getattr(self, "paused", True)
                or getattr(self, "send_in_progress", True) is not None or not hasattr(self, "send_data")):
            return False
        protocol.send_binary(message)
        self.send_data()
        return True


def _as_bytes(data: Any) -> bytes:
    return data if type(data) is bytes else bytes(data)
