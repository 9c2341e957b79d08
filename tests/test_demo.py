"""`coder-agent demo --for 6s` runs the devserver and the daemon, shows what arrives, exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import t


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
