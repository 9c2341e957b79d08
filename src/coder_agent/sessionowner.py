"""The one owner of the agent session's life: start, stop, start over (reinit).

An interface module (ARCHITECTURE.md). The composition root makes one :class:`SessionOwner`;
capabilities plug into it through the typed hooks it declares:

* :meth:`SessionOwner.drive` — the :class:`SessionDriver` that *is* the session (the agent RPC
  session: connect, manifest, start scripts, lifecycle, stop scripts; the config-scripts session
  when there is no RPC). The last driver installed wins.
* :meth:`SessionOwner.on_new_session` — called before a session starts over (the log pipeline
  registers its sources again; the manifest feed forgets the old manifest).
* :meth:`SessionOwner.reinitialize` — what the reinit watcher calls on a prebuild claim.

States (``phase`` in ``GET /api/v0/status``; ``generation`` counts started sessions)::

    state           event                         action                                 next
    starting        start()                       generation += 1; run the driver        running
    running         reinitialize(reason)          driver.stop() within shutdown_timeout; reinitializing
                                                  cancel what is left of the run
    reinitializing  (stop done)                   fresh Lifecycle; on_new_session hooks;
                                                  refresh the token; redial now;
                                                  generation += 1; run the driver        running
    running         shutdown(budget)              driver.stop() within budget; cancel    stopping
    reinitializing  shutdown(budget)              waits for the reinit's stop, then      stopping
                                                  stops the new session if one started
    stopping        reinitialize(reason)          nothing (no reinit once a stop began)  stopping

Rules:

* One start/stop at a time (a lock): a stop during a reinit waits for the reinit's stop.
* The driver's ``stop`` runs at most once per started session; an error or timeout in it is
  logged, and the session's run is cancelled all the same.
* Each session gets a fresh :class:`~coder_agent.lifecycle.Lifecycle` (:meth:`fresh_lifecycle`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from .errors import CoderAgentError, NotAuthenticated
from .lifecycle import Lifecycle, State
from .log import get_logger
from .tasks import reap

__all__ = ["SessionDriver", "SessionOwner"]


class SessionDriver(Protocol):
    async def run(self) -> None:
        """The session: returns (or is cancelled) when it is over."""

    async def stop(self) -> None:
        """Its graceful end (stop scripts, final lifecycle, log flush); the owner bounds the time."""


class SessionOwner:
    def __init__(
        self,
        *,
        shutdown_timeout: float,
        refresh_token: Callable[[], Awaitable[object]],
        retry_now: Callable[[], None],
        scrub: Callable[[str], str],
    ) -> None:
        self.shutdown_timeout = shutdown_timeout
        self._refresh_token = refresh_token
        self._retry_now = retry_now
        self._scrub = scrub
        self.log = get_logger("daemon")
        self.phase = "starting"  # starting | running | reinitializing | stopping
        self.generation = 0  # how many sessions were started (1 + reinits)
        self.lifecycle = Lifecycle()
        self._driver: SessionDriver | None = None
        self._new_session: list[Callable[[], None]] = []
        self._run: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()  # one session start/stop at a time
        self._stopping = False
        self._live = False  # started and not yet stopped: the driver's stop runs once per session

    # hooks -------------------------------------------------------------------------------

    def drive(self, driver: SessionDriver) -> None:
        """Make ``driver`` the session (replacing any earlier one; before :meth:`start`)."""
        self._driver = driver

    def on_new_session(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` before a session starts over after a reinit."""
        self._new_session.append(fn)

    def fresh_lifecycle(self) -> Lifecycle:
        """The lifecycle for a session being created: the current one while untouched, else a new one."""
        if self.lifecycle.state is not State.CREATED:
            self.lifecycle = Lifecycle()
        return self.lifecycle

    # transitions -------------------------------------------------------------------------

    def start(self) -> None:
        self.generation += 1
        self._live = True
        if self._driver is not None:
            self._run = asyncio.ensure_future(self._driver.run())
        if not self._stopping:
            self.phase = "running"

    async def _stop(self, budget: float) -> None:
        """The session's graceful shutdown (within ``budget``), then cancel what is left of it."""
        live, self._live = self._live, False
        if live and self._driver is not None:
            try:
                async with asyncio.timeout(budget):
                    await self._driver.stop()
            except TimeoutError:
                self.log.warning("session shutdown timed out", timeout=budget)
            except Exception:
                self.log.exception("session shutdown failed")
        run, self._run = self._run, None
        await reap(run)

    async def reinitialize(self, reason: str) -> None:
        """Start the agent session over in place (prebuild claim): shut the session down
        gracefully, re-authenticate, start a fresh session. Does nothing once a stop began."""
        async with self._lock:
            if self._stopping:
                return
            self.phase = "reinitializing"
            self.log.info("agent received instruction to reinitialize", reason=reason)
            try:
                await self._stop(self.shutdown_timeout)
                if self._stopping:
                    return
                self.lifecycle = Lifecycle()
                for fn in self._new_session:
                    fn()
                try:
                    await self._refresh_token()  # instance identity: a new token; token file: re-read
                except NotAuthenticated:  # the token provider has said why
                    self.log.debug("waiting for authentication; the session will retry")
                except CoderAgentError as e:
                    # The new session's connection loop retries with its own backoff.
                    self.log.warning("re-authentication failed; the session will retry", error=self._scrub(str(e)))
                self._retry_now()  # the agent RPC loop redials now
                self.start()
                self.log.info("agent reinitialized", reason=reason, session=self.generation)
            finally:
                if not self._stopping:
                    self.phase = "running"

    def stopping(self) -> None:
        """A stop began: no reinit from now on."""
        self._stopping = True
        self.phase = "stopping"

    async def shutdown(self, budget: float) -> None:
        """The graceful stop of the session (after :meth:`stopping`); a reinit in progress finishes first."""
        async with self._lock:
            await self._stop(budget)

    async def cancel(self) -> None:
        """Hard stop: cancel whatever is left of the session's run."""
        run, self._run = self._run, None
        await reap(run)
