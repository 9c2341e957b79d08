"""A small session for config scripts: start scripts, cron, stop scripts, final log flush.

Rules (rpc.md §5.3-5.5, §5.12):

* At session start every ``run_on_start`` script runs in parallel, except for script-order rules
  (Go's ``coder_script_order``, :func:`order_edges`): a script waits until the scripts it depends
  on ended, and is SKIPPED (a warning line on its log source) when a requires=success one did not
  succeed; rules on scripts outside the phase are dropped, a cycle voids them all; the phase outcome is ``done``,
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

__all__ = ["START_LIFECYCLE", "STOP_LIFECYCLE", "ConfigSession", "order_edges", "phase_outcome"]

START_LIFECYCLE = {"done": State.READY, "failed": State.START_ERROR, "timed_out": State.START_TIMEOUT}
STOP_LIFECYCLE = {"done": State.OFF, "failed": State.SHUTDOWN_ERROR, "timed_out": State.SHUTDOWN_TIMEOUT}


def order_edges(start: list[ScriptSpec]) -> dict[str, list[tuple[str, str]]] | None:
    """Pure: each start script's satisfiable order dependencies (on another start script of the
    phase; others are dropped, as Go drops them); None when they form a cycle."""
    ids = {s.id for s in start}
    edges = {s.id: [(d, r) for d, r in s.depends if d in ids and d != s.id] for s in start}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def cyclic(n: str) -> bool:
        if state.get(n) == 1:
            return True
        if state.get(n) == 2:
            return False
        state[n] = 1
        if any(cyclic(d) for d, _ in edges.get(n, [])):
            return True
        state[n] = 2
        return False

    return None if any(cyclic(n) for n in edges) else edges


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
        results = await self._start_ordered(start)
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

    async def _start_ordered(self, start: list[ScriptSpec]) -> list[ScriptResult]:
        """Start scripts in parallel, except that a script waits for its order dependencies
        (Go's ``coder_script_order``) and is skipped when a requires=success one did not succeed."""
        found = order_edges(start)
        if found is None:
            self._log.warning("script order rules form a cycle; they are ignored and every script starts at once")
        edges = found or {}
        for s in start:
            for rule in s.depends if found is not None else ():
                if rule not in edges.get(s.id, ()):
                    self._log.warning("ignoring script order rule with unsatisfiable dependency",
                                      script=s.display_name, depends_on_script_id=rule[0])
        ended = {s.id: asyncio.Event() for s in start}
        outcome: dict[str, ScriptResult] = {}
        names = {s.id: s.display_name or s.log_source_id for s in start}

        async def one(spec: ScriptSpec) -> ScriptResult:
            try:
                deps = edges.get(spec.id, [])
                for dep, _ in deps:
                    await ended[dep].wait()
                for dep, requires in deps:
                    r = outcome[dep]
                    if requires != "completion" and r.status is not Status.OK:
                        verb = "was skipped" if r.status is Status.SKIPPED else "failed"
                        result = await self.runner.skip(spec, Stage.START, f'dependency "{names[dep]}" {verb}')
                        break
                else:
                    result = await self.runner.run(spec, Stage.START)
                outcome[spec.id] = result
                return result
            finally:
                ended[spec.id].set()

        return list(await asyncio.gather(*(one(s) for s in start)))

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
