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
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["LogLine", "LogSink", "LogSource", "MemoryLogSink", "source_id_for"]

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
