"""Log lines over the agent RPC (BatchCreateLogs) while the RPC connection misbehaves: dropped
with and without a close frame mid-stream, and slow answers (a hung peer is detected by pings:
tests/agentrpc/test_conformance.py).
Every printed line reaches coderd, in order, with duplicates only from batches whose answer was
lost; the daemon never exits."""

from __future__ import annotations

import asyncio

import pytest

from coder_agent.devserver import DevServer
from coder_agent.devserver.rpc import control, record

from ..conftest import apoll, t
from .conftest import Lines


@pytest.mark.parametrize("transport", ["rpc"], indirect=True)
async def test_rpc_connection_faults_lose_no_line(devserver: DevServer, scenario) -> None:  # type: ignore[no-untyped-def]
    ctl = control(devserver)
    lines = Lines(n=400, pause=0.02)
    run = scenario(devserver, lines)
    run.start()
    await run.ready()
    rec = record(devserver.agent)
    await apoll(lambda: rec.log_batches, timeout=20)  # lines really travel by BatchCreateLogs
    drops = 0
    for abort in (False, True, True):  # a clean close, then two aborts, while lines flow
        await apoll(lambda: rec.connected, timeout=20)
        await asyncio.sleep(t(0.5))
        drops += await ctl.drop(abort=abort)
    await apoll(lambda: rec.connected, timeout=20)
    ctl.handler_delay["BatchCreateLogs"] = 0.5  # slow answers: still one batch in flight, in order
    await asyncio.sleep(t(1.0))
    ctl.handler_delay.clear()
    await run.all_received(timeout=60)
    assert drops >= 3
    assert rec.connections >= 4  # it redialled after every drop
    assert rec.max_in_flight.get("BatchCreateLogs", 0) <= 1
    await run.finish(f"agent RPC dropped {drops} times (1 clean, 2 aborted) and slowed, {lines.n} lines",
                     max_replays=drops)
