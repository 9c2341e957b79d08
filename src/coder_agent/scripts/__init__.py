"""Scripts: run config (and later manifest) scripts with their output shipped as log sources.

:mod:`.spec` (neutral script description and result), :mod:`.runner` (one run: shell, process
group, timeout, output lines, flush before the result), :mod:`.cron` (pure matcher),
:mod:`.session` (start/stop/cron phases for config scripts, set as the daemon's session hooks).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..logsink import LogSource
from .runner import ScriptRunner
from .session import ConfigSession
from .spec import ScriptResult, ScriptSpec, Stage, Status

if TYPE_CHECKING:
    from ..daemon import Daemon
    from ..service import Service

__all__ = ["ConfigSession", "ScriptResult", "ScriptRunner", "ScriptSpec", "Stage", "Status", "setup"]


class _DaemonSink:
    """Whatever ``daemon.log_sink`` is when a line is written (so capability order never matters)."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def source(self, display_name: str, icon: str = "", id: str | None = None) -> LogSource:
        return self._daemon.log_sink.source(display_name, icon, id)

    def write(self, source: LogSource, output: str, level: str = "info",
              created_at: dt.datetime | None = None) -> None:
        self._daemon.log_sink.write(source, output, level, created_at)

    async def flush(self, source: LogSource | None = None, timeout: float | None = None) -> None:
        await self._daemon.log_sink.flush(source, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._daemon.log_sink, name)


def setup(daemon: Daemon) -> list[Service]:
    s = daemon.settings
    runner = ScriptRunner(_DaemonSink(daemon), directory=s.directory, child_env=daemon.child_env,
                          log_dir=s.log_dir, data_dir=s.state_dir, clock=daemon.clock)
    session = ConfigSession(runner, [ScriptSpec.from_config(c) for c in s.scripts])
    daemon.session_runner = session.start
    daemon.session_stopper = session.stop
    daemon.status_extras["scripts"] = session.status
    return []
