"""The control plane misbehaves while start scripts print numbered lines: it is down, it answers
5xx, it resets connections, it answers too slowly. Every line printed reaches it, in order, with
duplicates only from a batch whose answer was lost; the daemon never exits."""

from __future__ import annotations

import asyncio

from coder_agent.devserver import DevServer, Fault

from ..conftest import apoll
from .conftest import LONG, Lines

LOGS = "/api/v2/workspaceagents/me/logs"
SOURCE = "/api/v2/workspaceagents/me/log-source"


async def test_control_plane_down_during_start_scripts(devserver: DevServer, scenario) -> None:  # type: ignore[no-untyped-def]
    """Down before the daemon starts and for a while into its start scripts (60 s in long mode),
    then back on the same port: the lines waited on disk and all arrive."""
    outage = 60.0 if LONG else 6.0
    lines = Lines(n=1500 if LONG else 400, pause=0.01)
    run = scenario(devserver, lines)
    await devserver.go_down()
    run.start()
    await run.ready()
    await asyncio.sleep(outage / 2)
    st = await apoll(lambda: (s := run.status())["control_plane"]["state"] == "failing" and s, timeout=10)
    assert st["control_plane"]["last_error"].startswith("connect failed"), st["control_plane"]
    assert st["services"]["logs"]["state"] == "degraded", st["services"]
    await asyncio.sleep(outage / 2)
    run.alive()
    assert not run.received()
    await devserver.come_up()
    await run.all_received(timeout=30)
    await apoll(lambda: run.status()["control_plane"]["state"] == "connected", timeout=20)
    assert run.status()["services"]["logs"]["state"] == "ok"
    await run.finish(f"control plane down {outage:.0f} s from start, {lines.n} lines", max_replays=0)


async def test_5xx_storm(devserver: DevServer, scenario) -> None:  # type: ignore[no-untyped-def]
    """Every agent route answers 500/502/503 for a while, some after coderd stored the batch."""
    k = 3 if LONG else 1  # the shipper backs off 1 s -> 5 s: CI keeps the storm short
    lines = Lines(n=300, pause=0.01)
    run = scenario(devserver, lines)
    devserver.add_fault(Fault(path=SOURCE, status=500, count=k))
    devserver.add_fault(Fault(path=LOGS, status=502, count=k, after=True))  # stored, answer lost
    devserver.add_fault(Fault(path=LOGS, status=503, count=2 * k))
    devserver.add_fault(Fault(path="/api/v2/buildinfo", status=500, count=4 * k))
    run.start()
    await run.ready()
    await run.all_received(timeout=60)
    failed = [r for r in devserver.requests_to(LOGS) if r.status >= 500]
    assert len(failed) == 3 * k
    await run.finish(f"5xx storm ({k}x500 log-source, {k}x502 after storing, {2 * k}x503 logs, "
                     f"{4 * k}x500 buildinfo)", max_replays=k)


async def test_connections_reset_mid_request(devserver: DevServer, scenario) -> None:  # type: ignore[no-untyped-def]
    """Connections cut before the request is handled, after it was handled (the answer never
    comes), and in the middle of the answer's body."""
    lines = Lines(n=300, pause=0.01)
    run = scenario(devserver, lines)
    devserver.add_fault(Fault(path=SOURCE, drop=True, count=1))
    devserver.add_fault(Fault(path=LOGS, drop=True, count=1))
    devserver.add_fault(Fault(path=LOGS, drop=True, after=True, count=1))
    devserver.add_fault(Fault(path=LOGS, partial=2, count=1))
    run.start()
    await run.ready()
    await run.all_received(timeout=60)
    await run.finish("connections reset (1 log-source, 1 before handling, 1 after handling, 1 mid-body)",
                     max_replays=2)


async def test_slow_responses_are_abandoned_and_retried(devserver: DevServer, scenario) -> None:  # type: ignore[no-untyped-def]
    """Answers slower than the request timeout (1 s here): a stalled answer and a trickled body
    (one byte every 0.6 s, each read on time but the whole late) are abandoned and retried."""
    lines = Lines(n=200, pause=0.01)
    run = scenario(devserver, lines, config_extra="request_timeout = 1.0")
    devserver.add_fault(Fault(path=LOGS, delay=2.5, count=1))  # coderd stores it after we gave up
    devserver.add_fault(Fault(path=LOGS, trickle=0.6, count=1))
    run.start()
    await run.ready()
    await run.all_received(timeout=60)
    # the stalled request is stored by coderd after we gave up on it: wait for that late copy
    await apoll(lambda: len(run.received()) > lines.n, timeout=10)
    assert "timeout failed for PATCH /api/v2/workspaceagents/me/logs: no complete answer within 1 s" \
        in run.daemon.stderr()
    abandoned = [r for r in devserver.requests_to(LOGS) if r.status == 0]
    assert len(abandoned) == 1  # the trickled answer (each read on time, the whole late): the client hung up
    await run.finish("slow answers (1 stalled 2.5 s, 1 trickled 4 bytes at 0.6 s/byte; timeout 1 s)",
                     max_replays=2, late_ok=True)
