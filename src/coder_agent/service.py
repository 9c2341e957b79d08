"""Named services under one supervisor.

Rules:

* A service is an object with ``name`` and ``async run()``; it may have ``async drain()``
  for the graceful phase (stop taking new work, flush what it holds).
* :class:`ServiceGroup` runs them in one asyncio TaskGroup. A service that crashes is logged
  and restarted with the daemon's backoff — one bad service never takes the daemon down —
  except a :class:`~coder_agent.errors.ConfigError`, which stops the group (exit 78).
* ``stop(timeout)`` is two-phase: drain every service concurrently within ``timeout``
  (graceful), then cancel whatever still runs (hard).
* Each service reports health through its :class:`Health` (shown by ``/api/v0/status``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .clock import Clock, SystemClock
from .errors import ConfigError
from .log import get_logger
from .retry import Backoff

__all__ = ["FnService", "Health", "Service", "ServiceGroup"]

HealthState = Literal["starting", "ok", "degraded", "unavailable", "failed", "stopped"]


@dataclass
class Health:
    state: HealthState = "starting"
    message: str = ""
    since: dt.datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def set(self, state: HealthState, message: str = "", now: dt.datetime | None = None) -> None:
        if state != self.state or message != self.message:
            self.since = now or dt.datetime.now(dt.UTC)
        self.state = state
        self.message = message

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "message": self.message,
            "since": self.since.isoformat() if self.since else None,
            **({"details": self.details} if self.details else {}),
        }


class Service(Protocol):
    name: str
    health: Health

    async def run(self) -> None: ...


class FnService:
    """A service from a coroutine function (for small loops)."""

    def __init__(
        self, name: str, fn: Callable[[], Awaitable[None]], drain: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.name = name
        self.health = Health()
        self._fn = fn
        self._drain = drain

    async def run(self) -> None:
        self.health.set("ok")
        await self._fn()

    async def drain(self) -> None:
        if self._drain is not None:
            await self._drain()


class ServiceGroup:
    def __init__(self, name: str, clock: Clock | None = None) -> None:
        self.name = name
        self.clock = clock or SystemClock()
        self.services: dict[str, Service] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._log = get_logger("supervisor", group=name)
        self._fatal: BaseException | None = None
        self._done = asyncio.Event()

    def add(self, service: Service) -> None:
        if service.name in self.services:
            raise ValueError(f"duplicate service {service.name}")
        self.services[service.name] = service

    def health(self) -> dict[str, Any]:
        return {name: s.health.as_dict() for name, s in self.services.items()}

    async def _keep_running(self, svc: Service) -> None:
        backoff = Backoff()
        while True:
            started = self.clock.monotonic()
            try:
                await svc.run()
                svc.health.set("stopped")
                return
            except asyncio.CancelledError:
                svc.health.set("stopped")
                raise
            except ConfigError as e:
                svc.health.set("failed", str(e))
                self._fatal = e
                self._done.set()
                return
            except Exception as e:
                svc.health.set("failed", f"{type(e).__name__}: {e}")
                self._log.exception("service crashed; restarting", service=svc.name)
                if self.clock.monotonic() - started > 60:
                    backoff.reset()
                await self.clock.sleep(backoff.next_delay())

    async def start(self) -> None:
        """Start every added service in the background."""
        for name, svc in self.services.items():
            if name not in self._tasks:
                self._tasks[name] = asyncio.create_task(self._keep_running(svc), name=f"{self.name}:{name}")

    async def wait_fatal(self) -> BaseException:
        """Wait until a service stops the group with a configuration error; return it."""
        await self._done.wait()
        assert self._fatal is not None
        return self._fatal

    async def stop(self, timeout: float) -> None:
        """Drain every service (within ``timeout``; 0 skips draining), then cancel them."""
        if not self._tasks:
            return
        drains = [d() for s in self.services.values()
                  if timeout > 0 and (d := getattr(s, "drain", None)) is not None]
        if drains:
            try:
                async with asyncio.timeout(timeout):
                    results = await asyncio.gather(*drains, return_exceptions=True)
                for r in results:
                    if isinstance(r, Exception):
                        self._log.warning("drain failed", error=str(r))
            except TimeoutError:
                self._log.warning("graceful stop timed out; cancelling", timeout=timeout)
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
