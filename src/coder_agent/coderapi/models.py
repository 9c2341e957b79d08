"""Typed wire models of the agent endpoints (coderd's swagger definitions, newest Go field names).

Rules: field names and JSON shapes are a contract with coderd and with the Go agent's local
API; they follow ../shared/protocol/agent-schemas.json plus the newer Go fields noted there
(``agent_name`` on identity tokens, ``workspace_id``/``owner_id`` on reinit events,
``expires_at`` on external auth). They are plain dataclasses checked by
:mod:`coder_agent.typed`: ``decode(Model, data)`` reads one (unknown keys ignored, as Go does),
``encode(model)`` writes one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from ..typed import rules

LogLevel = Literal["trace", "debug", "info", "warn", "error"]
AppStatusState = Literal["working", "idle", "complete", "failure"]
DevcontainerStatus = Literal["running", "stopped", "starting", "stopping", "deleting", "error"]

LOG_LEVELS: tuple[str, ...] = ("trace", "debug", "info", "warn", "error")
APP_STATUS_STATES: tuple[str, ...] = ("working", "idle", "complete", "failure")
EXTERNAL_LOG_SOURCE_ID = "3b579bf4-1ed8-4b99-87a8-e9a1e3410410"


@dataclass(kw_only=True)
class ValidationErrorModel:
    field: str
    detail: str


@dataclass(kw_only=True)
class Response:
    """codersdk.Response: every error body, from coderd and from our local API."""

    message: str
    detail: str | None = None
    validations: list[ValidationErrorModel] | None = None


@dataclass(kw_only=True)
class AuthenticateResponse:
    session_token: str


@dataclass(kw_only=True)
class AWSInstanceIdentityToken:
    signature: str
    document: str
    agent_name: str | None = None


@dataclass(kw_only=True)
class AzureInstanceIdentityToken:
    signature: str
    encoding: str
    agent_name: str | None = None


@dataclass(kw_only=True)
class GoogleInstanceIdentityToken:
    json_web_token: str
    agent_name: str | None = None


@dataclass(kw_only=True)
class Log:
    created_at: dt.datetime
    output: str
    level: LogLevel = "info"


@dataclass(kw_only=True)
class PatchLogs:
    log_source_id: str
    logs: list[Log]


@dataclass(kw_only=True)
class PostLogSourceRequest:
    id: str
    display_name: str
    icon: str = ""


@dataclass(kw_only=True)
class WorkspaceAgentLogSource:
    workspace_agent_id: str = ""
    id: str
    created_at: dt.datetime | None = None
    display_name: str
    icon: str = ""


@dataclass(kw_only=True)
class PatchAppStatus:
    app_slug: str
    state: AppStatusState
    message: str = ""
    uri: str = ""
    icon: str = ""
    needs_user_attention: bool = False


@dataclass(kw_only=True)
class ExternalAuthResponse:
    access_token: str = ""
    token_extra: dict[str, Any] | None = None
    type: str = ""
    url: str = ""
    username: str = ""
    password: str = ""
    expires_at: dt.datetime | None = None


@dataclass(kw_only=True)
class GitSSHKey:
    public_key: str
    private_key: str


@dataclass(kw_only=True)
class ReinitializationEvent:
    workspace_id: str = field(metadata=rules(aliases=("workspaceID",)))
    reason: str
    owner_id: str | None = None


@dataclass(kw_only=True)
class WorkspaceAgentListeningPort:
    process_name: str
    network: str = "tcp"
    port: int


@dataclass(kw_only=True)
class WorkspaceAgentListeningPortsResponse:
    ports: list[WorkspaceAgentListeningPort]


@dataclass(kw_only=True)
class WorkspaceAgentContainerPort:
    port: int
    network: str
    host_ip: str = ""
    host_port: int = 0


@dataclass(kw_only=True)
class WorkspaceAgentContainer:
    created_at: dt.datetime
    id: str
    name: str
    image: str
    labels: dict[str, str]
    running: bool
    ports: list[WorkspaceAgentContainerPort]
    status: str
    volumes: dict[str, str]


@dataclass(kw_only=True)
class WorkspaceAgentDevcontainerAgent:
    id: str
    name: str
    directory: str


@dataclass(kw_only=True)
class WorkspaceAgentDevcontainer:
    id: str
    name: str
    workspace_folder: str
    config_path: str = ""
    status: DevcontainerStatus
    dirty: bool = False
    container: WorkspaceAgentContainer | None = None
    agent: WorkspaceAgentDevcontainerAgent | None = None
    error: str = ""


@dataclass(kw_only=True)
class WorkspaceAgentListContainersResponse:
    containers: list[WorkspaceAgentContainer]
    devcontainers: list[WorkspaceAgentDevcontainer] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
