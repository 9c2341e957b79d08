"""The composition root: builds the process-lifetime parts and hands each capability what it uses.

Rules:

* Process-lifetime parts (local API, metrics, state store, the capability services) start once;
  the agent *session* (connection, manifest, scripts) can be shut down and started again in
  place (prebuild reinit) without the process exiting.
* READY=1 goes to systemd once the local API listens; WATCHDOG=1 comes from the event loop
  itself, so a stalled loop stops the pings and systemd restarts us.
* The agent session has one owner, :class:`~coder_agent.sessionowner.SessionOwner` (its state
  table: start, stop, reinit). Reinit (prebuild claim, :mod:`coder_agent.reinit`) keeps the
  process, the local API and metrics up (status ``phase`` is "reinitializing").
* Stop is two-phase: the first SIGTERM/SIGINT runs the graceful stop (SSH and web-terminal
  sessions hang up, ≤ 5 s, as Go's; session shutdown: stop scripts, final lifecycle, log flush;
  then services drain) within ``shutdown_timeout``; a second signal cancels everything at once
  (and ends the process within HARD_STOP_GRACE even if something is stuck). SIGHUP retries the
  control-plane connection now.
* :meth:`Daemon.compose` is the only place that knows every capability: each is
  ``setup(<its parts>) -> list[Service]`` with typed parameters (settings, store, clock, the
  route registrar, the status registry, the log sink, the manifest feed, the session owner...),
  called before the local API starts. No capability imports this module (ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
from aiohttp import web

from . import __version__, procprio
from .childenv import ChildEnv
from .clock import Clock, SystemClock
from .coderapi.client import CoderClient, FixedToken, TokenFile, TokenProvider
from .config import Settings
from .connreports import ConnectionReports
from .controlplane import ConnState, ControlPlane
from .errors import ConfigError
from .feed import Feed
from .lifecycle import Lifecycle
from .localapi import LocalAPI, json_response
from .log import Redactor, get_logger
from .logsink import LogSink, MemoryLogSink
from .loopstats import wakeups_per_minute
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .netwatch import NetWatch
from .sdnotify import Notifier
from .service import FnService, Service, ServiceGroup
from .sessionowner import SessionDriver, SessionOwner
from .state import StateStore
from .status import StatusRegistry

if TYPE_CHECKING:
    from .agentrpc.parts import AgentParts, AppStatusSwitch, DevcontainerStarter, NetworkRoutine
    from .connreports import SessionCounts
    from .manifest import Manifest
    from .tunnelports import TunnelService

__all__ = ["EXIT_AUTH", "EXIT_CONFIG", "EXIT_OK", "Daemon"]

EXIT_OK = 0
EXIT_CONFIG = 78
EXIT_AUTH = 77  # EX_NOPERM: coderd refused our credentials for auth_exit_after (a restart may bring new ones)
EXIT_HARD_STOP = 130
HARD_STOP_GRACE = 5.0  # a second stop signal ends the process within this, whatever is stuck


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        notifier: Notifier | None = None,
        clock: Clock | None = None,
        redactor: Redactor | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        owns_process: bool = False,
        session_driver: SessionDriver | None = None,
    ) -> None:
        self.settings = settings
        self.owns_process = owns_process  # True when the process exits with us (coder-agent run)
        self.clock = clock or SystemClock()
        self.notifier = notifier or Notifier()
        self.redactor = redactor or Redactor(settings.secret_values())
        self.log = get_logger("daemon")
        self.started_at = self.clock.now()
        self._t0 = time.monotonic()
        self.store = StateStore(settings.state_dir)
        self.metrics = Metrics()
        self.controlplane = ControlPlane(self.clock)
        self.tokens = self._token_provider()
        verify: bool | str = not settings.tls_insecure
        if settings.tls_ca_file is not None:
            verify = str(settings.tls_ca_file)
        self.client = CoderClient(
            settings.url, self.tokens,
            headers={k: v.get_secret_value() for k, v in settings.headers.items()},
            transport=transport, verify=verify, timeout=settings.request_timeout,
        )
        self.local_api = LocalAPI(settings.api_address, metrics=self.metrics)
        self.services = ServiceGroup("daemon", self.clock)
        self._stop = asyncio.Event()
        self._hard = asyncio.Event()
        self._retry_now = asyncio.Event()
        # The parts capabilities receive (compose() hands each one what it uses):
        self.status_keys = StatusRegistry()  # extra keys of /api/v0/status
        self.own_ports: set[int] = set()  # ports the daemon itself listens on (never "listening ports")
        # The log sink every capability writes to: the log pipeline once composed (coder_agent.logs).
        self.log_sink: LogSink = MemoryLogSink()
        self.child_env: dict[str, str] = {}  # agent-level variables of every command we run (GIT_ASKPASS, ...)
        # The whole environment of scripts, metadata commands (and SSH sessions), as the Go agent builds it.
        self.command_env = ChildEnv(self.child_env, settings.script_data_dir or settings.state_dir,
                                    agent_url=settings.url, token=lambda: self.tokens.current,
                                    token_in_env=not settings.no_token_in_env)
        self.child_priority = procprio.from_process()  # oom_score_adj / nice of every child we start
        self.manifests: Feed[Manifest] = Feed("manifest")  # published by the agent session (coder_agent.agentrpc)
        # SSH / web-terminal session events, sent by the agent session as ReportConnection
        self.connection_reports = ConnectionReports(self.clock.now)
        # What the tunnel serves on the agent's fixed ports (1, 22: SSH; 2: reconnecting PTY); filled by compose().
        self.tunnel_services: dict[int, TunnelService] = {}
        # Closed first at a graceful stop, while the agent session still reports (Go: the SSH server
        # shuts down before the stop scripts run): SSH and web-terminal sessions hang up.
        self._terminals: list[Callable[[], Awaitable[None]]] = []
        self.session = SessionOwner(shutdown_timeout=settings.shutdown_timeout, refresh_token=self.tokens.refresh,
                                    retry_now=self._retry_now.set, scrub=self.redactor.scrub)
        self._session_driver = session_driver  # tests: replaces the agent RPC session
        self._metrics_runner: web.AppRunner | None = None
        self.exit_code = EXIT_OK

    @property
    def lifecycle(self) -> Lifecycle:
        return self.session.lifecycle

    @property
    def phase(self) -> str:
        return self.session.phase

    # auth --------------------------------------------------------------------------------

    def _token_provider(self) -> TokenProvider:
        s = self.settings
        if s.auth == "token":
            if s.token is not None and s.token.get_secret_value().strip():
                return FixedToken(s.token.get_secret_value(), self.clock)
            assert s.token_file is not None  # checked at config load
            return TokenFile(s.token_file, self.clock, on_new_token=self.redactor.add)
        return self._instance_identity_provider()

    def _instance_identity_provider(self) -> TokenProvider:
        from .auth import build_provider  # only instance-identity users pay for the import

        return build_provider(self.settings, client=lambda: self.client, clock=self.clock, redactor=self.redactor)

    # signals -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        if self._stop.is_set():
            self.log.warning("second stop signal: stopping at once")
            self._hard.set()
        else:
            self.log.info("stop requested: shutting down gracefully")
            self._stop.set()

    def _network_changed(self) -> None:
        if self.controlplane.state in (ConnState.FAILING, ConnState.CONNECTING) and not self._stop.is_set():
            self.log.info("network changed while coderd is unreachable")
            self.retry_now()

    def exit_with(self, code: int, reason: str) -> None:
        """Stop gracefully and exit with ``code`` (a fault a restart may fix, e.g. refused credentials)."""
        if self._stop.is_set():
            return
        self.log.error("exiting", exit_code=code, reason=reason)
        self.exit_code = code
        self._stop.set()

    def retry_now(self) -> None:
        self.log.info("retrying the control-plane connection now")
        getattr(self.tokens, "retry_now", lambda: None)()  # instance identity: skip its backoff too
        self._retry_now.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.retry_now)

    async def wait_retry_now(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if SIGHUP asks to retry now.

        A SIGHUP that came while the caller was busy (e.g. dialing) is kept and ends the next
        wait at once, so it is never lost.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._retry_now.wait()
        self._retry_now.clear()

    # local API and metrics ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        tokens = self.tokens
        data: dict[str, Any] = {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat(),
            "uptime_seconds": round(time.monotonic() - self._t0, 3),
            "agent_url": self.settings.url,
            "auth": {
                "method": self.settings.auth,
                "token_obtained_at": tokens.obtained_at.isoformat() if tokens.obtained_at else None,
                "last_error": tokens.last_error,
            },
            "control_plane": self.controlplane.as_dict(),
            "lifecycle": self.lifecycle.state.api_name,
            "phase": self.session.phase,
            "session_generation": self.session.generation,
            "services": self.services.health(),
            "local_api": self.local_api.display_address,
            "log_dir": str(self.settings.log_dir),
        }
        for key, value in self.status_keys.collect():
            data[key] = value
        # the event loop's own count of times it woke from sleep in the last 60 s (loopstats.py)
        data["wakeups_per_minute"] = wakeups_per_minute()
        # For leak checks (tests, operators): live asyncio tasks and threads in this process.
        data["debug"] = {"tasks": len(asyncio.all_tasks()), "threads": threading.active_count()}
        return data

    async def _status_handler(self, request: web.Request) -> web.Response:
        return json_response(self.status())

    async def _retry_handler(self, request: web.Request) -> web.Response:
        self.retry_now()
        return json_response({"message": "Retrying the control-plane connection now."}, status=202)

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _start_metrics(self) -> None:
        addr = self.settings.prometheus_address.strip()
        if not addr:
            return
        host, _, port = addr.rpartition(":")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port), reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            self.log.warning("prometheus endpoint unavailable", address=addr, error=str(e))
            return
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.own_ports.add(int(server.sockets[0].getsockname()[1]))
        self._metrics_runner = runner
        self.metrics.gauge_fn("uptime_seconds", lambda: time.monotonic() - self._t0, "seconds since start")

    # services ----------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            await asyncio.Event().wait()
        assert interval is not None
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _stall(self) -> None:
        """TESTS ONLY: block the loop so the systemd watchdog fires."""
        self.log.warning("debug: stalling the event loop", seconds=self.settings.debug_stall_loop)
        time.sleep(self.settings.debug_stall_loop)

    # composition -------------------------------------------------------------------------

    def agent_parts(self, app_status: AppStatusSwitch | None = None, network: NetworkRoutine | None = None,
                    devcontainers: DevcontainerStarter | None = None,
                    session_counts: SessionCounts | None = None) -> AgentParts:
        """What the agent RPC capability uses (also how tests build an AgentSession)."""
        from .agentrpc.parts import AgentParts

        return AgentParts(
            settings=self.settings, clock=self.clock, client=self.client, tokens=self.tokens, redactor=self.redactor,
            controlplane=self.controlplane, owner=self.session, manifests=self.manifests, sink=self.log_sink,
            status=self.status_keys, command_env=self.command_env, priority=self.child_priority,
            wait_retry_now=self.wait_retry_now,
            auth_refused=lambda reason: self.exit_with(EXIT_AUTH, reason), app_status=app_status,
            metrics=self.metrics, network=network, devcontainers=devcontainers,
            connections=self.connection_reports, session_counts=session_counts,
        )

    def compose(self) -> None:
        """Register the daemon's own routes and every capability's; add their services.

        Imports each capability here, so start-up stays lazy. Order matters only where one
        capability offers another something: the log pipeline first (everyone writes to it),
        the app-status service before the agent session (which switches its transport)."""
        from . import agentrpc, appstatus, devcontainers, gitauth, logs, ports, reinit, scripts, tailnet
        from .connreports import SumCounts
        from .rpty import service as rpty
        from .sshd import service as sshd

        s, api, status = self.settings, self.local_api, self.status_keys
        api.route("GET", "/api/v0/status", self._status_handler)
        api.route("POST", "/api/v0/retry", self._retry_handler)
        self.services.add(FnService("watchdog", self._watchdog))
        # netlink open only while coderd is unreachable: a connected daemon never wakes for it
        netwatch = NetWatch(self._network_changed,
                            wanted=lambda: self.controlplane.state in (ConnState.FAILING, ConnState.CONNECTING))
        self.controlplane.on_change(netwatch.poke)
        self.services.add(netwatch)

        pipeline = logs.make_pipeline(settings=s, store=self.store, client=self.client, clock=self.clock,
                                      metrics=self.metrics)
        self.log_sink = pipeline
        self.session.on_new_session(pipeline.new_session)  # log sources are registered again by the new session
        app_status = appstatus.make_service(client=self.client, store=self.store, clock=self.clock,
                                            scrub=self.redactor.scrub, metrics=self.metrics, manifests=self.manifests)
        dc_services = devcontainers.setup(settings=s, store=self.store, sink=pipeline, manifests=self.manifests,
                                          command_env=self.command_env, priority=self.child_priority, routes=api,
                                          status=status)
        from .agentrpc.parts import DevcontainerStarter

        starter = next((svc for svc in dc_services if isinstance(svc, DevcontainerStarter)), None)
        ssh = sshd.make_service(settings=s, command_env=self.command_env, priority=self.child_priority,
                                manifests=self.manifests, own_ports=self.own_ports, reports=self.connection_reports)
        pty = rpty.make_service(settings=s, command_env=self.command_env, priority=self.child_priority,
                                own_ports=self.own_ports, reports=self.connection_reports)
        self.tunnel_services = {1: ssh, 22: ssh, 2: pty}
        network = tailnet.make_network(settings=s, clock=self.clock, metrics=self.metrics, status=status, api=api,
                                       own_ports=self.own_ports, services=self.tunnel_services)
        network.on_engine.append(lambda _engine: ssh.want())  # the tunnel is up: have SSH ready for it
        self._terminals = [ssh.drain, pty.drain]
        groups: list[list[Service]] = [
            logs.setup(pipeline, settings=s, store=self.store, routes=api, status=status),
            scripts.setup(settings=s, clock=self.clock, sink=pipeline, command_env=self.command_env,
                          priority=self.child_priority, owner=self.session, status=status),
            appstatus.setup(app_status, routes=api, status=status),
            gitauth.setup(settings=s, client=self.client, redactor=self.redactor, child_env=self.child_env,
                          command_env=self.command_env,
                          api_address=lambda: api.display_address, routes=api, status=status),
            ports.setup(settings=s, clock=self.clock, metrics=self.metrics, own_ports=self.own_ports, routes=api),
            dc_services,
            sshd.setup(ssh, status=status),
            rpty.setup(pty, status=status),
            # the agent session takes over the session and the control-plane state
            agentrpc.setup(self.agent_parts(app_status=app_status, network=network, devcontainers=starter,
                                            session_counts=SumCounts(ssh, pty)),
                           routes=api),
            reinit.setup(settings=s, client=self.client, store=self.store, clock=self.clock,
                         manifests=self.manifests, reinitialize=self.session.reinitialize,
                         refresh_token=self.tokens.refresh, scrub=self.redactor.scrub, status=status),
        ]
        if self._session_driver is not None:
            self.session.drive(self._session_driver)
        for group in groups:
            for svc in group:
                self.services.add(svc)

    # run ---------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped. Returns the exit code (0, or 78 for a configuration fault)."""
        s = self.settings
        for d in (s.log_dir, s.state_dir):
            try:
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as e:
                raise ConfigError("CODER_AGENT_LOG_DIR" if d == s.log_dir else "CODER_AGENT_STATE_DIR",
                                  f"cannot create {d}: {e.strerror or e}") from None
        self._install_signals()
        self.compose()
        try:
            await self.local_api.start()
        except OSError as e:
            raise ConfigError("CODER_AGENT_API_ADDRESS", f"cannot listen on {s.api_address}: {e.strerror or e}"
                              ) from None
        if self.local_api.unix_path is None and self.local_api.bound_port:
            self.own_ports.add(self.local_api.bound_port)
        await self._start_metrics()
        await self.services.start()
        self.notifier.ready(f"local API at {self.local_api.display_address}")
        self.log.info("coder-agent started", version=__version__, url=s.url, auth=s.auth)
        if self.child_priority.active:
            self.log.info("children's process priority", **self.child_priority.describe())
        if s.debug_stall_loop:
            asyncio.get_running_loop().call_later(1.0, self._stall)

        fatal = asyncio.create_task(self.services.wait_fatal())
        stop = asyncio.create_task(self._stop.wait())
        self.session.start()
        waiters: set[asyncio.Future[Any]] = {fatal, stop}
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if fatal in done:
            err = fatal.result()
            self.log.error("configuration error", error=str(err))
            self.exit_code = EXIT_CONFIG
        else:
            fatal.cancel()
        await self._shutdown()
        return self.exit_code

    async def reinitialize(self, reason: str) -> None:
        """Start the agent session over in place (see :meth:`SessionOwner.reinitialize`)."""
        await self.session.reinitialize(reason)

    async def _shutdown(self) -> None:
        self.session.stopping()
        self.notifier.stopping()
        hard = asyncio.create_task(self._hard.wait())
        graceful = asyncio.create_task(self._graceful())
        done, _ = await asyncio.wait({hard, graceful}, return_when=asyncio.FIRST_COMPLETED)
        if hard in done:
            self.exit_code = self.exit_code or EXIT_HARD_STOP
            if self.owns_process:
                self._exit_anyway(HARD_STOP_GRACE)
            graceful.cancel()
            await asyncio.wait({graceful}, timeout=HARD_STOP_GRACE)
        else:
            hard.cancel()
        await self.session.cancel()
        await self.services.stop(0)
        await self.local_api.stop()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.client.aclose()
        if self.owns_process:
            self._ignore_late_signals()
        self.log.info("coder-agent stopped", exit_code=self.exit_code)

    def _exit_anyway(self, after: float) -> None:
        """The backstop of a hard stop: end the process after ``after`` seconds even if some task
        ignores its cancellation or a worker thread blocks the interpreter's exit."""

        def bail() -> None:
            self.log.error("hard stop: still running; exiting now", after_seconds=after)
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(self.exit_code)

        timer = threading.Timer(after, bail)
        timer.daemon = True
        timer.start()

    def _ignore_late_signals(self) -> None:
        """We are exiting: a stop signal arriving now must not kill the process mid-exit.

        Closing the loop would restore Python's default handlers (SIGINT → KeyboardInterrupt,
        which ends the process by the signal: exit -2); remove ours and ignore instead.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)

    async def _graceful(self) -> None:
        budget = self.settings.shutdown_timeout
        if self._terminals:  # their DISCONNECT reports go out with the session's last words
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(5.0, budget)):
                    await asyncio.gather(*(close() for close in self._terminals), return_exceptions=True)
        await self.session.shutdown(budget)  # a reinit in progress finishes its stop first
        await self.services.stop(min(10.0, budget))
