"""Reinit over the agent RPC, end to end with a daemon subprocess: a claim after READY makes the
same process shut the old session down (SHUTTING_DOWN → OFF reported to coderd), fetch the
manifest again on a new connection, run the manifest's start script once more and report READY
again — exactly once, however often coderd repeats the claim."""

from __future__ import annotations

import asyncio
from typing import Any

from coder_agent.devserver import DevServer
from coder_agent.devserver.reinit import ReinitHub
from coder_agent.devserver.rpc import record

from ..conftest import apoll, t
from .conftest import PING


def _states(ds: DevServer) -> list[str]:
    return [str(e["state"]) for e in ds.agent.lifecycle]


def _runs(ds: DevServer) -> list[str]:
    return [r["output"] for r in ds.agent.logs if r["output"].startswith("manifest-run ")]


async def test_claim_after_ready_refetches_the_manifest_and_reruns_once(
    prebuild_ds: DevServer, reinit_hub: ReinitHub, daemon_env: Any, spawn_daemon: Any
) -> None:
    ds = prebuild_ds
    ds.agent.scripts = [{"display_name": "Manifest start", "script": "echo manifest-run $$", "run_on_start": True}]
    d = spawn_daemon(daemon_env(ds.url, ds.agent.token, CODER_AGENT_REINIT_PING_INTERVAL=str(PING),
                                CODER_AGENT_SHUTDOWN_TIMEOUT="5"))
    await apoll(lambda: "ready" in _states(ds) and len(_runs(ds)) == 1 and reinit_hub.streams, timeout=30)
    pid = d.proc.pid
    manifests_before = len(record(ds.agent).calls_named("GetManifest"))
    connections_before = record(ds.agent).connections

    reinit_hub.claim("new-owner")
    await apoll(lambda: _states(ds).count("ready") == 2 and len(_runs(ds)) == 2, timeout=30)
    states = _states(ds)
    first_ready = states.index("ready")
    # the old session ended properly before the new one started, all in one process
    assert states[first_ready:] == ["ready", "shutting_down", "off", "starting", "ready"], states
    assert d.proc.poll() is None and d.proc.pid == pid
    rec = record(ds.agent)
    assert len(rec.calls_named("GetManifest")) > manifests_before  # the new session asked again
    assert rec.connections > connections_before  # on a new connection
    runs = _runs(ds)
    assert runs[0] != runs[1]  # two processes ran the script, one per session

    # coderd repeats the claim on every reconnect of the watcher: nothing more happens
    reinit_hub.drop_streams()
    await apoll(lambda: reinit_hub.streams, timeout=20)
    await asyncio.sleep(t(6 * PING))
    assert _states(ds).count("ready") == 2 and len(_runs(ds)) == 2


async def test_claim_before_the_new_session_got_its_manifest_never_goes_backwards(
    prebuild_ds: DevServer, reinit_hub: ReinitHub, daemon_env: Any, spawn_daemon: Any
) -> None:
    """A second claim while the new session is connected but still waiting for its manifest: that
    session ends before it began. It still opens with STARTING, so coderd (whose last state was
    the previous session's OFF) never sees OFF → SHUTTING_DOWN."""
    from coder_agent.devserver.rpc import control

    ds = prebuild_ds
    ds.agent.scripts = [{"display_name": "Manifest start", "script": "echo manifest-run $$", "run_on_start": True}]
    d = spawn_daemon(daemon_env(ds.url, ds.agent.token, CODER_AGENT_REINIT_PING_INTERVAL=str(PING),
                                CODER_AGENT_SHUTDOWN_TIMEOUT="5"))
    await apoll(lambda: "ready" in _states(ds) and len(_runs(ds)) == 1 and reinit_hub.streams, timeout=30)
    rec = record(ds.agent)
    manifests = len(rec.calls_named("GetManifest"))
    ctl = control(ds)
    ctl.handler_delay["GetManifest"] = 3.0  # the next session connects, then waits for its manifest
    reinit_hub.claim("owner-a")
    await apoll(lambda: len(rec.calls_named("GetManifest")) > manifests, timeout=30)
    reinit_hub.claim("owner-b")  # while that session is still waiting
    ctl.handler_delay.clear()
    await apoll(lambda: _states(ds).count("ready") == 2, timeout=30)
    assert rec.violations == []
    states = _states(ds)
    assert states[states.index("ready"):] == ["ready", "shutting_down", "off", "starting", "shutting_down", "off",
                                              "starting", "ready"], states
    assert d.api("GET", "/api/v0/status").json()["reinit"]["reinits"] == 2
    assert len(_runs(ds)) == 2  # the interrupted session never ran the start script
