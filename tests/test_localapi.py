"""The local API on a unix socket and on loopback TCP: routes, errors as codersdk.Response."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from coder_agent.localapi import LocalAPI, json_response, read_json
from coder_agent.localapi.server import bad_request


async def _echo(request):  # type: ignore[no-untyped-def]
    body = await read_json(request)
    if not isinstance(body, dict) or "name" not in body:
        raise bad_request("Validation failed.", field="name", detail="name is required")
    return json_response({"hello": body["name"]}, 201)


async def _boom(request):  # type: ignore[no-untyped-def]
    raise RuntimeError("secret internals")


def _api(address: str) -> LocalAPI:
    api = LocalAPI(address)
    api.route("POST", "/api/v0/echo", _echo)
    api.route("GET", "/api/v0/boom", _boom)
    return api


async def _exercise(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200 and r.json() == {"message": "Hello from the agent!"}
    r = await client.post("/api/v0/echo", json={"name": "x"})
    assert r.status_code == 201 and r.json() == {"hello": "x"}
    r = await client.post("/api/v0/echo", json={"nope": 1})
    assert r.status_code == 400
    assert r.json()["validations"] == [{"field": "name", "detail": "name is required"}]
    r = await client.post("/api/v0/echo", content=b"{not json")
    assert r.status_code == 400 and r.json()["message"] == "Request body must be valid JSON."
    r = await client.get("/api/v0/nowhere")
    assert r.status_code == 404 and r.json()["message"] == "Route not found."
    r = await client.delete("/api/v0/echo")
    assert r.status_code == 405 and "message" in r.json()
    r = await client.get("/api/v0/boom")
    assert r.status_code == 500 and r.json() == {"message": "Internal error.", "detail": "RuntimeError"}


async def test_unix_socket(short_tmp: Path) -> None:
    sock = short_tmp / "sub" / "api.sock"
    api = _api(f"unix:{sock}")
    await api.start()
    try:
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        assert mode == 0o600
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://a") as c:
            await _exercise(c)
    finally:
        await api.stop()
    assert not sock.exists()


async def test_stale_socket_is_replaced(short_tmp: Path) -> None:
    import socket

    sock = short_tmp / "api.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # leaves a stale socket file behind, as a killed daemon would
    api = _api(f"unix:{sock}")
    await api.start()
    await api.stop()


async def test_refuses_to_replace_a_regular_file(short_tmp: Path) -> None:
    f = short_tmp / "api.sock"
    f.write_text("not a socket")
    api = _api(f"unix:{f}")
    with pytest.raises(OSError, match="not a socket"):
        await api.start()
    await api.stop() if False else None
    assert f.read_text() == "not a socket"


async def test_tcp_loopback() -> None:
    api = _api("127.0.0.1:0")
    await api.start()
    try:
        assert api.bound_port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.bound_port}") as c:
            await _exercise(c)
    finally:
        await api.stop()
