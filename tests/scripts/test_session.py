"""Config scripts through the daemon's session hooks: start outcome, cron, stop scripts at
SIGTERM with their lines shipped before exit."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from coder_agent.devserver import DevServer
from coder_agent.logsink import source_id_for
from coder_agent.scripts.session import phase_outcome
from coder_agent.scripts.spec import ScriptResult, Stage, Status

from ..conftest import apoll, t
from ..logs.conftest import Running, outputs, pipe  # noqa: F401 - fixture


def _r(status: Status) -> ScriptResult:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    return ScriptResult("id", "n", Stage.START, status, 0, now, now)


def test_phase_outcome() -> None:
    assert phase_outcome([]) == "done"
    assert phase_outcome([_r(Status.OK), _r(Status.PIPES_LEFT_OPEN)]) == "done"
    assert phase_outcome([_r(Status.OK), _r(Status.EXIT_FAILURE)]) == "failed"
    assert phase_outcome([_r(Status.EXIT_FAILURE), _r(Status.TIMED_OUT)]) == "timed_out"


async def test_start_failure_and_stop_scripts(  # type: ignore[no-untyped-def]
        devserver: DevServer, daemon_env, spawn_daemon, short_tmp: Path) -> None:
    marker = short_tmp / "stopped"
    cfg = short_tmp / "config.toml"
    cfg.write_text(
        '[[scripts]]\ndisplay_name = "fails"\nscript = "echo about to fail; exit 4"\n'
        '[[scripts]]\ndisplay_name = "bye"\nrun_on_start = false\nrun_on_stop = true\n'
        f'script = "echo goodbye; touch {marker}"\n'
        '[[scripts]]\ndisplay_name = "ticker"\nrun_on_start = false\ncron = "* * * * * *"\nscript = "echo tick"\n')
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_CONFIG=str(cfg),
                                CODER_AGENT_SHUTDOWN_TIMEOUT="20"))
    await asyncio.to_thread(d.wait_ready)
    st = await apoll(lambda: (s := d.api("GET", "/api/v0/status").json())["scripts"]["start_scripts"] == "failed" and s)
    assert st["scripts"]["start_scripts"] == "failed"
    by_name = {x["display_name"]: x for x in st["scripts"]["scripts"]}
    assert by_name["fails"]["last_result"]["exit_code"] == 4
    assert outputs(devserver, source_id_for("fails")) == ["about to fail"]
    await apoll(lambda: len(outputs(devserver, source_id_for("ticker"))) >= 2, timeout=10)  # cron, every second
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0
    assert marker.exists()
    assert outputs(devserver, source_id_for("bye")) == ["goodbye"]  # flushed before the daemon exited


async def test_start_outcome_is_published_only_after_the_scripts_lines_reached_coder(
        devserver: DevServer, pipe: Running, tmp_path: Path) -> None:  # noqa: F811
    """USER-PAIN 2: a completion report never overtakes the lines it concludes, even when coderd
    is slow and fails once."""
    from coder_agent.devserver import Fault
    from coder_agent.scripts import ConfigSession, ScriptRunner, ScriptSpec

    devserver.add_fault(Fault(path="/me/logs$", delay=0.3))
    devserver.add_fault(Fault(path="/me/logs$", status=503, count=1))
    p = await pipe.start()
    runner = ScriptRunner(p, log_dir=tmp_path / "logs", data_dir=tmp_path / "state", directory=str(tmp_path))
    specs = [ScriptSpec(id=n, log_source_id=source_id_for(n), display_name=n,
                        script=f"for i in $(seq 1 250); do echo {n}-$i; done; exit {rc}", run_on_start=True)
             for n, rc in (("one", 0), ("two", 3))]
    session = ConfigSession(runner, specs)
    task = asyncio.create_task(session.start())
    await asyncio.wait_for(session.start_done.wait(), t(60))
    snapshot = {n: outputs(devserver, source_id_for(n)) for n in ("one", "two")}
    assert session.start_state == "failed"
    for n in ("one", "two"):
        assert snapshot[n] == [f"{n}-{i}" for i in range(1, 251)]
    await task


def test_order_edges_drop_outside_rules_and_void_cycles() -> None:
    from coder_agent.scripts import ScriptSpec
    from coder_agent.scripts.session import order_edges

    def s(i: str, *deps: str) -> ScriptSpec:
        return ScriptSpec(id=i, log_source_id=i, display_name=i, script="true", run_on_start=True,
                          depends=tuple((d, "success") for d in deps))

    assert order_edges([s("a"), s("b", "a", "zz", "b")]) == {"a": [], "b": [("a", "success")]}
    assert order_edges([s("a", "c"), s("b", "a"), s("c", "b")]) is None
