"""App status end to end in one process: local API → queue → PATCH to the devserver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from structlog.testing import capture_logs

from coder_agent.devserver import Fault
from coder_agent.manifest import Manifest

from ..conftest import apoll, t
from .conftest import Running


async def test_valid_statuses_arrive_in_order(running: Running) -> None:
    sent = [("claude-code", "working", "reading the code"), ("aider", "working", "thinking"),
            ("claude-code", "idle", "waiting for you"), ("aider", "failure", "tests fail: ✗ 3"),
            ("claude-code", "complete", "opened a pull request")]
    for slug, state, message in sent:
        r = await running.post(slug, state, message, uri="https://example.com/pr/1" if state == "complete" else "")
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["delivery"] == "pending" and body["id"] and body["durable"] is True
    await apoll(lambda: len(running.received()) == len(sent))
    for slug in ("claude-code", "aider"):
        assert running.received(slug) == [s for s in sent if s[0] == slug]
    assert [s["uri"] for s in running.ds.agent.app_statuses if s["state"] == "complete"] == [
        "https://example.com/pr/1"]
    listing = await running.listing()
    assert listing["pending"] == 0
    by_slug = {s["app_slug"]: s for s in listing["statuses"]}
    assert by_slug["claude-code"]["state"] == "complete" and by_slug["claude-code"]["delivery"] == "delivered"
    assert by_slug["aider"]["state"] == "failure" and by_slug["aider"]["delivery"] == "delivered"
    status = (await running.http.get("/api/v0/status")).json()
    assert status["app_status"]["pending"] == 0
    assert status["services"]["appstatus"]["state"] == "ok"


async def test_invalid_statuses_are_refused_locally(running: Running) -> None:
    cases = [
        ({"message": "x" * 161}, "message", "Message is too long."),
        ({"message": "€" * 54}, "message", "Message is too long."),  # 54 characters, 162 bytes
        ({"state": "busy"}, "state", "Invalid state provided."),
        ({"state": ""}, "state", "Invalid state provided."),
        ({"slug": ""}, "app_slug", "Validation failed."),
    ]
    for kw, field, message in cases:
        args = {"slug": "claude-code", "state": "working", "message": "", **kw}
        r = await running.post(args.pop("slug"), args.pop("state"), args.pop("message"))
        assert r.status_code == 400, (kw, r.text)
        body = r.json()
        assert body["message"] == message
        assert [v["field"] for v in body["validations"]] == [field]
    r = await running.http.post("/api/v0/app-status", content=b"{nope")
    assert r.status_code == 400 and "message" in r.json()
    # exactly 160 bytes is fine, multi-byte included
    r = await running.post(message="€" * 53 + "x")
    assert r.status_code == 202, r.text
    await apoll(lambda: running.received())
    assert len(running.patches()) == 1
    assert running.received() == [("claude-code", "working", "€" * 53 + "x")]


async def test_identical_burst_arrives_once(running: Running) -> None:
    answers = await asyncio.gather(*(running.post(message="compiling") for _ in range(20)))
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.json()["duplicate"] for r in answers) == 19
    # A different state queues behind; once it arrives, everything before it was sent.
    assert (await running.post(state="idle")).status_code == 202
    await apoll(lambda: len(running.received()) == 2)
    assert running.received() == [("claude-code", "working", "compiling"), ("claude-code", "idle", "")]
    assert len(running.patches()) == 2
    # ...and the same status again later is not sent again.
    assert (await running.post(state="idle")).json()["delivery"] == "delivered"


async def test_burst_of_messages_coalesces_and_transitions_all_arrive(running: Running) -> None:
    for i in range(10):
        await running.post(state="working", message=f"step {i}")
    await running.post(state="idle", message="your turn")
    await running.post(state="working", message="again")
    await apoll(lambda: len(running.received()) >= 3)
    await running.post(state="complete")
    await apoll(lambda: running.received()[-1:] == [("claude-code", "complete", "")])
    got = running.received()
    assert [s for _, s, _ in got] == ["working", "idle", "working", "complete"]
    assert got[0][2] == "step 9"  # the burst went out as its latest message
    assert got[1:3] == [("claude-code", "idle", "your turn"), ("claude-code", "working", "again")]


async def test_working_idle_working_arrives_as_three(running: Running) -> None:
    for state in ("working", "idle", "working"):
        assert (await running.post(state=state)).status_code == 202
    await apoll(lambda: len(running.received()) == 3)
    assert [s for _, s, _ in running.received()] == ["working", "idle", "working"]


async def test_503_window_and_dropped_connections_lose_nothing(running: Running) -> None:
    running.ds.add_fault(Fault(path="/me/app-status", status=503))
    first = (await running.post(state="working", message="a")).json()
    await running.post(state="idle", message="b")
    # retried, shown as pending with the error, and the service reports it
    await _until(running, lambda o: o["attempts"] >= 2 and "503" in o["error"], first["id"])
    status = (await running.http.get("/api/v0/status")).json()
    assert status["services"]["appstatus"]["state"] == "degraded"
    assert "503" in status["app_status"]["last_error"]
    await running.post(state="complete", message="c")
    running.ds.clear_faults()
    running.ds.add_fault(Fault(path="/me/app-status", drop=True, count=2))
    await apoll(lambda: len(running.received()) == 3, timeout=20)
    assert running.received() == [("claude-code", "working", "a"), ("claude-code", "idle", "b"),
                                  ("claude-code", "complete", "c")]
    assert (await running.outcome(first["id"]))["delivery"] == "delivered"
    status = (await running.http.get("/api/v0/status")).json()
    assert status["services"]["appstatus"]["state"] == "ok"


async def test_server_refusal_is_reported_and_not_retried(running: Running) -> None:
    # No manifest is known locally, so the slug goes to coderd, which refuses it (400).
    with capture_logs() as logs:
        ghost = (await running.post(slug="ghost", state="working", message="one")).json()
        out = await running.outcome(ghost["id"], wait=10)
        assert out["delivery"] == "failed"
        assert "400" in out["error"] and "Failed to get workspace app" in out["error"]
        ghost2 = (await running.post(slug="ghost", state="idle", message="two")).json()
        assert (await running.outcome(ghost2["id"], wait=10))["delivery"] == "failed"
        # a valid status after it still goes through
        await running.post(state="working", message="fine")
        await apoll(lambda: running.received() == [("claude-code", "working", "fine")])
    ghost_patches = [p for p in running.patches() if p.body["app_slug"] == "ghost"]
    assert len(ghost_patches) == 2  # one attempt each, no retries
    refusals = [e for e in logs if e["event"] == "coderd refused an app status; not retrying"]
    assert len(refusals) == 1  # the same refusal is logged once
    listing = {s["app_slug"]: s for s in (await running.listing())["statuses"]}
    assert listing["ghost"]["delivery"] == "failed" and "No app found" in listing["ghost"]["error"]
    status = (await running.http.get("/api/v0/status")).json()
    assert any(s["app_slug"] == "ghost" and s["delivery"] == "failed" for s in status["app_status"]["statuses"])
    assert status["services"]["appstatus"]["state"] == "degraded"
    assert "ghost" in status["services"]["appstatus"]["message"]


async def test_known_manifest_refuses_unknown_slugs_locally(running: Running) -> None:
    running.daemon.manifests.publish(Manifest.model_validate({"apps": [{"slug": "claude-code",
                                                                        "display_name": "Claude"}]}))
    r = await running.post(slug="aider")
    assert r.status_code == 400
    assert r.json()["message"] == "Failed to get workspace app."
    assert r.json()["validations"][0]["field"] == "app_slug"
    assert "claude-code" in r.json()["validations"][0]["detail"]
    assert (await running.post(slug="claude-code")).status_code == 202
    await apoll(lambda: running.received())
    assert [p.body["app_slug"] for p in running.patches()] == ["claude-code"]


async def test_long_poll_and_bad_queries(running: Running) -> None:
    r = await running.http.get("/api/v0/app-status", params={"id": "no-such-id"})
    assert r.status_code == 404 and r.json()["message"] == "Unknown app status id."
    ticket = (await running.post()).json()
    r = await running.http.get("/api/v0/app-status", params={"id": ticket["id"], "wait": "soon"})
    assert r.status_code == 400 and r.json()["validations"][0]["field"] == "wait"
    out = await running.outcome(ticket["id"], wait=10)  # returns as soon as it is delivered
    assert out["delivery"] == "delivered" and running.received()


async def _until(running: Running, cond: Callable[[dict[str, Any]], bool], entry_id: str) -> dict[str, Any]:
    """Poll one status's outcome until ``cond`` holds."""
    deadline = time.monotonic() + t(10)
    while True:
        o = await running.outcome(entry_id)
        if cond(o):
            return o
        assert time.monotonic() < deadline, f"condition not met; last outcome {o}"
        await asyncio.sleep(0.05)


async def test_transport_seam_switches_delivery_path(running: Running) -> None:
    """The agent RPC will plug dRPC UpdateAppStatus in here; the queue does not change."""
    from coder_agent.appstatus import AppStatus
    from coder_agent.appstatus.service import AppStatusService

    class Recorder:
        name = "recorder"

        def __init__(self) -> None:
            self.got: list[AppStatus] = []

        async def update_app_status(self, status: AppStatus) -> None:
            self.got.append(status)

    svc = running.daemon.services.services["appstatus"]
    assert isinstance(svc, AppStatusService)
    rec = Recorder()
    svc.set_transport(rec)
    await running.post(state="idle", message="via the other transport")
    await apoll(lambda: rec.got)
    assert rec.got == [AppStatus("claude-code", "idle", "via the other transport", "")]
    assert (await running.listing())["transport"] == "recorder"
    assert running.patches() == []
