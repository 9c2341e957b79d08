"""Run one script and ship its output.

Rules:

* argv and environment from :mod:`.childenv` (as the Go agent: the login shell from passwd,
  ``#!`` scripts written to ``CODER_SCRIPT_DATA_DIR`` and executed directly, its environment
  rules, ``CODER_SCRIPT_DATA_DIR``/``CODER_SCRIPT_BIN_DIR``), in the configured directory (else
  ``$HOME``), stdin empty, in a new session (its own process group).
* The source's local file is also reachable as ``<log dir>/coder-script-<log_source_id>.log``
  (a symlink; Go's name for it), unless the script has its own ``log_path``.
* stdout lines go out at level info, stderr lines at error (Go), split by
  :class:`~coder_agent.logs.text.LineSplitter`; raw output is also appended to ``log_path``
  when set (``~`` and ``$VARS`` expanded, relative to the log dir).
* A timeout kills the whole process group: SIGTERM, then SIGKILL after ``kill_grace``. So does
  :meth:`ScriptRunner.kill_all` (shutdown) and cancellation (SIGKILL at once). A script that
  exits normally keeps its background children (``code-server &`` is the usual start script);
  if they still hold its output pipes ``pipes_grace`` seconds later, the run is PIPES_LEFT_OPEN
  and a warning line says so.
* The source's logs are flushed (bounded by ``flush_timeout``) before the result is returned, so
  a completion report never overtakes the lines it concludes. With the log pipeline this is
  ``finish()``: past Coder's log limit, the run's last lines (after a "… N bytes not sent" line)
  are sent before the result too.
* Exit code: the process's; 128+N when killed by signal N; 255 on timeout or when it could not
  start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ..childenv import ChildEnv, command_argv, login_user, script_file_name
from ..clock import Clock, SystemClock
from ..log import get_logger
from ..logs.text import LineSplitter
from ..logsink import LogSink, LogSource
from ..procprio import ChildPriority
from .spec import ScriptResult, ScriptSpec, Stage, Status

__all__ = ["ScriptRunner", "kill_group", "resolve_directory", "user_shell", "wait_exit"]


def user_shell(env: Mapping[str, str]) -> str:
    """The shell commands run under: the login shell from passwd (see :mod:`.childenv`)."""
    return login_user(env).shell


def resolve_directory(directory: str, env: Mapping[str, str]) -> str:
    home = env.get("HOME") or str(Path.home())
    d = os.path.expandvars(os.path.expanduser(directory.strip())) if directory.strip() else ""
    if d and not os.path.isabs(d):
        d = os.path.join(home, d)
    if d and os.path.isdir(d):
        return d
    return home if os.path.isdir(home) else "/"


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the process itself to exit (not for its pipes, unlike asyncio's ``Process.wait``)."""
    rc = proc.poll()
    if rc is not None:
        return rc
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return await asyncio.to_thread(proc.wait)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, exited)
    try:
        await fut
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def kill_group(pgid: int, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline and _group_alive(pgid):  # noqa: ASYNC110 - no event says "group gone"
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class ScriptRunner:
    def __init__(
        self,
        sink: LogSink,
        *,
        directory: str = "",
        child_env: Mapping[str, str] | None = None,
        log_dir: Path,
        data_dir: Path,
        clock: Clock | None = None,
        kill_grace: float = 5.0,
        pipes_grace: float = 10.0,
        flush_timeout: float = 10.0,
        priority: ChildPriority | None = None,
        env: ChildEnv | None = None,
    ) -> None:
        self.sink = sink
        self.directory = directory
        # ``child_env`` alone (tests): agent-level variables over the daemon's environment.
        self.env = env or ChildEnv(dict(child_env or {}), data_dir)
        self.log_dir = log_dir
        self.data_dir = data_dir
        self.clock = clock or SystemClock()
        self.kill_grace = kill_grace
        self.pipes_grace = pipes_grace
        self.flush_timeout = flush_timeout
        self.priority = priority or ChildPriority()
        self.running: dict[str, int] = {}  # script id -> process group id
        self.results: list[ScriptResult] = []
        self.last: dict[str, ScriptResult] = {}
        self._log = get_logger("scripts")

    def _env(self, spec: ScriptSpec) -> tuple[dict[str, str], Path]:
        script_dir = self.env.root / spec.log_source_id
        for d in (script_dir, self.env.bin_dir):
            with contextlib.suppress(OSError):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.env.build(script_data_dir=script_dir), script_dir

    def _tee(self, spec: ScriptSpec) -> IO[bytes] | None:
        if not spec.log_path.strip():
            return None
        p = Path(os.path.expandvars(os.path.expanduser(spec.log_path.strip())))
        if not p.is_absolute():
            p = self.log_dir / p
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            return open(p, "ab")
        except OSError as e:
            self._log.warning("cannot open the script's log_path", script=spec.display_name, path=str(p),
                              error=str(e))
            return None

    def _go_log_name(self, spec: ScriptSpec, log_file: Path) -> None:
        """``coder-script-<log_source_id>.log`` in the log dir, where the Go agent writes a script's
        output (Coder's troubleshooting docs point there): a link to the source's file."""
        link = self.log_dir / f"coder-script-{spec.log_source_id}.log"
        target = log_file.name if log_file.parent == self.log_dir else str(log_file)
        with contextlib.suppress(OSError):
            if os.readlink(link) == target:
                return
        try:
            tmp = link.with_name(f".{link.name}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(target, tmp)
            os.replace(tmp, link)
        except OSError as e:
            self._log.warning("cannot link the script's log under Go's name", path=str(link), error=str(e))

    def _write(self, src: LogSource, lines: list[str], level: str) -> None:
        if not lines:
            return
        wl = getattr(self.sink, "write_lines", None)
        if wl is not None:
            wl(src, lines, level)
        else:
            for ln in lines:
                self.sink.write(src, ln, level)

    async def _pump(self, fd: int, src: LogSource, level: str, tee: IO[bytes] | None) -> None:
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream),
                                                    os.fdopen(fd, "rb", 0))
        split = LineSplitter()
        try:
            while True:
                data = await stream.read(64 * 1024)
                if not data:
                    break
                if tee is not None:
                    with contextlib.suppress(OSError):
                        tee.write(data)
                self._write(src, split.feed(data), level)
        finally:
            transport.close()
            self._write(src, split.close(), level)

    def _spawn(self, argv: list[str], cwd: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int, int]:
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        try:
            proc = subprocess.Popen(self.priority.wrap(argv), stdin=subprocess.DEVNULL,
                                    stdout=w_out, stderr=w_err, cwd=cwd, env=self.priority.env(env),
                                    start_new_session=True)
        except BaseException:
            for fd in (r_out, r_err):
                os.close(fd)
            raise
        finally:
            os.close(w_out)
            os.close(w_err)
        return proc, r_out, r_err

    async def run(self, spec: ScriptSpec, stage: Stage) -> ScriptResult:
        """Run ``spec`` once; never raises for the script's own failures."""
        src = self.sink.source(spec.display_name, spec.icon, spec.log_source_id)
        log_file = getattr(self.sink, "file_of", lambda s: None)(src)
        if log_file is not None and not spec.log_path.strip():
            self._go_log_name(spec, log_file)
        env, script_dir = self._env(spec)
        shell = login_user(env).shell
        cwd = resolve_directory(self.directory, env)
        tee = self._tee(spec)
        start = self.clock.now()
        log = self._log.bind(script=spec.display_name, stage=stage.name.lower())
        status, code = Status.OK, 0
        try:
            try:
                argv = command_argv(spec.script, shell, script_dir, script_file_name(spec.id))
                proc, r_out, r_err = self._spawn(argv, cwd, env)
            except OSError as e:
                self.sink.write(src, f"coder-agent: could not start the script with {shell}: {e}", "error")
                log.warning("script could not start", shell=shell, error=str(e))
                return self._done(spec, stage, Status.EXIT_FAILURE, 255, start, log_file)
            pgid = proc.pid
            self.running[spec.id] = pgid
            log.info("script started", pid=proc.pid, shell=shell, cwd=cwd)
            pumps = [asyncio.create_task(self._pump(r_out, src, "info", tee)),
                     asyncio.create_task(self._pump(r_err, src, "error", tee))]
            try:
                try:
                    async with asyncio.timeout(spec.timeout if spec.timeout > 0 else None):
                        rc = await wait_exit(proc)
                    code = rc if rc >= 0 else 128 - rc
                    status = Status.OK if rc == 0 else Status.EXIT_FAILURE
                except TimeoutError:
                    self.sink.write(src, f"coder-agent: script timed out after {spec.timeout:g}s; "
                                         "stopping it and its processes", "error")
                    log.warning("script timed out; killing its process group", timeout=spec.timeout)
                    await kill_group(pgid, self.kill_grace)
                    await wait_exit(proc)
                    status, code = Status.TIMED_OUT, 255
                grace = self.pipes_grace if status is not Status.TIMED_OUT else 1.0
                _, pending = await asyncio.wait(pumps, timeout=grace)
                if pending:
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    self.sink.write(src, "coder-agent: WARNING: the script exited but processes it started still "
                                         "hold its output open; their further output is not captured. Redirect "
                                         "background processes' output (e.g. `cmd > file 2>&1 &`).", "warn")
                    if status is Status.OK:
                        status = Status.PIPES_LEFT_OPEN
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                for task in pumps:
                    task.cancel()
                with contextlib.suppress(Exception):
                    proc.wait(1.0)
                raise
            finally:
                self.running.pop(spec.id, None)
        finally:
            if tee is not None:
                tee.close()
        result = self._done(spec, stage, status, code, start, log_file)
        finish = getattr(self.sink, "finish", None)  # the pipeline also sends an overflowed run's last lines
        with contextlib.suppress(Exception):
            await (finish or self.sink.flush)(src, timeout=self.flush_timeout)
        log.info("script finished", status=status.name.lower(), exit_code=code,
                 seconds=round(result.duration, 3))
        return result

    async def skip(self, spec: ScriptSpec, stage: Stage, reason: str) -> ScriptResult:
        """Do not run ``spec`` (a script-order dependency did not succeed): say why on its log
        source, as Go does ("Skipping script: …"), and return a SKIPPED result (exit code -1)."""
        src = self.sink.source(spec.display_name, spec.icon, spec.log_source_id)
        self.sink.write(src, f"Skipping script: {reason}.", "warn")
        self._log.warning("skipping script", script=spec.display_name, reason=reason)
        start = self.clock.now()
        result = self._done(spec, stage, Status.SKIPPED, -1, start, None)
        with contextlib.suppress(Exception):
            await self.sink.flush(src, timeout=self.flush_timeout)
        return result

    def _done(self, spec: ScriptSpec, stage: Stage, status: Status, code: int, start: Any,
              log_file: Path | None) -> ScriptResult:
        r = ScriptResult(spec.id, spec.display_name, stage, status, code, start, self.clock.now(),
                         str(log_file) if log_file else "")
        self.results.append(r)
        del self.results[:-200]
        self.last[spec.id] = r
        return r

    async def kill_all(self, grace: float | None = None) -> None:
        """Stop every running script's process group (SIGTERM, then SIGKILL after the grace)."""
        g = self.kill_grace if grace is None else grace
        await asyncio.gather(*(kill_group(pgid, g) for pgid in list(self.running.values())))
