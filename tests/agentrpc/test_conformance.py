"""coder-agent-rpc.md §7, item by item, end to end: our AgentSession against the devserver's /me/rpc.

Each test names the checklist item it proves. The devserver's dRPC server half is written apart
from the client half (drpc.ServerStream), so a codec bug cannot hide in both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from coder_agent.agentrpc.connection import DIAL_VERSIONS
from coder_agent.devserver import DevServer, Fault
from coder_agent.lifecycle import State
from coder_agent.rpc import drpc

from ..conftest import apoll, t
from .conftest import ctl_of, lifecycle_states, rec_of


async def test_01_upgrade_request(ds: DevServer, start_session: Any) -> None:
    await start_session(ds)
    await apoll(lambda: rec_of(ds).upgrades)
    up = rec_of(ds).upgrades[0]
    assert re.fullmatch(r"2\.\d+", up["query"]["version"]) and up["query"]["version"] == DIAL_VERSIONS[0]
    assert up["query"]["role"] == "agent"
    headers = {k.lower(): v for k, v in up["headers"].items()}
    assert headers["coder-session-token"] == ds.agent.token
    assert "sec-websocket-protocol" not in headers and "origin" not in headers
    assert "sec-websocket-extensions" not in headers  # no compression
    assert rec_of(ds).violations == []


async def test_02_refusals_are_retried_with_backoff(ds: DevServer, start_session: Any) -> None:
    ds.add_fault(Fault(path="/me/rpc$", status=401, count=2, message="Workspace agent not authorized."))
    ds.add_fault(Fault(path="/me/rpc$", status=400, count=1, message="Bad request."))
    _daemon, session = await start_session(ds)
    await apoll(lambda: rec_of(ds).connected, timeout=10)
    times = [r.at for r in ds.requests_to("/me/rpc")]
    assert len(times) == 4
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(0.09 <= g <= 10.5 for g in gaps), gaps
    assert session.loop.version == DIAL_VERSIONS[0]  # a 400 that is not about the version does not step down


async def test_02b_http_error_is_diagnosed_with_coderds_message(ds: DevServer, start_session: Any) -> None:
    ds.add_fault(Fault(path="/me/rpc$", status=401, message="Workspace agent not authorized."))
    daemon, _ = await start_session(ds)
    await apoll(lambda: daemon.controlplane.last_error)
    cp = daemon.controlplane.as_dict()
    assert cp["state"] == "failing" and cp["transport"] == "rpc"
    assert cp["last_error"].startswith("http: GET /api/v2/workspaceagents/me/rpc: 401 Workspace agent not authorized.")
    assert ds.agent.token not in str(cp)


async def test_02c_older_server_version_steps_down(ds: DevServer, start_session: Any) -> None:
    ctl_of(ds).max_minor = 4  # a v2.20-era coderd: 2.8 is refused before the upgrade
    _, session = await start_session(ds)
    await apoll(lambda: rec_of(ds).connected)
    assert [r.query["version"] for r in ds.requests_to("/me/rpc")] == ["2.8", "2.3"]
    assert session.loop.version == "2.3"


async def test_03_and_04_rechunked_bytes_and_stream_ids(ds: DevServer, start_session: Any) -> None:
    ctl_of(ds).split_bytes = True  # every byte from the server in its own websocket message
    await start_session(ds)
    await apoll(lambda: "ready" in lifecycle_states(ds))
    rec = rec_of(ds)
    ids = [c.stream_id for c in rec.calls]
    assert ids and all(i % 2 == 1 for i in ids) and len(set(ids)) == len(ids)
    assert rec.violations == []  # no text messages, no protocol errors


async def test_05_pings_answered_while_an_rpc_is_outstanding(ds: DevServer, start_session: Any) -> None:
    ctl = ctl_of(ds)
    ctl.ping_interval = 0.1
    ctl.inactive_timeout = 2.0
    ctl.handler_delay["GetManifest"] = 1.0
    await start_session(ds)
    await apoll(lambda: rec_of(ds).calls_named("GetManifest"))
    await apoll(lambda: rec_of(ds).pings_ok >= 3, timeout=1.5)
    assert not rec_of(ds).calls_named("UpdateStartup")  # the manifest call was still outstanding
    assert "ping timeout" not in rec_of(ds).violations


async def test_06_large_manifest_received_intact(ds: DevServer, start_session: Any) -> None:
    big = os.urandom(900_000).hex()  # 1.8 MB: many 64 KiB dRPC frames, several 256 KiB windows
    ds.agent.environment = {"BIG": big}
    daemon, _ = await start_session(ds)
    await apoll(lambda: daemon.manifests.latest is not None, timeout=15)
    assert daemon.manifests.latest.environment["BIG"] == big


async def test_07_unary_call_packets(ds: DevServer, start_session: Any) -> None:
    ctl_of(ds).capture = True
    await start_session(ds)
    await apoll(lambda: rec_of(ds).calls_named("UpdateStartup"))
    await apoll(lambda: len(rec_of(ds).streams_raw) >= 2)
    for raw in rec_of(ds).streams_raw:
        packets = drpc.PacketReader().receive_data(raw)
        kinds = [(p.kind, p.stream_id, p.message_id) for p in packets]
        assert kinds[:3] == [(drpc.Kind.INVOKE, 1, 1), (drpc.Kind.MESSAGE, 1, 2), (drpc.Kind.CLOSE_SEND, 1, 3)]
        assert all(k[0] == drpc.Kind.CLOSE for k in kinds[3:])
        assert packets[0].data.decode().startswith("/coder.agent.v2.Agent/")


async def test_08_unimplemented_and_unknown_rpcs_are_features_unavailable(ds: DevServer, start_session: Any) -> None:
    ctl = ctl_of(ds)
    ctl.unknown.add("UpdateStats")
    ctl.unimplemented.add("BatchUpdateMetadata")
    ds.agent.metadata = [{"key": "k", "script": "echo x", "interval": 1}]
    _, session = await start_session(ds)
    await apoll(lambda: "ready" in lifecycle_states(ds))
    await asyncio.sleep(t(1.5))
    rec = rec_of(ds)
    assert len(rec.calls_named("UpdateStats")) == 1  # not retried
    assert len(rec.calls_named("BatchUpdateMetadata")) == 1
    assert rec.connections == 1  # the connection stayed up
    assert set(session.status()["unavailable_rpcs"]) == {"UpdateStats", "BatchUpdateMetadata"}


async def test_09_manifest_then_startup(ds: DevServer, start_session: Any) -> None:
    ds.agent.directory = "~/project"
    await start_session(ds)
    await apoll(lambda: rec_of(ds).startups)
    names = [c.method for c in rec_of(ds).calls]
    assert names.index("GetManifest") < names.index("UpdateStartup")
    gm, us = rec_of(ds).calls_named("GetManifest")[0], rec_of(ds).calls_named("UpdateStartup")[0]
    assert gm.connection == us.connection
    st = rec_of(ds).startups[0]
    assert re.match(r"^v\d+\.\d+\.\d+", st["version"])
    assert os.path.isabs(st["expanded_directory"]) and st["expanded_directory"].endswith("/project")


async def test_10_lifecycle_starts_with_starting_and_moves_forward(ds: DevServer, start_session: Any) -> None:
    await start_session(ds)
    await apoll(lambda: "ready" in lifecycle_states(ds))
    raw = rec_of(ds).lifecycle_raw
    assert raw[0]["state"] == State.STARTING and raw[0]["changed_at"] is not None
    assert all(r["state"] != State.CREATED for r in raw)
    states = [r["state"] for r in raw]
    assert states == sorted(states)


async def test_11_start_scripts_decide_the_lifecycle(ds: DevServer, start_session: Any) -> None:
    ds.agent.scripts = [{"display_name": "hello", "script": "echo hello", "run_on_start": True}]
    daemon, _ = await start_session(ds)
    await apoll(lambda: "ready" in lifecycle_states(ds))
    (line,) = [ln for ln in daemon.log_sink.lines if ln.output == "hello"]  # type: ignore[attr-defined]
    assert line.source.id == ds.agent.scripts[0]["log_source_id"] and line.level == "info"


async def test_11b_failing_script_is_start_error(ds: DevServer, start_session: Any) -> None:
    ds.agent.scripts = [{"display_name": "bad", "script": "exit 1", "run_on_start": True}]
    await start_session(ds)
    await apoll(lambda: "start_error" in lifecycle_states(ds))
    assert "ready" not in lifecycle_states(ds)


async def test_11c_slow_script_is_start_timeout(ds: DevServer, start_session: Any) -> None:
    ds.agent.scripts = [{"display_name": "slow", "script": "sleep 100", "run_on_start": True, "timeout": 1}]
    await start_session(ds)
    await apoll(lambda: "start_timeout" in lifecycle_states(ds), timeout=10)
    (c,) = rec_of(ds).script_completions
    assert c["status"] == "timed_out" and c["exit_code"] == 255


async def test_12_one_script_completed_per_run(ds: DevServer, start_session: Any) -> None:
    ds.agent.scripts = [{"display_name": "a", "script": "exit 3", "run_on_start": True},
                        {"display_name": "b", "script": "true", "run_on_start": True}]
    await start_session(ds)
    await apoll(lambda: len(rec_of(ds).script_completions) == 2)
    by_id = {c["script_id"]: c for c in rec_of(ds).script_completions}
    a, b = (by_id[s["id"]] for s in ds.agent.scripts)
    assert a["exit_code"] == 3 and a["status"] == "exit_failure" and a["stage"] == "start"
    assert b["exit_code"] == 0 and b["status"] == "ok"
    for c in (a, b):
        assert c["end"] >= c["start"]
    await asyncio.sleep(t(0.5))
    assert len(rec_of(ds).script_completions) == 2


async def test_15_metadata_reports(ds: DevServer, start_session: Any) -> None:
    ds.agent.metadata = [{"key": "k", "script": "echo x", "interval": 1},
                         {"key": "slow", "script": "sleep 1.5; echo s", "interval": 1}]
    ctl_of(ds).handler_delay["BatchUpdateMetadata"] = 0.3
    await start_session(ds)
    await apoll(lambda: len([r for r in rec_of(ds).metadata_reports if "k" in r["keys"]]) >= 3, timeout=10)
    reports = [r for r in rec_of(ds).metadata_reports if "k" in r["keys"]]
    assert all(r["keys"]["k"] == "x\n" for r in reports)
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(reports)]
    # every interval (1 s) on average; one report late on a loaded machine makes the next gap short
    assert all(0.4 <= g <= t(2.5) for g in gaps) and 0.8 <= sum(gaps) / len(gaps) <= t(1.6), gaps
    assert rec_of(ds).max_in_flight["BatchUpdateMetadata"] == 1
    assert rec_of(ds).metadata["k"]["value"] == "x\n"


async def test_16_stats_probe_then_reports_at_the_interval(ds: DevServer, start_session: Any) -> None:
    await start_session(ds)
    await apoll(lambda: len(rec_of(ds).stats) >= 3, timeout=5)
    calls = rec_of(ds).calls_named("UpdateStats")
    assert rec_of(ds).stats_probes == 1 and calls[0].at < rec_of(ds).stats[0]["at"]
    at = [s["at"] for s in rec_of(ds).stats]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert all(0.4 <= g <= t(1.5) for g in gaps), gaps  # report_interval 0.5 s from the server
    s = rec_of(ds).stats[0]
    assert s["connection_count"] == 0 and s["connection_median_latency_ms"] == -1


async def test_17_app_health(ds: DevServer, start_session: Any, unused_tcp_port: int) -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        url = f"http://127.0.0.1:{unused_tcp_port}/"
        ds.agent.apps = [
            {"slug": "web", "healthcheck": {"url": url, "interval": 1, "threshold": 3}},
            {"slug": "off", "health": "disabled", "healthcheck": {"url": url, "interval": 1, "threshold": 3}},
        ]
        started = time.monotonic()
        await start_session(ds)
        web_id = await apoll(lambda: ds.agent.apps[0].get("id"))
        await apoll(lambda: rec_of(ds).app_health.get(web_id) == "healthy", timeout=3)
        assert time.monotonic() - started < t(3)
        assert ds.agent.apps[1]["id"] not in rec_of(ds).app_health
        assert all(c.error == "" for c in rec_of(ds).calls_named("BatchUpdateAppHealths"))
    finally:
        await runner.cleanup()


async def test_18_reconnect_refetches_manifest_replays_lifecycle_not_scripts(
        ds: DevServer, start_session: Any, short_tmp: Path) -> None:
    marker = short_tmp / "ran"
    ds.agent.scripts = [{"display_name": "once", "script": f"echo run >> {marker}; sleep 0.5",
                         "run_on_start": True}]
    ctl = ctl_of(ds)
    # Hold READY on the server, then cut the connection while it is in flight: it must be replayed.
    ctl.handler_delay["UpdateLifecycle"] = 0.0
    _, session = await start_session(ds)
    await apoll(lambda: "starting" in lifecycle_states(ds))
    ctl.handler_delay["UpdateLifecycle"] = 5.0
    await apoll(lambda: session.reporter.state is State.READY)
    await asyncio.sleep(0.2)
    assert await ctl.drop() == 1
    ctl.handler_delay["UpdateLifecycle"] = 0.0
    await apoll(lambda: rec_of(ds).connections == 2 and "ready" in lifecycle_states(ds), timeout=15)
    assert len(rec_of(ds).calls_named("GetManifest")) == 2
    assert marker.read_text().splitlines() == ["run"]  # start scripts ran once
    assert lifecycle_states(ds) == ["starting", "ready"]
    assert session.reporter.settled


async def test_18b_dead_peer_detected_by_our_pings(ds: DevServer, start_session: Any) -> None:
    ctl = ctl_of(ds)
    _, session = await start_session(ds, ping_interval=0.2, ping_timeout=0.5)
    await apoll(lambda: "ready" in lifecycle_states(ds))
    ctl.blackhole = True  # the server hangs: no answers, no pings, nothing
    await apoll(lambda: session.loop.last_disconnect is not None, timeout=5)
    assert "ping" in session.loop.last_disconnect
    ctl.blackhole = False
    await apoll(lambda: rec_of(ds).connections >= 2 and session.loop.client is not None, timeout=15)


async def test_shutdown_reports_stop_scripts_and_off_before_closing(ds: DevServer, start_session: Any) -> None:
    ds.agent.scripts = [{"display_name": "bye", "script": "echo bye", "run_on_stop": True, "run_on_start": False}]
    daemon, session = await start_session(ds)
    await apoll(lambda: "ready" in lifecycle_states(ds))
    await session.shutdown()
    assert lifecycle_states(ds) == ["starting", "ready", "shutting_down", "off"]
    (c,) = rec_of(ds).script_completions
    assert c["stage"] == "stop" and c["status"] == "ok"
    await apoll(lambda: not rec_of(ds).connected)
    off_at = dt.datetime.fromisoformat(ds.agent.lifecycle[-1]["changed_at"])
    assert rec_of(ds).disconnected_at is not None and rec_of(ds).disconnected_at >= off_at
    assert daemon.controlplane.state.value == "disconnected"


async def test_session_can_be_replaced(ds: DevServer, start_session: Any, make_daemon: Any) -> None:
    """Reinit: shut the session down, start a new one in place; its lifecycle starts over."""
    from coder_agent.agentrpc import new_session

    daemon, first = await start_session(ds)
    await apoll(lambda: "ready" in lifecycle_states(ds))
    await first.shutdown()
    ds.agent.lifecycle.clear()
    rec_of(ds).lifecycle_raw.clear()
    second = new_session(daemon.agent_parts(), tick=0.2)
    assert second.reporter.state is State.CREATED and second.reporter.lifecycle is daemon.lifecycle
    await second.start()
    try:
        await apoll(lambda: "ready" in lifecycle_states(ds))
        assert lifecycle_states(ds) == ["starting", "ready"]
    finally:
        await second.shutdown()


async def test_manifest_ids_are_uuids(ds: DevServer, start_session: Any) -> None:
    daemon, _ = await start_session(ds)
    await apoll(lambda: daemon.manifests.latest is not None)
    m = daemon.manifests.latest
    assert uuid.UUID(m.agent_id) == uuid.UUID(ds.agent.id)
    assert m.apps[0].slug == "claude-code" and m.apps[0].health == "disabled"


async def test_a_failing_routine_is_diagnosed_by_its_own_error(ds: DevServer, start_session: Any) -> None:
    ctl_of(ds).unimplemented.add("UpdateStartup")  # every connection fails right after the manifest
    daemon, session = await start_session(ds)
    await apoll(lambda: session.loop.last_disconnect)
    assert "UpdateStartup" in session.loop.last_disconnect and "TaskGroup" not in session.loop.last_disconnect
    assert daemon.controlplane.last_error == session.loop.last_disconnect
    assert "starting" not in lifecycle_states(ds)  # no manifest accepted, no start


async def test_devserver_accepts_starting_again_after_off(ds: DevServer, start_session: Any) -> None:
    """A new life (restart, reinit) begins with STARTING; other backward moves are refused."""
    _, first = await start_session(ds)
    await apoll(lambda: "ready" in lifecycle_states(ds))
    await first.shutdown()
    await start_session(ds)
    await apoll(lambda: lifecycle_states(ds)[-1:] == ["ready"] and len(lifecycle_states(ds)) == 6)
    assert lifecycle_states(ds) == ["starting", "ready", "shutting_down", "off", "starting", "ready"]
    assert rec_of(ds).violations == []
