"""The devserver's external auth and Git SSH key: coderd's rules for
``GET /api/v2/workspaceagents/me/external-auth`` and ``GET /api/v2/workspaceagents/me/gitsshkey``.

Rules (coderd ``workspaceAgentsExternalAuth``, ../shared/protocol/coder-agent-http.md §6):

* Exactly one of ``match`` (legacy alias ``url``) and ``id``: neither → 400 "'url' or 'id' must
  be provided!", both → 400 "'url' and 'id' cannot be provided together!".
* A provider is chosen by ``id`` equality, or by its regex *searched* in ``match`` (Go's
  ``MatchString``); the last matching provider wins. None → 404 "No matching external auth
  provider found in Coder for the url \"…\"." with a detail listing ``id="regex"`` pairs.
* The workspace owner has no link → 200 ``{"url": "<access url>/external-auth/<id>"}``; with
  ``listen`` (presence-based) the request instead waits, re-checking every
  :data:`LISTEN_INTERVAL` seconds, until a link exists or the client goes away.
* Linked → 200 with ``access_token``, ``type``, ``token_extra`` and the legacy
  ``username``/``password``: GitLab → ``oauth2``/token, Bitbucket (cloud, server, legacy
  "bitbucket") → ``x-token-auth``/token, any other type → username = token, password empty.
* ``gitsshkey`` → the owner's ed25519 key pair in OpenSSH text, made with ``ssh-keygen`` the first
  time anyone asks (tests or the route) and kept for the devserver's life.

Control (tests and the demo): :func:`gitauth_state` in-process, or
``POST /devserver/external-auth/providers`` ``{id, regex, type}``,
``POST|DELETE /devserver/external-auth/{id}/link`` (``{access_token}`` optional), and
``GET /external-auth/{id}``, the page the user is sent to: opening it links the provider, as
finishing the OAuth flow in a browser would.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import secrets
import subprocess
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .app import agent_of, coder_error

if TYPE_CHECKING:
    from .app import DevServer

__all__ = ["LISTEN_INTERVAL", "GitAuthState", "Provider", "auth_response", "gitauth_state", "install"]

LISTEN_INTERVAL = 0.25  # coderd polls its database every 1 s; faster here keeps tests quick
BITBUCKET_TYPES = {"bitbucket-cloud", "bitbucket-server", "bitbucket"}


@dataclass
class Provider:
    id: str
    regex: str = ""
    type: str = "github"
    compiled: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.compiled = re.compile(self.regex) if self.regex else None


@dataclass
class Link:
    access_token: str
    token_extra: dict[str, Any] | None = None


def auth_response(provider_type: str, token: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """coderd's ``createExternalAuthResponse``."""
    if provider_type == "gitlab":
        username, password = "oauth2", token
    elif provider_type in BITBUCKET_TYPES:
        username, password = "x-token-auth", token
    else:
        username, password = token, ""
    return {"access_token": token, "token_extra": extra, "type": provider_type, "url": "",
            "username": username, "password": password, "expires_at": "0001-01-01T00:00:00Z"}


class GitAuthState:
    """Providers configured on the deployment, links per (owner, provider), the owners' SSH keys."""

    def __init__(self) -> None:
        self.providers: list[Provider] = []
        self.links: dict[tuple[str, str], Link] = {}
        self._keys: dict[str, tuple[str, str]] = {}
        self.default_owner = ""

    def add_provider(self, id: str, regex: str = "", type: str = "github") -> Provider:
        p = Provider(id=id, regex=regex, type=type)
        self.providers = [x for x in self.providers if x.id != id] + [p]
        return p

    def provider(self, provider_id: str) -> Provider | None:
        return next((p for p in self.providers if p.id == provider_id), None)

    def find(self, match: str, provider_id: str) -> Provider | None:
        found: Provider | None = None
        for p in self.providers:
            if provider_id and p.id == provider_id:
                return p
            if match and p.compiled is not None and p.compiled.search(match):
                found = p
        return found

    def link(self, provider_id: str, access_token: str | None = None, owner: str | None = None,
             token_extra: dict[str, Any] | None = None) -> str:
        """Link ``provider_id`` for ``owner`` (default: the first agent's owner); returns the token."""
        token = access_token or f"gho_{secrets.token_hex(16)}"
        self.links[(owner or self.default_owner, provider_id)] = Link(token, token_extra)
        return token

    def unlink(self, provider_id: str, owner: str | None = None) -> None:
        self.links.pop((owner or self.default_owner, provider_id), None)

    def key_pair(self, owner: str | None = None) -> tuple[str, str]:
        """(public, private) OpenSSH ed25519 key of ``owner``; generated on first use."""
        owner = owner or self.default_owner
        if owner not in self._keys:
            with tempfile.TemporaryDirectory(prefix="devserver-key-") as d:
                path = Path(d) / "id_ed25519"
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"coder-{owner[:8]}",
                                "-f", str(path)], check=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                self._keys[owner] = (path.with_suffix(".pub").read_text().strip() + "\n", path.read_text())
        return self._keys[owner]


_STATES: weakref.WeakKeyDictionary[DevServer, GitAuthState] = weakref.WeakKeyDictionary()


def gitauth_state(ds: DevServer) -> GitAuthState:
    """The external-auth/gitsshkey state of ``ds`` (created on first use)."""
    st = _STATES.get(ds)
    if st is None:
        st = _STATES[ds] = GitAuthState()
    if not st.default_owner and ds.state.agents:
        st.default_owner = ds.agent.owner_id
    return st


def install(app: web.Application, ds: DevServer) -> None:
    st = gitauth_state(ds)
    r = app.router
    r.add_get("/api/v2/workspaceagents/me/external-auth", functools.partial(_external_auth, ds=ds, st=st))
    r.add_get("/api/v2/workspaceagents/me/gitsshkey", functools.partial(_gitsshkey, st=st))
    r.add_get("/external-auth/{id}", functools.partial(_browser_link, st=st))
    r.add_post("/devserver/external-auth/providers", functools.partial(_ctl_provider, st=st))
    r.add_post("/devserver/external-auth/{id}/link", functools.partial(_ctl_link, st=st))
    r.add_delete("/devserver/external-auth/{id}/link", functools.partial(_ctl_unlink, st=st))


def _not_found_detail(st: GitAuthState) -> str:
    if not st.providers:
        return "External auth provider not found."
    pairs = ",".join(f"{p.id}={json.dumps(p.regex)}" for p in st.providers if p.compiled is not None)
    return ("The configured external auth provider have regex filters that do not match the url. "
            f"Provider url regex: {pairs}")


async def _external_auth(request: web.Request, ds: DevServer, st: GitAuthState) -> web.StreamResponse:
    agent = agent_of(request)
    q = request.query
    match = q.get("match") or q.get("url") or ""
    provider_id = q.get("id") or ""
    if not match and not provider_id:
        return coder_error(400, "'url' or 'id' must be provided!")
    if match and provider_id:
        return coder_error(400, "'url' and 'id' cannot be provided together!")
    provider = st.find(match, provider_id)
    if provider is None:
        return coder_error(404, f"No matching external auth provider found in Coder for the url {json.dumps(match)}.",
                           _not_found_detail(st))
    key = (agent.owner_id, provider.id)
    link = st.links.get(key)
    if link is None and "listen" in q:
        while link is None:
            await asyncio.sleep(LISTEN_INTERVAL)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the client went away; nobody reads this
            link = st.links.get(key)
    if link is None:
        return web.json_response({"url": f"{ds.url}/external-auth/{provider.id}"})
    return web.json_response(auth_response(provider.type, link.access_token, link.token_extra))


async def _gitsshkey(request: web.Request, st: GitAuthState) -> web.Response:
    agent = agent_of(request)
    try:
        public, private = await asyncio.to_thread(st.key_pair, agent.owner_id)
    except (OSError, subprocess.CalledProcessError) as e:
        return coder_error(500, "Failed to get git ssh key.", f"ssh-keygen: {e}")
    return web.json_response({"public_key": public, "private_key": private})


async def _browser_link(request: web.Request, st: GitAuthState) -> web.Response:
    provider_id = request.match_info["id"]
    if st.provider(provider_id) is None:
        return web.Response(status=404, text=f"no external auth provider {provider_id!r}\n")
    st.link(provider_id)
    return web.Response(text=f"Authenticated with {provider_id}. You can close this page.\n")


async def _ctl_provider(request: web.Request, st: GitAuthState) -> web.Response:
    try:
        body = await request.json()
        p = st.add_provider(str(body["id"]), str(body.get("regex") or ""), str(body.get("type") or "github"))
    except (ValueError, KeyError, TypeError, re.error) as e:
        return coder_error(400, "Bad provider.", str(e))
    return web.json_response({"id": p.id, "regex": p.regex, "type": p.type}, status=201)


async def _ctl_link(request: web.Request, st: GitAuthState) -> web.Response:
    provider_id = request.match_info["id"]
    if st.provider(provider_id) is None:
        return coder_error(404, f"No external auth provider {provider_id!r}.")
    body: Any = await request.json() if request.can_read_body else {}
    token = st.link(provider_id, (body or {}).get("access_token") if isinstance(body, dict) else None)
    return web.json_response({"access_token": token})


async def _ctl_unlink(request: web.Request, st: GitAuthState) -> web.Response:
    st.unlink(request.match_info["id"])
    return web.json_response(None)
