"""A small session for config scripts: start scripts, cron, stop scripts, final log flush.

Rules (rpc.md §5.3-5.5, §5.12):

* At session start every ``run_on_start`` script runs in parallel; the phase outcome is ``done``,
  ``timed_out`` if any timed out, else ``failed`` if any failed (a script that left pipes open is
  a warning, not a failure). :data:`START_LIFECYCLE` maps it to READY / START_TIMEOUT /
  START_ERROR. Then cron scripts run on schedule (a run is skipped if the previous one still runs).
* At stop: cron stops, running scripts are stopped (process groups, SIGTERM then SIGKILL), every
  ``run_on_stop`` script runs in parallel within the shutdown budget less a reserve for the final
  flush (outcome → OFF / SHUTDOWN_TIMEOUT / SHUTDOWN_ERROR via :data:`STOP_LIFECYCLE`); then the
  log pipeline is flushed with what is left of the budget.
* This session does not move the session lifecycle: it (and reporting it to coderd)
  belongs to the agent RPC session, which wraps or replaces this one and reuses the runner; it
  can await :attr:`ConfigSession.start_done` and read ``start_state``/``stop_state``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from ..lifecycle import State
from ..log import get_logger
from .cron import CronError, parse_cron
from .runner import ScriptRunner
from .spec import ScriptResult, ScriptSpec, Stage, Status

if TYPE_CHECKING:
    from ..logsink import LogSink

__all__ = ["START_LIFECYCLE", "STOP_LIFECYCLE", "ConfigSession", "phase_outcome"]

START_LIFECYCLE = {"done": State.READY, "failed": State.START_ERROR, "timed_out": State.START_TIMEOUT}
STOP_LIFECYCLE = {"done": State.OFF, "failed": State.SHUTDOWN_ERROR, "timed_out": State.SHUTDOWN_TIMEOUT}


def phase_outcome(results: list[ScriptResult]) -> str:
    """``done``, ``failed`` or ``timed_out`` for a phase's results (pure)."""
    if any(r.status is Status.TIMED_OUT for r in results):
        return "timed_out"
    if any(not r.ok for r in results):
        return "failed"
    return "done"


class ConfigSession:
    def __init__(self, runner: ScriptRunner, specs: list[ScriptSpec], flush_reserve: float = 5.0) -> None:
        self.runner = runner
        self.specs = specs
        self.flush_reserve = flush_reserve
        self.start_state = "pending"  # pending | running | done | failed | timed_out
        self.stop_state = "pending"
        self.start_done = asyncio.Event()
        self._cron: list[asyncio.Task[None]] = []
        self._log = get_logger("scripts.session")

    async def start(self) -> None:
        """Start scripts, then cron until cancelled.

        Runs again after a prebuild reinit: per-session state starts over here."""
        self.start_state = "running"
        self.stop_state = "pending"
        self.start_done.clear()
        self._cron = []
        start = [s for s in self.specs if s.run_on_start]
        results = list(await asyncio.gather(*(self.runner.run(s, Stage.START) for s in start)))
        self.start_state = phase_outcome(results)
        self.start_done.set()
        self._log.info("start scripts finished", outcome=self.start_state, scripts=len(start))
        for spec in self.specs:
            if spec.cron:
                try:
                    cron = parse_cron(spec.cron)
                except CronError as e:
                    self._log.warning("script's cron is invalid; it will not run on a schedule",
                                      script=spec.display_name, cron=spec.cron, error=str(e))
                    continue
                self._cron.append(asyncio.create_task(self._cron_loop(spec, cron)))
        if self._cron:
            await asyncio.gather(*self._cron)

    async def _cron_loop(self, spec: ScriptSpec, cron: Any) -> None:
        while True:
            now = dt.datetime.now().astimezone()
            nxt = cron.next_after(now)
            await asyncio.sleep(max(0.0, (nxt - dt.datetime.now().astimezone()).total_seconds()))
            if spec.id in self.runner.running:
                self._log.info("cron run skipped: the previous run is still going", script=spec.display_name)
                continue
            await self.runner.run(spec, Stage.CRON)

    async def stop(self, budget: float, sink: LogSink) -> None:
        """Stop scripts, then flush ``sink``, within ``budget`` seconds (the shutdown timeout)."""
        t0 = time.monotonic()
        for task in self._cron:
            task.cancel()
        await asyncio.gather(*self._cron, return_exceptions=True)  # no cron task outlives its session
        self._cron = []
        await self.runner.kill_all(min(self.runner.kill_grace, budget / 4))
        stop = [s for s in self.specs if s.run_on_stop]
        if stop:
            reserve = min(self.flush_reserve, budget / 4)
            left = max(0.1, budget - reserve - (time.monotonic() - t0))
            self.stop_state = "running"
            tasks = [asyncio.create_task(self.runner.run(s, Stage.STOP)) for s in stop]
            done, pending = await asyncio.wait(tasks, timeout=left)
            if pending:
                await self.runner.kill_all(0.5)
                await asyncio.gather(*pending, return_exceptions=True)
                self.stop_state = "timed_out"
            else:
                self.stop_state = phase_outcome([t.result() for t in done])
        else:
            self.stop_state = "done"
        left = max(0.1, budget - (time.monotonic() - t0))
        finish = getattr(sink, "finish", None)
        if finish is not None:  # the pipeline: also the last lines of every source past Coder's limit
            await finish(None, timeout=left, final=True)
        else:
            await sink.flush(timeout=left)

    def status(self) -> dict[str, Any]:
        return {
            "start_scripts": self.start_state,
            "stop_scripts": self.stop_state,
            "scripts": [
                {"id": s.id, "display_name": s.display_name, "run_on_start": s.run_on_start,
                 "run_on_stop": s.run_on_stop, "cron": s.cron or None, "start_blocks_login": s.start_blocks_login,
                 "running": s.id in self.runner.running,
                 "last_result": (r.as_dict() if (r := self.runner.last.get(s.id)) else None)}
                for s in self.specs
            ],
        }
