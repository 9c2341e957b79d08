"""The interface every capability uses to hand log lines to the log pipeline.

Rules: ``source()`` returns a registered-on-demand :class:`LogSource` whose id is stable for
a display name (uuid5 of the name) unless an id is given; ``write()`` never blocks and never
raises for I/O: once it returns, the line is accepted — it will reach Coder or stay in the
local file. ``flush()`` waits until what was accepted so far has been shipped or parked on disk.

:class:`MemoryLogSink` keeps lines in memory; it is the default until the real pipeline
(:mod:`coder_agent.logs`) is wired in, and a convenient sink for tests.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["LateBoundSink", "LogLine", "LogSink", "LogSource", "MemoryLogSink", "source_id_for"]

_NAMESPACE = uuid.UUID("6f1c1f3e-3c1b-4d0e-9a57-5d2c8f0a9e11")


def source_id_for(display_name: str) -> str:
    """The stable log-source id for a display name (same across restarts and machines)."""
    return str(uuid.uuid5(_NAMESPACE, display_name))


@dataclass(frozen=True)
class LogSource:
    id: str
    display_name: str
    icon: str = ""


@dataclass(frozen=True)
class LogLine:
    source: LogSource
    output: str
    level: str = "info"
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


class LogSink(Protocol):
    def source(self, display_name: str, icon: str = "", id: str | None = None) -> LogSource: ...

    def write(self, source: LogSource, output: str, level: str = "info",
              created_at: dt.datetime | None = None) -> None: ...

    async def flush(self, source: LogSource | None = None, timeout: float | None = None) -> None: ...


class MemoryLogSink:
    def __init__(self) -> None:
        self.sources: dict[str, LogSource] = {}
        self.lines: list[LogLine] = []

    def source(self, display_name: str, icon: str = "", id: str | None = None) -> LogSource:
        src = LogSource(id or source_id_for(display_name), display_name, icon)
        self.sources[src.id] = src
        return src

    def write(self, source: LogSource, output: str, level: str = "info",
              created_at: dt.datetime | None = None) -> None:
        self.lines.append(LogLine(source, output, level, created_at or dt.datetime.now(dt.UTC)))

    async def flush(self, source: LogSource | None = None, timeout: float | None = None) -> None:
        return None


class LateBoundSink:
    """Forwards every call to the sink ``current()`` returns at that moment.

    Capabilities set up before the log pipeline replaces ``daemon.log_sink`` hold one of these
    (``LateBoundSink(lambda: daemon.log_sink)``), so set-up order never matters. Attributes beyond
    the LogSink protocol (the pipeline's ``finish``, ``write_lines`` …) are forwarded too.
    """

    def __init__(self, current: Callable[[], LogSink]) -> None:
        self._current = current

    def source(self, display_name: str, icon: str = "", id: str | None = None) -> LogSource:
        return self._current().source(display_name, icon, id)

    def write(self, source: LogSource, output: str, level: str = "info",
              created_at: dt.datetime | None = None) -> None:
        self._current().write(source, output, level, created_at)

    async def flush(self, source: LogSource | None = None, timeout: float | None = None) -> None:
        await self._current().flush(source, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current(), name)
