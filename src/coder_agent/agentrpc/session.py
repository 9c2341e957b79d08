"""The agent session: one manifest-driven life of the agent, over as many connections as it takes.

Rules (coder-agent-rpc.md §5.1–§5.12, §6.13–§6.16):

* Per connection: GetManifest → UpdateStartup (``v``-semver version, absolute directory) →
  the "stop" routines (metadata, app health, stats), plus the "remain" routines (lifecycle
  reporter, ScriptCompleted queue, connection reports, log transport) that keep running during
  shutdown. An error in any routine ends the connection and the loop redials;
  ``FeatureUnavailable`` only ends that routine.
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
import datetime as dt
import os
import re
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2

from .. import __version__
from ..childenv import command_argv, login_user, script_file_name
from ..errors import FeatureUnavailable
from ..lifecycle import State
from ..log import get_logger
from ..rpc.drpc import RpcError
from ..rpc.proto import agent_pb2
from ..scripts import ConfigSession, ScriptResult, Stage, Status
from ..scripts.runner import resolve_directory
from ..scripts.session import START_LIFECYCLE, STOP_LIFECYCLE
from ..tasks import reap, settle
from . import apphealth, metadata, resources, secrets
from .connection import ConnectionLoop, RpcClient
from .logs import RpcAppStatusTransport, RpcLogTransport
from .manifest import convert
from .reporter import LifecycleReporter
from .scripts import ReportingRunner, make_runner, phase_specs, timing

if TYPE_CHECKING:
    from .parts import AgentParts

__all__ = ["AgentSession", "reported_version", "semver_version", "subsystems_from_env"]

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


_SEMVER_CORE = re.compile(r"^v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)(?:\+.*)?$")


def reported_version(ours: str, server: str | None) -> str:
    """The version for UpdateStartup: the server's semver (so coderd and its dashboard, which
    compare them, never call this agent outdated) with build metadata saying what runs:
    ``v2.20.1+coder-agent.0.1.0``. Build metadata is ignored by semver comparisons. Without a
    usable server version, our own version with the same metadata."""
    meta = "coder-agent." + (re.sub(r"[^0-9A-Za-z.-]+", "-", ours).strip(".-") or "unknown")
    m = _SEMVER_CORE.match((server or "").strip())
    core = f"v{m.group(1)}" if m else semver_version(ours)
    return f"{core}+{meta}"


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
        ping_interval: float = 30.0,
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
        self._server_version: str | None = None
        self._dc = parts.settings.devcontainers_enable  # manifest devcontainers' placeholder scripts dropped
        # Stats.metrics as the Go agent reports them (agentscripts and agent/metrics.go).
        self._scripts_executed = {"true": 0, "false": 0}
        self._startup_seconds: tuple[float, bool] | None = None
        self._started_mono = parts.clock.monotonic()
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
        if self.parts.network is not None:  # disconnect{} while the connection is still up
            try:
                async with asyncio.timeout(self.final_wait):
                    await self.parts.network.close()
            except TimeoutError:
                self.log.warning("tailnet stop timed out", timeout=self.final_wait)
            except Exception as e:
                self.log.warning("tailnet did not stop cleanly", error=str(e))
        await reap(self._stoppable, self._start_watch, self._start_task, self._local_task)
        # One stop phase for every known script (manifest's, if any, and ours): it stops what still
        # runs, then runs the run_on_stop scripts in parallel within the budget, then flushes logs.
        stop = ConfigSession(self.runner, phase_specs(self.manifest, self.parts.settings.scripts,
                                                      devcontainers=self._dc))
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
                tg.create_task(self._connections_loop(client))
                if not self._stopping:
                    self._stoppable = tg.create_task(self._stop_routines(client))
        finally:
            self.logs.detach(client)
            self.app_status.detach(client)

    async def _stop_routines(self, client: RpcClient) -> None:
        raw = await self._fetch_manifest(client)
        self._begin_start()
        async with asyncio.TaskGroup() as tg:
            if self.parts.network is not None:
                tg.create_task(self.parts.network.serve(client, raw))
            tg.create_task(self._optional(self._metadata_loop(client)))
            tg.create_task(self._optional(self._app_health_loop(client)))
            tg.create_task(self._optional(self._stats_loop(client)))
            tg.create_task(self._optional(self._resources_loop(client)))

    @staticmethod
    async def _optional(coro: Any) -> None:
        with contextlib.suppress(FeatureUnavailable):
            await coro

    async def _fetch_manifest(self, client: RpcClient) -> agent_pb2.Manifest:
        raw = await client.call("GetManifest", agent_pb2.GetManifestRequest(), agent_pb2.Manifest)
        converted = convert(raw, home=self._home)
        m = converted.manifest
        self.manifest_fetches += 1
        subsystems = subsystems_from_env({"CODER_AGENT_SUBSYSTEM": self.parts.settings.subsystem})
        if self._server_version is None:
            self._server_version = await self._fetch_server_version()
        startup = agent_pb2.Startup(version=reported_version(__version__, self._server_version),
                                    expanded_directory=m["directory"], subsystems=subsystems)
        await client.call("UpdateStartup", agent_pb2.UpdateStartupRequest(startup=startup), agent_pb2.Startup)
        self.manifest = m
        self._manifest_script_ids = {s["id"] for s in m["scripts"] if s["id"]}
        for sec in converted.secrets:  # scripts may print them; the daemon's own log never does
            self.parts.redactor.add(bytes(sec.get("value", b"")).decode("utf-8", "replace"))
        self.parts.command_env.set_manifest(m, converted.secrets)
        for path, error in secrets.write_secret_files(converted.secrets):
            self.log.warning("cannot write a manifest secret file", path=path, error=error)
        set_agent = getattr(self.parts.sink, "set_agent", None)  # the log pipeline: its state is per agent
        if callable(set_agent):
            set_agent(m["agent_id"])
        from ..manifest import Manifest  # pydantic: loaded with the first manifest, not at start-up

        self.parts.manifests.publish(Manifest.model_validate(m))
        self.log.info("manifest received", agent=m["agent_name"], scripts=len(m["scripts"]), apps=len(m["apps"]),
                      metadata=len(m["metadata"]), fetch=self.manifest_fetches)
        return raw

    async def _fetch_server_version(self) -> str:
        """coderd's version (``GET /api/v2/buildinfo``), "" when it cannot be had quickly."""
        try:
            async with asyncio.timeout(10.0):
                info = await self.parts.client.buildinfo()
        except Exception as e:  # an old or odd coderd: report our own version instead
            self.log.info("coderd's version unknown; reporting ours", error=str(e))
            return ""
        return str(info.get("version") or "")

    # ---- lifecycle and scripts -----------------------------------------------------------

    def _begin_start(self) -> None:
        """First manifest of the session: STARTING, then start scripts (and cron) — once."""
        if self.scripts_started or self._stopping:
            return
        self.scripts_started = True
        self._started_mono = self.parts.clock.monotonic()
        self.set_lifecycle(State.STARTING)
        if self.manifest and self.manifest.get("directory"):
            self.runner.directory = self.manifest["directory"]
        self.scripts = ConfigSession(self.runner, phase_specs(self.manifest, (), devcontainers=self._dc))
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
        devcontainers_ok = await self._devcontainers_up()
        # Logs before the lifecycle change (USER-PAIN #2); the runner flushed each script already.
        with contextlib.suppress(Exception):
            await self.parts.sink.flush(timeout=5.0)
        state = self._start_state()
        if state == "done" and not devcontainers_ok:
            state = "failed"
        self._startup_seconds = (self.parts.clock.monotonic() - self._started_mono, state == "done")
        self.set_lifecycle(START_LIFECYCLE.get(state, State.START_ERROR))

    async def _devcontainers_up(self) -> bool:
        """After the start scripts, bring each manifest devcontainer up (Go's ``createDevcontainer``)
        when devcontainers are enabled; each result is a ScriptCompleted for its placeholder script
        (same id). False if any failed (the start phase then ends in START_ERROR, as Go)."""
        m = self.manifest or {}
        wanted = [d for d in m.get("devcontainers", []) if d.get("id")]
        mgr = self.parts.devcontainers
        if not (self._dc and wanted and mgr is not None):
            return True
        from ..devcontainers.cliparse import UpResult

        placeholders = {s["id"]: s for s in m.get("scripts", []) if s.get("id")}
        with contextlib.suppress(Exception):  # the engine connected (or said why not) ...
            await mgr.wait_first_scan(30.0)
        with contextlib.suppress(Exception):  # ... and the manifest is known now; a problem shows below
            await mgr.scan()
        all_ok = True
        for d in wanted:
            start = self.parts.clock.now()
            try:
                result = await mgr.up(d["id"])
            except Exception as e:  # not found (no workspace folder), refused, engine unavailable
                result = UpResult(False, "", f"{type(e).__name__}: {e}")
            all_ok = all_ok and result.ok
            self.log.info("manifest devcontainer up", devcontainer=d.get("name") or d["id"], ok=result.ok,
                          error=result.error or None)
            script = placeholders.get(d["id"])
            if script is not None:
                self._completions.append(timing(ScriptResult(
                    script["id"], script.get("display_name", ""), Stage.START,
                    Status.OK if result.ok else Status.EXIT_FAILURE, 0 if result.ok else 1, start,
                    self.parts.clock.now())))
                self._cwake.set()
        return all_ok

    def _scripts_status(self) -> dict[str, Any]:
        view = ConfigSession(self.runner, phase_specs(self.manifest, self.parts.settings.scripts,
                                                      devcontainers=self._dc))
        st = view.status()
        st["start_scripts"] = self._start_state()
        st["stop_scripts"] = self._stop_scripts.stop_state if self._stop_scripts is not None else "pending"
        return st

    def _on_script_result(self, result: ScriptResult) -> None:
        self.results.append(result)
        if result.status is not Status.SKIPPED:  # Go counts runs, and a skipped script never ran
            self._scripts_executed["true" if result.status is Status.OK else "false"] += 1
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

        command_env = self.parts.command_env
        finished = asyncio.Event()

        async def one(key: str) -> None:
            k = sched.keys[key]
            env = command_env.build()
            try:
                argv = command_argv(k.script, login_user(env).shell, command_env.root / "metadata",
                                    script_file_name(f"metadata/{key}"))
            except OSError as e:
                sched.finished(key, metadata.Result("", f"write script: {e}", dt.datetime.now(dt.UTC)))
                finished.set()
                return
            # As Go's CreateCommand: the workspace directory, else (empty or not there yet) home.
            cwd = resolve_directory(m.get("directory") or self.parts.settings.directory, env)
            result = await metadata.collect(argv, sched.timeout_for(key), env, cwd, self.parts.priority)
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

    async def _resources_loop(self, client: RpcClient) -> None:
        """Resource monitoring (:mod:`.resources`); an older coderd without it is FeatureUnavailable."""
        resp = await client.call("GetResourcesMonitoringConfiguration",
                                 agent_pb2.GetResourcesMonitoringConfigurationRequest(),
                                 agent_pb2.GetResourcesMonitoringConfigurationResponse)
        config = resources.MonitorConfig.from_response(resp)
        if not config.enabled:
            return
        monitor = resources.ResourceMonitor(config)
        said: dict[str, str] = {}
        while True:
            await asyncio.sleep(config.interval)
            monitor.sample(dt.datetime.now(dt.UTC), resources.host_memory, resources.volume_usage)
            if monitor.errors != said:
                said = dict(monitor.errors)
                if said:
                    self.log.warning("resource usage could not be sampled", errors=said)
            push = monitor.due()
            if push is None:
                continue
            try:
                await client.call("PushResourcesMonitoringUsage", push,
                                  agent_pb2.PushResourcesMonitoringUsageResponse)
            except FeatureUnavailable:
                raise
            except RpcError as e:  # the Go agent only logs these (e.g. a volume coderd does not know)
                self.log.warning("resource usage push refused", error=e.message)

    def _stats(self) -> agent_pb2.Stats:
        # Tunnel traffic from the network (Go's connstats); no disco pings, so the latency is -1.
        network = self.parts.network
        t = network.stats() if network is not None else None
        if t is None:
            stats = agent_pb2.Stats(connection_count=0, connection_median_latency_ms=-1.0, metrics=self._metrics())
        else:
            stats = agent_pb2.Stats(connection_count=t.connections,
                                    connections_by_proto={"TCP": t.connections} if t.connections else {},
                                    connection_median_latency_ms=-1.0, rx_packets=t.rx_packets, rx_bytes=t.rx_bytes,
                                    tx_packets=t.tx_packets, tx_bytes=t.tx_bytes, metrics=self._metrics())
        self._add_session_counts(stats)
        return stats

    def _add_session_counts(self, stats: agent_pb2.Stats) -> None:
        """Open SSH / web-terminal sessions by app (``session_counts``, 2.11) and in the deprecated
        fields 8–11 older coderds read: a used workspace is not autostopped."""
        if self.parts.session_counts is None:
            return
        counts = {k: v for k, v in self.parts.session_counts.session_counts().items() if v > 0}
        for app, n in counts.items():
            stats.session_counts[app] = n
        stats.session_count_ssh = counts.get("ssh", 0)
        stats.session_count_vscode = counts.get("vscode", 0)
        stats.session_count_jetbrains = counts.get("jetbrains", 0)
        stats.session_count_reconnecting_pty = counts.get("reconnecting_pty", 0)

    async def _connections_loop(self, client: RpcClient) -> None:
        """ReportConnection for each queued event (:mod:`coder_agent.connreports`), in order. One
        not sent (the connection failed) stays queued for the next connection; one coderd refuses
        is logged and dropped; a coderd without the method: logged once, every report dropped."""
        reports = self.parts.connections
        if reports is None or reports.disabled:
            return
        if client.minor < 4:  # ReportConnection came with API 2.4
            self.log.info("coderd takes no connection reports (API before 2.4): dropping them")
            reports.disable()
            return
        while True:
            ev = await reports.wait()
            C = agent_pb2.Connection
            try:
                cid = uuid.UUID(ev.id).bytes
            except ValueError:  # never from our servers; must not stall the queue
                self.log.warning("connection report with a bad id dropped", id=ev.id)
                reports.sent(ev)
                continue
            conn = C(id=cid, action=C.CONNECT if ev.connect else C.DISCONNECT,
                     type=C.Type.Name(ev.type), timestamp=_stamp(ev.at), ip=ev.ip, status_code=ev.status_code,
                     app_name=ev.app)
            if ev.reason is not None:
                conn.reason = ev.reason
            try:
                await client.call("ReportConnection", agent_pb2.ReportConnectionRequest(connection=conn),
                                  empty_pb2.Empty)
            except FeatureUnavailable:
                self.log.info("coderd takes no connection reports: dropping them")
                reports.disable()
                return
            except RpcError as e:
                self.log.warning("connection report refused", error=e.message, action=conn.action)
            reports.sent(ev)

    def _metrics(self) -> list[agent_pb2.Stats.Metric]:
        """The Go agent's own metrics, by its names: scripts run (counter, by success) and, once the
        start scripts finished, how long they took (gauge, by success)."""
        M = agent_pb2.Stats.Metric
        out = [M(name="agent_scripts_executed_total", type=M.COUNTER, value=float(n),
                 labels=[M.Label(name="success", value=ok)])
               for ok, n in self._scripts_executed.items()]
        if self._startup_seconds is not None:
            seconds, ok = self._startup_seconds
            out.append(M(name="coderd_agentstats_startup_script_seconds", type=M.GAUGE, value=seconds,
                         labels=[M.Label(name="success", value="true" if ok else "false")]))
        return out


def _interval(d: duration_pb2.Duration) -> float:
    seconds = d.seconds + d.nanos / 1e9
    return max(seconds, 0.1) if seconds > 0 else 30.0


SessionFactory = Callable[["AgentParts"], AgentSession]
