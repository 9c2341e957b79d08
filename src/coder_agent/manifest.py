"""The manifest as a typed model.

An interface module (ARCHITECTURE.md): the agent-session capability (:mod:`coder_agent.agentrpc`)
converts coderd's protobuf ``Manifest`` (:mod:`coder_agent.agentrpc.manifest`) and publishes
it on a :class:`~coder_agent.feed.Feed` (``Feed[Manifest]``); other capabilities (app status,
reinit, devcontainers) receive the feed from the composition root and subscribe. Nobody reads
a shared manifest dict. Subscribers only need this module for typing: pydantic is loaded by
the publisher when the first manifest arrives, not at start-up.

Rules:

* The fields, their order and their JSON form are exactly the converted dict's (coder-agent-rpc.md
  §4.2): ``Manifest.model_validate(d).model_dump() == d``; ``GET /api/v0/manifest`` shows
  :meth:`Manifest.local_view` (environment values redacted).
* Secrets never enter the model: only their env names and file paths.
* Every field has an empty default, so a partial manifest (tests, an old coderd) still parses.
* The feed's ``publish`` is called on every manifest (first connect, each reconnect, after a
  reinit); its ``clear`` when a new agent session starts (reinit: nothing is known until its
  first manifest).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .errors import REDACTED

__all__ = ["App", "Devcontainer", "Healthcheck", "Manifest", "MetadataKey", "OrderDependency", "Script", "Secret"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Healthcheck(_Model):
    url: str = ""
    interval: float = 0.0  # seconds
    threshold: int = 0


class App(_Model):
    id: str = ""
    slug: str = ""
    display_name: str = ""
    url: str = ""
    command: str = ""
    icon: str = ""
    external: bool = False
    subdomain: bool = False
    subdomain_name: str = ""
    sharing_level: str = "unspecified"
    hidden: bool = False
    healthcheck: Healthcheck = Field(default_factory=Healthcheck)
    health: str = "unspecified"


class OrderDependency(_Model):
    script_id: str = ""
    requires: str = "success"  # success | completion (Go's coder_script_order)


class Script(_Model):
    id: str = ""
    log_source_id: str = ""
    display_name: str = ""
    script: str = ""
    log_path: str = ""
    cron: str = ""
    run_on_start: bool = False
    run_on_stop: bool = False
    start_blocks_login: bool = False
    timeout: float = 0.0  # seconds
    order_dependencies: list[OrderDependency] = Field(default_factory=list)


class MetadataKey(_Model):
    key: str = ""
    display_name: str = ""
    script: str = ""
    interval: int = 0  # seconds
    timeout: int = 0  # seconds


class Devcontainer(_Model):
    id: str = ""
    workspace_folder: str = ""
    config_path: str = ""
    name: str = ""
    subagent_id: str = ""


class Secret(_Model):
    env_name: str = ""
    file_path: str = ""


class Manifest(_Model):
    agent_id: str = ""
    agent_name: str = ""
    owner: str = ""
    workspace_id: str = ""
    workspace_name: str = ""
    parent_id: str = ""
    directory: str = ""  # expanded (absolute)
    directory_raw: str = ""  # as coderd sent it
    environment: dict[str, str] = Field(default_factory=dict)
    vs_code_port_proxy_uri: str = ""
    motd_path: str = ""
    git_auth_configs: int = 0
    disable_direct_connections: bool = False
    apps: list[App] = Field(default_factory=list)
    scripts: list[Script] = Field(default_factory=list)
    metadata: list[MetadataKey] = Field(default_factory=list)
    devcontainers: list[Devcontainer] = Field(default_factory=list)
    secrets: list[Secret] = Field(default_factory=list)

    def app_slugs(self) -> list[str]:
        return [a.slug for a in self.apps if a.slug]

    def local_view(self) -> dict[str, object]:
        """The JSON of ``GET /api/v0/manifest``: environment values replaced by ``[REDACTED]``."""
        out = self.model_dump(mode="json")
        out["environment"] = {k: REDACTED for k in self.environment}
        return out
