"""Scripts: run config (and later manifest) scripts with their output shipped as log sources.

:mod:`.spec` (neutral script description and result), :mod:`.runner` (one run: shell, process
group, timeout, output lines, flush before the result), :mod:`.cron` (pure matcher),
:mod:`.session` (start/stop/cron phases for config scripts, set as the daemon's session hooks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..logsink import LateBoundSink
from .runner import ScriptRunner
from .session import ConfigSession
from .spec import ScriptResult, ScriptSpec, Stage, Status

if TYPE_CHECKING:
    from ..daemon import Daemon
    from ..service import Service

__all__ = ["ConfigSession", "ScriptResult", "ScriptRunner", "ScriptSpec", "Stage", "Status", "setup"]




def setup(daemon: Daemon) -> list[Service]:
    s = daemon.settings
    runner = ScriptRunner(LateBoundSink(lambda: daemon.log_sink), directory=s.directory, env=daemon.command_env,
                          log_dir=s.log_dir, data_dir=s.state_dir, clock=daemon.clock,
                          priority=daemon.child_priority)
    session = ConfigSession(runner, [ScriptSpec.from_config(c) for c in s.scripts])
    daemon.session_runner = session.start
    daemon.session_stopper = session.stop
    daemon.status_extras["scripts"] = session.status
    return []
