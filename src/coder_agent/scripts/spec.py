"""What a script is and what running it produced: neutral shapes for config and manifest scripts.

Rules:

* :class:`ScriptSpec` carries codersdk.WorkspaceAgentScript's fields plus the ids. A config script
  (``[[scripts]]``) gets ids derived from its display name, so they are stable across restarts; a
  manifest script brings its own ``id`` and ``log_source_id`` (a missing ``id`` is tolerated, as
  rpc.md §5.3 advises).
* :class:`ScriptResult` holds what ScriptCompleted needs: start/end (UTC), exit code (255 when
  unknown: timeout, could not start; -1 when skipped), stage START/STOP/CRON, status
  OK/EXIT_FAILURE/TIMED_OUT/PIPES_LEFT_OPEN/SKIPPED (agent.proto's Timing enums, in the same order).
  A skipped script is not a failure of its phase (Go: the failed dependency reported its own).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import ScriptConfig
from ..logsink import source_id_for

__all__ = ["ScriptResult", "ScriptSpec", "Stage", "Status"]

_SCRIPT_NS = uuid.UUID("0b7e3f52-55a4-4c52-9a0e-6a3c1d4f8e21")


class Stage(enum.IntEnum):
    START = 0
    STOP = 1
    CRON = 2


class Status(enum.IntEnum):
    OK = 0
    EXIT_FAILURE = 1
    TIMED_OUT = 2
    PIPES_LEFT_OPEN = 3
    SKIPPED = 4  # a requires=success dependency did not succeed (script order)


@dataclass(frozen=True)
class ScriptSpec:
    id: str
    log_source_id: str
    display_name: str
    script: str
    run_on_start: bool = False
    run_on_stop: bool = False
    start_blocks_login: bool = False
    timeout: float = 0.0  # seconds; 0 = none
    cron: str = ""
    log_path: str = ""
    icon: str = ""
    # Go's coder_script_order: (script id, "success" | "completion") that must end before this one starts
    depends: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(cls, cfg: ScriptConfig) -> ScriptSpec:
        return cls(
            id=str(uuid.uuid5(_SCRIPT_NS, cfg.display_name)),
            log_source_id=source_id_for(cfg.display_name),
            display_name=cfg.display_name, script=cfg.script, run_on_start=cfg.run_on_start,
            run_on_stop=cfg.run_on_stop, start_blocks_login=cfg.start_blocks_login, timeout=cfg.timeout,
            cron=cfg.cron.strip(), log_path=cfg.log_path, icon=cfg.icon,
        )

    @classmethod
    def from_manifest(cls, d: Mapping[str, Any]) -> ScriptSpec:
        """From a manifest script as JSON-like data (``timeout_seconds`` or ``timeout`` in seconds)."""
        source = str(d.get("log_source_id") or "")
        name = str(d.get("display_name") or "") or "Script"
        timeout = d.get("timeout_seconds", d.get("timeout", 0)) or 0
        return cls(
            id=str(d.get("id") or uuid.uuid5(_SCRIPT_NS, f"{source}:{name}")),
            log_source_id=source or source_id_for(name),
            display_name=name, script=str(d.get("script") or ""),
            run_on_start=bool(d.get("run_on_start")), run_on_stop=bool(d.get("run_on_stop")),
            start_blocks_login=bool(d.get("start_blocks_login")), timeout=float(timeout),
            cron=str(d.get("cron") or "").strip(), log_path=str(d.get("log_path") or ""),
            icon=str(d.get("icon") or ""),
            depends=tuple((str(x.get("script_id")), str(x.get("requires") or "success"))
                          for x in d.get("order_dependencies") or () if x.get("script_id")),
        )


@dataclass(frozen=True)
class ScriptResult:
    script_id: str
    display_name: str
    stage: Stage
    status: Status
    exit_code: int
    start: dt.datetime
    end: dt.datetime
    log_file: str = ""

    @property
    def duration(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def ok(self) -> bool:
        return self.status in (Status.OK, Status.PIPES_LEFT_OPEN, Status.SKIPPED)

    def as_dict(self) -> dict[str, Any]:
        return {"script_id": self.script_id, "display_name": self.display_name,
                "stage": self.stage.name.lower(), "status": self.status.name.lower(),
                "exit_code": self.exit_code, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "duration_seconds": round(self.duration, 3), "log_file": self.log_file}
