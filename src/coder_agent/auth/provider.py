"""The instance-identity token provider: runs a cloud flow, exchanges it, caches the token.

Rules:

* ``token()`` returns the cached session token, obtaining one first when there is none;
  ``refresh()`` always fetches a fresh identity and re-exchanges it (the caller does this before
  every dial of the control-plane connection, and :class:`~coder_agent.coderapi.CoderClient`
  does it once when coderd answers 401). Both raise :class:`~coder_agent.errors.NotAuthenticated`
  on failure (the cause in ``.cause``, its text "waiting for authentication"); nothing is sent
  with an empty token.
* One attempt at a time: concurrent callers share the attempt in flight.
* Attempts are paced by the provider itself, whoever calls: after a failure the next attempt
  waits out a capped, jittered backoff (:data:`IDENTITY`) on the injected clock; a success resets
  it. So many callers looping on ``refresh()`` can never make a tight loop against the metadata
  service or coderd.
* Exchange refusals (any 4xx: 401 invalid identity, 404 no agent for this instance, 409 several
  agents) become :class:`~coder_agent.errors.AuthError` carrying the server's message verbatim
  (the retry classifier says "re-authenticate, then retry"); 5xx stay ApiError (retry);
  metadata failures are MetadataError naming the step, URL and what failed (retry).
* This provider owns the failure: each distinct cause is logged once (``log.Collapse``), then
  once on recovery, and ``last_error`` shows it in ``status``. Callers that hit it on the way
  (the agent RPC dial, the reinit watcher, requests) only say "waiting for authentication" at
  debug level: one refused exchange is one report, not three.
* The session token never reaches a log, an error or ``last_error``: ``on_new_token`` registers
  it with the daemon's redactor, and ``last_error`` passes through ``scrub``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from ..clock import Clock, SystemClock
from ..coderapi.client import transport_error
from ..errors import ApiError, AuthError, CoderAgentError, MetadataError, NotAuthenticated
from ..log import Collapse, get_logger
from ..retry import Backoff, RetryPolicy
from .flows import Cloud, Flow, MetadataReply, base_url, exchange_body, session_token_from

if TYPE_CHECKING:
    from ..coderapi.client import CoderClient

__all__ = ["IDENTITY", "InstanceIdentityProvider", "run_flow"]

# 0.5 s -> 10 s. The cap matches the Go agent's connection loop (100 ms -> 10 s): the common
# failure at boot is a 404 until the workspace build has inserted the agent row, and a 10 s cap
# means we connect within ~10 s of the build finishing. The 0.4 s floor (with jitter) keeps a
# persistent 409 or a dead metadata service to a handful of cheap requests a minute.
IDENTITY = RetryPolicy(initial=0.5, factor=2.0, cap=10.0, jitter=0.2)


async def run_flow(flow: Flow, http: httpx.AsyncClient, *, timeout: float, hint: str = "") -> dict[str, str]:
    """Drive ``flow`` over ``http``; network failures become MetadataError with their stage."""
    req = next(flow)
    while True:
        try:
            resp = await http.request(req.method, req.url, headers=dict(req.headers), timeout=timeout)
        except httpx.HTTPError as e:
            te = transport_error(e, req.url)
            what = f"no answer within {timeout:g} s" if te.stage == "timeout" else (str(e) or type(e).__name__)
            raise MetadataError(req.url, te.stage, f"{req.step}: {what}{hint}") from None
        reply = MetadataReply(resp.status_code, resp.text, {k.lower(): v for k, v in resp.headers.items()})
        try:
            req = flow.send(reply)
        except StopIteration as stop:
            result: dict[str, str] = stop.value
            return result


class InstanceIdentityProvider:
    """A :class:`~coder_agent.coderapi.client.TokenProvider` for one cloud's instance identity."""

    def __init__(
        self,
        cloud: Cloud,
        endpoint: str,
        client: Callable[[], CoderClient],
        *,
        agent_name: str | None = None,
        clock: Clock | None = None,
        on_new_token: Callable[[str], Any] | None = None,
        scrub: Callable[[str], str] | None = None,
        policy: RetryPolicy = IDENTITY,
        metadata_timeout: float = 5.0,
        exchange_timeout: float = 10.0,
        metadata_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.cloud = cloud
        self.method = cloud.method
        self.base_url = base_url(cloud, endpoint)
        self.agent_name = agent_name
        self._client = client
        self._clock = clock or SystemClock()
        self._on_new = on_new_token
        self._scrub = scrub or (lambda s: s)
        self.backoff = Backoff(policy)
        self.metadata_timeout = metadata_timeout
        self.exchange_timeout = exchange_timeout
        self._transport = metadata_transport
        self._token: str | None = None
        self._inflight: asyncio.Future[str] | None = None
        self._not_before = 0.0  # monotonic time before which no new attempt starts
        self.obtained_at: dt.datetime | None = None
        self.last_error: str | None = None
        self.log = get_logger("auth", method=self.method)
        self._collapse = Collapse(self.log)

    @property
    def current(self) -> str | None:
        """The session token last exchanged, without exchanging (None before the first)."""
        return self._token

    async def token(self) -> str:
        if self._token is not None:
            return self._token
        return await self.refresh()

    async def refresh(self) -> str:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._attempt())
            # retrieved here so an attempt whose callers all gave up is not reported as unhandled
            self._inflight.add_done_callback(lambda f: f.cancelled() or f.exception())
        # shield: a caller giving up must not cancel the attempt others are waiting on
        try:
            return await asyncio.shield(self._inflight)
        except CoderAgentError as e:  # reported by _attempt; the caller only waits for authentication
            raise NotAuthenticated(e) from e

    def retry_now(self) -> None:
        """Let the next attempt start at once (SIGHUP / ``status --retry-now``)."""
        self._not_before = 0.0
        self.backoff.reset()

    async def _attempt(self) -> str:
        wait = self._not_before - self._clock.monotonic()
        if wait > 0:
            await self._clock.sleep(wait)
        try:
            token = await self._obtain()
        except CoderAgentError as e:
            delay = self.backoff.next_delay()
            self._not_before = self._clock.monotonic() + delay
            text = self._scrub(str(e))
            self.last_error = text
            self._collapse.error("cannot obtain the agent session token; retrying", text,
                                 error=text, retry_in=round(delay, 3))
            raise
        self.backoff.reset()
        self._not_before = 0.0
        self.last_error = None
        self._collapse.ok("agent session token obtained again")
        if token != self._token:
            if self._on_new is not None:
                self._on_new(token)
            if self._token is None:
                self.log.info("agent session token obtained", metadata=self.base_url)
            else:
                self.log.info("agent session token changed", metadata=self.base_url)
        self._token = token
        self.obtained_at = self._clock.now()
        return token

    async def _obtain(self) -> str:
        # A fresh client per attempt: attempts are rare (start, reconnect, 401) and this leaves
        # nothing to close. trust_env=False: a link-local metadata service is never proxied.
        async with httpx.AsyncClient(transport=self._transport, trust_env=False, follow_redirects=False) as http:
            identity = await run_flow(self.cloud.flow(self.base_url), http, timeout=self.metadata_timeout,
                                      hint=self.cloud.unreachable_hint())
        path = self.cloud.exchange_path
        try:
            resp = await self._client().request("POST", path, json_body=exchange_body(identity, self.agent_name),
                                                authenticated=False, timeout=self.exchange_timeout)
        except ApiError as e:
            if 400 <= e.status < 500 and not isinstance(e, AuthError):
                # The server refused this identity (404 no agent, 409 ambiguous, 400 stale build):
                # not a transient failure of the request, so the classifier must say
                # "re-authenticate, then retry" rather than "give up".
                raise AuthError(e.status, e.message, detail=e.detail, validations=e.validations,
                                method=e.method, path=e.path) from None
            raise
        try:
            body = resp.json()
        except ValueError:
            body = None
        return session_token_from(body)
