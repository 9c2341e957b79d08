"""The devserver's external-auth and gitsshkey follow coderd's rules."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx

from coder_agent.devserver import DevServer
from coder_agent.devserver.gitauth import gitauth_state

from ..conftest import t

ME = "/api/v2/workspaceagents/me"


def _client(ds: DevServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=ds.url, headers={"Coder-Session-Token": ds.agent.token}, timeout=t(10))


async def test_external_auth_validation_and_matching(devserver: DevServer) -> None:
    st = gitauth_state(devserver)
    async with _client(devserver) as c:
        r = await c.get(f"{ME}/external-auth")
        assert (r.status_code, r.json()["message"]) == (400, "'url' or 'id' must be provided!")
        r = await c.get(f"{ME}/external-auth", params={"match": "https://github.com", "id": "github"})
        assert (r.status_code, r.json()["message"]) == (400, "'url' and 'id' cannot be provided together!")
        r = await c.get(f"{ME}/external-auth", params={"match": "https://github.com"})
        assert r.status_code == 404
        assert r.json()["detail"] == "External auth provider not found."

        st.add_provider("github", r"^https://github\.com", "github")
        st.add_provider("gitlab", r"gitlab", "gitlab")
        r = await c.get(f"{ME}/external-auth", params={"match": "https://bitbucket.org"})
        assert r.status_code == 404
        assert r.json()["message"] == 'No matching external auth provider found in Coder for the url "https://bitbucket.org".'
        assert 'github="^https://github\\\\.com"' in r.json()["detail"]
        # not linked: only the URL to authenticate at; the legacy "url" alias works too
        r = await c.get(f"{ME}/external-auth", params={"url": "https://github.com"})
        assert r.json() == {"url": f"{devserver.url}/external-auth/github"}

        st.link("gitlab", "glpat-123456")
        r = await c.get(f"{ME}/external-auth", params={"match": "https://gitlab.example.com"})
        body = r.json()
        assert (body["username"], body["password"], body["access_token"], body["type"]) == (
            "oauth2", "glpat-123456", "glpat-123456", "gitlab")
        st.link("github", "gho_abcdef")
        r = await c.get(f"{ME}/external-auth", params={"id": "github"})
        assert (r.json()["username"], r.json()["password"]) == ("gho_abcdef", "")
        st.add_provider("bb", "bitbucket", "bitbucket-cloud")
        st.link("bb", "bbtok-1234")
        r = await c.get(f"{ME}/external-auth", params={"match": "https://bitbucket.org/x"})
        assert (r.json()["username"], r.json()["password"]) == ("x-token-auth", "bbtok-1234")


async def test_listen_waits_until_linked(devserver: DevServer) -> None:
    st = gitauth_state(devserver)
    st.add_provider("github", "github", "github")
    async with _client(devserver) as c:
        params = {"match": "https://github.com", "listen": "true"}
        req = asyncio.create_task(c.get(f"{ME}/external-auth", params=params))
        await asyncio.sleep(0.6)
        assert not req.done()  # still waiting: nothing linked
        # the user opens the URL and finishes the flow
        r = await c.get("/external-auth/github")
        assert r.status_code == 200
        resp = await asyncio.wait_for(req, t(5))
        assert resp.status_code == 200
        assert resp.json()["access_token"] == st.links[(devserver.agent.owner_id, "github")].access_token


async def test_gitsshkey_is_a_real_key_pair(devserver: DevServer, tmp_path: Path) -> None:
    async with _client(devserver) as c:
        r = await c.get(f"{ME}/gitsshkey")
        r2 = await c.get(f"{ME}/gitsshkey")
    assert r.status_code == 200 and r.json() == r2.json()  # stable for the devserver's life
    key = tmp_path / "k"
    key.write_text(r.json()["private_key"])
    key.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True).stdout
    assert derived.split()[:2] == r.json()["public_key"].split()[:2]
    assert r.json()["public_key"].startswith("ssh-ed25519 ")


async def test_gitsshkey_needs_agent_auth(devserver: DevServer) -> None:
    async with httpx.AsyncClient(base_url=devserver.url) as c:
        r = await c.get(f"{ME}/gitsshkey")
    assert r.status_code == 401
