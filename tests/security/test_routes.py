"""The Docker engine is never exposed through the local API beyond the documented operations.

The routes are enumerated from a real in-process Daemon (every capability's setup run, as
``Daemon.compose`` does for ``Daemon.run``) through aiohttp's router: the container routes are exactly the documented
set, no route proxies arbitrary paths, and nothing looks like the Docker API.
"""

from __future__ import annotations

import re
from pathlib import Path

from coder_agent.config import load_settings
from coder_agent.daemon import Daemon

# README "Dev containers": the Go agent's container routes (trailing-slash twins included)
DOCUMENTED_CONTAINER_ROUTES = {
    ("GET", "/api/v0/containers"),
    ("GET", "/api/v0/containers/"),
    ("GET", "/api/v0/containers/watch"),
    ("POST", "/api/v0/containers/devcontainers/{devcontainer}/recreate"),
    ("DELETE", "/api/v0/containers/devcontainers/{devcontainer}"),
    ("DELETE", "/api/v0/containers/devcontainers/{devcontainer}/"),
}
# every other route the daemon serves today; a new one must be added here on purpose
OTHER_ROUTES = {
    ("GET", "/"),
    ("GET", "/api/v0/status"),
    ("POST", "/api/v0/retry"),  # the daemon serves it too (Daemon.compose registers it; this list missed it)
    ("GET", "/api/v0/manifest"),
    ("GET", "/api/v0/openapi.json"),
    ("POST", "/api/v0/logs"),
    ("GET", "/api/v0/app-status"),
    ("POST", "/api/v0/app-status"),
    ("GET", "/api/v0/external-auth"),
    ("GET", "/api/v0/gitsshkey"),
    ("GET", "/api/v0/env"),
    ("GET", "/api/v0/listening-ports"),
    ("GET", "/api/v0/listening-ports/watch"),
    ("GET", "/api/v0/netcheck"),  # also on the tunnel's port 4 (Go's routes coderd calls)
    ("POST", "/api/v0/list-directory"),
}
DOCKERISH = re.compile(r"docker|/v1\.\d|_ping|/images|/exec|/attach|/archive|/volumes|/networks|/build|/events"
                       r"|/containers/\{(?!devcontainer\})|/containers/json|/logs\b(?!$)", re.I)


def _routes(tmp: Path, devcontainers: bool) -> set[tuple[str, str]]:
    settings = load_settings(env={
        "CODER_AGENT_URL": "http://127.0.0.1:9", "CODER_AGENT_TOKEN": "00000000-0000-4000-8000-000000000000",
        "CODER_AGENT_API_ADDRESS": f"unix:{tmp / 'api.sock'}", "CODER_AGENT_LOG_DIR": str(tmp / "logs"),
        "CODER_AGENT_STATE_DIR": str(tmp / "state"), "CODER_AGENT_PROMETHEUS_ADDRESS": "",
        "CODER_AGENT_DEVCONTAINERS_ENABLE": str(devcontainers).lower(),
    })
    d = Daemon(settings)
    d.compose()  # the daemon's own routes and every capability's
    out = set()
    for route in d.local_api.app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD for every GET
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        out.add((route.method, path))
    return out


def test_container_routes_are_exactly_the_documented_ones(short_tmp: Path) -> None:
    routes = _routes(short_tmp, devcontainers=True)
    containers = {r for r in routes if r[1].startswith("/api/v0/containers")}
    assert containers == DOCUMENTED_CONTAINER_ROUTES
    assert routes - containers == OTHER_ROUTES, routes - containers - OTHER_ROUTES
    assert all(m != "*" for m, _ in routes), "a route answering every method"
    for _, path in routes:
        assert not re.search(r"\{[^}]*:\s*\.\*\}|\{tail|\{path", path), f"catch-all route {path}"
        assert not DOCKERISH.search(path), f"Docker-like route {path}"


def test_disabled_devcontainers_only_refuse(short_tmp: Path) -> None:
    """With devcontainers off, the container paths exist only to answer 403 (never a proxy)."""
    from coder_agent.devcontainers import api

    routes = _routes(short_tmp, devcontainers=False)
    containers = {r for r in routes if r[1].startswith("/api/v0/containers")}
    assert containers == {("*", "/api/v0/containers"), ("*", "/api/v0/containers/{tail}")}
    assert all(h.__name__ == "forbidden" for _, _, h in api.disabled_routes())
