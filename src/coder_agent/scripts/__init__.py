"""Scripts: run config (and later manifest) scripts with their output shipped as log sources.

:mod:`.spec` (neutral script description and result), :mod:`.runner` (one run: shell, process
group, timeout, output lines, flush before the result), :mod:`.cron` (pure matcher),
:mod:`.session` (start/stop/cron phases for config scripts; :func:`setup` makes them the
session's driver until the agent RPC session takes over, see :mod:`coder_agent.sessionowner`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .runner import ScriptRunner
from .session import ConfigSession
from .spec import ScriptResult, ScriptSpec, Stage, Status

if TYPE_CHECKING:
    from ..childenv import ChildEnv
    from ..clock import Clock
    from ..config import Settings
    from ..logsink import LogSink
    from ..procprio import ChildPriority
    from ..service import Service
    from ..sessionowner import SessionOwner
    from ..status import StatusRegistry

__all__ = ["ConfigSession", "ScriptResult", "ScriptRunner", "ScriptSpec", "Stage", "Status", "setup"]




class _Driver:
    """The config-file scripts as the agent session (when nothing else drives it)."""

    def __init__(self, session: ConfigSession, owner: SessionOwner, sink: LogSink) -> None:
        self.session, self.owner, self.sink = session, owner, sink

    async def run(self) -> None:
        await self.session.start()

    async def stop(self) -> None:
        await self.session.stop(self.owner.shutdown_timeout, self.sink)


def setup(*, settings: Settings, clock: Clock, sink: LogSink, command_env: ChildEnv, priority: ChildPriority,
          owner: SessionOwner, status: StatusRegistry) -> list[Service]:
    s = settings
    runner = ScriptRunner(sink, directory=s.directory, env=command_env, log_dir=s.log_dir, data_dir=s.state_dir,
                          clock=clock, priority=priority)
    session = ConfigSession(runner, [ScriptSpec.from_config(c) for c in s.scripts])
    owner.drive(_Driver(session, owner, sink))
    status.add("scripts", session.status)
    return []
