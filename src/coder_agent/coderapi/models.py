"""Typed wire models of the agent endpoints (coderd's swagger definitions, newest Go field names).

Rules: field names and JSON shapes are a contract with coderd and with the Go agent's local
API; they follow ../shared/protocol/agent-schemas.json plus the newer Go fields noted there
(``agent_name`` on identity tokens, ``workspace_id``/``owner_id`` on reinit events,
``expires_at`` on external auth). They are pydantic models: ``Model.model_validate(data)``
reads one (unknown keys ignored, as Go does; Go's camel-case aliases accepted where coderd
used them), ``model.model_dump(mode="json")`` writes one. :func:`explain` turns a
``ValidationError`` into one line that names the field and never echoes the value.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

LogLevel = Literal["trace", "debug", "info", "warn", "error"]
AppStatusState = Literal["working", "idle", "complete", "failure"]
DevcontainerStatus = Literal["running", "stopped", "starting", "stopping", "deleting", "error"]

LOG_LEVELS: tuple[str, ...] = ("trace", "debug", "info", "warn", "error")
APP_STATUS_STATES: tuple[str, ...] = ("working", "idle", "complete", "failure")
EXTERNAL_LOG_SOURCE_ID = "3b579bf4-1ed8-4b99-87a8-e9a1e3410410"


def explain(e: ValidationError) -> str:
    """The first error of ``e`` as ``path: message``, one line, without the input value."""
    err = e.errors(include_url=False, include_input=False, include_context=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return " ".join(f"{where}: {err['msg']}".split())


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ValidationErrorModel(_Model):
    field: str
    detail: str


class Response(_Model):
    """codersdk.Response: every error body, from coderd and from our local API."""

    message: str
    detail: str | None = None
    validations: list[ValidationErrorModel] | None = None


class AuthenticateResponse(_Model):
    session_token: str


class AWSInstanceIdentityToken(_Model):
    signature: str
    document: str
    agent_name: str | None = None


class AzureInstanceIdentityToken(_Model):
    signature: str
    encoding: str
    agent_name: str | None = None


class GoogleInstanceIdentityToken(_Model):
    json_web_token: str
    agent_name: str | None = None


class Log(_Model):
    created_at: dt.datetime
    output: str
    level: LogLevel = "info"


class PatchLogs(_Model):
    log_source_id: str
    logs: list[Log]


class PostLogSourceRequest(_Model):
    id: str
    display_name: str
    icon: str = ""


class WorkspaceAgentLogSource(_Model):
    workspace_agent_id: str = ""
    id: str
    created_at: dt.datetime | None = None
    display_name: str
    icon: str = ""


class PatchAppStatus(_Model):
    app_slug: str
    state: AppStatusState
    message: str = ""
    uri: str = ""
    icon: str = ""
    needs_user_attention: bool = False


class ExternalAuthResponse(_Model):
    access_token: str = ""
    token_extra: dict[str, Any] | None = None
    type: str = ""
    url: str = ""
    username: str = ""
    password: str = ""
    expires_at: dt.datetime | None = None


class GitSSHKey(_Model):
    public_key: str
    private_key: str


class ReinitializationEvent(_Model):
    workspace_id: str = Field(validation_alias=AliasChoices("workspace_id", "workspaceID"))
    reason: str
    owner_id: str | None = None


class WorkspaceAgentListeningPort(_Model):
    process_name: str
    network: str = "tcp"
    port: int


class WorkspaceAgentListeningPortsResponse(_Model):
    ports: list[WorkspaceAgentListeningPort]


class WorkspaceAgentContainerPort(_Model):
    port: int
    network: str
    host_ip: str = ""
    host_port: int = 0


class WorkspaceAgentContainer(_Model):
    created_at: dt.datetime
    id: str
    name: str
    image: str
    labels: dict[str, str]
    running: bool
    ports: list[WorkspaceAgentContainerPort]
    status: str
    volumes: dict[str, str]


class WorkspaceAgentDevcontainerAgent(_Model):
    id: str
    name: str
    directory: str


class WorkspaceAgentDevcontainer(_Model):
    id: str
    name: str
    workspace_folder: str
    config_path: str = ""
    status: DevcontainerStatus
    dirty: bool = False
    container: WorkspaceAgentContainer | None = None
    agent: WorkspaceAgentDevcontainerAgent | None = None
    error: str = ""


class WorkspaceAgentListContainersResponse(_Model):
    containers: list[WorkspaceAgentContainer]
    devcontainers: list[WorkspaceAgentDevcontainer] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
