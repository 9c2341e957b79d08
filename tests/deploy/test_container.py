"""The container image, for real: built offline FROM the Debian base with the legacy builder and
run on the shared Docker engine against a devserver on the host (``--network host``).

What a user relies on: tini is PID 1 and reaps orphans; `docker stop` is a clean, quick exit 0;
`docker logs` reads well (or is JSON when asked); the local API socket works through a bind
mount; a configuration error exits 78 with one line in `docker logs`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import poll, t

from .conftest import ThreadedDevServer, docker

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def start(name: str, image: str, ds: ThreadedDevServer | None, *opts: str, cmd: tuple[str, ...] = ("run",)) -> None:
    env = ["-e", "CODER_AGENT_PROMETHEUS_ADDRESS=", "-e", "CODER_AGENT_DEVCONTAINERS_ENABLE=false"]
    if ds is not None:
        env += ["-e", f"CODER_AGENT_URL={ds.url}", "-e", f"CODER_AGENT_TOKEN={ds.token}"]
    docker("run", "-d", "--name", name, "--network", "host", *env, *opts, image, *cmd)


def exec_(name: str, *cmd: str, check: bool = True) -> str:
    return docker("exec", name, *cmd, check=check).stdout


def wait_ready(name: str) -> dict[str, object]:
    """Poll `coder-agent status --json` inside the container until the local API answers."""

    def ready() -> dict[str, object] | None:
        if docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
            raise AssertionError(f"container exited: {docker('logs', name).stderr[-2000:]}")
        p = docker("exec", name, "coder-agent", "status", "--json", check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    return poll(ready, 30, interval=0.3)  # type: ignore[no-any-return]


def processes(name: str) -> list[dict[str, str]]:
    """Every process in the container from /proc: pid, ppid, state, comm, cmdline."""
    script = (
        "for d in /proc/[0-9]*; do "
        "  s=$(cat $d/stat 2>/dev/null) || continue; "
        "  c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null); "
        "  echo \"$s|$c\"; "
        "done"
    )
    out = []
    for line in exec_(name, "sh", "-c", script).splitlines():
        stat, _, cmdline = line.partition("|")
        # stat: pid (comm) state ppid ...; comm may contain spaces, so split around the parens
        pid, rest = stat.split(" (", 1)
        comm, _, tail = rest.rpartition(") ")
        fields = tail.split()
        out.append({"pid": pid, "comm": comm, "state": fields[0], "ppid": fields[1], "cmdline": cmdline.strip()})
    return out


def test_tini_is_pid1_and_reaps_orphans(agent_image: str, threaded_devserver: ThreadedDevServer,
                                        containers: Callable[[], str]) -> None:
    name = containers()
    start(name, agent_image, threaded_devserver)
    wait_ready(name)
    procs = {p["pid"]: p for p in processes(name)}
    assert procs["1"]["cmdline"].startswith("/usr/local/sbin/tini -- coder-agent run"), procs["1"]
    daemon = [p for p in procs.values() if "coder-agent run" in p["cmdline"] and p["pid"] != "1"]
    assert len(daemon) == 1 and daemon[0]["ppid"] == "1", daemon  # tini's child, not a shell's

    # Orphans: each subshell backgrounds a sleep and exits at once, so the sleeps are reparented
    # to PID 1; when they exit, only PID 1 can collect them. Unreaped, they would stay as Z.
    # (Their output goes to /dev/null, or `docker exec` would wait for them to close its pipe.)
    exec_(name, "sh", "-c", "for i in 1 2 3 4 5; do (sleep 2 >/dev/null 2>&1 &); done")
    assert any(p["comm"] == "sleep" and p["ppid"] == "1" for p in processes(name)), "orphans not reparented"
    poll(lambda: not any(p["comm"] == "sleep" for p in processes(name)), 10, interval=0.2)
    assert not [p for p in processes(name) if p["state"] == "Z"]


def test_docker_stop_is_clean_and_quick(agent_image: str, threaded_devserver: ThreadedDevServer,
                                        containers: Callable[[], str]) -> None:
    name = containers()
    start(name, agent_image, threaded_devserver)
    wait_ready(name)
    t0 = time.monotonic()
    docker("stop", "-t", "10", name, timeout=30)
    took = time.monotonic() - t0
    code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
    logs = docker("logs", name).stderr
    assert code == "0", logs[-2000:]  # 137 would mean docker had to SIGKILL it
    assert took < 5.0, f"docker stop took {took:.1f} s"
    assert "stop requested" in logs and "coder-agent stopped" in logs, logs[-2000:]


def test_logs_readable_by_default(agent_image: str, threaded_devserver: ThreadedDevServer,
                                  containers: Callable[[], str]) -> None:
    name = containers()
    start(name, agent_image, threaded_devserver)
    wait_ready(name)
    poll(lambda: "coder-agent started" in docker("logs", name).stderr)
    docker("stop", name, timeout=30)
    logs = docker("logs", name)
    lines = [ln for ln in logs.stderr.splitlines() if ln.strip()]
    assert lines and not logs.stdout.strip()
    for ln in lines:
        assert not ln.lstrip().startswith("{"), ln
        assert not ANSI.search(ln), f"colour codes without a terminal: {ln!r}"
    started = next(ln for ln in lines if "coder-agent started" in ln)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", started), started  # a timestamp first
    assert "[info" in started and threaded_devserver.url in started
    assert threaded_devserver.token not in logs.stderr


def test_logs_json_when_asked(agent_image: str, threaded_devserver: ThreadedDevServer,
                              containers: Callable[[], str]) -> None:
    name = containers()
    start(name, agent_image, threaded_devserver, "-e", "CODER_AGENT_LOG_FORMAT=json")
    wait_ready(name)
    docker("stop", name, timeout=30)
    lines = [ln for ln in docker("logs", name).stderr.splitlines() if ln.strip()]
    events = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all(isinstance(e, dict) and {"event", "level", "timestamp"} <= e.keys() for e in events)
    names = [e["event"] for e in events]
    assert "coder-agent started" in names and "coder-agent stopped" in names


def test_local_api_through_a_bind_mount(agent_image: str, threaded_devserver: ThreadedDevServer,
                                        containers: Callable[[], str], short_tmp: Path) -> None:
    run_dir = short_tmp / "run"
    run_dir.mkdir()
    name = containers()
    # The socket is 0600 and owned by the daemon's user: run it as our uid so we may open it.
    start(name, agent_image, threaded_devserver, "--user", f"{os.getuid()}:0",
          "-v", f"{run_dir}:/run/coder-agent")
    sock = run_dir / "api.sock"
    poll(sock.exists, 30)
    st = sock.stat()
    assert st.st_uid == os.getuid() and st.st_mode & 0o777 == 0o600

    def status() -> dict[str, object] | None:
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://agent",
                              timeout=5) as c:
                r = c.get("/api/v0/status")
        except httpx.HTTPError:
            return None
        assert r.status_code == 200
        data: dict[str, object] = r.json()
        cp = data["control_plane"]
        assert isinstance(cp, dict)
        return data if cp["state"] == "connected" else None

    data = poll(status, 30, interval=0.2)
    assert data["agent_url"] == threaded_devserver.url
    assert threaded_devserver.requests_to("/api/v2/buildinfo")


@pytest.mark.parametrize(("env", "expect"), [
    ([], "CODER_AGENT_URL"),
    (["-e", "CODER_AGENT_URL=http://127.0.0.1:9"], "CODER_AGENT_TOKEN"),
])
def test_bad_config_exits_78_with_one_line(agent_image: str, containers: Callable[[], str],
                                           env: list[str], expect: str) -> None:
    name = containers()
    start(name, agent_image, None, *env)
    code = docker("wait", name, timeout=t(30)).stdout.strip()
    logs = docker("logs", name)
    assert code == "78", logs.stderr
    lines = [ln for ln in (logs.stdout + logs.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("coder-agent: configuration error:") and expect in lines[0]
    assert "Traceback" not in logs.stderr


def test_start_script_orphans_leave_no_zombies(agent_image: str, threaded_devserver: ThreadedDevServer,
                                               containers: Callable[[], str], short_tmp: Path) -> None:
    cfg = short_tmp / "config.toml"
    cfg.write_text(
        '[[scripts]]\ndisplay_name = "orphans"\nrun_on_start = true\n'
        "script = \"for i in 1 2 3; do (sleep 0.5 &); done; touch /tmp/started\"\n"
    )
    cfg.chmod(0o644)
    name = containers()
    start(name, agent_image, threaded_devserver, "-v", f"{cfg}:/etc/coder-agent.toml:ro",
          "-e", "CODER_AGENT_CONFIG=/etc/coder-agent.toml")
    wait_ready(name)
    poll(lambda: docker("exec", name, "test", "-e", "/tmp/started", check=False).returncode == 0, 8)
    poll(lambda: not any(p["comm"] == "sleep" for p in processes(name)), 10, interval=0.2)
    assert not [p for p in processes(name) if p["state"] == "Z"]


def test_docker_stop_runs_stop_scripts(agent_image: str, threaded_devserver: ThreadedDevServer,
                                       containers: Callable[[], str], short_tmp: Path) -> None:
    out = short_tmp / "out"
    out.mkdir()
    out.chmod(0o777)
    cfg = short_tmp / "config.toml"
    cfg.write_text(
        '[[scripts]]\ndisplay_name = "goodbye"\nrun_on_start = false\nrun_on_stop = true\n'
        'script = "sleep 1; echo bye > /out/stopped"\n'
    )
    cfg.chmod(0o644)
    name = containers()
    start(name, agent_image, threaded_devserver, "-v", f"{cfg}:/etc/coder-agent.toml:ro",
          "-v", f"{out}:/out", "-e", "CODER_AGENT_CONFIG=/etc/coder-agent.toml")
    wait_ready(name)
    docker("stop", "-t", "10", name, timeout=30)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    assert (out / "stopped").read_text().strip() == "bye"
    logs = docker("logs", name).stderr
    assert logs.index("script finished") < logs.index("coder-agent stopped"), logs[-2000:]
