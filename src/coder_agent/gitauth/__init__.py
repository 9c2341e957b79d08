"""Git credentials inside the workspace, from Coder: external auth (HTTPS tokens) through
``git-askpass`` and the Coder-managed Git SSH key through ``gitssh``.

The daemon holds the agent session and serves the credentials on its local API (unix socket,
daemon's own user only), so no token lies in the environment; the helpers are small clients.
Pure cores: :mod:`.prompt` (askpass prompts and answers) and :mod:`.sshargs` (the ssh command
line); the daemon side is :mod:`.daemon`; the helper side is :mod:`.helper`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..childenv import ChildEnv
    from ..coderapi.client import CoderClient
    from ..config import Settings
    from ..localapi import Routes
    from ..log import Redactor
    from ..service import Service
    from ..status import StatusRegistry

__all__ = ["setup"]


def setup(*, settings: Settings, client: CoderClient, redactor: Redactor, child_env: dict[str, str],
          command_env: ChildEnv, api_address: Callable[[], str], routes: Routes,
          status: StatusRegistry) -> list[Service]:
    """The daemon capability (see :func:`coder_agent.gitauth.daemon.setup`)."""
    from .daemon import GitAuthParts
    from .daemon import setup as _setup

    return _setup(GitAuthParts(settings, client, redactor, child_env, api_address, command_env), routes=routes,
                  status=status)
