"""The asyncio layer of app status: local API handlers, the durable queue, the delivery loop.

Rules:

* ``POST /api/v0/app-status`` validates like coderd (400 with a codersdk.Response naming the
  field), queues the status (:mod:`.core` rules), writes the queue to the state dir, and only
  then answers 202 with the id and delivery state. A status accepted once is delivered after a
  restart, and one delivered is never sent again.
* ``GET /api/v0/app-status`` lists the newest status per slug with its delivery state;
  ``?id=ID`` gives one status's outcome and ``&wait=SECONDS`` long-polls until it is no longer
  pending (at most 300 s).
* One delivery loop sends due entries oldest first through an :class:`AppStatusTransport`.
  5xx, 408/425/429, connection errors and timeouts are retried with capped backoff (the entry
  stays first in line); any other 4xx is final: reported in the API, ``status`` and the
  service's health, logged once per distinct error, and the next status proceeds. A status is
  marked delivered (and the queue persisted) only after coderd's 200.
* Persistence is a group commit: concurrent writers share one write that covers them all. A
  failed write is reported (``durable: false`` in the 202) and logged, never fatal.
* Graceful stop (``drain``) sends waiting statuses at once, without debounce, and gives up at
  the first transient failure: what is left is on disk for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from ..clock import Clock
from ..errors import ApiError, CoderAgentError
from ..localapi import json_response, read_json
from ..localapi.server import HTTPResponseError
from ..log import Collapse, get_logger
from ..retry import CONNECT, Backoff, Decision, RetryPolicy, classify
from ..service import Health
from ..state import StateStore
from .core import DEBOUNCE, AppStatusQueue, Invalid, validate
from .transport import AppStatusTransport

__all__ = ["STATE_KEY", "AppStatusService"]

STATE_KEY = "app_status"
MAX_WAIT = 300.0


class AppStatusService:
    name = "appstatus"

    def __init__(
        self,
        transport: AppStatusTransport,
        store: StateStore,
        clock: Clock,
        *,
        app_slugs: Callable[[], Iterable[str] | None] = lambda: None,
        debounce: float = DEBOUNCE,
        policy: RetryPolicy = CONNECT,
        scrub: Callable[[str], str] = lambda s: s,
        metrics: Any = None,
    ) -> None:
        self.transport = transport
        self.store = store
        self.clock = clock
        self.health = Health()
        self.queue = AppStatusQueue(debounce=debounce)
        self._app_slugs = app_slugs
        self._policy = policy
        self._scrub = scrub
        self._metrics = metrics
        self._log = get_logger("appstatus", transport=transport.name)
        self._retrying = Collapse(self._log)
        self._refused = Collapse(self._log)
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._want_gen = 0
        self._done_gen = 0
        self._last_write_ok = True
        self._drain_gave_up = False
        self.last_error = ""
        self._load()

    def set_transport(self, transport: AppStatusTransport) -> None:
        """Switch how statuses reach coderd (the agent RPC sets dRPC on connect, REST on loss).

        Takes effect from the next attempt; an attempt on the wire finishes on the old one.
        """
        self.transport = transport
        self._log = get_logger("appstatus", transport=transport.name)
        self._retrying = Collapse(self._log)
        self._refused = Collapse(self._log)

    # durable state ------------------------------------------------------------------------

    def _load(self) -> None:
        doc = self.store.get(STATE_KEY)
        if doc is None:
            return
        try:
            self.queue.load(doc, self.clock.monotonic())
        except ValueError as e:
            self._log.warning("app-status state unreadable; starting empty", error=str(e))
            return
        if n := self.queue.pending_count():
            self._log.info("app statuses waiting from before the restart", pending=n)

    async def _persist(self) -> bool:
        """Write the queue; returns whether the write that covers this call succeeded."""
        self._want_gen += 1
        mine = self._want_gen
        async with self._lock:
            if self._done_gen >= mine:
                return self._last_write_ok
            gen, doc = self._want_gen, self.queue.to_doc()
            try:
                await asyncio.to_thread(self.store.put, STATE_KEY, doc)
                ok = True
            except OSError as e:
                ok = False
                self._log.warning("cannot write app-status state; statuses may not survive a restart",
                                  error=str(e))
            self._done_gen, self._last_write_ok = gen, ok
            return ok

    def _notify(self) -> None:
        """Wake long-polls: each waits on the event current when it started."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _wall(self) -> str:
        return self.clock.now().isoformat()

    # delivery -----------------------------------------------------------------------------

    async def run(self) -> None:
        self.health.set("ok")
        backoff = Backoff(self._policy)
        while True:
            now = self.clock.monotonic()
            entry = self.queue.next_due(now)
            if entry is None:
                wake_at = self.queue.next_wakeup()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if wake_at is None else max(0.0, wake_at - now)):
                        await self._wake.wait()
                continue
            status = self.queue.begin(entry.id)
            try:
                await self.transport.update_app_status(status)
            except asyncio.CancelledError:
                self.queue.retry(entry.id, "interrupted by shutdown")
                raise
            except Exception as e:
                text = self._scrub(str(e))
                if classify(e) is Decision.FATAL:
                    self._refuse(entry.id, status.app_slug, e, text)
                    await self._persist()
                    self._notify()
                    continue
                self.queue.retry(entry.id, text)
                self.last_error = text
                self._refresh_health()
                self._retrying.error("cannot deliver app status; retrying", text, app_slug=status.app_slug,
                                     error=text)
                self._count("retries")
                self._notify()
                if self.queue.flush:
                    self._drain_gave_up = True
                    return
                await self.clock.sleep(backoff.next_delay())
                continue
            self.queue.delivered(entry.id, self._wall())
            backoff.success(self.clock.monotonic())
            self._retrying.ok("app status delivery recovered")
            self._refresh_health()
            self._count("delivered")
            await self._persist()
            self._notify()

    def _refuse(self, entry_id: str, slug: str, e: Exception, text: str) -> None:
        self.queue.failed(entry_id, text, self._wall())
        self.last_error = f"refused by coderd: {text}"
        self._refresh_health()
        self._count("refused")
        key = f"{slug}|{e.status}|{e.message}|{e.detail}" if isinstance(e, ApiError) else text
        if isinstance(e, CoderAgentError):
            self._refused.error("coderd refused an app status; not retrying", key, app_slug=slug, error=text)
        else:
            self._log.exception("app status delivery failed unexpectedly; not retrying", app_slug=slug)

    def _refresh_health(self) -> None:
        """Degraded while a status is being retried or a slug's newest status was refused."""
        snap = self.queue.snapshot()
        retrying = [s for s in snap if s["delivery"] == "pending" and s["error"]]
        refused = [s for s in snap if s["delivery"] == "failed"]
        if retrying:
            s = retrying[0]
            self.health.set("degraded", f"retrying app status for {s['app_slug']}: {s['error']}")
        elif refused:
            s = refused[0]
            self.health.set("degraded", f"app status for {s['app_slug']} refused by coderd: {s['error']}")
        else:
            self.health.set("ok")

    def _count(self, what: str) -> None:
        if self._metrics is not None:
            self._metrics.inc("app_status_total", help_text="app statuses by outcome", outcome=what)

    async def drain(self) -> None:
        """Send what waits, now; stop at the first transient failure (the rest stays on disk)."""
        self.queue.flush = True
        self._wake.set()
        while self.queue.pending_count() and not self._drain_gave_up:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await changed.wait()

    # local API ----------------------------------------------------------------------------

    async def handle_post(self, request: web.Request) -> web.Response:
        body = await read_json(request, max_bytes=64 << 10)
        slugs = self._app_slugs()
        result = validate(body, slugs)
        if isinstance(result, Invalid):
            raise HTTPResponseError(400, result.message, result.detail,
                                    [{"field": result.field, "detail": result.detail}])
        ticket = self.queue.submit(result, now=self.clock.monotonic(), wall=self._wall(),
                                   new_id=str(uuid.uuid4()))
        durable = await self._persist()
        self._wake.set()
        self._notify()
        self._count("duplicate" if ticket.duplicate else "coalesced" if ticket.coalesced else "accepted")
        return json_response({**result.as_dict(), **ticket.as_dict(), "durable": durable}, 202)

    async def handle_get(self, request: web.Request) -> web.Response:
        entry_id = request.query.get("id")
        if entry_id is None:
            return json_response({"statuses": self.queue.snapshot(), "pending": self.queue.pending_count(),
                                  "transport": self.transport.name})
        try:
            wait = min(MAX_WAIT, max(0.0, float(request.query.get("wait", "0"))))
        except ValueError:
            raise HTTPResponseError(400, "Invalid query parameters.", "",
                                    [{"field": "wait", "detail": "must be a number of seconds"}]) from None
        out = self.queue.outcome(entry_id)
        if out is None:
            raise HTTPResponseError(404, "Unknown app status id.",
                                    f"no app status {entry_id!r} is known (the newest {self.queue.max_recent} "
                                    "outcomes are kept)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while out is not None and out["delivery"] == "pending" and (left := deadline - loop.time()) > 0:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await changed.wait()
            out = self.queue.outcome(entry_id)
        return json_response(out)

    def status_extra(self) -> dict[str, Any]:
        """The ``app_status`` key of ``GET /api/v0/status``."""
        return {
            "transport": self.transport.name,
            "pending": self.queue.pending_count(),
            "last_error": self.last_error or None,
            "statuses": [{k: s[k] for k in ("app_slug", "state", "delivery", "error")}
                         for s in self.queue.snapshot()],
        }
