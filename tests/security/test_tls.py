"""TLS verification is on by default; a CA bundle setting makes a private CA work.

A real HTTPS devserver on loopback with a self-signed certificate made by ``openssl``.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

from coder_agent.devserver import DevServer

from ..conftest import apoll, unavailable


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        unavailable("openssl missing", ci_reason="openssl missing: run scripts/provision.sh")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


async def test_tls_verified_by_default_and_ca_file_works(daemon_env, spawn_daemon, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    cert, key = _self_signed(short_tmp)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    async with DevServer(ssl_context=ctx) as ds:
        assert ds.url.startswith("https://127.0.0.1:")
        env = daemon_env(ds.url, ds.agent.token, CODER_AGENT_SHUTDOWN_TIMEOUT="2")

        d = spawn_daemon(env)  # default: the self-signed certificate is refused, and the status says why
        await asyncio.to_thread(d.wait_ready)
        cp = await apoll(lambda: (c := d.api("GET", "/api/v0/status").json()["control_plane"])["state"] == "failing"
                         and c, timeout=20)
        assert cp["last_error"].startswith("tls failed"), cp
        assert "certificate verify failed" in cp["last_error"]
        assert not ds.requests_to("/api/v2/"), "a request got through an unverified connection"
        assert d.stop() == 0

        (short_tmp / "api.sock").unlink(missing_ok=True)
        d = spawn_daemon({**env, "CODER_AGENT_TLS_CA_FILE": str(cert)})
        await asyncio.to_thread(d.wait_ready)
        await apoll(lambda: d.api("GET", "/api/v0/status").json()["control_plane"]["state"] == "connected",
                    timeout=20)
        assert ds.requests_to("/api/v2/workspaceagents/me/rpc")  # the agent RPC upgrade, over wss
        assert d.stop() == 0
