"""Git credentials inside the workspace, from Coder: external auth (HTTPS tokens) through
``git-askpass`` and the Coder-managed Git SSH key through ``gitssh``.

The daemon holds the agent session and serves the credentials on its local API (unix socket,
daemon's own user only), so no token lies in the environment; the helpers are small clients.
Pure cores: :mod:`.prompt` (askpass prompts and answers) and :mod:`.sshargs` (the ssh command
line); the daemon side is :mod:`.daemon`; the helper side is :mod:`.helper`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..daemon import Daemon
    from ..service import Service

__all__ = ["setup"]


def setup(daemon: Daemon) -> list[Service]:
    """The daemon capability (see :func:`coder_agent.gitauth.daemon.setup`)."""
    from .daemon import setup as _setup

    return _setup(daemon)
