"""The reinit watcher: a long-lived GET /api/v2/workspaceagents/me/reinit?wait=true.

Rules (coder-agent-http.md §3; USER-PAIN 8, 9, 10, 24):

* One watcher for the whole process; it survives reinits (it is what triggers them).
* The stream is read by httpx-sse. ``ping`` events only prove the stream alive. A stream with no
  event for 3 ping intervals is treated as dropped (which also bounds a line that never ends).
  ``error`` events, undecodable ``data`` and a body that is not ``text/event-stream`` →
  reconnect with backoff. Other event types and unknown reasons are said once and ignored.
* Level-triggered: coderd pre-seeds the claim on every connection once the workspace is claimed,
  so the same claim arrives again and again. Dedupe is durable (:mod:`.claim`): the record is
  written to the state dir *before* acting; a duplicate is skipped and the stream kept open (no
  reconnect loop). After acting we reconnect at once with the new token.
* 409 is terminal only as the answer of ``GET /me/reinit`` itself: the workspace will never be
  re-initialised. Say it once, report health "stopped" with the reason, and never ask again in
  this process.
* No session token (the identity exchange refused — its 401/404/409 included — or the metadata
  service down: :class:`~coder_agent.errors.NotAuthenticated`) is an auth problem, not an answer
  of ours: the token provider reports it; we say "waiting for authentication" at debug level and
  try again on the auth policy (:data:`~coder_agent.auth.IDENTITY`, the provider paces too).
* Other failures: reconnect with the shared backoff (reset after a sustained success); a 401
  refreshes the token first; a status that retrying cannot fix (404 from an old coderd, 403 …)
  backs off slowly (30 s → 5 min) instead of hammering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from httpx_sse import EventSource, ServerSentEvent, SSEError

from ..auth.provider import IDENTITY
from ..clock import Clock, SystemClock
from ..coderapi.client import ME, CoderClient
from ..errors import ApiError, CoderAgentError, NotAuthenticated, ProtocolError, TransportError
from ..log import Collapse, get_logger
from ..retry import CONNECT, Backoff, Decision, RetryPolicy, classify
from ..service import Health
from ..state import StateStore
from .claim import STATE_KEY, Claim, Verdict, decide, parse_claim

__all__ = ["REINIT_PATH", "SLOW", "ReinitWatcher"]

REINIT_PATH = f"{ME}/reinit"
MISSED_PINGS = 3
# Answers that retrying will not fix soon (e.g. 404 from a coderd without the endpoint).
SLOW = RetryPolicy(initial=30.0, cap=300.0)


class ReinitWatcher:
    """A :class:`~coder_agent.service.Service`. ``reinitialize(reason)`` restarts the session."""

    name = "reinit"

    def __init__(
        self,
        client: CoderClient,
        store: StateStore,
        reinitialize: Callable[[str], Awaitable[None]],
        *,
        clock: Clock | None = None,
        ping_interval: float = 15.0,
        workspace_id: Callable[[], str | None] = lambda: None,
        refresh_token: Callable[[], Awaitable[Any]] | None = None,
        scrub: Callable[[str], str] = lambda s: s,
    ) -> None:
        self.health = Health()
        self._client = client
        self._store = store
        self._reinitialize = reinitialize
        self._clock = clock or SystemClock()
        self.ping_interval = ping_interval
        self._workspace_id = workspace_id
        self._refresh = refresh_token
        self._scrub = scrub
        self._log = get_logger("reinit")
        self._collapse = Collapse(self._log)
        self._said: set[str] = set()
        self._mem_record: dict[str, str] | None = None  # if the state dir cannot be written
        self.state = "starting"  # connecting | watching | reconnecting | reinitializing | not_applicable
        self.connections = 0
        self.reinits = 0
        self.duplicates = 0
        self.stopped_reason = ""

    @property
    def silence_timeout(self) -> float:
        return MISSED_PINGS * self.ping_interval

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state,
            "connections": self.connections,
            "reinits": self.reinits,
            "duplicates": self.duplicates,
            "last_claim": self._handled(),
        }
        if self.stopped_reason:
            out["stopped_reason"] = self.stopped_reason
        return out

    def _handled(self) -> Any:
        return self._mem_record or self._store.get(STATE_KEY)

    def _say_once(self, key: str, event: str, **kw: Any) -> None:
        if key not in self._said:
            self._said.add(key)
            self._log.warning(event, **kw)

    # the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(CONNECT)
        slow = Backoff(SLOW)
        auth = Backoff(IDENTITY)
        while True:
            self.state = "connecting" if self.connections == 0 else "reconnecting"
            try:
                claim = await self._watch_once(backoff)
            except NotAuthenticated:  # the token provider reports the cause; not ours to repeat
                delay = auth.next_delay()
                self.health.set("degraded", "reinit stream: waiting for authentication")
                self._log.debug("waiting for authentication", retry_in=round(delay, 3))
            except ApiError as e:
                auth.reset()
                if e.status == 409 and e.method == "GET" and e.path == REINIT_PATH:
                    await self._stop_for_good(e)
                    return
                text = self._scrub(str(e))
                decision = classify(e)
                if decision is Decision.REAUTHENTICATE and self._refresh is not None:
                    with contextlib.suppress(CoderAgentError):
                        await self._refresh()
                delay = slow.next_delay() if decision is Decision.FATAL else backoff.next_delay()
                self._fail(text, delay)
            except CoderAgentError as e:  # transport failures, dropped/silent streams, bad events
                auth.reset()
                delay = backoff.next_delay()
                self._fail(self._scrub(str(e)), delay)
            else:
                slow.reset()
                backoff.reset()
                auth.reset()
                await self._act(claim)
                continue  # reconnect at once: the new session may have a new token
            await self._clock.sleep(delay)

    def _fail(self, text: str, delay: float) -> None:
        self.health.set("degraded", f"reinit stream: {text}")
        self._collapse.error("reinit stream failed; reconnecting", text, error=text, retry_in=round(delay, 3))

    async def _stop_for_good(self, e: ApiError) -> None:
        self.state = "not_applicable"
        self.stopped_reason = (f"coderd answered 409 ({self._scrub(e.message)}): this workspace will not be "
                               "re-initialised; not watching again until the agent restarts")
        self._log.info("received terminal 409, stopping reinit watching", reason=self._scrub(e.message))
        self.health.set("stopped", f"not applicable: {self.stopped_reason}")
        # Park instead of returning: the supervisor would overwrite the health message on return.
        await asyncio.Event().wait()

    async def _watch_once(self, backoff: Backoff) -> Claim:
        """One connection. Returns a claim to act on; raises when the stream fails or ends."""
        async with self._client.stream("GET", REINIT_PATH, params={"wait": "true"}) as resp:
            self.connections += 1
            self.state = "watching"
            self.health.set("ok", "watching for a prebuild claim")
            self._collapse.ok("reinit stream connected")
            backoff.success(self._clock.monotonic())
            events = EventSource(resp).aiter_sse()
            try:
                while True:
                    try:
                        async with asyncio.timeout(self.silence_timeout):
                            ev = await anext(events)
                    except StopAsyncIteration:
                        raise TransportError("read", "the server ended the reinit stream") from None
                    except TimeoutError:
                        raise TransportError(
                            "timeout", f"no keep-alive for {self.silence_timeout:g} s; treating the stream as dropped"
                        ) from None
                    except SSEError as e:  # not an event stream
                        raise ProtocolError(f"reinit stream: {e}") from None
                    backoff.success(self._clock.monotonic())
                    claim = self._on_event(ev)
                    if claim is not None:
                        return claim
            finally:
                with contextlib.suppress(Exception):
                    await events.aclose()  # finish the generator now, not in GC

    def _on_event(self, ev: ServerSentEvent) -> Claim | None:
        if not ev.event and not ev.data:
            return None  # only id/retry lines: nothing to act on
        if ev.event == "ping":
            return None
        if ev.event == "error":
            raise ProtocolError(f"the server sent an error event: {ev.data[:200]}")
        if ev.event != "data":
            kind = ev.event or "message"
            self._say_once(f"type:{kind}", "unknown reinit event type ignored", event_type=kind[:64])
            return None
        claim = parse_claim(ev.data)
        verdict = decide(claim, self._handled(), self._workspace_id())
        if verdict is Verdict.REINIT:
            return claim
        if verdict is Verdict.DUPLICATE:
            self.duplicates += 1
            self._log.debug("reinit event already handled; ignored", workspace_id=claim.workspace_id,
                            owner_id=claim.owner_id)
        elif verdict is Verdict.UNKNOWN_REASON:
            self._say_once(f"reason:{claim.reason}", "unknown reinit reason ignored", reason=claim.reason[:64])
        else:
            self._say_once(f"ws:{claim.workspace_id}", "reinit event for another workspace ignored",
                           workspace_id=claim.workspace_id, our_workspace_id=self._workspace_id())
        return None

    async def _act(self, claim: Claim) -> None:
        record = {**claim.record(), "handled_at": self._clock.now().isoformat()}
        self._mem_record = record
        try:
            self._store.put(STATE_KEY, record)  # before acting: a crash mid-reinit is not a second claim
        except OSError as e:
            # Honour the claim anyway (losing it is worse); dedupe stays in memory for this process.
            self._log.warning("cannot record the handled claim; dedupe is in memory only", error=str(e))
        self.reinits += 1
        self.state = "reinitializing"
        self.health.set("ok", "reinitializing for a prebuild claim")
        self._log.info("prebuild claimed: reinitializing", workspace_id=claim.workspace_id,
                       owner_id=claim.owner_id, reason=claim.reason)
        try:
            await self._reinitialize(claim.reason)
        except CoderAgentError as e:
            self._log.error("reinitialization failed", error=self._scrub(str(e)))
