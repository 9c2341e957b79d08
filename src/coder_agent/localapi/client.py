"""Clients of the local API for the CLI subcommands and the demo (httpx; unix socket or TCP)."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["LocalAPIUnavailable", "LocalClient", "async_local_client"]


def _endpoint(address: str) -> tuple[str, str | None]:
    """The base URL and unix socket path (None for TCP) of a local API address."""
    if address.startswith("unix:"):
        return "http://coder-agent", address[5:]
    return f"http://{address}", None


def async_local_client(address: str, timeout: float = 10.0) -> httpx.AsyncClient:
    """An asyncio httpx client for the local API at ``address`` (``unix:PATH`` or ``HOST:PORT``)."""
    base, uds = _endpoint(address)
    return httpx.AsyncClient(base_url=base, transport=httpx.AsyncHTTPTransport(uds=uds), timeout=timeout)


class LocalAPIUnavailable(Exception):
    """The daemon does not answer at the address; the message says where we looked."""


class LocalClient:
    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.address = address
        base, uds = _endpoint(address)
        self._http = httpx.Client(base_url=base, transport=httpx.HTTPTransport(uds=uds), timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json_body: Any = None,
                params: Any = None,
                timeout: float | None = None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=json_body, params=params,
                                      timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as e:
            raise LocalAPIUnavailable(
                f"coder-agent is not answering at {self.address} ({type(e).__name__}: {e}); "
                "is the daemon running? (set CODER_AGENT_API_ADDRESS or --api-address if it listens elsewhere)"
            ) from None
