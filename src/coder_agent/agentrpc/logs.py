"""``BatchCreateLogs`` as the log pipeline's transport while the RPC connection is up.

Rules (coder-agent-rpc.md §5.6, §6.12, §7.14):

* One call per source per batch; a batch never exceeds Σ(len(output) + 21) ≤ 1 MiB — a longer
  batch handed to us is sent in several calls, in order. A request is serialized line by line
  (:func:`_encoded_log`) as it is sent, in pieces of 64 KiB (:class:`_Requests`): never held as
  one protobuf object per line, nor whole (only the peer's window of it is in flight).
* Output must be valid UTF-8 for protobuf: lone surrogates (undecodable bytes) and NUL bytes
  become "❌", as the Go agent's sanitizer does.
* ``log_limit_exceeded`` is returned to the shipper, which stops sending for the process
  lifetime; it is not a connection error.
* Without a connection (or on a coderd without the RPC) batches go over the REST transport the
  pipeline had before; with neither, :class:`~coder_agent.errors.TransportError` (stage
  "session") makes the shipper keep its queue and retry.
* ``UpdateAppStatus`` (API 2.8) carries app statuses the same way (:class:`RpcAppStatusTransport`).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from ..errors import ApiError, FeatureUnavailable, TransportError
from ..logs.transport import Entry, LogTransport, SendResult
from ..logsink import LogSource
from ..rpc.drpc import RpcError
from ..rpc.proto import agent_pb2
from .connection import RpcClient

if TYPE_CHECKING:
    from ..appstatus.core import AppStatus
    from ..appstatus.transport import AppStatusTransport

__all__ = ["BATCH_LIMIT", "LINE_OVERHEAD", "RpcAppStatusTransport", "RpcLogTransport", "sanitize"]

BATCH_LIMIT = 1 << 20
PIECE = 64 << 10  # a request is serialized and sent in pieces of about this size (dRPC's frame size)
LINE_OVERHEAD = 21
_BAD = re.compile("[\x00\ud800-\udfff]")
_LEVELS = {"trace": agent_pb2.Log.TRACE, "debug": agent_pb2.Log.DEBUG, "info": agent_pb2.Log.INFO,
           "warn": agent_pb2.Log.WARN, "warning": agent_pb2.Log.WARN, "error": agent_pb2.Log.ERROR}
_APP_STATES = {"working": agent_pb2.UpdateAppStatusRequest.WORKING, "idle": agent_pb2.UpdateAppStatusRequest.IDLE,
               "complete": agent_pb2.UpdateAppStatusRequest.COMPLETE,
               "failure": agent_pb2.UpdateAppStatusRequest.FAILURE}


def sanitize(text: str) -> str:
    return _BAD.sub("❌", text)


def _time(value: str | dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    ts.FromDatetime(value)
    return ts


class RpcLogTransport:
    """The log pipeline's transport: ``BatchCreateLogs`` while connected, REST otherwise.

    Log sources are registered over REST (coderd has no RPC for that; the call is idempotent).
    """

    name = "rpc"

    def __init__(self, rest: LogTransport | None = None) -> None:
        self.rest = rest
        self.client: RpcClient | None = None
        self.on_limit: Callable[[], None] | None = None
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

    async def register(self, source: LogSource) -> None:
        if self.rest is not None:
            await self.rest.register(source)

    async def send(self, source_id: str, logs: Iterable[Entry]) -> SendResult:
        client = self.client
        if client is not None and "BatchCreateLogs" not in client.unavailable:
            try:
                return await self._send_rpc(client, source_id, logs)
            except FeatureUnavailable:
                pass  # a coderd without it (asked once per connection): REST carries the batch
        if self.rest is None:
            raise TransportError("session", "not connected to coderd")
        return await self.rest.send(source_id, logs)

    async def _send_rpc(self, client: RpcClient, source_id: str, logs: Iterable[Entry]) -> SendResult:
        requests = _Requests(uuid.UUID(source_id).bytes, logs)
        while (pieces := requests.next()) is not None:
            if await self._call(client, pieces):
                return SendResult.LIMIT_EXCEEDED
        return SendResult.ACCEPTED

    async def _call(self, client: RpcClient, pieces: tuple[bytes, Iterator[bytes]]) -> bool:
        try:
            resp = await client.call_encoded("BatchCreateLogs", pieces, agent_pb2.BatchCreateLogsResponse)
        except RpcError as e:  # coderd refused the batch (e.g. a database error): retried by the shipper
            raise TransportError("session", f"BatchCreateLogs refused: {e.message}") from None
        self.batches_sent += 1
        if resp.log_limit_exceeded:
            self.limit_exceeded = True
        return resp.log_limit_exceeded


class _Requests:
    """A batch's entries as ``BatchCreateLogsRequest``s of at most :data:`BATCH_LIMIT`
    (Σ len(output) + 21, as Go's sender counts), each as pieces of about :data:`PIECE` bytes
    serialized as they are taken: :meth:`next` gives the next request's ``(first, rest)`` pieces
    (None when no line is left); it must be read to its end before the next one is asked for.
    """

    def __init__(self, source: bytes, logs: Iterable[Entry]) -> None:
        self._head = agent_pb2.BatchCreateLogsRequest(log_source_id=source).SerializeToString()
        self._lines = iter(logs)
        self._carry: tuple[bytes, int] | None = None  # a line that did not fit the previous request

    def next(self) -> tuple[bytes, Iterator[bytes]] | None:
        pieces = self._pieces()
        first = next(pieces, None)
        return None if first is None else (first, pieces)

    def _pieces(self) -> Iterator[bytes]:
        buf, size, count = bytearray(self._head), 0, 0
        if self._carry is not None:
            line, size = self._carry
            self._carry = None
            buf += line
            count = 1
        for e in self._lines:
            text = sanitize(e.output)
            n = len(text.encode("utf-8")) + LINE_OVERHEAD
            if n > BATCH_LIMIT:
                continue  # the Go sender drops such a line at enqueue
            line = _encoded_log(e, text)
            if count and size + n > BATCH_LIMIT:
                self._carry = (line, n)  # the next request starts with it
                break
            buf += line
            size += n
            count += 1
            if len(buf) >= PIECE:
                yield bytes(buf)
                buf.clear()
        if count and buf:
            yield bytes(buf)


def _encoded_log(e: Entry, text: str) -> bytes:
    """One line as a serialized ``BatchCreateLogsRequest`` holding only that line.

    Serialized messages concatenate into one whose repeated fields are the concatenation (the
    protobuf merge rule), so a batch is the source id's message followed by one of these per line:
    the same bytes as a request built whole, without a protobuf object per line alive at once
    (those cost ~10 MiB of RSS for a 1 MiB batch; see bench.logs_rss).
    """
    log = agent_pb2.Log(created_at=_time(e.created_at), output=text,
                        level=_LEVELS.get(e.level.lower(), agent_pb2.Log.INFO))
    return agent_pb2.BatchCreateLogsRequest(logs=[log]).SerializeToString()


class RpcAppStatusTransport:
    """The app-status service's transport: ``UpdateAppStatus`` while connected (API ≥ 2.8), else REST.

    coderd's refusal (a handler error) becomes a 400 :class:`ApiError` carrying coderd's text, so the
    service treats it as it treats the REST route's 400: reported, not retried.
    """

    name = "rpc"

    def __init__(self, rest: AppStatusTransport | None = None) -> None:
        self.rest = rest
        self.client: RpcClient | None = None

    def attach(self, client: RpcClient) -> None:
        self.client = client

    def detach(self, client: RpcClient) -> None:
        if self.client is client:
            self.client = None

    async def update_app_status(self, status: AppStatus) -> None:
        client = self.client
        if client is not None and "UpdateAppStatus" not in client.unavailable:
            req = agent_pb2.UpdateAppStatusRequest(slug=status.app_slug, state=_APP_STATES[status.state],
                                                   message=status.message, uri=status.uri)
            try:
                await client.call("UpdateAppStatus", req, agent_pb2.UpdateAppStatusResponse)
                return
            except FeatureUnavailable:
                pass  # an older coderd: the REST route has it
            except RpcError as e:
                raise ApiError(400, e.message, method="rpc", path="UpdateAppStatus") from None
        if self.rest is None:
            raise TransportError("session", "not connected to coderd")
        await self.rest.update_app_status(status)
