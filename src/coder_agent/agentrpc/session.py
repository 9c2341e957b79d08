"""The agent session: one manifest-driven life of the agent, over as many connections as it takes.

Rules (coder-agent-rpc.md §5.1–§5.12, §6.13–§6.16):

* Per connection: GetManifest → UpdateStartup (``v``-semver version, absolute directory) →
  the "stop" routines (metadata, app health, stats), plus the "remain" routines (lifecycle
  reporter, ScriptCompleted queue, log transport) that keep running during shutdown. An error
  in any routine ends the connection and the loop redials; ``FeatureUnavailable`` only ends
  that routine.
* Process state lives here, outside the connection: the lifecycle queue (replayed in order
  after a reconnect), the ScriptCompleted queue, and "start scripts already ran" — the first
  manifest of the session sets STARTING and runs start scripts once; every manifest (later
  ones too) is published on the manifest feed (:class:`~coder_agent.feed.Feed`).
* Scripts from our own config file are a local duty: they start with the session, whether or
  not coderd is reachable. Manifest scripts start with the first manifest. READY / START_TIMEOUT
  (any timed out) / START_ERROR (any failed) once both sets finished; logs are flushed before
  the state is reported.
* :meth:`AgentSession.shutdown`: SHUTTING_DOWN, stop routines cancelled, start scripts
  stopped, stop scripts run → OFF / SHUTDOWN_TIMEOUT / SHUTDOWN_ERROR; then up to
  ``final_wait`` s for the final state and queued completions to be acknowledged and logs
  flushed; then the connection closes. A new session can be created afterwards (reinit).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from google.protobuf import duration_pb2, timestamp_pb2

from .. import __version__
from ..errors import FeatureUnavailable
from ..lifecycle import State
from ..log import get_logger
from ..rpc.proto import agent_pb2
from ..scripts import ConfigSession, ScriptResult
from ..scripts.session import START_LIFECYCLE, STOP_LIFECYCLE
from ..tasks import reap, settle
from . import apphealth, metadata
from .connection import ConnectionLoop, RpcClient
from .logs import RpcAppStatusTransport, RpcLogTransport
from .manifest import child_env, convert
from .reporter import LifecycleReporter
from .scripts import ReportingRunner, make_runner, phase_specs, timing

if TYPE_CHECKING:
    from .parts import AgentParts

__all__ = ["AgentSession", "semver_version", "subsystems_from_env"]

_SUBSYSTEMS = {"envbox": agent_pb2.Startup.ENVBOX, "envbuilder": agent_pb2.Startup.ENVBUILDER,
               "exectrace": agent_pb2.Startup.EXECTRACE}


def semver_version(version: str) -> str:
    """Our PEP 440 version as coderd-acceptable semver with a leading "v" (§6.13)."""
    m = re.match(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)$", version.strip())
    if not m:
        return "v0.0.0-" + (re.sub(r"[^0-9A-Za-z-]+", "-", version).strip("-") or "unknown")
    major, minor, patch, rest = m.group(1), m.group(2) or "0", m.group(3) or "0", m.group(4)
    out = f"v{int(major)}.{int(minor)}.{int(patch)}"
    rest = re.sub(r"[^0-9A-Za-z.-]+", "-", rest).strip(".-")
    rest = ".".join(p for p in rest.split(".") if p)
    return out + (f"-{rest}" if rest else "")


def subsystems_from_env(env: dict[str, str]) -> list[Any]:
    """``CODER_AGENT_SUBSYSTEM`` (comma-separated, as the Go agent reads it) → Startup subsystems."""
    out: list[Any] = []
    for name in env.get("CODER_AGENT_SUBSYSTEM", "").split(","):
        value = _SUBSYSTEMS.get(name.strip().lower())
        if value is not None and value not in out:
            out.append(value)
    return out


def _stamp(t: Any) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts


class AgentSession:
    """Create, ``await start()``, later ``await shutdown()``; a fresh one may follow."""

    def __init__(
        self,
        parts: AgentParts,
        *,
        runner: ReportingRunner | None = None,
        ping_interval: float = 15.0,
        ping_timeout: float = 10.0,
        tick: float = 1.0,
        final_wait: float = 5.0,
    ) -> None:
        self.parts = parts
        self.reporter = LifecycleReporter(parts.owner.fresh_lifecycle())  # a re-initialised agent starts over
        self.runner = runner or make_runner(parts)
        self.runner.on_result = self._on_script_result
        self.tick = tick
        self.final_wait = final_wait
        self.log = get_logger("agentrpc")
        self.loop = ConnectionLoop(parts, self._on_connect, ping_interval=ping_interval, ping_timeout=ping_timeout)
        # The scripts part of GET /api/v0/status follows the scripts this session runs.
        parts.status.add("scripts", self._scripts_status)
        self.logs = RpcLogTransport()
        self.app_status = RpcAppStatusTransport()
        self._plug_transports()
        self.manifest: dict[str, Any] | None = None
        self.manifest_fetches = 0
        self.results: list[ScriptResult] = []
        # Start phase and cron: config-file scripts at once, manifest scripts with the first manifest.
        self.local_scripts = ConfigSession(self.runner, phase_specs(None, parts.settings.scripts))
        self.scripts: ConfigSession | None = None
        self._stop_scripts: ConfigSession | None = None
        self._local_task: asyncio.Task[None] | None = None
        self.scripts_started = False
        self._manifest_script_ids: set[str] = set()
        self._completions: deque[agent_pb2.Timing] = deque()
        self._wake = asyncio.Event()  # a lifecycle state was queued
        self._cwake = asyncio.Event()  # a ScriptCompleted was queued
        self._progress = asyncio.Event()  # something acknowledged
        self._stoppable: asyncio.Task[None] | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._start_watch: asyncio.Task[None] | None = None
        self._run: asyncio.Task[None] | None = None
        self._stopping = False
        self._http: httpx.AsyncClient | None = None
        # CODER_AGENT_DIRECTORY stands in for the home directory when the manifest names none.
        d = parts.settings.directory
        self._home: str | None = os.path.expanduser(d) if d else None

    def _plug_transports(self) -> None:
        """Route log batches and app statuses over this session's connection (REST when it is down)."""
        sink: Any = self.parts.sink
        old = getattr(sink, "transport", None)
        if old is not None:
            self.logs.rest = getattr(old, "rest", old)
            sink.transport = self.logs
            self.logs.on_limit = getattr(sink, "limit_exceeded", None)
        svc = self.parts.app_status
        if svc is not None:
            current: Any = svc.transport
            self.app_status.rest = getattr(current, "rest", current)
            svc.set_transport(self.app_status)

    # ---- public --------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """:meth:`shutdown` was called: this session is over, a new one must be created."""
        return self._stopping

    async def start(self) -> None:
        if self._run is None:
            self._local_task = asyncio.create_task(self._run_scripts(self.local_scripts), name="config-scripts")
            self._run = asyncio.create_task(self.loop.run(), name="agent-rpc")

    async def wait(self) -> None:
        """Until the session's connection loop ends (after :meth:`shutdown`)."""
        if self._run is not None:
            await asyncio.shield(self._run)

    def set_lifecycle(self, state: State) -> bool:
        if not self.reporter.set(state, self.parts.clock.now()):
            self.log.debug("lifecycle transition dropped", state=state.api_name, current=self.reporter.state.api_name)
            return False
        self.log.info("lifecycle", state=state.api_name)
        self._wake.set()
        return True

    async def shutdown(self) -> None:
        """Graceful end (SIGTERM or reinit); idempotent. The caller bounds the time."""
        if self._stopping:
            await self.wait()
            return
        self._stopping = True
        if self.reporter.state is State.CREATED:
            # Stopped before its first manifest (a second claim while the new session was still
            # connecting, SIGTERM at start-up): this life still opens with STARTING, so coderd never
            # sees it go backwards (the previous session ended at OFF): coder-agent-rpc.md §7, item 10.
            self.set_lifecycle(State.STARTING)
        self.set_lifecycle(State.SHUTTING_DOWN)
        # Cancelling a start phase also ends its cron loops.
        await reap(self._stoppable, self._start_watch, self._start_task, self._local_task)
        # One stop phase for every known script (manifest's, if any, and ours): it stops what still
        # runs, then runs the run_on_stop scripts in parallel within the budget, then flushes logs.
        stop = ConfigSession(self.runner, phase_specs(self.manifest, self.parts.settings.scripts))
        self._stop_scripts = stop
        try:
            await stop.stop(self.parts.owner.shutdown_timeout, self.parts.sink)
        except Exception as e:  # a broken runner must not keep the final state from coderd
            self.log.error("stop scripts failed to run", error=str(e))
            stop.stop_state = "failed"
        self.set_lifecycle(STOP_LIFECYCLE.get(stop.stop_state, State.SHUTDOWN_ERROR))
        # Never connected: nobody to tell, and waiting would only delay the exit.
        # Disconnected now: a reconnect may still come, but do not hold the exit up for long.
        await self._settle(self.final_wait if self.loop.connections else 0.0,
                           min(self.final_wait, 1.0))
        await self.loop.close()
        await settle(self._run)
        if self._http is not None:
            await self._http.aclose()

    def status(self) -> dict[str, Any]:
        m = self.manifest
        client = self.loop.client
        return {
            "connected": client is not None,
            "api_version": self.loop.version,
            "connections": self.loop.connections,
            "last_disconnect": self.loop.last_disconnect,
            "unavailable_rpcs": sorted(client.unavailable) if client else [],
            "manifest_fetches": self.manifest_fetches,
            "lifecycle_pending": [s.api_name for s in self.reporter.lifecycle.pending],
            "start_scripts": self._start_state(),
            "manifest": None if m is None else {
                "agent_name": m["agent_name"], "workspace": f"{m['owner']}/{m['workspace_name']}",
                "directory": m["directory"], "apps": len(m["apps"]), "scripts": len(m["scripts"]),
                "metadata": len(m["metadata"]), "devcontainers": len(m["devcontainers"]),
            },
        }

    # ---- per connection ------------------------------------------------------------------

    async def _on_connect(self, client: RpcClient) -> None:
        self.logs.attach(client)
        self.app_status.attach(client)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._lifecycle_loop(client))
                tg.create_task(self._completions_loop(client))
                if not self._stopping:
                    self._stoppable = tg.create_task(self._stop_routines(client))
        finally:
            self.logs.detach(client)
            self.app_status.detach(client)

    async def _stop_routines(self, client: RpcClient) -> None:
        await self._fetch_manifest(client)
        self._begin_start()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._optional(self._metadata_loop(client)))
            tg.create_task(self._optional(self._app_health_loop(client)))
            tg.create_task(self._optional(self._stats_loop(client)))

    @staticmethod
    async def _optional(coro: Any) -> None:
        with contextlib.suppress(FeatureUnavailable):
            await coro

    async def _fetch_manifest(self, client: RpcClient) -> None:
        raw = await client.call("GetManifest", agent_pb2.GetManifestRequest(), agent_pb2.Manifest)
        converted = convert(raw, home=self._home)
        m = converted.manifest
        self.manifest_fetches += 1
        startup = agent_pb2.Startup(version=semver_version(__version__), expanded_directory=m["directory"],
                                    subsystems=subsystems_from_env(dict(os.environ)))
        await client.call("UpdateStartup", agent_pb2.UpdateStartupRequest(startup=startup), agent_pb2.Startup)
        self.manifest = m
        self._manifest_script_ids = {s["id"] for s in m["scripts"] if s["id"]}
        self.parts.child_env.update(child_env(m, converted.secrets))
        from ..manifest import Manifest  # pydantic: loaded with the first manifest, not at start-up

        self.parts.manifests.publish(Manifest.model_validate(m))
        self.log.info("manifest received", agent=m["agent_name"], scripts=len(m["scripts"]), apps=len(m["apps"]),
                      metadata=len(m["metadata"]), fetch=self.manifest_fetches)

    # ---- lifecycle and scripts -----------------------------------------------------------

    def _begin_start(self) -> None:
        """First manifest of the session: STARTING, then start scripts (and cron) — once."""
        if self.scripts_started or self._stopping:
            return
        self.scripts_started = True
        self.set_lifecycle(State.STARTING)
        if self.manifest and self.manifest.get("directory"):
            self.runner.directory = self.manifest["directory"]
        self.scripts = ConfigSession(self.runner, phase_specs(self.manifest, ()))
        self._start_task = asyncio.create_task(self._run_scripts(self.scripts), name="start-scripts")
        self._start_watch = asyncio.create_task(self._start_outcome(), name="start-outcome")

    async def _run_scripts(self, scripts: ConfigSession) -> None:
        try:
            await scripts.start()
        except Exception as e:  # a broken runner must not wedge the lifecycle
            self.log.error("start scripts failed to run", error=str(e))
            scripts.start_state = "failed"
            scripts.start_done.set()

    def _start_state(self) -> str:
        """pending | running | done | failed | timed_out over config and manifest start scripts."""
        states = [self.local_scripts.start_state]
        if self.scripts is not None:
            states.append(self.scripts.start_state)
        for s in ("pending", "running", "timed_out", "failed"):
            if s in states:
                return s
        return "done"

    async def _start_outcome(self) -> None:
        assert self.scripts is not None
        await self.local_scripts.start_done.wait()
        await self.scripts.start_done.wait()
        # Logs before the lifecycle change (USER-PAIN #2); the runner flushed each script already.
        with contextlib.suppress(Exception):
            await self.parts.sink.flush(timeout=5.0)
        self.set_lifecycle(START_LIFECYCLE.get(self._start_state(), State.START_ERROR))

    def _scripts_status(self) -> dict[str, Any]:
        view = ConfigSession(self.runner, phase_specs(self.manifest, self.parts.settings.scripts))
        st = view.status()
        st["start_scripts"] = self._start_state()
        st["stop_scripts"] = self._stop_scripts.stop_state if self._stop_scripts is not None else "pending"
        return st

    def _on_script_result(self, result: ScriptResult) -> None:
        self.results.append(result)
        if result.script_id in self._manifest_script_ids:
            self._completions.append(timing(result))
            self._cwake.set()

    async def _lifecycle_loop(self, client: RpcClient) -> None:
        while True:
            nxt = self.reporter.next_unsent()
            if nxt is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            state, at = nxt
            req = agent_pb2.UpdateLifecycleRequest(lifecycle=agent_pb2.Lifecycle(state=state.value,  # type: ignore[arg-type]
                                                                                 changed_at=_stamp(at)))
            await client.call("UpdateLifecycle", req, agent_pb2.Lifecycle)
            self.reporter.ack(state)
            self._progress.set()

    async def _completions_loop(self, client: RpcClient) -> None:
        while True:
            if not self._completions:
                self._cwake.clear()
                await self._cwake.wait()
                continue
            t = self._completions[0]
            try:
                await client.call("ScriptCompleted", agent_pb2.WorkspaceAgentScriptCompletedRequest(timing=t),
                                  agent_pb2.WorkspaceAgentScriptCompletedResponse)
            except FeatureUnavailable:
                self._completions.clear()
                self._progress.set()
                return
            except Exception as e:
                # coderd refused this one (e.g. unknown script): report, drop it, go on.
                from ..rpc.drpc import RpcError

                if not isinstance(e, RpcError):
                    raise
                self.log.warning("ScriptCompleted refused", error=e.message)
            self._completions.popleft()
            self._progress.set()

    async def _settle(self, timeout: float, unconnected: float) -> None:
        """Wait until lifecycle and completions are acknowledged and logs flushed, at most ``timeout``
        (``unconnected`` while no connection is up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        soft = loop.time() + unconnected
        with contextlib.suppress(Exception):
            await self.parts.sink.flush(timeout=timeout)
        while not (self.reporter.settled and not self._completions):
            left = deadline - loop.time()
            if self.loop.client is None:
                left = min(left, soft - loop.time())
            if left <= 0:
                self.log.warning("final lifecycle not acknowledged before shutdown",
                                 pending=[s.api_name for s in self.reporter.lifecycle.pending])
                return
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(left, 0.25))

    # ---- metadata, app health, stats -----------------------------------------------------

    async def _metadata_loop(self, client: RpcClient) -> None:
        m = self.manifest or {}
        sched = metadata.MetadataScheduler(m.get("metadata", []), tick=self.tick)
        if not sched.keys:
            return
        clock = self.parts.clock
        running: set[asyncio.Task[None]] = set()

        finished = asyncio.Event()

        async def one(key: str) -> None:
            k = sched.keys[key]
            result = await metadata.collect(k.script, sched.timeout_for(key), self.parts.child_env,
                                            m.get("directory"), self.parts.priority)
            sched.finished(key, result)
            finished.set()

        last_report = float("-inf")
        try:
            while True:
                finished.clear()
                now = clock.monotonic()
                for key in sched.due(now):
                    sched.started(key, now)
                    task = asyncio.create_task(one(key))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if sched.has_new and now - last_report >= self.tick:
                    results = sched.take_report()
                    last_report = now
                    try:
                        await client.call("BatchUpdateMetadata", metadata.report_request(results),
                                          agent_pb2.BatchUpdateMetadataResponse, timeout=30.0)
                    except BaseException:
                        sched.put_back(results)
                        raise
                    continue  # time passed during the call: look again before sleeping
                # sleep until a key is due or a result arrives (then at most one report per tick)
                now = clock.monotonic()
                wakes = [last_report + self.tick] if sched.has_new else []
                nd = sched.next_due()
                if nd is not None:
                    wakes.append(nd)
                timeout = max(0.0, min(wakes) - now) if wakes else None
                if sched.has_new:
                    await asyncio.sleep(timeout or 0.0)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await finished.wait()
        finally:
            for task in list(running):
                task.cancel()

    async def _app_health_loop(self, client: RpcClient) -> None:
        tracker = apphealth.AppHealthTracker((self.manifest or {}).get("apps", []))
        if not tracker.health:
            return
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        http = self._http

        changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def prober(p: apphealth.Probe) -> None:
            while True:
                tracker.result(p, await apphealth.probe(http, p))
                if tracker.pending:
                    changed.set()
                await asyncio.sleep(p.interval)

        async with asyncio.TaskGroup() as tg:
            for p in tracker.probes:
                tg.create_task(prober(p))
            last_report = float("-inf")
            while True:
                # woken by a change only (the probes keep their own intervals); one report per tick
                changed.clear()
                if not tracker.pending:
                    await changed.wait()
                    continue
                wait = last_report + self.tick - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                report = tracker.take_report()
                last_report = loop.time()
                if report:
                    try:
                        await client.call("BatchUpdateAppHealths", apphealth.report_request(report),
                                          agent_pb2.BatchUpdateAppHealthResponse)
                    except FeatureUnavailable:
                        raise
                    except Exception as e:  # the Go agent only logs these
                        tracker.put_back()
                        self.log.warning("app health report failed", error=str(e))

    async def _stats_loop(self, client: RpcClient) -> None:
        resp = await client.call("UpdateStats", agent_pb2.UpdateStatsRequest(), agent_pb2.UpdateStatsResponse)
        interval = _interval(resp.report_interval)
        while True:
            await asyncio.sleep(interval)
            resp = await client.call("UpdateStats", agent_pb2.UpdateStatsRequest(stats=self._stats()),
                                     agent_pb2.UpdateStatsResponse)
            if resp.HasField("report_interval"):
                interval = _interval(resp.report_interval)

    def _stats(self) -> agent_pb2.Stats:
        # No tailnet here: no peer connections to count, so zeros and -1 latency are the truth.
        return agent_pb2.Stats(connection_count=0, connection_median_latency_ms=-1.0)


def _interval(d: duration_pb2.Duration) -> float:
    seconds = d.seconds + d.nanos / 1e9
    return max(seconds, 0.1) if seconds > 0 else 30.0


SessionFactory = Callable[["AgentParts"], AgentSession]
