"""What the devserver knows and received. Plain data; the routes mutate it."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_LOGS_LENGTH", "DevAgent", "DevState", "Fault", "RequestRecord"]

MAX_LOGS_LENGTH = 1_048_576  # coderd's max_logs_length check constraint, bytes per agent
EXTERNAL_SOURCE = "3b579bf4-1ed8-4b99-87a8-e9a1e3410410"


@dataclass
class DevAgent:
    """One workspace agent as coderd would have it."""

    token: str = field(default_factory=lambda: str(uuid.uuid4()))
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    name: str = "main"
    instance_id: str = ""
    workspace_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    owner_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    apps: list[dict[str, Any]] = field(default_factory=list)
    scripts: list[dict[str, Any]] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    directory: str = ""
    # received
    log_sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    logs_length: int = 0
    logs_overflowed: bool = False
    app_statuses: list[dict[str, Any]] = field(default_factory=list)
    lifecycle: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def app_slugs(self) -> set[str]:
        return {str(a.get("slug")) for a in self.apps}

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "log_sources": list(self.log_sources.values()),
            "logs": len(self.logs),
            "logs_length": self.logs_length,
            "logs_overflowed": self.logs_overflowed,
            "app_statuses": self.app_statuses,
            "lifecycle": self.lifecycle,
        }


@dataclass
class Fault:
    """Make matching requests fail. ``path`` is a regex searched in the request path.

    ``status``: answer with this status (and a codersdk.Response); ``delay``: wait first;
    ``drop``: close the connection without an answer; ``count``: how many requests it hits
    (None = until removed).

    ``after``: let the request be processed first, then apply ``status``/``drop`` (coderd did the
    work but the answer is lost: the client retries and the server sees the batch twice).
    ``trickle``: send the (real) answer's body one byte every ``trickle`` seconds;
    ``partial``: send the status line, the headers and this many body bytes, then reset.
    """

    path: str
    method: str | None = None
    status: int | None = None
    delay: float = 0.0
    drop: bool = False
    count: int | None = None
    message: str = "Injected fault."
    hits: int = 0
    after: bool = False
    trickle: float = 0.0
    partial: int | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: dt.datetime
    status: int = 0
    body: Any = None


@dataclass
class DevState:
    agents: list[DevAgent] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Condition | None = None
    access_url: str = ""

    def agent_by_token(self, token: str) -> DevAgent | None:
        for a in self.agents:
            if a.token == token:
                return a
        return None

    def fault_for(self, method: str, path: str) -> Fault | None:
        for f in self.faults:
            if f.matches(method, path):
                f.hits += 1
                return f
        return None
