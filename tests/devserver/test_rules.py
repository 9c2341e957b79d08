"""The devserver answers like coderd: auth, validation, the 1 MiB log cap, faults."""

from __future__ import annotations

import uuid

import httpx
import pytest

from coder_agent.devserver import DevServer, Fault

ME = "/api/v2/workspaceagents/me"


def client(ds: DevServer, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Coder-Session-Token": token if token is not None else ds.agent.token}
    return httpx.AsyncClient(base_url=ds.url, headers=headers)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", 'Cookie "coder_session_token" must be provided.'),
        ("not-a-uuid", "Workspace agent token invalid."),
        (str(uuid.uuid4()), "Workspace agent not authorized."),
    ],
)
async def test_agent_auth(devserver: DevServer, token: str, message: str) -> None:
    async with client(devserver, token) as c:
        r = await c.patch(f"{ME}/logs", json={"logs": [{"output": "x"}]})
    assert r.status_code == 401 and r.json()["message"] == message


async def test_log_source_201_and_idempotent(devserver: DevServer) -> None:
    sid = str(uuid.uuid4())
    async with client(devserver) as c:
        r1 = await c.post(f"{ME}/log-source", json={"id": sid, "display_name": "A", "icon": ""})
        r2 = await c.post(f"{ME}/log-source", json={"id": sid, "display_name": "A", "icon": ""})
        bad = await c.post(f"{ME}/log-source", json={"id": "x", "display_name": ""})
    assert r1.status_code == r2.status_code == 201
    assert r1.json()["id"] == sid and len(devserver.agent.log_sources) == 1
    assert bad.status_code == 400 and {v["field"] for v in bad.json()["validations"]} == {"id", "display_name"}


async def test_patch_logs_rules(devserver: DevServer) -> None:
    async with client(devserver) as c:
        assert (await c.patch(f"{ME}/logs", json={"logs": []})).json()["message"] == "No logs provided."
        r = await c.patch(f"{ME}/logs", json={"logs": [{"output": "x", "level": "loud"}]})
        assert r.status_code == 400 and r.json()["message"] == "Invalid log level provided."
        r = await c.patch(f"{ME}/logs", json={"logs": [{"output": "a\x00b"}]})
        assert r.status_code == 500  # PostgreSQL rejects NUL: the agent must sanitise
        r = await c.patch(f"{ME}/logs", json={"logs": [{"output": "hello"}]})
        assert r.status_code == 200 and r.text == "null"
    # legacy clients without a source land in "External"
    assert devserver.agent.logs[-1]["log_source_id"] == "3b579bf4-1ed8-4b99-87a8-e9a1e3410410"
    assert devserver.agent.logs[-1]["level"] == "info"


async def test_log_cap_rejects_whole_batch(devserver: DevServer) -> None:
    chunk = "x" * 100_000
    async with client(devserver) as c:
        for _ in range(10):
            assert (await c.patch(f"{ME}/logs", json={"logs": [{"output": chunk}]})).status_code == 200
        before = len(devserver.agent.logs)
        r = await c.patch(f"{ME}/logs", json={"logs": [{"output": "y" * 10}, {"output": chunk}]})
        assert r.status_code == 413 and r.json() == {"message": "Logs limit exceeded"}
        r = await c.patch(f"{ME}/logs", json={"logs": [{"output": chunk}]})
        assert r.status_code == 413 and "max_logs_length" in r.json()["detail"]
    assert len(devserver.agent.logs) == before and devserver.agent.logs_overflowed


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"app_slug": "claude-code", "state": "working", "message": "m" * 160}, 200, None),
        ({"app_slug": "claude-code", "state": "working", "message": "m" * 161}, 400, "Message is too long."),
        ({"app_slug": "claude-code", "state": "sleeping"}, 400, "Invalid state provided."),
        ({"app_slug": "nope", "state": "idle"}, 400, "Failed to get workspace app."),
    ],
)
async def test_app_status_rules(devserver: DevServer, body: dict[str, str], status: int, message: str | None) -> None:
    async with client(devserver) as c:
        r = await c.patch(f"{ME}/app-status", json=body)
    assert r.status_code == status
    if message:
        assert r.json()["message"] == message
    else:
        assert devserver.agent.app_statuses[-1]["message"] == "m" * 160


async def test_faults_status_count_and_drop(devserver: DevServer) -> None:
    devserver.add_fault(Fault(path="/logs$", status=503, count=2))
    async with client(devserver) as c:
        codes = [(await c.patch(f"{ME}/logs", json={"logs": [{"output": "x"}]})).status_code for _ in range(3)]
        assert codes == [503, 503, 200]
        devserver.add_fault(Fault(path="/logs$", drop=True, count=1))
        with pytest.raises(httpx.HTTPError):
            await c.patch(f"{ME}/logs", json={"logs": [{"output": "x"}]})
    # control API
    async with httpx.AsyncClient(base_url=devserver.url) as c:
        r = await c.post("/devserver/faults", json={"path": "/app-status", "status": 500})
        assert r.status_code == 201
        assert (await c.get("/devserver/state")).json()["faults"][-1]["status"] == 500
        await c.delete("/devserver/faults")
    assert devserver.state.faults == []
