"""With the real scripts capability in a daemon subprocess: a claim re-runs a ``[[scripts]]``
start script exactly once — its output arrives at the devserver twice in all, and its log source
is registered again — whether the claim comes while the start script runs or after it finished.
A restart runs it once (its own start), never once more for the old claim."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from coder_agent.devserver import DevServer
from coder_agent.devserver.reinit import ReinitHub
from coder_agent.logsink import source_id_for

from ..conftest import apoll, t
from .conftest import PING
from .test_daemon_process import _status, _wait_status

NAME = "Reinit probe"
SID = source_id_for(NAME)


def _config(tmp: Path, script: str) -> str:
    p = tmp / "agent.toml"
    p.write_text(f'[[scripts]]\ndisplay_name = "{NAME}"\nscript = """{script}"""\nrun_on_start = true\n')
    return str(p)


def _runs(ds: DevServer) -> list[str]:
    return [r["output"] for r in ds.agent.logs if r["log_source_id"] == SID and r["output"].startswith("run ")]


def _registrations(ds: DevServer) -> int:
    return sum(1 for r in ds.requests_to("/me/log-source", "POST")
               if isinstance(r.body, dict) and r.body.get("id") == SID and r.status == 201)


def _spawn(ds: DevServer, daemon_env: Any, spawn_daemon: Any, short_tmp: Path, script: str) -> Any:
    env = daemon_env(ds.url, ds.agent.token, CODER_AGENT_CONFIG=_config(short_tmp, script),
                     CODER_AGENT_REINIT_PING_INTERVAL=str(PING), CODER_AGENT_SHUTDOWN_TIMEOUT="5")
    return spawn_daemon(env)


async def test_claim_while_the_start_script_runs(
    prebuild_ds: DevServer, reinit_hub: ReinitHub, daemon_env: Any, spawn_daemon: Any, short_tmp: Path
) -> None:
    d = _spawn(prebuild_ds, daemon_env, spawn_daemon, short_tmp, "echo run $$; sleep 3; echo finished $$")
    await apoll(lambda: len(_runs(prebuild_ds)) == 1 and reinit_hub.streams, timeout=20)
    assert (await _status(d))["scripts"]["start_scripts"] == "running"
    reinit_hub.claim("owner-during")
    await apoll(lambda: len(_runs(prebuild_ds)) == 2, timeout=20)
    st = await _wait_status(d, lambda s: s["scripts"]["start_scripts"] == "done", timeout=20)
    await asyncio.sleep(t(4 * PING))
    runs = _runs(prebuild_ds)
    assert len(runs) == 2 and runs[0] != runs[1]  # two processes, not one line twice
    finished = [r["output"] for r in prebuild_ds.agent.logs if r["output"].startswith("finished ")]
    assert finished == [f"finished {runs[1].split()[1]}"]  # the interrupted run was stopped
    assert _registrations(prebuild_ds) >= 2
    assert st["session_generation"] == 2 and st["reinit"]["reinits"] == 1


async def test_claim_after_start_scripts_finished_then_restart(
    prebuild_ds: DevServer, reinit_hub: ReinitHub, daemon_env: Any, spawn_daemon: Any, short_tmp: Path
) -> None:
    d = _spawn(prebuild_ds, daemon_env, spawn_daemon, short_tmp, "echo run $$")
    await _wait_status(d, lambda s: s["scripts"]["start_scripts"] == "done" and s["reinit"]["state"] == "watching",
                       timeout=20)
    await apoll(lambda: len(_runs(prebuild_ds)) == 1 and _registrations(prebuild_ds) == 1)
    reinit_hub.claim("owner-after")
    await apoll(lambda: len(_runs(prebuild_ds)) == 2, timeout=20)
    await apoll(lambda: _registrations(prebuild_ds) == 2)
    await _wait_status(d, lambda s: s["reinit"]["duplicates"] >= 1)
    await asyncio.sleep(t(4 * PING))
    assert len(_runs(prebuild_ds)) == 2
    # restart: its own start runs the script once; the pre-seeded old claim does not add a run
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0
    d2 = _spawn(prebuild_ds, daemon_env, spawn_daemon, short_tmp, "echo run $$")
    await _wait_status(d2, lambda s: s["scripts"]["start_scripts"] == "done" and s["reinit"]["duplicates"] >= 1,
                       timeout=20)
    await apoll(lambda: len(_runs(prebuild_ds)) == 3, timeout=20)
    await asyncio.sleep(t(4 * PING))
    assert len(_runs(prebuild_ds)) == 3
    assert (await _status(d2))["session_generation"] == 1
