"""How log batches reach coderd: one small interface, a REST implementation.

Rules:

* :class:`LogTransport` has two calls. ``register(source)`` makes a log source known to coderd
  (idempotent; the id is client-chosen). ``send(source_id, logs)`` delivers one batch in order (``logs`` is an
  iterable, not an iterator: it may be read again, and its entries are made as they are read, so
  a transport serializes them as it goes rather than holding them all) and
  returns ACCEPTED, or LIMIT_EXCEEDED when coderd refuses more logs for this agent (REST: 413;
  the RPC transport: ``log_limit_exceeded``). Any other failure raises from
  :mod:`coder_agent.errors` and the shipper decides with :func:`coder_agent.retry.classify`.
* :class:`RestTransport` uses ``POST /me/log-source`` (201) and ``PATCH /me/logs`` (200).
  A 401 is handled by the client (token refresh and one retry).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..coderapi.client import ME, CoderClient
from ..coderapi.models import PostLogSourceRequest
from ..errors import ApiError
from ..logsink import LogSource

__all__ = ["Entry", "LogTransport", "RestTransport", "SendResult"]


class SendResult(enum.Enum):
    ACCEPTED = "accepted"
    LIMIT_EXCEEDED = "limit_exceeded"


@dataclass(frozen=True, slots=True)
class Entry:
    """One log line as sent: RFC 3339 UTC time, level, sanitised output."""

    created_at: str
    level: str
    output: str


class LogTransport(Protocol):
    name: str

    async def register(self, source: LogSource) -> None: ...

    async def send(self, source_id: str, logs: Iterable[Entry]) -> SendResult: ...


class RestTransport:
    name = "rest"

    def __init__(self, client: CoderClient) -> None:
        self.client = client

    async def register(self, source: LogSource) -> None:
        await self.client.post_log_source(
            PostLogSourceRequest(id=source.id, display_name=source.display_name, icon=source.icon))

    async def send(self, source_id: str, logs: Iterable[Entry]) -> SendResult:
        body = {"log_source_id": source_id,
                "logs": [{"created_at": e.created_at, "output": e.output, "level": e.level} for e in logs]}
        try:
            await self.client.request("PATCH", f"{ME}/logs", json_body=body)
        except ApiError as e:
            if e.status == 413:
                return SendResult.LIMIT_EXCEEDED
            raise
        return SendResult.ACCEPTED
