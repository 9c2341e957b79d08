"""`coder-agent demo` runs the devserver and the daemon, shows what arrives (with ``--for``: exits 0), prints a
working ssh line and a web-terminal session."""

from __future__ import annotations

import hashlib
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .conftest import poll, t, unavailable


def test_demo_for_runs_and_summarises() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
    env["CODER_AGENT_DEVCONTAINERS_ENABLE"] = "false"
    r = subprocess.run([sys.executable, "-m", "coder_agent", "demo", "--for", "6s"], env=env,
                       capture_output=True, text=True, timeout=t(90))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "summary:" in out
    assert "log [Demo setup] demo: ready" in out  # the sample script's lines reached the control plane
    assert "app-status  claude-code: working Reading the code" in out
    assert "the tool's web server" in out  # the local API saw the port the tool opened
    # a client peer of the demo's own reached the agent through DERP + WireGuard (TSMP pong)
    assert "a client peer handshook with it over WireGuard" in out and "TSMP pong" in out, out
    summary = dict(line.split(None, 1) for line in out.split("summary:")[1].splitlines()[1:] if line.startswith("  "))
    assert summary["connection"] == "connected"
    assert summary["daemon_exit_code"] == "0"
    assert int(summary["log_lines"]) >= 5
    assert summary["tailnet"].startswith("home region 999, DERP connected, 1 peer(s) handshook"), summary


def test_demo_ssh_line_works_and_web_terminal_runs(tmp_path: Path) -> None:
    """The printed ssh line reaches the agent's SSH server through the devserver's own tunnel
    (OpenSSH's client, exit status passed through, scp into the demo's temp HOME), and the
    scripted web-terminal session's output appears; both are reported to the control plane."""
    if shutil.which("ssh") is None:
        unavailable("OpenSSH's ssh client is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
    env["CODER_AGENT_DEVCONTAINERS_ENABLE"] = "false"
    proc = subprocess.Popen([sys.executable, "-m", "coder_agent", "demo", "--for", f"{t(300):.0f}s"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    pipe = proc.stdout
    assert pipe is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(pipe.readline, "")), daemon=True)
    reader.start()

    def seen(fragment: str) -> str | None:
        return next((line for line in list(lines) if fragment in line), None)

    try:
        printed = poll(lambda: seen("  ssh -p "), timeout=90).strip()
        argv = shlex.split(printed)
        assert argv[0] == "ssh" and argv[-1] == "coder@127.0.0.1", printed
        # the user's own ssh config must not change the line's meaning; no prompt may wait for a tty
        argv[1:1] = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={t(30):.0f}"]
        r = subprocess.run([*argv, 'echo ok; echo "$HOME"'], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=t(60))
        assert r.returncode == 0, r.stdout + r.stderr + "".join(lines)
        ok, home = r.stdout.splitlines()
        assert ok == "ok"
        assert "/coder-agent-demo-" in home and home.endswith("/home"), home  # a temp HOME, not the user's
        r = subprocess.run([*argv, "exit 7"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=t(60))
        assert r.returncode == 7, r.stdout + r.stderr
        payload = tmp_path / "payload"
        payload.write_bytes(random.Random(3).randbytes(300_000))
        scp = ["scp", *("-P" if a == "-p" else a for a in argv[1:-1])]  # the same options; scp's port is -P
        r = subprocess.run([*scp, str(payload), "coder@127.0.0.1:payload"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=t(60))
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([*argv, 'sha256sum "$HOME/payload"'], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=t(60))
        assert r.stdout.split()[0] == hashlib.sha256(payload.read_bytes()).hexdigest(), r.stdout + r.stderr
        poll(lambda: seen("web terminal: ") and seen("session closed"), timeout=60)
        poll(lambda: seen("SSH disconnect from [fd7a:115c:a1e0:") and seen(", status 7"), timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(t(60))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(t(10))
    out = "".join(lines)
    # Ctrl-C: the daemon stops gracefully (asked once), then the summary
    assert proc.returncode == 0 and "summary:" in out and "stopping at once" not in out, out
    assert "  connection        connected\n" in out, out
    assert "  web terminal │ hello from the web terminal\n" in out, out  # the command's output, a line of its own
    assert "web terminal: the command ran; session closed" in out, out
    assert "RECONNECTING_PTY connect from [fd7a:115c:a1e0:" in out, out
    assert seen("SSH connect from [fd7a:115c:a1e0:"), out
