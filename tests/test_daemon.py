"""The daemon as a real subprocess: local API up, status, graceful stop on SIGTERM, redaction."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from coder_agent.devserver import DevServer

from .conftest import apoll


async def test_status_and_sigterm(devserver: DevServer, daemon_env, spawn_daemon, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token))
    await _wait_ready(d)
    st = d.api("GET", "/api/v0/status").json()
    assert st["auth"]["method"] == "token"
    assert st["lifecycle"] in ("created", "starting", "ready")
    assert "watchdog" in st["services"]
    assert st["control_plane"]["transport"] == "rpc"  # the agent RPC connection owns the state
    await apoll(lambda: d.api("GET", "/api/v0/status").json()["control_plane"]["state"] == "connected")
    d.signal(signal.SIGTERM)
    assert await _wait_exit(d) == 0
    assert not (short_tmp / "api.sock").exists()
    events = [json.loads(ln) for ln in d.stderr().splitlines() if ln.startswith("{")]
    assert any(e["event"] == "coder-agent stopped" for e in events)


async def test_second_signal_stops_at_once(devserver: DevServer, daemon_env, spawn_daemon, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """A graceful stop held up by a slow stop script; a second signal ends it at once, script and all.

    The second signal is sent only once the first is being handled: two identical signals sent
    back to back may reach the process as one (POSIX does not queue them)."""
    marker = short_tmp / "stop-script.pid"
    cfg = short_tmp / "config.toml"
    cfg.write_text('[[scripts]]\ndisplay_name = "slow bye"\nrun_on_start = false\nrun_on_stop = true\n'
                   f'script = "echo $$ > {marker}; exec sleep 120"\n')
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_CONFIG=str(cfg),
                                CODER_AGENT_SHUTDOWN_TIMEOUT="300"))
    await _wait_ready(d)
    d.signal(signal.SIGTERM)
    await apoll(lambda: marker.exists() and marker.read_text().strip())
    script_pid = int(marker.read_text())
    assert d.proc.poll() is None  # the graceful stop is waiting for the script
    d.signal(signal.SIGINT)
    assert await _wait_exit(d) == 130  # well before the script's 120 s or the 300 s budget
    assert "second stop signal" in d.stderr()
    await apoll(lambda: not _alive(script_pid))  # the script's process group was killed, not orphaned


async def test_stop_while_dialing_coderd(devserver: DevServer, daemon_env, spawn_daemon) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while the agent RPC dial is still in flight (coderd takes 60 s to answer the
    upgrade): the dial is abandoned at once, instead of being waited for and then serving a
    session nobody would end."""
    from coder_agent.devserver import Fault

    devserver.add_fault(Fault(path="/me/rpc$", delay=60.0, count=1))  # longer than the wait below
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_SHUTDOWN_TIMEOUT="300"))
    await _wait_ready(d)
    await apoll(lambda: devserver.requests_to("/api/v2/workspaceagents/me/rpc"))  # the dial is waiting
    d.signal(signal.SIGTERM)
    assert await _wait_exit(d) == 0  # the wait is 30 s; before the fix it took the whole 300 s budget
    assert "session shutdown timed out" not in d.stderr()


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_status_retry_now_redials_at_once(devserver: DevServer, daemon_env, spawn_daemon) -> None:  # type: ignore[no-untyped-def]
    """`coder-agent status --retry-now` (POST /api/v0/retry): the SIGHUP of people without a pid."""
    import subprocess
    import sys

    env = daemon_env(devserver.url, devserver.agent.token)
    d = spawn_daemon(env)
    await _wait_ready(d)
    await apoll(lambda: d.api("GET", "/api/v0/status").json()["control_plane"]["state"] == "connected")
    assert len(devserver.requests_to("/api/v2/workspaceagents/me/rpc")) == 1
    cli = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "coder_agent", "status", "--retry-now"],
                                  env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "retrying the control-plane connection now" in cli.stderr and "coderd" in cli.stdout
    await apoll(lambda: len(devserver.requests_to("/api/v2/workspaceagents/me/rpc")) == 2)
    await apoll(lambda: d.api("GET", "/api/v0/status").json()["control_plane"]["state"] == "connected")


async def test_no_secret_in_logs(devserver: DevServer, daemon_env, spawn_daemon, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    header_secret = "hdr-value-9f8e7d6c5b4a"
    env = daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_HEADER=f"X-Secret={header_secret}",
                     CODER_AGENT_LOG_LEVEL="debug")
    d = spawn_daemon(env)
    await _wait_ready(d)
    await apoll(lambda: devserver.requests_to("/api/v2/workspaceagents/me/rpc"))
    # the header really was sent, so the redaction below is meaningful
    assert devserver.requests_to("/api/v2/workspaceagents/me/rpc")[0].headers.get("X-Secret") == header_secret
    status_text = d.api("GET", "/api/v0/status").text
    d.signal(signal.SIGTERM)
    await _wait_exit(d)
    logs = d.stderr() + "".join(p.read_text() for p in (short_tmp / "logs").glob("*.log"))
    for secret in (devserver.agent.token, header_secret):
        assert secret not in logs
        assert secret not in status_text


@pytest.mark.parametrize("how", ["env", "file", "flag"])
async def test_token_never_logged_whichever_way_it_was_given(
    devserver: DevServer, daemon_env, spawn_daemon, short_tmp: Path, how: str  # type: ignore[no-untyped-def]
) -> None:
    token = devserver.agent.token
    env = daemon_env(devserver.url, token, CODER_AGENT_LOG_LEVEL="debug")
    args: list[str] = []
    if how != "env":
        del env["CODER_AGENT_TOKEN"]
    if how == "file":
        (short_tmp / "tok").write_text(token + "\n")
        env["CODER_AGENT_TOKEN_FILE"] = str(short_tmp / "tok")
    if how == "flag":
        args = ["--agent-token", token]
    d = spawn_daemon(env, *args)
    await _wait_ready(d)
    await apoll(lambda: d.api("GET", "/api/v0/status").json()["control_plane"]["state"] == "connected")
    status_text = d.api("GET", "/api/v0/status").text
    d.signal(signal.SIGTERM)
    assert await _wait_exit(d) == 0
    produced = [p for p in short_tmp.rglob("*") if p.is_file() and p.name != "tok"]
    assert produced  # the daemon did write logs, so the scan below means something
    for p in produced:
        assert token not in p.read_text(errors="replace"), p
    assert token not in d.stderr() and token not in status_text


async def test_unreachable_coderd_is_diagnosed_not_fatal(daemon_env, spawn_daemon) -> None:  # type: ignore[no-untyped-def]
    d = spawn_daemon(daemon_env("http://127.0.0.1:9", "5b9f2c4e-8d1a-4f6b-9c3e-2a7d8e1f0b4c"))
    await _wait_ready(d)
    st = await apoll(lambda: (s := d.api("GET", "/api/v0/status").json())["control_plane"]["last_error"] and s)
    assert st["control_plane"]["state"] == "failing"
    assert "connect" in st["control_plane"]["last_error"]
    assert d.proc.poll() is None


async def _wait_ready(d) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    await asyncio.to_thread(d.wait_ready)


async def _wait_exit(d) -> int:  # type: ignore[no-untyped-def]
    import asyncio

    return await asyncio.to_thread(d.wait)


def test_daemon_process_skips_optional_imports_it_never_uses() -> None:
    """What `run` blocks (rich, click, charset_normalizer...) stays out of a fresh interpreter that
    loads everything the daemon loads (pydantic, prometheus_client and httpx_sse included: the daemon
    uses them), no warning escapes, and requests (under the docker SDK) still decodes the engine's
    JSON and text bodies."""
    import subprocess
    import sys

    code = """
import sys
from coder_agent.cli.run import _UNUSED_OPTIONAL, _block_unused_optional
_block_unused_optional()
import coder_agent.daemon, coder_agent.agentrpc, coder_agent.devcontainers.engine  # noqa
import coder_agent.config, coder_agent.coderapi.models, coder_agent.localapi.openapi  # noqa
coder_agent.localapi.openapi.document()  # pydantic's JSON Schema generator too
import docker, httpx, httpx_sse, prometheus_client, pydantic, requests, structlog, websockets.asyncio.client  # noqa
r = requests.Response()
r.status_code, r._content = 200, b'{"Id": "abc", "Name": "/caf\\xc3\\xa9"}'
r.headers["Content-Type"] = "application/json"
assert r.json() == {"Id": "abc", "Name": "/caf\\u00e9"}, r.json()
r2 = requests.Response()
r2._content = "caf\\u00e9".encode()
assert r2.apparent_encoding == "utf-8" and r2.text == "caf\\u00e9", r2.text
print(sorted(n for n in _UNUSED_OPTIONAL if sys.modules.get(n) is not None))
"""
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]" and out.stderr == ""
