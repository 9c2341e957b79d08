"""``BatchCreateLogs`` as the log pipeline's transport while the RPC connection is up.

Rules (coder-agent-rpc.md §5.6, §6.12, §7.14):

* One call per source per batch; a batch never exceeds Σ(len(output) + 21) ≤ 1 MiB — a longer
  batch handed to us is sent in several calls, in order.
* Output must be valid UTF-8 for protobuf: lone surrogates (undecodable bytes) and NUL bytes
  become "❌", as the Go agent's sanitizer does.
* ``log_limit_exceeded`` is returned to the shipper, which stops sending for the process
  lifetime; it is not a connection error.
* Without a connection :meth:`send` raises :class:`~coder_agent.errors.TransportError`
  (stage "session") so the shipper keeps its queue and retries after the reconnect.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from typing import Protocol

from google.protobuf import timestamp_pb2

from ..errors import TransportError
from ..rpc.proto import agent_pb2
from .connection import RpcClient

__all__ = ["BATCH_LIMIT", "LINE_OVERHEAD", "RpcLogTransport", "sanitize"]

BATCH_LIMIT = 1 << 20
LINE_OVERHEAD = 21
_BAD = re.compile("[\x00\ud800-\udfff]")
_LEVELS = {"trace": agent_pb2.Log.TRACE, "debug": agent_pb2.Log.DEBUG, "info": agent_pb2.Log.INFO,
           "warn": agent_pb2.Log.WARN, "warning": agent_pb2.Log.WARN, "error": agent_pb2.Log.ERROR}


class LineLike(Protocol):
    @property
    def output(self) -> str: ...
    @property
    def level(self) -> str: ...
    @property
    def created_at(self) -> dt.datetime: ...


def sanitize(text: str) -> str:
    return _BAD.sub("❌", text)


class RpcLogTransport:
    """Sends log batches over whichever RPC connection is current."""

    def __init__(self) -> None:
        self.client: RpcClient | None = None
        self.limit_exceeded = False
        self.batches_sent = 0

    def attach(self, client: RpcClient) -> None:
        self.client = client

    def detach(self, client: RpcClient) -> None:
        if self.client is client:
            self.client = None

    @property
    def connected(self) -> bool:
        return self.client is not None

    async def send(self, source_id: str, lines: Sequence[LineLike]) -> bool:
        """Ship ``lines`` of one source; True when coderd says the log limit is exceeded."""
        client = self.client
        if client is None:
            raise TransportError("session", "not connected to coderd")
        source = uuid.UUID(source_id).bytes
        batch: list[agent_pb2.Log] = []
        size = 0
        for line in lines:
            text = sanitize(line.output)
            n = len(text.encode("utf-8")) + LINE_OVERHEAD
            if n > BATCH_LIMIT:
                continue  # the Go sender drops such a line at enqueue
            if batch and size + n > BATCH_LIMIT:
                if await self._call(client, source, batch):
                    return True
                batch, size = [], 0
            ts = timestamp_pb2.Timestamp()
            ts.FromDatetime(line.created_at)
            batch.append(agent_pb2.Log(created_at=ts, output=text,
                                       level=_LEVELS.get(line.level.lower(), agent_pb2.Log.INFO)))
            size += n
        if batch:
            return await self._call(client, source, batch)
        return False

    async def _call(self, client: RpcClient, source: bytes, logs: list[agent_pb2.Log]) -> bool:
        resp = await client.call("BatchCreateLogs", agent_pb2.BatchCreateLogsRequest(log_source_id=source, logs=logs),
                                 agent_pb2.BatchCreateLogsResponse)
        self.batches_sent += 1
        if resp.log_limit_exceeded:
            self.limit_exceeded = True
        return resp.log_limit_exceeded
