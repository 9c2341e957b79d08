"""The seam between the session and whoever runs scripts, and the Timing it reports.

Rules (coder-agent-rpc.md §5.5, §6.11):

* The session hands a :class:`ScriptRunner` neutral :class:`ScriptSpec` s for one phase
  ("start" or "stop") and gets one :class:`ScriptResult` per script back.
* ``ScriptCompleted`` carries ``exit_code`` (255 when unknown: timeout, failed start), the stage
  (START 0, STOP 1, CRON 2 — 0 is meaningful) and the status (OK 0, EXIT_FAILURE 1,
  TIMED_OUT 2, PIPES_LEFT_OPEN 3). Only scripts with an ``id`` are reported.
* Phase outcome: any timed-out script → the TIMEOUT state, else any failure → the ERROR state.

:class:`BasicRunner` is a small stand-in (shell, parallel, output lines to the log sink,
SIGHUP-then-SIGKILL on timeout) used until the scripts capability provides its runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import pwd
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import timestamp_pb2

from ..logsink import LogSink
from ..rpc.proto import agent_pb2
from .manifest import uuid_bytes

__all__ = ["BasicRunner", "ScriptResult", "ScriptRunner", "ScriptSpec", "specs_from", "timing", "user_shell"]

STAGES = {"start": agent_pb2.Timing.START, "stop": agent_pb2.Timing.STOP, "cron": agent_pb2.Timing.CRON}
STATUSES = {"ok": agent_pb2.Timing.OK, "exit_failure": agent_pb2.Timing.EXIT_FAILURE,
            "timed_out": agent_pb2.Timing.TIMED_OUT, "pipes_left_open": agent_pb2.Timing.PIPES_LEFT_OPEN}


@dataclass(frozen=True)
class ScriptSpec:
    display_name: str
    script: str
    id: str = ""  # manifest script id; "" for config scripts and old servers
    log_source_id: str = ""  # "" → the runner picks a stable one for display_name
    timeout: float = 0.0  # seconds; 0 = none
    log_path: str = ""
    cron: str = ""
    run_on_start: bool = False
    run_on_stop: bool = False
    start_blocks_login: bool = False


@dataclass
class ScriptResult:
    spec: ScriptSpec
    start: dt.datetime
    end: dt.datetime
    exit_code: int
    status: str  # a key of STATUSES

    @property
    def failed(self) -> bool:
        return self.status != "ok"


class ScriptRunner(Protocol):
    async def run(self, scripts: Sequence[ScriptSpec], stage: str) -> list[ScriptResult]: ...


def specs_from(manifest: Mapping[str, Any] | None, config_scripts: Sequence[Any], stage: str) -> list[ScriptSpec]:
    """The scripts of one phase: the manifest's, then the ones from our own config file."""
    flag = "run_on_start" if stage == "start" else "run_on_stop"
    out = [ScriptSpec(
        display_name=str(s.get("display_name") or "script"), script=str(s.get("script", "")),
        id=str(s.get("id", "")), log_source_id=str(s.get("log_source_id", "")),
        timeout=float(s.get("timeout") or 0), log_path=str(s.get("log_path", "")), cron=str(s.get("cron", "")),
        run_on_start=bool(s.get("run_on_start")), run_on_stop=bool(s.get("run_on_stop")),
        start_blocks_login=bool(s.get("start_blocks_login")),
    ) for s in (manifest or {}).get("scripts", []) if s.get(flag)]
    for c in config_scripts:
        if getattr(c, flag, False):
            out.append(ScriptSpec(display_name=c.display_name, script=c.script, timeout=float(c.timeout),
                                  log_path=c.log_path, cron=c.cron, run_on_start=c.run_on_start,
                                  run_on_stop=c.run_on_stop, start_blocks_login=c.start_blocks_login))
    return out


def _stamp(t: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts


def timing(result: ScriptResult, stage: str) -> agent_pb2.Timing | None:
    """The ScriptCompleted payload for ``result`` (None when the script has no id)."""
    if not result.spec.id:
        return None
    end = max(result.end, result.start)
    return agent_pb2.Timing(script_id=uuid_bytes(result.spec.id), start=_stamp(result.start), end=_stamp(end),
                            exit_code=result.exit_code, stage=STAGES[stage], status=STATUSES[result.status])


def existing_dir(path: str | None) -> str | None:
    """``path`` if it is a directory (a cheap stat; commands fall back to our cwd otherwise)."""
    return path if path and os.path.isdir(path) else None


def user_shell() -> str:
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    return shell if shell and os.path.exists(shell) and not shell.endswith(("nologin", "false")) else "/bin/sh"


@dataclass
class BasicRunner:
    """Runs a phase's scripts in parallel through the user's shell; output → the log sink."""

    sink: LogSink
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    kill_grace: float = 10.0

    async def run(self, scripts: Sequence[ScriptSpec], stage: str) -> list[ScriptResult]:
        return list(await asyncio.gather(*(self._one(s) for s in scripts)))

    async def _one(self, spec: ScriptSpec) -> ScriptResult:
        src = self.sink.source(spec.display_name, id=spec.log_source_id or None)
        start = dt.datetime.now(dt.UTC)
        cwd = existing_dir(self.cwd)
        try:
            proc = await asyncio.create_subprocess_exec(
                user_shell(), "-c", spec.script, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **self.env}, cwd=cwd, start_new_session=True)
        except OSError as e:
            self.sink.write(src, f"cannot start script: {e}", "error")
            return ScriptResult(spec, start, dt.datetime.now(dt.UTC), 255, "exit_failure")

        async def pump(stream: asyncio.StreamReader | None, level: str) -> None:
            assert stream is not None
            async for raw in stream:
                self.sink.write(src, raw.decode("utf-8", "replace").rstrip("\n").rstrip("\r"), level)

        pumps = asyncio.gather(pump(proc.stdout, "info"), pump(proc.stderr, "error"))
        status = "ok"
        try:
            async with asyncio.timeout(spec.timeout or None):
                code = await proc.wait()
        except TimeoutError:
            status = "timed_out"
            self._signal(proc.pid, signal.SIGHUP)
            try:
                await asyncio.wait_for(proc.wait(), self.kill_grace)
            except TimeoutError:
                self._signal(proc.pid, signal.SIGKILL)
                await proc.wait()
            code = 255
        except asyncio.CancelledError:
            self._signal(proc.pid, signal.SIGKILL)
            pumps.cancel()
            raise
        try:
            await asyncio.wait_for(asyncio.shield(pumps), self.kill_grace)
        except TimeoutError:
            pumps.cancel()
            if status == "ok":
                status = "pipes_left_open"
        if status == "ok" and code != 0:
            status = "exit_failure"
        return ScriptResult(spec, start, dt.datetime.now(dt.UTC), code, status)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
