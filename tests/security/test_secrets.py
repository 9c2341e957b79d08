"""No secret in any log, error, status or file: daemons run with a token, a secret header, an
instance-identity exchange, git-credential calls and failing requests (debug logging on); then
EVERY file the runs produced (log dir, state dir, daemon stderr, helper output) and every local
API answer is scanned for every secret."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from coder_agent.devserver import DevAgent, DevServer, Fault
from coder_agent.devserver.gitauth import gitauth_state
from coder_agent.devserver.metadata import MetadataServer

from ..conftest import apoll, t


def _files(root: Path) -> dict[Path, bytes]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            out[p] = p.read_bytes()
    return out


async def _helper(argv: list[str], env: dict[str, str], out_dir: Path, name: str) -> tuple[int, str]:
    """Run a helper; its stderr goes to a file (scanned later), its stdout is returned (it is the
    helper's answer to git, where a credential belongs)."""
    with open(out_dir / f"{name}.stderr", "wb") as err:
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=err,
                                                    stdin=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), t(30))
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_no_secret_in_any_file_or_answer(daemon_env, spawn_daemon, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("ssh-keygen") is None and os.environ.get("CI") != "true":
        pytest.skip("ssh-keygen missing (the devserver makes the git SSH key with it)")
    header_secret = f"hdr-{uuid.uuid4().hex}"
    git_token = f"gho_{uuid.uuid4().hex}"
    secrets: dict[str, str] = {"header": header_secret, "git token": git_token}
    answers: list[str] = []
    helper_out = short_tmp / "helpers"
    helper_out.mkdir()

    async with MetadataServer() as ms:
        ident = DevAgent(name="ident", instance_id=ms.aws_instance_id)
        plain = DevAgent(name="plain")
        async with DevServer(agents=[plain, ident]) as ds:
            secrets["agent token"] = plain.token
            secrets["identity session token"] = ident.token
            gs = gitauth_state(ds)
            gs.add_provider("github", r"^https://github\.com(/|$)", "github")
            gs.link("github", git_token)

            # 1. token auth + secret header, debug logs, faults that put request errors in logs
            env = daemon_env(ds.url, plain.token, CODER_AGENT_HEADER=f"X-Secret-Proxy={header_secret}",
                             CODER_AGENT_LOG_LEVEL="debug", CODER_AGENT_SHUTDOWN_TIMEOUT="3")
            ds.add_fault(Fault(path="/api/v2/buildinfo", status=500, count=1))
            ds.add_fault(Fault(path="/external-auth", status=502, count=1))
            d = spawn_daemon(env)
            await asyncio.to_thread(d.wait_ready)
            await apoll(lambda: d.api("GET", "/api/v0/status").json()["control_plane"]["state"] == "connected", 20)
            child = (await asyncio.to_thread(d.api, "GET", "/api/v0/env")).json()["env"]
            genv = {"PATH": os.environ["PATH"], "HOME": str(short_tmp), **child}
            # git asks for credentials (the first ask hits the injected 502, the second works)
            for i, prompt in enumerate(["Username for 'https://github.com': ", "Password for 'https://github.com': ",
                                        "Password for 'https://github.com': "]):
                rc, out = await _helper([sys.executable, "-m", "coder_agent", "git-askpass", prompt], genv,
                                        helper_out, f"askpass-{i}")
                if rc == 0:
                    assert out.strip() == git_token  # the one place it belongs: git's pipe
            assert git_token in out
            key = (await asyncio.to_thread(d.api, "GET", "/api/v0/gitsshkey")).json()
            secrets["git ssh private key"] = next(ln for ln in key["private_key"].splitlines()
                                                  if ln and not ln.startswith("-----"))
            for path in ("/api/v0/status", "/api/v0/external-auth?match=https://nowhere.example",
                         "/api/v0/containers", "/api/v0/nope"):
                answers.append((await asyncio.to_thread(d.api, "GET", path)).text)
            d.signal(signal.SIGTERM)
            assert await asyncio.to_thread(d.wait) == 0

            # 2. instance identity: the exchanged session token is a secret too
            (short_tmp / "api.sock").unlink(missing_ok=True)
            env2 = daemon_env(ds.url, "", CODER_AGENT_AUTH="aws-instance-identity",
                              AWS_EC2_METADATA_SERVICE_ENDPOINT=ms.url + "/", CODER_AGENT_LOG_LEVEL="debug",
                              CODER_AGENT_SHUTDOWN_TIMEOUT="3", CODER_AGENT_NAME="ident")
            d2 = spawn_daemon(env2)
            await asyncio.to_thread(d2.wait_ready)
            await apoll(lambda: d2.api("GET", "/api/v0/status").json()["auth"]["token_obtained_at"], 20)
            ident.token = str(uuid.uuid4())  # rotated: a 401, a second exchange, a second secret
            secrets["identity session token (rotated)"] = ident.token
            body = {"source": {"display_name": "probe"}, "logs": [{"output": "after rotation"}]}
            assert (await asyncio.to_thread(d2.api, "POST", "/api/v0/logs", json=body)).status_code == 202
            await apoll(lambda: len(ds.requests_to("/aws-instance-identity")) >= 2, 20)
            await apoll(lambda: any(r["output"] == "after rotation" for r in ident.logs), 20)
            answers.append((await asyncio.to_thread(d2.api, "GET", "/api/v0/status")).text)
            d2.signal(signal.SIGTERM)
            assert await asyncio.to_thread(d2.wait) == 0
            # the exchange really happened, with our secrets on the wire where they belong
            assert any(r.headers.get("X-Secret-Proxy") == header_secret for r in ds.requests_to("/api/v2/"))

    files = _files(short_tmp)
    assert any(p.name == "coder-agent.log" for p in files) and any(p.suffix == ".json" for p in files)
    leaks = [f"{what} in {p.relative_to(short_tmp)}" for p, data in files.items()
             for what, s in secrets.items() if s.encode() in data]
    leaks += [f"{what} in a local API answer" for a in answers for what, s in secrets.items() if s in a]
    assert not leaks, leaks
    scanned = sum(len(b) for b in files.values())
    print(f"scanned {len(files)} files ({scanned} bytes) and {len(answers)} answers for {len(secrets)} secrets")


def test_config_errors_never_echo_a_secret() -> None:
    """A bad secret value in a config error is named, never shown."""
    secret = f"bad\nheader-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
    env.update({"CODER_AGENT_URL": "http://127.0.0.1:9", "CODER_AGENT_TOKEN": "x" * 36,
                "CODER_AGENT_HEADER": f"novalue{secret}", "CODER_AGENT_API_ADDRESS": "0.0.0.0:1"})
    out = subprocess.run([sys.executable, "-m", "coder_agent", "run"], env=env, capture_output=True, text=True,
                         timeout=t(30))
    assert out.returncode == 78
    assert secret.split("\n")[1] not in out.stderr and "x" * 36 not in out.stderr
