"""The script runner with the real log pipeline, shipping to the devserver."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from coder_agent.devserver import DevServer
from coder_agent.scripts import ScriptRunner, ScriptSpec, Stage, Status

from ..conftest import apoll, t
from ..logs.conftest import Running, outputs, pipe  # noqa: F401 - fixture


def spec(script: str, name: str = "Test script", **kw: object) -> ScriptSpec:
    from coder_agent.logsink import source_id_for

    return ScriptSpec(id=f"id-{name}", log_source_id=source_id_for(name), display_name=name, script=script,
                      **kw)  # type: ignore[arg-type]


def runner_for(p: object, tmp_path: Path, **kw: object) -> ScriptRunner:
    return ScriptRunner(p, log_dir=tmp_path / "logs", data_dir=tmp_path / "state", directory=str(tmp_path),
                        child_env={"FROM_DAEMON": "yes"}, **kw)  # type: ignore[arg-type]


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie no longer runs


async def test_output_env_cwd_exit_code_and_flush_before_result(devserver: DevServer, pipe: Running,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    p = await pipe.start()
    r = runner_for(p, tmp_path)
    s = spec('echo "out $FROM_DAEMON"; echo "err" >&2; pwd; printf "partial"; exit 7')
    res = await r.run(s, Stage.START)
    assert (res.status, res.exit_code, res.stage) == (Status.EXIT_FAILURE, 7, Stage.START)
    assert res.end >= res.start
    # flushed before the result came back: everything is already at coderd
    rows = [x for x in devserver.agent.logs if x["log_source_id"] == s.log_source_id]
    assert sorted((x["output"], x["level"]) for x in rows) == sorted(
        [("out yes", "info"), ("err", "error"), (str(tmp_path), "info"), ("partial", "info")])
    assert res.log_file and Path(res.log_file).exists()


async def test_timeout_kills_the_process_group_with_grandchildren(pipe: Running, tmp_path: Path) -> None:  # noqa: F811
    p = await pipe.start()
    r = runner_for(p, tmp_path, kill_grace=1.0)
    pidfile = tmp_path / "grandchild.pid"
    # the grandchild ignores SIGTERM, so only the SIGKILL after the grace stops it
    s = spec(f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; while :; do sleep 0.1; done' & wait", timeout=0.5)
    t0 = time.monotonic()
    res = await r.run(s, Stage.START)
    assert res.status is Status.TIMED_OUT and res.exit_code == 255
    assert time.monotonic() - t0 < t(10)
    pid = int(pidfile.read_text())
    await apoll(lambda: _gone(pid), timeout=5)
    assert not r.running


async def test_shutdown_kill_all_stops_running_scripts(pipe: Running, tmp_path: Path) -> None:  # noqa: F811
    p = await pipe.start()
    r = runner_for(p, tmp_path, kill_grace=1.0)
    pidfile = tmp_path / "child.pid"
    task = asyncio.create_task(r.run(spec(f"sleep 100 & echo $! > {pidfile}; wait"), Stage.START))
    await apoll(lambda: pidfile.exists() and pidfile.read_text().strip() and r.running)
    await r.kill_all()
    res = await task
    assert res.status is Status.EXIT_FAILURE
    await apoll(lambda: _gone(int(pidfile.read_text())), timeout=5)


async def test_background_child_holding_pipes_is_reported_not_waited_for(pipe: Running,  # noqa: F811
                                                                          tmp_path: Path) -> None:
    p = await pipe.start()
    r = runner_for(p, tmp_path, pipes_grace=0.5)
    pidfile = tmp_path / "bg.pid"
    res = await r.run(spec(f"sleep 30 & echo $! > {pidfile}; echo started"), Stage.START)
    assert res.status is Status.PIPES_LEFT_OPEN and res.ok and res.exit_code == 0
    assert not _gone(int(pidfile.read_text()))  # a normal exit leaves background processes alone
    os.kill(int(pidfile.read_text()), 9)


async def test_script_over_1mib_gets_the_notice_and_no_413(devserver: DevServer, pipe: Running,  # noqa: F811
                                                           tmp_path: Path) -> None:
    p = await pipe.start()
    r = runner_for(p, tmp_path)
    s = spec("i=0; while [ $i -lt 1500 ]; do printf '%0999d\\n' $i; i=$((i+1)); done", name="Big")
    res = await r.run(s, Stage.START)
    assert res.status is Status.OK
    await p.flush(timeout=t(20))
    statuses = {x.status for x in devserver.requests_to("/me/logs", "PATCH")}
    assert statuses == {200}
    out = outputs(devserver, s.log_source_id)
    assert out[-1].startswith("coder-agent: this agent's logs reached Coder's limit")
    assert res.log_file in out[-1]
    assert devserver.agent.logs_length <= 1_048_576
    local = Path(res.log_file).read_text().splitlines()
    assert sum(1 for ln in local if ln.endswith(tuple("0123456789")) and " info " in ln) == 1500


async def test_log_path_gets_a_raw_copy(pipe: Running, tmp_path: Path) -> None:  # noqa: F811
    p = await pipe.start()
    r = runner_for(p, tmp_path)
    await r.run(spec("echo one; echo two", log_path="custom/script.log"), Stage.START)
    assert (tmp_path / "logs" / "custom" / "script.log").read_text() == "one\ntwo\n"


def test_manifest_and_config_map_to_the_same_spec() -> None:
    from coder_agent.config import ScriptConfig

    c = ScriptSpec.from_config(ScriptConfig(display_name="Install", script="echo hi", timeout=5, cron="* * * * *"))
    assert c.run_on_start and c.timeout == 5 and c.cron == "* * * * *"
    assert c == ScriptSpec.from_config(ScriptConfig(display_name="Install", script="echo hi", timeout=5,
                                                    cron="* * * * *"))  # stable ids
    m = ScriptSpec.from_manifest({"id": "a" * 8, "log_source_id": "b" * 8, "display_name": "X", "script": "s",
                                  "run_on_stop": True, "timeout_seconds": 3})
    assert (m.id, m.log_source_id, m.run_on_stop, m.timeout) == ("a" * 8, "b" * 8, True, 3.0)
    assert ScriptSpec.from_manifest({"log_source_id": "s", "script": "x"}).id  # a missing id is tolerated
