"""SIGKILL of the daemon while a log batch is in flight, then a restart: every line the daemon
accepted (read from a script, or acknowledged on the local API) reaches the control plane; the
only duplicates are the batch(es) whose acknowledgement the crash prevented."""

from __future__ import annotations

import asyncio
import signal
import threading

from coder_agent.devserver import DevServer, Fault
from coder_agent.logsink import source_id_for

from ..conftest import apoll
from .checker import check, numbered
from .conftest import RESULTS, Lines

LOGS = "/api/v2/workspaceagents/me/logs"
IN_FLIGHT = f"PATCH {LOGS}"


async def _kill_mid_batch(ds: DevServer, run) -> None:  # type: ignore[no-untyped-def]
    """Stall the next log batch server-side and SIGKILL the daemon while it is in flight."""
    ds.add_fault(Fault(path=LOGS, delay=1.5, count=1))  # coderd still stores it, after the crash
    await apoll(lambda: ds.state.in_flight.get(IN_FLIGHT, 0) > 0, timeout=10, interval=0.01)
    await asyncio.sleep(0.3)
    run.daemon.signal(signal.SIGKILL)
    assert await asyncio.to_thread(run.daemon.wait, 10) == -signal.SIGKILL
    await asyncio.sleep(1.5)  # the stalled batch lands after the crash


async def test_sigkill_mid_batch_then_restart(devserver: DevServer, scenario, short_tmp) -> None:  # type: ignore[no-untyped-def]
    lines = Lines(n=600, pause=0.01, once_marker=short_tmp / "ran-once")
    run = scenario(devserver, lines)
    run.start()
    await run.ready()
    await apoll(lambda: len(run.received()) >= 100, timeout=20)
    await _kill_mid_batch(devserver, run)
    before = len(run.received())
    run.start()  # same dirs: resumes from the saved cursor
    await run.ready()
    accepted = run.local_lines()  # what the first daemon took in before it died (the script then died of SIGPIPE)
    assert accepted == lines.printed[:len(accepted)], "the local file is not the printed prefix"
    await run.all_received(timeout=30, printed=accepted)
    rep = await run.finish(f"SIGKILL mid-batch + restart ({len(accepted)} lines accepted before the kill, "
                           f"{before} received before the restart)", max_replays=1, printed=accepted)
    assert rep.received >= len(accepted)


async def test_sigkill_loses_no_line_acknowledged_on_the_local_api(  # type: ignore[no-untyped-def]
        devserver: DevServer, scenario) -> None:
    """Lines POSTed to /api/v0/logs were answered 202 ("in the local file and queued"): a SIGKILL
    right after must not lose one of them."""
    run = scenario(devserver, Lines(n=0))
    run.start()
    await run.ready()
    acked: list[str] = []
    stop = threading.Event()

    def post() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            body = {"source": {"display_name": "Fault API"}, "logs": [{"output": f"api-{i}"}]}
            try:
                r = run.daemon.api("POST", "/api/v0/logs", json=body)
            except Exception:
                return
            if r.status_code != 202:
                return
            acked.append(f"api-{i}")

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    sid = source_id_for("Fault API")

    def received() -> list[str]:
        return [r["output"] for r in devserver.agent.logs if r["log_source_id"] == sid]

    await apoll(lambda: len(received()) >= 50, timeout=20)
    await _kill_mid_batch(devserver, run)
    stop.set()
    await asyncio.to_thread(poster.join, 10)
    assert acked == numbered("api-", len(acked))
    run.start()
    await run.ready()
    await apoll(lambda: set(acked) <= set(received()), timeout=30)
    rep = check(acked, received())
    problems = rep.problems(max_replays=1)
    RESULTS.append(f"SIGKILL mid-batch with local API clients ({len(acked)} lines acknowledged 202): "
                   f"{rep.summary()} -> {'held' if not problems else 'FAILED'}")
    assert not problems, problems
