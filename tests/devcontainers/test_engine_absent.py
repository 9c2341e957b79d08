"""No Docker engine on the machine: the devcontainers feature says so and never loads the SDK."""

from __future__ import annotations

import os
import subprocess
import sys


def test_missing_engine_socket_is_unavailable_without_loading_the_sdk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = """
import sys
from coder_agent.devcontainers.engine import Engine, EngineUnavailable
try:
    Engine().connect()
except EngineUnavailable as e:
    print(e)
print("docker" in sys.modules, "requests" in sys.modules)
"""
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/docker.sock")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"cannot reach the Docker engine at unix://{tmp_path}/docker.sock: no such file or directory",
        "False False",
    ]
