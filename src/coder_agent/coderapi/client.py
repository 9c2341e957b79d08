"""The Coder API client core.

Rules:

* One ``httpx.AsyncClient`` per daemon; the transport is injectable (``httpx.MockTransport``
  in unit tests, the real network against the devserver in integration tests).
* Agent-scoped requests carry ``Coder-Session-Token`` from a :class:`TokenProvider`; extra
  headers (``CODER_AGENT_HEADER``) go on every request. Instance-identity exchanges are sent
  without the session token.
* A 401 on an authenticated request refreshes the token once and retries the request once with
  the new one; every later request uses the new token.
* Failures become :class:`~coder_agent.errors.ApiError` (with the server's codersdk.Response)
  or :class:`~coder_agent.errors.TransportError` (with the stage that failed). Nothing here
  retries beyond that single re-authentication: loops use :mod:`coder_agent.retry`.
* The default timeout is 30 s per request, as in the Go agent, and it bounds the *whole*
  request (connect, send, the complete answer), as Go's ``http.Client.Timeout`` does: an answer
  trickled a byte at a time is abandoned at the deadline too, not only a silent one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from .. import __version__
from ..clock import Clock, SystemClock
from ..config import read_token_file
from ..errors import ApiError, AuthError, ConfigError, ProtocolError, TransportError
from . import models

__all__ = ["SESSION_TOKEN_HEADER", "CoderClient", "FixedToken", "TokenFile", "TokenProvider", "transport_error"]

SESSION_TOKEN_HEADER = "Coder-Session-Token"
ME = "/api/v2/workspaceagents/me"
M = TypeVar("M", bound=BaseModel)


class TokenProvider(Protocol):
    """Where the agent session token comes from.

    ``token()`` returns the cached token (obtaining one first if needed); ``refresh()`` always
    obtains a new one (re-read the file, re-exchange the instance identity) and returns it.
    ``obtained_at`` and ``last_error`` feed ``coder-agent status``.
    """

    method: str
    obtained_at: dt.datetime | None
    last_error: str | None

    @property
    def current(self) -> str | None:
        """The token last obtained, without obtaining one (None before the first)."""

    async def token(self) -> str: ...

    async def refresh(self) -> str: ...


class FixedToken:
    """A token given on the command line or in the environment; refresh is a no-op."""

    method = "token"

    def __init__(self, token: str, clock: Clock | None = None) -> None:
        self._token = token.strip()
        self.obtained_at: dt.datetime | None = (clock or SystemClock()).now()
        self.last_error: str | None = None

    @property
    def current(self) -> str | None:
        return self._token

    async def token(self) -> str:
        return self._token

    async def refresh(self) -> str:
        return self._token


class TokenFile:
    """A token read from a file, re-read on every refresh so a rotated token is picked up."""

    method = "token"

    def __init__(self, path: Path, clock: Clock | None = None, on_new_token: Any = None) -> None:
        self.path = path
        self._clock = clock or SystemClock()
        self._token: str | None = None
        self._on_new = on_new_token
        self.obtained_at: dt.datetime | None = None
        self.last_error: str | None = None

    @property
    def current(self) -> str | None:
        """The token last read, without reading (None before the first read)."""
        return self._token

    async def token(self) -> str:
        if self._token is None:
            return await self.refresh()
        return self._token

    async def refresh(self) -> str:
        try:
            tok = read_token_file(self.path)
        except ConfigError as e:
            self.last_error = str(e)
            if self._token is not None:
                return self._token  # keep the last good one; the file may be mid-rotation
            raise
        self.last_error = None
        if tok != self._token:
            self._token = tok
            self.obtained_at = self._clock.now()
            if self._on_new is not None:
                self._on_new(tok)
        return tok


def transport_error(exc: BaseException, url: str) -> TransportError:
    """Name the stage of a network failure (dns, connect, tls, timeout, read) for a diagnosis."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return TransportError("dns", f"cannot resolve host ({cause.strerror or cause})", url=url)
        if isinstance(cause, ssl.SSLError):
            return TransportError("tls", str(cause), url=url)
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return TransportError("timeout", type(exc).__name__, url=url)
    if isinstance(exc, httpx.ConnectError):
        text = str(exc) or type(exc).__name__
        stage = "tls" if "SSL" in text or "certificate" in text else "connect"
        return TransportError(stage, text, url=url)
    return TransportError("read", str(exc) or type(exc).__name__, url=url)


class CoderClient:
    """Talks to coderd's agent endpoints. Safe to share between tasks."""

    def __init__(
        self,
        url: str,
        tokens: TokenProvider,
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        verify: bool | str = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.tokens = tokens
        self.timeout = timeout
        self.extra_headers = dict(headers or {})
        base_headers = {"User-Agent": f"coder-agent/{__version__}", **self.extra_headers}
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=base_headers,
            transport=transport,
            timeout=timeout,
            verify=verify,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def ws_url(self, path: str) -> str:
        """The websocket URL for ``path`` (http→ws, https→wss)."""
        base = self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return base + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        authenticated: bool = True,
        ok: tuple[int, ...] = (200,),
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request; return the response when its status is in ``ok``.

        Raises ApiError/AuthError for other statuses and TransportError when no answer came.
        A 401 on an authenticated request triggers one token refresh and one retry.
        """
        refreshed = False
        while True:
            headers: dict[str, str] = {}
            if authenticated:
                headers[SESSION_TOKEN_HEADER] = await self.tokens.token()
            limit = timeout if timeout is not None else self.timeout
            try:
                async with asyncio.timeout(limit):  # httpx's timeouts are per phase/read, not total
                    resp = await self._http.request(
                        method,
                        path,
                        json=json_body,
                        params=params,
                        headers=headers,
                        timeout=limit,
                    )
            except TimeoutError:
                raise TransportError("timeout", f"no complete answer within {limit:g} s",
                                     url=f"{method} {path}") from None
            except httpx.HTTPError as e:
                raise transport_error(e, f"{method} {path}") from None
            if resp.status_code in ok:
                return resp
            err = self._error(resp, method, path)
            if authenticated and resp.status_code == 401 and not refreshed:
                refreshed = True
                await self.tokens.refresh()
                continue
            raise err

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> AsyncIterator[httpx.Response]:
        """An authenticated streaming request (SSE); the body is read by the caller."""
        headers = {SESSION_TOKEN_HEADER: await self.tokens.token()}
        t = httpx.Timeout(timeout, connect=30.0) if timeout is not None else httpx.Timeout(None, connect=30.0)
        try:
            async with self._http.stream(method, path, params=params, headers=headers, timeout=t) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise self._error(resp, method, path)
                yield resp
        except httpx.HTTPError as e:
            raise transport_error(e, f"{method} {path}") from None

    @staticmethod
    def _error(resp: httpx.Response, method: str, path: str) -> ApiError:
        try:
            body = resp.json()
        except (ValueError, json.JSONDecodeError):
            body = None
        return ApiError.from_body(resp.status_code, body, method=method, path=path)

    # Agent endpoints -------------------------------------------------------------------

    async def post_log_source(self, req: models.PostLogSourceRequest) -> models.WorkspaceAgentLogSource:
        resp = await self.request("POST", f"{ME}/log-source", json_body=req.model_dump(mode="json"), ok=(201,))
        return _read(models.WorkspaceAgentLogSource, resp)

    async def patch_logs(self, req: models.PatchLogs) -> None:
        await self.request("PATCH", f"{ME}/logs", json_body=req.model_dump(mode="json"))

    async def patch_app_status(self, req: models.PatchAppStatus) -> None:
        await self.request("PATCH", f"{ME}/app-status", json_body=req.model_dump(mode="json"))

    async def external_auth(
        self, *, match: str | None = None, provider_id: str | None = None, listen: bool = False,
        timeout: float | None = None,
    ) -> models.ExternalAuthResponse:
        if (match is None) == (provider_id is None):
            raise ValueError("exactly one of match and provider_id")
        params = {"match": match} if match is not None else {"id": str(provider_id)}
        if listen:
            params["listen"] = "true"
        resp = await self.request("GET", f"{ME}/external-auth", params=params, timeout=timeout)
        return _read(models.ExternalAuthResponse, resp)

    async def gitsshkey(self) -> models.GitSSHKey:
        resp = await self.request("GET", f"{ME}/gitsshkey")
        return _read(models.GitSSHKey, resp)

    async def buildinfo(self) -> dict[str, Any]:
        resp = await self.request("GET", "/api/v2/buildinfo", authenticated=False)
        data = resp.json()
        return data if isinstance(data, dict) else {}


def _read(cls: type[M], resp: httpx.Response) -> M:
    """coderd's answer as ``cls``; ProtocolError (once, no value echoed) when it does not fit."""
    try:
        return cls.model_validate_json(resp.content)
    except ValidationError as e:
        raise ProtocolError(f"{resp.request.method} {resp.request.url.path} answered {resp.status_code} "
                            f"with a body that is not a {cls.__name__}: {models.explain(e)}") from None


__all__ += ["ME", "AuthError"]
