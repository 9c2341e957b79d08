"""The whole thing in a real daemon subprocess: config scripts, file sources, `coder-agent log`,
the local API, restarts."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from coder_agent.devserver import DevServer
from coder_agent.logs.text import parse_entry
from coder_agent.logsink import source_id_for

from ..conftest import apoll, t
from .conftest import outputs


def _config(tmp: Path, body: str) -> str:
    p = tmp / "config.toml"
    p.write_text(body)
    return str(p)


async def _ready(d) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(d.wait_ready)


async def test_script_with_10000_lines_arrives_complete_and_in_order(  # type: ignore[no-untyped-def]
        devserver: DevServer, daemon_env, spawn_daemon, short_tmp: Path) -> None:
    cfg = _config(short_tmp, '[[scripts]]\ndisplay_name = "Ten thousand"\n'
                             'script = "i=0; while [ $i -lt 10000 ]; do echo line-$i; i=$((i+1)); done"\n')
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_CONFIG=cfg))
    await _ready(d)
    sid = source_id_for("Ten thousand")
    await apoll(lambda: len(outputs(devserver, sid)) >= 10000, timeout=60)
    assert outputs(devserver, sid) == [f"line-{i}" for i in range(10000)]
    assert devserver.state.max_in_flight["PATCH /api/v2/workspaceagents/me/logs"] == 1
    st = await apoll(lambda: (s := d.api("GET", "/api/v0/status").json())["scripts"]["start_scripts"] == "done" and s)
    assert st["scripts"]["start_scripts"] == "done"
    assert st["scripts"]["scripts"][0]["last_result"]["exit_code"] == 0
    logs = st["logs"]
    src = next(s for s in logs["sources"] if s["id"] == sid)
    assert src["accepted_lines"] == 10000 and src["shipped_lines"] == 10000 and src["pending_bytes"] == 0
    assert logs["server_accepted_bytes"] == devserver.agent.logs_length
    assert logs["shipping_stopped"] is None
    local = [parse_entry(ln) for ln in Path(src["file"]).read_text().splitlines()]
    assert [e[2] for e in local if e] == [f"line-{i}" for i in range(10000)]


async def test_coder_agent_log_passes_exit_code_and_ships(  # type: ignore[no-untyped-def]
        devserver: DevServer, daemon_env, spawn_daemon) -> None:
    env = daemon_env(devserver.url, devserver.agent.token)
    d = spawn_daemon(env)
    await _ready(d)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coder_agent", "log", "--source", "Wrapped", "--icon", "/icon/x.svg", "--",
        "sh", "-c", "echo a; echo oops >&2; exit 3", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), t(30))
    assert proc.returncode == 3
    assert out == b"a\n" and b"oops" in err  # passed through
    sid = source_id_for("Wrapped")
    await apoll(lambda: len(outputs(devserver, sid)) >= 2)
    rows = [(r["output"], r["level"]) for r in devserver.agent.logs if r["log_source_id"] == sid]
    assert sorted(rows) == [("a", "info"), ("oops", "error")]
    assert devserver.agent.log_sources[sid]["icon"] == "/icon/x.svg"

    # stdin mode
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coder_agent", "log", "--source", "Piped", "--quiet", env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(b"x\ny\r\nz"), t(30))
    assert proc.returncode == 0 and out == b""
    await apoll(lambda: outputs(devserver, source_id_for("Piped")) == ["x", "y", "z"])

    # the local API rejects a bad body naming the field
    r = d.api("POST", "/api/v0/logs", json={"source": {"display_name": "S"}, "logs": [{"output": "x",
                                                                                       "level": "loud"}]})
    assert r.status_code == 400 and r.json()["validations"][0]["field"] == "logs[0].level"
    r = d.api("POST", "/api/v0/logs", json={"source": {}, "logs": [{"output": "x"}]})
    assert r.status_code == 400 and r.json()["validations"][0]["field"] == "source.display_name"
    r = d.api("POST", "/api/v0/logs", json={"source": {"display_name": "S", "id": "nope"}, "logs": [{"output": "x"}]})
    assert r.status_code == 400 and r.json()["validations"][0]["field"] == "source.id"
    r = d.api("POST", "/api/v0/logs", json={"source": {"display_name": "S"}, "logs": []})
    assert r.status_code == 400
    r = d.api("POST", "/api/v0/logs", json={"source": {"display_name": "S"},
                                            "logs": [{"output": "x", "created_at": "yesterday"}]})
    assert r.status_code == 400 and r.json()["validations"][0]["field"] == "logs[0].created_at"
    r = d.api("POST", "/api/v0/logs", json={"source": {"display_name": "S"},
                                            "logs": [{"output": "ok", "created_at": "2026-01-01T00:00:00Z"}]})
    assert r.status_code == 202 and r.json()["accepted"] == 1
    # shipped before the test ends (the fixture's teardown blocks the devserver's loop)
    await apoll(lambda: outputs(devserver, source_id_for("S")) == ["ok"])


async def test_file_source_follows_appends_and_resumes_after_restart(  # type: ignore[no-untyped-def]
        devserver: DevServer, daemon_env, spawn_daemon, short_tmp: Path) -> None:
    followed = short_tmp / "app.log"
    followed.write_text("".join(f"early {i}\n" for i in range(50)))
    cfg = _config(short_tmp, f'[[log_sources]]\ndisplay_name = "app"\npath = "{followed}"\nicon = "/icon/a.svg"\n')
    env = daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_CONFIG=cfg)
    sid = source_id_for("app")
    d = spawn_daemon(env)
    await _ready(d)
    await apoll(lambda: len(outputs(devserver, sid)) >= 50)
    with followed.open("a") as f:
        f.write("".join(f"live {i}\n" for i in range(100)))
    await apoll(lambda: len(outputs(devserver, sid)) >= 150)
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0
    with followed.open("a") as f:  # written while the daemon is down
        f.write("".join(f"offline {i}\n" for i in range(100)))
    d2 = spawn_daemon(env)
    await _ready(d2)
    with followed.open("a") as f:
        f.write("".join(f"after {i}\n" for i in range(20)))
    want = ([f"early {i}" for i in range(50)] + [f"live {i}" for i in range(100)]
            + [f"offline {i}" for i in range(100)] + [f"after {i}" for i in range(20)])
    await apoll(lambda: outputs(devserver, sid)[-1:] == ["after 19"], timeout=30)
    got = outputs(devserver, sid)
    assert [g for i, g in enumerate(got) if g not in got[:i]] == want  # every line, in order
    assert len(got) - len(want) <= 100  # duplicates at most one batch
    # rotation: the followed file is renamed and a new one starts
    followed.rename(followed.with_name("app.log.1"))
    followed.write_text("rotated 1\n")
    await apoll(lambda: outputs(devserver, sid)[-1:] == ["rotated 1"], timeout=20)
