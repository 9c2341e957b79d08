"""The devcontainers service: follows the engine, keeps the list, runs recreate and delete jobs.

Rules:

* Engine calls run in a small thread pool, the event stream in its own thread; the event loop
  never blocks on the engine. After the first listing, only engine events trigger re-scans
  (coalesced); there is no periodic listing. A broken stream reconnects and lists again.
* Config files and discovery follow inotify (:mod:`.watch`): a written ``devcontainer.json``
  re-stats the configs (the ``dirty`` flag), a new or removed project file, ``.gitignore`` or
  repository runs discovery again; nothing runs while nothing changes. Where inotify is off
  (``devcontainers.inotify``), unavailable or exhausted (``devcontainers.watch_limit``, the
  kernel's limit) both poll every ``devcontainers.poll_interval`` seconds, said once in the log
  and in ``status`` (``watch``: ``inotify`` | ``poll``, ``watch_reason``). A manifest change
  re-reads the configs at once (:meth:`DevcontainerManager.manifest_changed`).
* The engine missing or refusing us is not a failure of the agent: health says
  ``unavailable`` with the reason, ``warnings`` carry it, and the service reconnects with
  backoff until the engine answers again.
* Every change of the rendered list bumps a generation number; watchers wait on it.
* Recreate and delete go through :mod:`.status`: refused transitions are 409s. Recreate runs
  in the background (the Dev Containers CLI when installed, else the SDK from inspect data);
  its output goes to the devcontainer's log source.
* Discovery autostart (``devcontainers.discovery_autostart``, off by default as in Go): a
  discovered project (not one the manifest declares) whose ``devcontainer.json`` sets
  ``customizations.coder.autoStart`` (:mod:`.devconfig`) is brought up with ``devcontainer up``
  (no ``--remove-existing-container``: an existing container is reused, as Go's
  ``CreateDevcontainer``) once per project for the life of the process, not on every re-scan.
  A config that cannot be read yet (mid-write) is read again on the next pass.
* Ids are looked up in our own table; nothing from a request reaches a command line except a
  workspace folder and config path that we found ourselves. No shell anywhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..config import Settings
from ..log import Collapse, get_logger
from ..logsink import LogSink, LogSource, source_id_for
from ..procprio import ChildPriority
from ..retry import Backoff, RetryPolicy
from ..service import Health
from ..state import StateStore
from . import cliparse, devconfig, discovery
from .engine import Engine, EngineUnavailable
from .model import Container, Devcontainer, Runtime, Source, assemble, container_from_inspect, port_warnings
from .status import TRANSITIONAL, Event, Refused, Status
from .watch import Change, DirWatch, WatchUnavailable

__all__ = ["CLI_MISSING", "DevcontainerManager", "NotFound", "find_cli"]

T = TypeVar("T")
DEBOUNCE = 0.02
ENGINE_RETRY = RetryPolicy(initial=0.25, cap=10.0, factor=2.0, reset_after=5.0)
STATE_KEY = "devcontainers"
CLI_MISSING = ("the Dev Containers CLI (devcontainer) is not installed: recreate rebuilds the container "
               "from its current configuration through the Docker engine, and lifecycle commands "
               "(onCreate, postCreate, postStart...) do not run")
_STRIP_ENV = ("CODER_AGENT_", "CODER_WORKSPACE_AGENT_")


class NotFound(Exception):
    pass


def find_cli(setting: str) -> str | None:
    """The Dev Containers CLI: the configured path/name, else ``devcontainer`` on PATH."""
    want = setting.strip() or "devcontainer"
    if "/" in want:
        return want if os.path.isfile(want) and os.access(want, os.X_OK) else None
    return shutil.which(want)


class DevcontainerManager:
    name = "devcontainers"

    def __init__(self, settings: Settings, store: StateStore, log_sink: LogSink,
                 manifest: Callable[[], dict[str, Any] | None] = lambda: None,
                 child_env: Mapping[str, str] | None = None, priority: ChildPriority | None = None) -> None:
        self.settings = settings
        self.store = store
        self.sink = log_sink
        self.manifest = manifest
        self.child_env = child_env if child_env is not None else {}
        self.priority = priority or ChildPriority()
        self.health = Health()
        self.log = get_logger("devcontainers")
        self.engine = Engine()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="docker")
        self.containers: list[Container] = []
        self.devcontainers: list[Devcontainer] = []
        self.runtime: dict[str, Runtime] = {}
        self.engine_error: str | None = None
        self._dup_warnings: list[str] = []
        self._discovered: list[tuple[str, str]] = []
        self._discovery_warnings: list[str] = []
        self._mtimes: dict[str, float | None] = {}
        self._ids: dict[tuple[str, str], str] = {}
        self._jobs: set[asyncio.Task[cliparse.UpResult]] = set()
        self._first = asyncio.Event()
        self._kick = asyncio.Event()
        self._changed = asyncio.Condition()
        self.generation = 0
        self._rendered = ""
        self._scan_lock = asyncio.Lock()
        self._collapse = Collapse(self.log)
        self.watch_mode = "starting"  # inotify | poll
        self.watch_reason = ""
        self._files_kick = asyncio.Event()
        self._watched_config_dirs: set[str] = set()
        self._pending = Change()
        self._autostart_seen: set[str] = set()  # discovered workspace folders already handled
        self._autostart_errors: dict[str, str] = {}  # folder -> the config error already logged
        stored = store.get(STATE_KEY, {}) or {}
        for entry in stored.get("ids", []) if isinstance(stored, dict) else []:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self._ids[(str(entry["workspace_folder"]), str(entry["config_path"]))] = str(entry["id"])

    # helpers ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args))

    @property
    def cli(self) -> str | None:
        return find_cli(getattr(self.settings, "devcontainers_cli", ""))

    def workspace_dir(self) -> Path:
        return Path(self.settings.directory or os.environ.get("HOME") or "/").expanduser()

    def _manifest_sources(self) -> list[Source]:
        m = self.manifest() or {}
        out: list[Source] = []
        for d in m.get("devcontainers") or []:
            if not isinstance(d, dict) or not d.get("workspace_folder"):
                continue
            out.append(Source(str(d["workspace_folder"]), str(d.get("config_path") or ""), "manifest",
                              id=str(d.get("id") or ""), name=str(d.get("name") or "")))
        return out

    def warnings(self) -> list[str]:
        out: list[str] = []
        if self.engine_error:
            out.append(f"Docker engine unavailable: {self.engine_error}")
        if self.devcontainers and self.cli is None:
            out.append(CLI_MISSING)
        out.extend(self._discovery_warnings)
        out.extend(self._dup_warnings)
        out.extend(port_warnings(self.containers))
        return out

    def response(self, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """codersdk.WorkspaceAgentListContainersResponse (containers filtered by ``labels``)."""
        cs = self.containers
        if labels:
            cs = [c for c in cs if all(c.labels.get(k) == v for k, v in labels.items())]
        return {
            "containers": [dict(c.api) for c in cs],
            "devcontainers": [d.api() for d in self.devcontainers],
            "warnings": self.warnings(),
        }

    def status(self) -> dict[str, Any]:
        return {
            "state": "unavailable" if self.engine_error else ("ok" if self._first.is_set() else "starting"),
            "reason": self.engine_error or "",
            "engine": self.engine.version,
            "cli": self.cli or "",
            "containers": len(self.containers),
            "devcontainers": len(self.devcontainers),
            "watch": self.watch_mode,
            "watch_reason": self.watch_reason,
        }

    def find(self, dc_id: str) -> Devcontainer:
        for d in self.devcontainers:
            if d.id == dc_id:
                return d
        raise NotFound(dc_id)

    async def wait_first_scan(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._first.wait()

    async def wait_change(self, seen: int, timeout: float | None = None) -> int:
        """Wait until the generation passes ``seen``; returns the new generation."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(lambda: self.generation > seen)
        return self.generation

    # assembling and publishing ---------------------------------------------------------

    def _stat_configs(self) -> bool:
        paths = {d.config_path for d in self.devcontainers} | {c for _, c in self._discovered}
        paths |= {s.config_path for s in self._manifest_sources() if s.config_path}
        new: dict[str, float | None] = {}
        for p in paths:
            try:
                new[p] = os.stat(p).st_mtime
            except OSError:
                new[p] = None
        changed = new != self._mtimes
        self._mtimes = new
        return changed

    async def _publish(self) -> None:
        """Re-assemble the devcontainers and wake watchers when the rendered list changed."""
        sources = self._manifest_sources() + [Source(f, c, "discovery") for f, c in self._discovered]
        self.devcontainers, self._dup_warnings = assemble(
            self.containers, sources, self.runtime, self._mtimes, exists=os.path.isfile, ids=self._ids)
        self._remember_ids()
        if self.watch_mode == "inotify" and not self._config_dirs() <= self._watched_config_dirs:
            self._pending.config = True  # a container names a config elsewhere: watch its directory too
            self._files_kick.set()
        rendered = json.dumps(self.response(), sort_keys=True)
        if rendered != self._rendered:
            self._rendered = rendered
            async with self._changed:
                self.generation += 1
                self._changed.notify_all()

    def _remember_ids(self) -> None:
        changed = False
        for d in self.devcontainers:
            key = (d.workspace_folder, d.config_path)
            if d.origin != "manifest" and self._ids.get(key) != d.id:
                self._ids[key] = d.id
                changed = True
        if changed:
            doc = {"ids": [{"workspace_folder": k[0], "config_path": k[1], "id": v} for k, v in self._ids.items()]}
            try:
                self.store.put(STATE_KEY, doc)
            except OSError as e:
                self.log.warning("cannot save devcontainer ids", error=str(e))

    async def scan(self) -> None:
        """Re-read the engine's containers (raises EngineUnavailable) and publish."""
        async with self._scan_lock:
            data = await self._call(self.engine.list_inspect)
            self.containers = sorted((container_from_inspect(d) for d in data), key=lambda c: c.name)
            self._stat_configs()
            await self._publish()
        self._first.set()

    async def _set_unavailable(self, reason: str) -> None:
        self.engine_error = reason
        self.health.set("unavailable", reason)
        self._collapse.error("Docker engine unavailable; devcontainers paused", reason, reason=reason)
        self.containers = []
        self._stat_configs()
        await self._publish()
        self._first.set()

    def kick(self) -> None:
        self._kick.set()

    def manifest_changed(self) -> None:
        """The manifest (its devcontainers) changed: re-read the configs now."""
        self._pending.config = True
        self._files_kick.set()

    # loops -----------------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._files_loop(), name="devcontainers:files")]
        try:
            await self._engine_loop()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._call(self.engine.close)

    async def drain(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)

    async def _engine_loop(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(ENGINE_RETRY)
        while True:
            try:
                await self._call(self.engine.connect)
            except EngineUnavailable as e:
                await self._set_unavailable(str(e))
                await asyncio.sleep(backoff.next_delay())
                continue
            ended = asyncio.Event()
            reader = threading.Thread(target=self._read_events, args=(loop, ended), daemon=True,
                                      name="docker-events")
            reader.start()
            try:
                await self.scan()
                if self.engine_error:
                    self._collapse.ok("Docker engine available again", engine=self.engine.version)
                else:
                    self.log.info("following the Docker engine", engine=self.engine.version)
                self.engine_error = None
                self.health.set("ok")
                await self._publish()
                backoff.success(loop.time())
                await self._follow(ended)
            except EngineUnavailable as e:
                await self._set_unavailable(str(e))
            finally:
                await self._call(self.engine.close_events)
            await asyncio.sleep(backoff.next_delay())

    def _read_events(self, loop: asyncio.AbstractEventLoop, ended: asyncio.Event) -> None:
        try:
            for ev in self.engine.events():
                cid = str(ev.get("id") or (ev.get("Actor") or {}).get("ID") or "")
                loop.call_soon_threadsafe(self._on_event, cid)
        except EngineUnavailable:
            pass
        except Exception as e:  # never let the thread die silently
            self.log.warning("docker event reader stopped", error=str(e))
        finally:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ended.set)

    def _on_event(self, container_id: str) -> None:
        if container_id:
            self.engine.forget(container_id)
        self._kick.set()

    async def _follow(self, ended: asyncio.Event) -> None:
        """Re-scan on events (coalesced) until the stream ends; no timer."""
        while not ended.is_set():
            kick = asyncio.create_task(self._kick.wait())
            end = asyncio.create_task(ended.wait())
            try:
                await asyncio.wait({kick, end}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                kick.cancel()
                end.cancel()
            if ended.is_set():
                # the stream broke: is the engine gone, or was it only the stream?
                await self._call(self.engine.connect)
                return
            await asyncio.sleep(DEBOUNCE)
            self._kick.clear()
            try:
                await self.scan()
            except EngineUnavailable:
                raise
            except Exception as e:  # an engine API error: say it once, keep following
                self._collapse.error("container scan failed", str(e), error=str(e))

    # config files and discovery --------------------------------------------------------

    def _on_watch(self, change: Change) -> None:
        if not (change.config or change.discovery or change.new_dirs or change.overflow):
            return  # an ordinary file in a project changed: nothing to do, not even a wake-up of the loop
        p = self._pending
        p.config |= change.config
        p.discovery |= change.discovery
        p.overflow |= change.overflow
        p.new_dirs.extend(change.new_dirs)
        self._files_kick.set()

    def _fall_back(self, watch: DirWatch | None, reason: str) -> None:
        if watch is not None:
            watch.close()
        self.watch_mode, self.watch_reason = "poll", reason
        self.log.warning("devcontainer files: polling", every=self.settings.devcontainers_poll_interval,
                         reason=reason)

    def _config_dirs(self) -> set[str]:
        """The directories of every config we know (discovered, manifest, container labels)."""
        paths = {c for _, c in self._discovered} | {s.config_path for s in self._manifest_sources() if s.config_path}
        paths |= {d.config_path for d in self.devcontainers if d.config_path}
        return {os.path.dirname(p) for p in paths if os.path.isdir(os.path.dirname(p))}

    async def _files_loop(self) -> None:
        """Discovery and the configs' ``dirty`` flag: on inotify events, else a slow poll."""
        watch: DirWatch | None = None
        if not self.settings.devcontainers_inotify:
            self._fall_back(None, "inotify is off (devcontainers.inotify)")
        else:
            watch = DirWatch(self._on_watch, self.settings.devcontainers_watch_limit)
            try:
                watch.start()
                self.watch_mode = "inotify"
            except WatchUnavailable as e:
                self._fall_back(None, str(e))
                watch = None
        discover = self.settings.devcontainers_discovery
        last_manifest: Any = None
        first = True
        while True:
            pending, self._pending = self._pending, Change()
            polled = watch is None
            if watch is not None:
                try:
                    for d in pending.new_dirs:
                        watch.watch_tree(d)
                except WatchUnavailable as e:
                    self._fall_back(watch, str(e))
                    watch = None
            changed = False
            if discover and (first or polled or pending.discovery):
                try:
                    found = await asyncio.to_thread(discovery.scan, self.workspace_dir())
                except Exception as e:  # discovery is best effort
                    found = discovery.Found(self._discovered, [f"devcontainer discovery failed: {e}"])
                if (found.projects, found.warnings) != (self._discovered, self._discovery_warnings):
                    self._discovered, self._discovery_warnings = found.projects, found.warnings
                    changed = True
                if watch is not None:
                    try:
                        watch.watch(sorted(found.dirs))
                    except WatchUnavailable as e:
                        self._fall_back(watch, str(e))
                        watch = None
            if watch is not None:
                try:
                    self._watched_config_dirs = self._config_dirs()
                    watch.watch(sorted(self._watched_config_dirs))
                except WatchUnavailable as e:
                    self._fall_back(watch, str(e))
                    watch = None
            m = [s.__dict__ for s in self._manifest_sources()]
            if self._stat_configs() or m != last_manifest or changed:
                last_manifest = m
                await self._publish()
            if discover:
                await self._on_discovered()
            first = False
            if watch is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.devcontainers_poll_interval):
                        await self._files_kick.wait()
            else:
                await self._files_kick.wait()
                await asyncio.sleep(DEBOUNCE)  # a checkout or an editor's save is a burst
            self._files_kick.clear()

    async def _on_discovered(self) -> None:
        """Each newly discovered project, once per process: said in the log and, when
        ``discovery_autostart`` is on and its config asks for it, brought up (Go's discovery
        autostart). Projects the manifest declares are left to the start-up path."""
        enabled = self.settings.devcontainers_discovery_autostart
        declared = {s.workspace_folder.rstrip("/") or "/" for s in self._manifest_sources()}
        for d in list(self.devcontainers):
            folder = d.workspace_folder
            if d.origin != "discovery" or folder in self._autostart_seen or folder in declared:
                continue
            wanted = False
            if enabled:
                try:
                    text = await asyncio.to_thread(Path(d.config_path).read_text, encoding="utf-8")
                    wanted = devconfig.autostart(text)
                except (OSError, ValueError) as e:  # not there yet, or mid-write: read again next pass
                    if self._autostart_errors.get(folder) != str(e):
                        self._autostart_errors[folder] = str(e)
                        self.log.warning("cannot read devcontainer config for autostart", devcontainer=d.name,
                                         config=d.config_path, error=str(e))
                    continue
            self._autostart_seen.add(folder)
            self._autostart_errors.pop(folder, None)
            if wanted and self.cli is None:
                self.log.warning("devcontainer asks for autostart, but the Dev Containers CLI is not installed",
                                 devcontainer=d.name, workspace_folder=folder)
            elif wanted:
                try:
                    await self.recreate(d.id, remove_existing=False)  # starting at once; `up` in the background
                except (NotFound, Refused) as e:  # gone, or a recreate/delete already runs
                    self.log.info("devcontainer autostart skipped", devcontainer=d.name, reason=str(e))
            self.log.info("devcontainer project discovered", devcontainer=d.name, workspace_folder=folder,
                          autostart=wanted if enabled else "off")

    async def rediscover(self) -> None:
        """Walk the workspace now (tests, and after a recreate of a discovered project)."""
        self._discovered, self._discovery_warnings = await asyncio.to_thread(
            discovery.discover, self.workspace_dir())
        self._stat_configs()
        await self._publish()

    # recreate --------------------------------------------------------------------------

    def log_source(self, d: Devcontainer) -> LogSource:
        return self.sink.source(f"devcontainer {d.name}", icon="/icon/container.svg",
                                id=source_id_for(f"devcontainer:{d.id}"))

    async def recreate(self, dc_id: str, remove_existing: bool = True) -> Devcontainer:
        """Start a recreate; raises NotFound or Refused. Returns the devcontainer (starting).
        ``remove_existing=False`` is a plain ``devcontainer up`` (an existing container is reused)."""
        d = self.find(dc_id)
        rt = self.runtime.setdefault(d.id, Runtime(status=d.status))
        rt.apply(Event.RECREATE)  # Refused → 409
        rt.error = ""
        rt.hide_container = True
        old = d.container.id if d.container else ""
        await self._publish()
        task = asyncio.create_task(self._recreate_job(d, old, remove_existing),
                                   name=f"devcontainers:recreate:{d.id}")
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return self.find(dc_id)

    async def up(self, dc_id: str) -> cliparse.UpResult:
        """Bring a (manifest) devcontainer up, as Go's ``createDevcontainer`` at start: the recreate
        path with a plain ``devcontainer up`` (an existing container is reused, not removed, as Go
        does at start), awaited; returns its result. Raises NotFound or Refused."""
        await self.recreate(dc_id, remove_existing=False)
        job = next((t for t in self._jobs if t.get_name() == f"devcontainers:recreate:{dc_id}"), None)
        if job is None:
            return cliparse.UpResult(False, "", "the recreate did not start")
        result: cliparse.UpResult = await asyncio.shield(job)
        return result

    async def _recreate_job(self, d: Devcontainer, old_container: str,
                            remove_existing: bool = True) -> cliparse.UpResult:
        rt = self.runtime[d.id]
        src = self.log_source(d)
        cli = self.cli
        try:
            if cli is not None:
                result = await self._run_cli(cli, d, src, remove_existing)
            else:
                result = await self._recreate_sdk(d, old_container, src)
        except asyncio.CancelledError:
            rt.hide_container = False
            with contextlib.suppress(Refused):
                rt.apply(Event.RECREATE_FAILED)
            rt.error = "recreate cancelled: the agent is stopping"
            raise
        except Exception as e:
            self.log.exception("recreate failed", devcontainer=d.name)
            result = cliparse.UpResult(False, "", f"recreate failed: {e}")
        rt.hide_container = False
        with contextlib.suppress(EngineUnavailable):
            await self.scan()
        if result.ok:
            rt.apply(Event.RECREATE_DONE)
            rt.error = result.error
            rt.failed_at = None
            self.sink.write(src, f"devcontainer {d.name} is running (container {result.container_id[:12]})"
                            + (f"; {result.error}" if result.error else ""),
                            "warn" if result.error else "info")
        else:
            rt.apply(Event.RECREATE_FAILED)
            rt.error = result.error
            rt.failed_at = dt.datetime.now(dt.UTC)
            self.sink.write(src, f"recreate of devcontainer {d.name} failed: {result.error}", "error")
        self.log.info("recreate finished", devcontainer=d.name, ok=result.ok, error=result.error)
        await self._publish()
        return result

    def _cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIP_ENV)}
        env.update({k: v for k, v in self.child_env.items() if not k.startswith(_STRIP_ENV)})
        return self.priority.env(env)

    async def _run_cli(self, cli: str, d: Devcontainer, src: LogSource,
                       remove_existing: bool = True) -> cliparse.UpResult:
        argv = [cli, "up", "--log-format", "json", "--workspace-folder", d.workspace_folder]
        if d.config_path:
            argv += ["--config", d.config_path]
        if remove_existing:
            argv.append("--remove-existing-container")
        verb = "Recreating" if remove_existing else "Starting"
        self.sink.write(src, f"{verb} devcontainer {d.name}: {' '.join(argv[1:])}")
        proc = await asyncio.create_subprocess_exec(
            *self.priority.wrap(argv), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._cli_env(), start_new_session=True)
        assert proc.stdout is not None and proc.stderr is not None
        stdout: list[str] = []
        last_error = ""

        async def read_err() -> None:
            nonlocal last_error
            assert proc.stderr is not None
            async for raw in proc.stderr:
                for rec in cliparse.parse_log_line(raw.decode(errors="replace")):
                    if rec.user_visible:
                        self.sink.write(src, rec.text, rec.level)
                        if rec.level == "error":
                            last_error = rec.text
                    else:
                        self.log.debug("devcontainer cli", line=rec.text)

        async def read_out() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                stdout.append(line)
                if not line.startswith("{"):
                    for t in cliparse.clean(line):
                        self.sink.write(src, t)

        try:
            await asyncio.gather(read_err(), read_out())
            rc = await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        return cliparse.parse_result(stdout, rc, last_error)

    async def _recreate_sdk(self, d: Devcontainer, old_container: str, src: LogSource) -> cliparse.UpResult:
        self.sink.write(src, "The Dev Containers CLI is not installed (set CODER_AGENT_DEVCONTAINERS_CLI or put "
                             "devcontainer on PATH); recreating the container from its inspect data through "
                             "the Docker engine.", "warn")
        if not old_container:
            return cliparse.UpResult(False, "", "the Dev Containers CLI is not installed and there is no "
                                                "container to recreate from")
        new_id, name = await self._call(self.engine.recreate_from_inspect, old_container)
        self.sink.write(src, f"Recreated container {name or new_id[:12]} ({new_id[:12]}) from {old_container[:12]}: "
                             "same image, labels, mounts, environment, command and ports.")
        self.sink.write(src, "Lifecycle commands (onCreateCommand, postCreateCommand, postStartCommand...) did "
                             "NOT run, and changes to devcontainer.json or its Dockerfile were NOT applied.", "warn")
        return cliparse.UpResult(True, new_id, "")

    # delete ----------------------------------------------------------------------------

    async def delete(self, dc_id: str) -> None:
        """Stop, then remove the container; raises NotFound, Refused, or RuntimeError (→ 500)."""
        d = self.find(dc_id)
        rt = self.runtime.setdefault(d.id, Runtime(status=d.status))
        rt.apply(Event.DELETE)
        rt.error = ""
        await self._publish()
        cid = d.container.id if d.container else ""
        try:
            if cid:
                await self._call(self.engine.stop, cid)
            rt.apply(Event.STOP_DONE)
            await self._publish()
            if cid:
                await self._call(self.engine.remove, cid)
            rt.apply(Event.REMOVE_DONE)
        except Exception as e:
            rt.apply(Event.DELETE_FAILED)
            rt.error = f"delete failed: {e}"
            rt.failed_at = dt.datetime.now(dt.UTC)
            await self._publish()
            raise RuntimeError(rt.error) from None
        self.runtime.pop(d.id, None)
        with contextlib.suppress(EngineUnavailable):
            await self.scan()
        await self._publish()

    @staticmethod
    def transitional(d: Devcontainer) -> bool:
        return d.status in TRANSITIONAL

    def status_of(self, dc_id: str) -> Status | None:
        try:
            return self.find(dc_id).status
        except NotFound:
            return None
