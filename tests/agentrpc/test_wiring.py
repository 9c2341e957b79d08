"""The session wired through the other capabilities: the real log pipeline (BatchCreateLogs), the
app-status service (UpdateAppStatus), the local API view of the manifest, and SIGTERM ordering with
the daemon as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from coder_agent import logs as logs_capability
from coder_agent.agentrpc import new_session
from coder_agent.agentrpc.logs import BATCH_LIMIT, LINE_OVERHEAD
from coder_agent.appstatus.core import AppStatus
from coder_agent.daemon import Daemon
from coder_agent.devserver import DevAgent, DevServer
from coder_agent.lifecycle import State

from ..conftest import apoll, t
from .conftest import ctl_of, lifecycle_states, rec_of


@pytest.fixture
async def piped(ds: DevServer, make_daemon: Any) -> AsyncIterator[Any]:
    """``await piped(toml="") -> (daemon, session)`` with the real log pipeline shipping."""
    tasks: list[asyncio.Task[None]] = []
    sessions: list[Any] = []

    async def start(toml: str = "") -> tuple[Daemon, Any]:
        daemon = make_daemon(ds, toml)
        pipeline = logs_capability.make_pipeline(settings=daemon.settings, store=daemon.store, client=daemon.client,
                                                 clock=daemon.clock)
        daemon.log_sink = pipeline
        for svc in logs_capability.setup(pipeline, settings=daemon.settings, store=daemon.store,
                                         routes=daemon.local_api, status=daemon.status_keys):
            daemon.services.add(svc)
            tasks.append(asyncio.create_task(svc.run()))
        session = new_session(daemon.agent_parts(), tick=0.2)
        sessions.append(session)
        await session.start()
        return daemon, session

    yield start
    for s in sessions:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(t(15)):
                await s.shutdown()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def outputs(ds: DevServer, source: str) -> list[str]:
    return [r["output"] for r in ds.agent.logs if r["log_source_id"] == source]


async def test_11_script_output_arrives_over_rpc(ds: DevServer, piped: Any) -> None:
    ds.agent.scripts = [{"display_name": "hello", "script": "echo hello; echo oops >&2", "run_on_start": True}]
    await piped()
    source = await apoll(lambda: ds.agent.scripts[0].get("log_source_id"))
    await apoll(lambda: len(outputs(ds, source)) == 2)
    rows = {r["output"]: r for r in ds.agent.logs}
    assert rows["hello"]["level"] == "info" and rows["oops"]["level"] == "error"
    assert rec_of(ds).log_batches and not ds.requests_to("/me/logs", "PATCH")  # RPC, not REST
    await apoll(lambda: "ready" in lifecycle_states(ds))


async def test_11b_a_batch_refused_as_unknown_rpc_goes_whole_over_rest(ds: DevServer, piped: Any) -> None:
    # the transport reads the batch once to build the RPC request, learns coderd lacks the RPC, and
    # must read the same batch again for REST: every line arrives, once
    ctl_of(ds).unknown.add("BatchCreateLogs")
    ds.agent.scripts = [{"display_name": "old", "script": "for i in 1 2 3 4 5; do echo line $i; done",
                         "run_on_start": True}]
    await piped()
    source = await apoll(lambda: ds.agent.scripts[0].get("log_source_id"))
    await apoll(lambda: len(outputs(ds, source)) >= 5)
    assert outputs(ds, source) == [f"line {i}" for i in range(1, 6)]
    assert ds.requests_to("/me/logs", "PATCH") and len(rec_of(ds).calls_named("BatchCreateLogs")) == 1


async def test_13_log_limit_exceeded_stops_shipping_for_good(ds: DevServer, piped: Any) -> None:
    ds.agent.logs_overflowed = True  # coderd already refuses: every call answers log_limit_exceeded
    ds.agent.scripts = [{"display_name": "chatty", "script": "echo one; sleep 1; echo two; sleep 1; echo three",
                         "run_on_start": True}]
    daemon, _ = await piped()
    await apoll(lambda: "ready" in lifecycle_states(ds), timeout=10)
    await asyncio.sleep(t(0.5))
    assert len(rec_of(ds).calls_named("BatchCreateLogs")) == 1  # never again after the first refusal
    assert rec_of(ds).connections == 1  # and the connection stayed up
    assert daemon.log_sink.status()["shipping_stopped"]  # type: ignore[attr-defined]


async def test_14_batches_stay_under_1_mib(ds: DevServer, start_session: Any) -> None:
    from coder_agent.logs.transport import Entry, SendResult

    _, session = await start_session(ds)
    await apoll(lambda: session.loop.client is not None)
    now = dt.datetime.now(dt.UTC).isoformat()
    entries = [Entry(now, "info", f"{i:06d}" + "x" * 1994) for i in range(750)]  # 1.5 MB in one hand-over
    assert await session.logs.send(str(uuid4()), entries) is SendResult.LIMIT_EXCEEDED
    sizes = [b["wire_size"] for b in rec_of(ds).log_batches]
    assert len(sizes) == 2 and all(s <= BATCH_LIMIT for s in sizes)
    assert sizes[0] > BATCH_LIMIT - 2000 - LINE_OVERHEAD  # the first batch was filled, not cut short
    assert len(ds.agent.logs) == sizes[0] // (2000 + LINE_OVERHEAD)  # the second overflowed coderd's cap


async def test_14b_invalid_utf8_arrives_repaired(ds: DevServer, piped: Any) -> None:
    script = "printf 'bad \\377\\376 end\\n'"
    ds.agent.scripts = [{"display_name": "bytes", "script": script, "run_on_start": True}]
    await piped()
    row = await apoll(lambda: next((r for r in ds.agent.logs if r["output"].startswith("bad")), None))
    assert row["output"].startswith("bad ") and row["output"].endswith(" end") and "❌" in row["output"]


async def test_app_status_goes_over_rpc_and_refusals_are_400(ds: DevServer, start_session: Any) -> None:
    _, session = await start_session(ds)
    await apoll(lambda: session.loop.client is not None)
    await session.app_status.update_app_status(AppStatus("claude-code", "working", "reading", "https://x/1"))
    (st,) = ds.agent.app_statuses
    assert st["via"] == "rpc" and st["state"] == "working" and st["uri"] == "https://x/1"
    from coder_agent.errors import ApiError

    with pytest.raises(ApiError) as e:
        await session.app_status.update_app_status(AppStatus("ghost", "idle"))
    assert e.value.status == 400 and "ghost" in e.value.message


async def test_app_status_falls_back_to_rest_on_an_older_coderd(ds: DevServer, start_session: Any) -> None:
    from coder_agent.appstatus.transport import RestTransport

    ctl_of(ds).unknown.add("UpdateAppStatus")
    daemon, session = await start_session(ds)
    session.app_status.rest = RestTransport(daemon.client)
    await apoll(lambda: session.loop.client is not None)
    for state in ("working", "idle"):
        await session.app_status.update_app_status(AppStatus("claude-code", state))
    assert [s["state"] for s in ds.agent.app_statuses] == ["working", "idle"]
    assert len(ds.requests_to("/me/app-status", "PATCH")) == 2
    assert len(rec_of(ds).calls_named("UpdateAppStatus")) == 1  # unknown once, then not asked again


async def test_local_manifest_view_and_status(devserver: DevServer, daemon_env: Any, spawn_daemon: Any) -> None:
    devserver.agent.environment = {"API_KEY": "hunter2-secret"}
    devserver.agent.scripts = [{"display_name": "s", "script": "true", "run_on_start": True}]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token))
    await asyncio.to_thread(d.wait_ready)
    r = await apoll(lambda: (x := d.api("GET", "/api/v0/manifest")).status_code == 200 and x)
    m = r.json()
    assert m["environment"] == {"API_KEY": "[REDACTED]"} and m["scripts"][0]["display_name"] == "s"
    assert "hunter2-secret" not in r.text
    st = d.api("GET", "/api/v0/status").json()
    assert st["agent_rpc"]["connected"] and st["agent_rpc"]["api_version"] == "2.8"
    assert st["agent_rpc"]["manifest"]["scripts"] == 1
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "coder_agent", "status", "--api-address",
                                                    d.api_address], capture_output=True, text=True, timeout=t(20))
    assert "agent RPC" in out.stdout and "manifest" in out.stdout and "hunter2" not in out.stdout


async def test_manifest_unknown_is_503(daemon_env: Any, spawn_daemon: Any) -> None:
    d = spawn_daemon(daemon_env("http://127.0.0.1:9", "6b1a1c7e-6a0d-4bb7-9d3c-6d7c3e1f2a10"))
    await asyncio.to_thread(d.wait_ready)
    r = d.api("GET", "/api/v0/manifest")
    assert r.status_code == 503 and "not known yet" in r.json()["message"]


async def test_19_sigterm_reports_off_after_stop_scripts_before_closing(
        daemon_env: Any, spawn_daemon: Any, short_tmp: Path) -> None:
    agent = DevAgent(scripts=[
        {"display_name": "up", "script": "echo up", "run_on_start": True},
        {"display_name": "down", "script": f"sleep 0.5; echo down > {short_tmp / 'down'}", "run_on_stop": True,
         "run_on_start": False},
    ])
    async with DevServer(agents=[agent]) as ds:
        d = spawn_daemon(daemon_env(ds.url, agent.token))
        await asyncio.to_thread(d.wait_ready)
        await apoll(lambda: "ready" in lifecycle_states(ds), timeout=15)
        d.signal(signal.SIGTERM)
        assert await asyncio.to_thread(d.wait) == 0
        assert lifecycle_states(ds) == ["starting", "ready", "shutting_down", "off"]
        assert (short_tmp / "down").read_text() == "down\n"
        stop = [c for c in rec_of(ds).script_completions if c["stage"] == "stop"]
        assert len(stop) == 1 and stop[0]["status"] == "ok"
        off_at = dt.datetime.fromisoformat(ds.agent.lifecycle[-1]["changed_at"])
        assert off_at - stop[0]["end"] < dt.timedelta(seconds=5)
        await apoll(lambda: not rec_of(ds).connected)
        assert rec_of(ds).disconnected_at is not None and rec_of(ds).disconnected_at >= off_at
        events = [json.loads(ln) for ln in d.stderr().splitlines() if ln.startswith("{")]
        assert [e["state"] for e in events if e.get("event") == "lifecycle"] == [
            "starting", "ready", "shutting_down", "off"]
        assert State.OFF.api_name == "off"
