"""The OpenAPI document: valid, served by the daemon, and in step with the routes it registers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from coder_agent.config import load_settings
from coder_agent.daemon import Daemon
from coder_agent.devserver import DevServer
from coder_agent.localapi.openapi import PATH, document
from tests.conftest import apoll, t


def _documented() -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, item in document()["paths"].items() for m in item}


@pytest.fixture
async def daemon(devserver: DevServer, short_tmp: Path) -> AsyncIterator[Daemon]:
    sock = short_tmp / "api.sock"
    settings = load_settings({}, env={
        "CODER_AGENT_URL": devserver.url,
        "CODER_AGENT_TOKEN": devserver.agent.token,
        "CODER_AGENT_API_ADDRESS": f"unix:{sock}",
        "CODER_AGENT_LOG_DIR": str(short_tmp / "logs"),
        "CODER_AGENT_STATE_DIR": str(short_tmp / "state"),
        "CODER_AGENT_PROMETHEUS_ADDRESS": "",
        # enabled: the real container routes get registered (no engine is needed for that)
        "CODER_AGENT_DEVCONTAINERS_ENABLE": "true",
        "CODER_AGENT_DIRECTORY": str(short_tmp),
        "CODER_AGENT_SHUTDOWN_TIMEOUT": "5",
    })
    d = Daemon(settings)
    task = asyncio.create_task(d.run())
    await apoll(lambda: sock.exists() or task.done())
    assert not task.done(), task.exception()
    try:
        yield d
    finally:
        d.request_stop()
        await asyncio.wait_for(task, t(20))


def test_document_is_valid_openapi_with_codersdk_errors() -> None:
    import schemathesis

    doc = document()
    schema = schemathesis.openapi.from_dict(doc)
    ops = [op.ok() for op in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in ops} == _documented()
    for op in ops:
        responses = doc["paths"][op.path][op.method.lower()]["responses"]
        for code, resp in responses.items():
            if int(code) >= 400:
                assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Response"}
    assert doc["components"]["schemas"]["Response"]["required"] == ["message"]


async def test_every_registered_route_is_documented_and_the_document_is_served(daemon: Daemon) -> None:
    registered: set[tuple[str, str]] = set()
    for route in daemon.local_api.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = str(info.get("path") or info.get("formatter") or "")
        if path != "/" and path.endswith("/"):
            continue  # the Go agent's trailing-slash aliases
        if route.method == "HEAD":
            continue
        registered.add((route.method, path))
    assert registered == _documented()

    sock = daemon.local_api.unix_path
    assert sock is not None
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://agent") as c:
        r = await c.get(PATH)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == document()
