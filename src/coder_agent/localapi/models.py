"""The local API's own JSON shapes (those codersdk has no model for), as pydantic models.

Rules:

* They describe what ``/api/v0`` accepts (``LogsRequest``) and sends (the rest); their
  ``model_json_schema`` is what :mod:`coder_agent.localapi.openapi` publishes, so the document
  and the code share one description.
* Request models ignore unknown keys (as the Go agent does); answer models that a capability
  extends (``Status``) allow extra keys.
* ``LogsRequest`` is validated by ``POST /api/v0/logs`` itself (:mod:`coder_agent.logs.api`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from ..coderapi.models import AppStatusState, LogLevel

__all__ = [
    "AppStatusAccepted",
    "AppStatusList",
    "AppStatusOutcome",
    "Env",
    "GitSSHKeyLocal",
    "Hello",
    "LogLine",
    "LogSourceRef",
    "LogsAccepted",
    "LogsRequest",
    "Status",
]

Delivery = Literal["pending", "delivered", "failed", "dropped"]


class Hello(BaseModel):
    message: str


class AuthState(BaseModel):
    method: str
    token_obtained_at: dt.datetime | None = None
    last_error: str | None = None


class ControlPlaneState(BaseModel):
    state: Literal["disconnected", "connecting", "connected", "failing"]
    since: dt.datetime | None = None
    transport: str | None = None
    connected_at: dt.datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    last_error_at: dt.datetime | None = None


class Status(BaseModel):
    """The daemon's own state. Capabilities add keys (logs, app_status, gitauth, devcontainers, ...);
    the keys listed here are always present."""

    model_config = ConfigDict(extra="allow")
    version: str
    pid: int
    started_at: dt.datetime
    uptime_seconds: float
    agent_url: str
    auth: AuthState
    control_plane: ControlPlaneState
    lifecycle: str
    services: dict[str, dict[str, Any]]
    local_api: str
    log_dir: str


def _rfc3339(v: Any) -> Any:
    """A log line's ``created_at``: absent, null or "" means "when received"; otherwise RFC 3339
    text with a timezone that has a UTC equivalent (the file stores UTC)."""
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ValueError("must be an RFC 3339 string")
    try:
        t = dt.datetime.fromisoformat(v.strip())
    except ValueError:
        raise ValueError(f"{v!r} is not an RFC 3339 time") from None
    if t.tzinfo is None:
        raise ValueError("needs a timezone (Z or +hh:mm)")
    try:
        t.astimezone(dt.UTC)  # 0001-01-01T00:00+01:00 has no UTC time (was a 500)
    except OverflowError:
        raise ValueError(f"{v!r} is out of range in UTC") from None
    return t


class LogSourceRef(BaseModel):
    """The source the lines go under: found (or created) by ``display_name``, or by ``id``."""

    display_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    icon: str | None = None
    id: uuid.UUID | None = None


class LogLine(BaseModel):
    output: str
    level: Annotated[LogLevel | None, BeforeValidator(lambda v: v or None)] = None  # empty: info
    created_at: Annotated[dt.datetime | None, BeforeValidator(_rfc3339)] = None  # absent: when received


class LogsRequest(BaseModel):
    """``POST /api/v0/logs`` (``coder-agent log``)."""

    source: LogSourceRef
    logs: list[LogLine] = Field(min_length=1)


class LogsAccepted(BaseModel):
    accepted: int = Field(ge=1)
    source_id: str
    file: str | None


class AppStatusAccepted(BaseModel):
    """The status as queued and its ticket: ``id`` names the entry that carries it (an existing one
    when merged), ``durable`` whether it reached the state dir."""

    app_slug: str
    state: AppStatusState
    message: str
    uri: str
    id: str
    delivery: Delivery
    coalesced: bool
    duplicate: bool
    durable: bool


class AppStatusList(BaseModel):
    statuses: list[dict[str, Any]]
    pending: int
    transport: str


class AppStatusOutcome(BaseModel):
    id: str
    delivery: Delivery
    error: str = ""
    carried_by: str | None = None
    status: dict[str, Any] | None = None


class GitSSHKeyLocal(BaseModel):
    public_key: str
    private_key: str
    settings_url: str


class Env(BaseModel):
    env: dict[str, str]
