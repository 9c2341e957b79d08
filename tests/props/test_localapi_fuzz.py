"""Schemathesis against a real daemon: any input, valid or not, never gets a 500 or a traceback.

The daemon runs as a subprocess on its unix socket (so the git-credential routes are reached, not
refused as on TCP) against the devserver (also a subprocess: these tests are synchronous). Cases
come from the daemon's own OpenAPI document, in both generation modes (schema-valid and
schema-violating). Every answer must pass schemathesis's checks (no server error, a documented
status code and content type, the body matching the documented schema) plus ours: every error
body is a codersdk.Response (an object with a string ``message``).

Two daemons: Dev Containers disabled (every container route must say so with a 403), and
enabled against the real Docker engine (marked ``docker``). Bounded: a few dozen examples per
operation and mode, no shrinking past a deadline; the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from coder_agent.localapi.openapi import document
from tests.conftest import DaemonProcess, t, unavailable

SCHEMA = schemathesis.openapi.from_dict(document())
OPERATIONS = [op.ok() for op in SCHEMA.get_all_operations()]
MAX_EXAMPLES = int(os.environ.get("CODER_AGENT_FUZZ_EXAMPLES", "25"))


class DevServerProc:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "coder_agent.devserver"], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.url, self.token = str(info["url"]), str(info["token"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(t(10))


@pytest.fixture(scope="module")
def devserver_proc() -> Iterator[DevServerProc]:
    ds = DevServerProc()
    yield ds
    ds.close()


def _start(ds: DevServerProc, tmp: Path, devcontainers: bool) -> DaemonProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
    env.update({
        "CODER_AGENT_URL": ds.url,
        "CODER_AGENT_TOKEN": ds.token,
        "CODER_AGENT_API_ADDRESS": f"unix:{tmp / 'api.sock'}",
        "CODER_AGENT_LOG_DIR": str(tmp / "logs"),
        "CODER_AGENT_STATE_DIR": str(tmp / "state"),
        "CODER_AGENT_PROMETHEUS_ADDRESS": "",
        "CODER_AGENT_LOG_FORMAT": "json",
        "CODER_AGENT_DEVCONTAINERS_ENABLE": "true" if devcontainers else "false",
        # only our own (empty) folder is searched for devcontainer.json files
        "CODER_AGENT_DIRECTORY": str(tmp / "work"),
    })
    (tmp / "work").mkdir()
    d = DaemonProcess(env, [], tmp).start()
    d.wait_ready()
    return d


@pytest.fixture(scope="module", params=[
    "devcontainers-off", pytest.param("devcontainers-on", marks=pytest.mark.docker)])
def daemon(request: pytest.FixtureRequest, devserver_proc: DevServerProc) -> Iterator[DaemonProcess]:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="ca-fz-", dir="/tmp"))
    on = request.param == "devcontainers-on"
    if on:
        import docker

        try:
            docker.from_env(timeout=10).ping()
        except Exception as e:
            unavailable(f"no Docker engine: {e}", ci_reason=f"no Docker engine: {e} (run scripts/provision.sh)")
    d = _start(devserver_proc, tmp, on)
    yield d
    code = d.stop()
    stderr = d.stderr_path.read_text(errors="replace")
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
    assert code == 0, stderr[-3000:]
    # A handler crash is answered 500 *and* logged with a traceback: neither may have happened.
    assert "local API handler failed" not in stderr, stderr[-3000:]


def codersdk_error(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """Every 4xx/5xx body is a JSON object with a string ``message`` (codersdk.Response)."""
    if response.status_code < 400:
        return None
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert set(body) <= {"message", "detail", "validations"}, body
    for v in body.get("validations") or []:
        assert isinstance(v, dict) and isinstance(v.get("field"), str) and isinstance(v.get("detail"), str), body
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          codersdk_error]


def _send(client: httpx.Client, case: schemathesis.Case) -> httpx.Response:
    kw = case.as_transport_kwargs(base_url="http://agent")
    kw.pop("cookies", None)
    if "data" in kw:
        kw["content"] = kw.pop("data")
    return client.request(**kw)


@pytest.mark.parametrize("label", [op.label for op in OPERATIONS])
def test_no_input_breaks_the_local_api(daemon: DaemonProcess, label: str) -> None:
    op = next(o for o in OPERATIONS if o.label == label)
    cases = st.one_of(op.as_strategy(generation_mode=GenerationMode.POSITIVE),
                      op.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    sock = daemon.api_address[5:]
    seen: list[int] = []
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock), timeout=t(15)) as client:

        @given(case=cases)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=False,
                  phases=[Phase.explicit, Phase.generate, Phase.shrink],
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            if op.method.upper() == "GET" and op.path == "/api/v0/external-auth":
                # "listen" long-polls until the user links an account: bound it like the helper does
                case.query = {k: v for k, v in (case.query or {}).items() if k not in ("listen", "wait")} or None
            response = _send(client, case)
            seen.append(response.status_code)
            case.validate_response(response, checks=CHECKS)

        run()
    # the cases did reach the daemon: many of them where there is input to vary
    has_input = bool(op.body) or any(True for _ in op.iter_parameters())
    assert len(seen) >= (MAX_EXAMPLES // 2 if has_input else 1), seen
    print(label, len(seen), sorted(set(seen)))
