"""Instance-identity providers end to end: fake metadata server -> provider -> devserver exchange
-> the session token used on /me/ requests; faults, pacing on a FakeClock, 401 mid-run."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import structlog

from coder_agent.auth import AWS, AZURE, GOOGLE, IDENTITY, Cloud, InstanceIdentityProvider
from coder_agent.clock import FakeClock
from coder_agent.coderapi import models
from coder_agent.coderapi.client import CoderClient
from coder_agent.devserver import DevAgent, DevServer, Fault
from coder_agent.devserver.identity import aws_signature, azure_signature, verify_google
from coder_agent.devserver.metadata import MetadataServer
from coder_agent.errors import ApiError, AuthError, CoderAgentError, MetadataError, NotAuthenticated
from coder_agent.log import Redactor
from coder_agent.retry import Decision, classify

from ..conftest import t


@asynccontextmanager
async def rig(cloud: Cloud, ms: MetadataServer, ds: DevServer, **kw: Any) -> AsyncIterator[
        tuple[InstanceIdentityProvider, CoderClient, Redactor]]:
    red = Redactor()
    endpoint = kw.pop("endpoint", ms.host if cloud is GOOGLE else ms.url)
    client: CoderClient | None = None
    prov = InstanceIdentityProvider(cloud, endpoint, lambda: client,  # type: ignore[arg-type,return-value]
                                    on_new_token=red.add, scrub=red.scrub, **kw)
    client = CoderClient(ds.url, prov)
    try:
        yield prov, client, red
    finally:
        await client.aclose()


def agent(ds: DevServer, name: str) -> DevAgent:
    return next(a for a in ds.state.agents if a.name == name)


def logs(text: str) -> models.PatchLogs:
    return models.PatchLogs.model_validate(
        {"log_source_id": models.EXTERNAL_LOG_SOURCE_ID,
         "logs": [{"created_at": "2026-01-01T00:00:00Z", "output": text, "level": "info"}]})


class Cause:
    value: Any = None


@contextmanager
def raises_cause(kind: type[CoderAgentError]) -> Iterator[Cause]:
    """The provider raises NotAuthenticated (no server words in its text); the cause is ``kind``."""
    got = Cause()
    with pytest.raises(NotAuthenticated) as e:
        yield got
    assert str(e.value) == "waiting for authentication"
    assert isinstance(e.value.cause, kind), e.value.cause
    assert e.value.refused == isinstance(e.value.cause, AuthError)
    got.value = e.value.cause


AGENT_OF = {AWS.method: "aws", AZURE.method: "azure", GOOGLE.method: "gcp"}


@pytest.mark.parametrize("cloud", [AWS, AZURE, GOOGLE], ids=lambda c: c.method)
async def test_flow_end_to_end(cloud: Cloud, ms: MetadataServer, ids: DevServer) -> None:
    me = agent(ids, AGENT_OF[cloud.method])
    async with rig(cloud, ms, ids) as (prov, client, red):
        assert await prov.token() == me.token
        assert prov.method == cloud.method and prov.obtained_at is not None and prov.last_error is None
        await client.patch_logs(logs("hello"))

    # exactly the metadata requests the Go agent sends
    seen = [(r.method, r.path, r.query) for r in ms.requests]
    if cloud is AWS:
        assert seen == [("PUT", "/latest/api/token", {}),
                        ("GET", "/latest/dynamic/instance-identity/signature", {}),
                        ("GET", "/latest/dynamic/instance-identity/document", {})]
        assert ms.requests[0].headers["X-aws-ec2-metadata-token-ttl-seconds"] == "21600"
        imds_tokens = {r.headers["X-aws-ec2-metadata-token"] for r in ms.requests[1:]}
        assert len(imds_tokens) == 1 and imds_tokens <= set(ms._tokens)
    elif cloud is AZURE:
        assert seen == [("GET", "/metadata/attested/document", {"api-version": "2020-09-01"})]
        assert ms.requests[0].headers["Metadata"] == "true"
    else:
        assert seen == [("GET", "/computeMetadata/v1/instance/service-accounts/default/identity",
                         {"audience": "coder", "format": "full"})]
        assert ms.requests[0].headers["Metadata-Flavor"] == "Google"

    # the exchange: exact body, agent_name absent, no session token
    (ex,) = ids.requests_to(cloud.exchange_path)
    assert ex.method == "POST" and ex.status == 200
    assert not any(h.lower() == "coder-session-token" for h in ex.headers)
    if cloud is AWS:
        doc = ms.aws_document()
        assert ex.body == {"signature": aws_signature(doc), "document": doc}
    elif cloud is AZURE:
        assert ex.body == {"signature": azure_signature(ms.azure_vm_id), "encoding": "pkcs7"}
    else:
        assert set(ex.body) == {"json_web_token"}
        claims = verify_google(ex.body["json_web_token"])
        assert claims["google"]["compute_engine"]["instance_id"] == ms.gcp_instance_id

    # the token returned is the one used next
    (patch,) = ids.requests_to("/me/logs")
    assert patch.headers["Coder-Session-Token"] == me.token
    assert [row["output"] for row in me.logs] == ["hello"]
    assert red.scrub(f"x{me.token}x") == "x[REDACTED]x"


async def test_agent_name_sent_when_set(ms: MetadataServer, ids: DevServer) -> None:
    ids.state.agents.append(DevAgent(name="second", instance_id=ms.aws_instance_id))
    async with rig(AWS, ms, ids, agent_name="second") as (prov, _, _):
        assert await prov.token() == agent(ids, "second").token
    (ex,) = ids.requests_to(AWS.exchange_path)
    assert ex.body["agent_name"] == "second"


@pytest.mark.parametrize(("path", "status", "body", "step"), [
    ("/latest/api/token", 500, "Internal Server Error", "IMDSv2 session token"),
    ("/instance-identity/signature", 401, "Unauthorized", "instance identity signature"),
    ("/instance-identity/document", 404, "Not Found", "instance identity document"),
])
async def test_imds_status_is_an_error(path: str, status: int, body: str, step: str,
                                       ms: MetadataServer, ids: DevServer) -> None:
    ms.fail(path, status, body)
    async with rig(AWS, ms, ids) as (prov, _, _):
        with raises_cause(MetadataError) as e:
            await prov.token()
    assert e.value.stage == f"HTTP {status}" and e.value.url.endswith(path)
    assert prov.last_error == str(e.value)
    assert f"{step} refused: {body}" in prov.last_error and ms.url in prov.last_error
    assert classify(e.value) is Decision.RETRY
    assert not ids.requests_to(AWS.exchange_path)  # an error body is never forwarded to coderd


async def test_imds_hang_times_out(ms: MetadataServer, ids: DevServer) -> None:
    ms.hang("/instance-identity/document")
    async with rig(AWS, ms, ids, metadata_timeout=0.3) as (prov, _, _):
        with raises_cause(MetadataError) as e:
            async with asyncio.timeout(t(10)):
                await prov.token()
    assert e.value.stage == "timeout" and "no answer within 0.3 s" in str(e.value)
    assert e.value.url == f"{ms.url}/latest/dynamic/instance-identity/document"


async def test_metadata_unreachable_is_diagnosed(ids: DevServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: connection refused
    async with rig(GOOGLE, MetadataServer(), ids, endpoint=f"127.0.0.1:{port}") as (prov, _, _):
        with raises_cause(MetadataError) as e:
            await prov.token()
    assert e.value.stage == "connect"
    assert e.value.url.startswith(f"http://127.0.0.1:{port}/computeMetadata/v1/")
    assert "identity token" in str(e.value) and "GCE_METADATA_HOST" in str(e.value)


async def test_exchange_errors_verbatim(ms: MetadataServer, ids: DevServer) -> None:
    async def fails(**kw: Any) -> ApiError:
        async with rig(AWS, ms, ids, **kw) as (prov, _, _):
            with raises_cause(ApiError) as e:
                await prov.token()
            assert prov.last_error == str(e.value)
        return e.value

    ms.key = b"not the devserver key"
    e = await fails()
    assert isinstance(e, AuthError) and e.status == 401 and e.message == "Invalid AWS identity."
    ms.key = MetadataServer.key
    e = await fails(agent_name="nope")
    assert isinstance(e, AuthError) and e.status == 404
    assert e.message == f'No agent found with instance ID "{ms.aws_instance_id}" and name "nope".'
    assert classify(e) is Decision.REAUTHENTICATE  # retried, never given up
    ids.state.agents.append(DevAgent(name="b-agent", instance_id=ms.aws_instance_id))
    e = await fails()
    assert e.status == 409 and "Set CODER_AGENT_NAME to one of: aws, b-agent" in str(e)
    agent(ids, "aws").instance_id = agent(ids, "b-agent").instance_id = "i-gone"
    e = await fails()
    assert e.status == 404 and e.message == f'Instance with id "{ms.aws_instance_id}" not found.'
    ids.add_fault(Fault(path="aws-instance-identity", status=500, message="database is down"))
    e = await fails()
    assert not isinstance(e, AuthError) and e.status == 500 and e.message == "database is down"
    assert classify(e) is Decision.RETRY


async def test_backoff_bounds_on_fake_clock(ms: MetadataServer, ids: DevServer) -> None:
    clock = FakeClock()
    ids.add_fault(Fault(path="aws-instance-identity", status=500))
    p = IDENTITY

    def within(delay: float, n: int) -> bool:
        base = min(p.cap, p.initial * p.factor ** (n - 1))
        return base * (1 - p.jitter) - 1e-9 <= delay <= base + 1e-9

    async with rig(AWS, ms, ids, clock=clock) as (prov, _, _):
        for _ in range(9):
            with raises_cause(ApiError):
                await prov.refresh()
        # the first attempt is immediate, each later one waits the backoff on the clock
        assert len(clock.sleeps) == 8
        assert all(within(d, n) for n, d in enumerate(clock.sleeps, 1)), clock.sleeps
        assert max(clock.sleeps) <= p.cap and clock.sleeps[-1] >= p.cap * (1 - p.jitter)
        ids.clear_faults()
        await prov.refresh()  # waits out the last delay, then succeeds and resets
        assert len(clock.sleeps) == 9 and within(clock.sleeps[-1], 9)
        await prov.refresh()
        assert len(clock.sleeps) == 9  # a success leaves no delay behind
        ids.add_fault(Fault(path="aws-instance-identity", status=500))
        for _ in range(2):
            with raises_cause(ApiError):
                await prov.refresh()
        assert len(clock.sleeps) == 10 and within(clock.sleeps[-1], 1)  # schedule restarted
    assert len(ids.requests_to(AWS.exchange_path)) == 9 + 1 + 1 + 2


async def test_errors_logged_once_per_change(ms: MetadataServer, ids: DevServer) -> None:
    ids.state.agents.append(DevAgent(name="b-agent", instance_id=ms.aws_instance_id))
    async with rig(AWS, ms, ids, clock=FakeClock()) as (prov, _, _):
        with structlog.testing.capture_logs() as cap:
            for _ in range(3):
                with raises_cause(ApiError):
                    await prov.refresh()
            ms.fail("/latest/api/token", 503, "busy", count=2)
            for _ in range(2):
                with raises_cause(MetadataError):
                    await prov.refresh()
            prov.agent_name = "aws"
            assert await prov.refresh() == agent(ids, "aws").token
    warnings = [e for e in cap if e["log_level"] == "warning"]
    assert len(warnings) == 2
    assert "Multiple agents found with instance ID" in warnings[0]["error"]
    assert "HTTP 503" in warnings[1]["error"] and "busy" in warnings[1]["error"]
    assert [e["event"] for e in cap if e["log_level"] == "info"] == [
        "agent session token obtained again", "agent session token obtained"]
    assert all(agent(ids, "aws").token not in str(e) for e in cap)


@pytest.mark.parametrize("how", ["token-rotated", "injected-401"])
async def test_401_mid_run_reexchanges_and_loses_nothing(how: str, ms: MetadataServer, ids: DevServer) -> None:
    me = agent(ids, "aws")
    async with rig(AWS, ms, ids) as (_, client, red):
        await client.patch_logs(logs("one"))
        old = me.token
        if how == "token-rotated":
            me.token = str(uuid.uuid4())  # coderd now answers 401 to the old token
        else:
            ids.add_fault(Fault(path="/me/logs", status=401, count=1, message="Workspace agent not authorized."))
        await client.patch_logs(logs("two"))
        await client.patch_logs(logs("three"))
        assert red.scrub(me.token) == "[REDACTED]"
    assert [row["output"] for row in me.logs] == ["one", "two", "three"]
    assert len(ids.requests_to(AWS.exchange_path)) == 2
    sent = [(r.headers["Coder-Session-Token"], r.status) for r in ids.requests_to("/me/logs")]
    assert sent == [(old, 200), (old, 401), (me.token, 200), (me.token, 200)]


async def test_concurrent_callers_share_one_exchange(ms: MetadataServer, ids: DevServer) -> None:
    async with rig(AZURE, ms, ids) as (prov, _, _):
        tokens = await asyncio.gather(*(prov.token() for _ in range(5)))
    assert set(tokens) == {agent(ids, "azure").token}
    assert len(ids.requests_to(AZURE.exchange_path)) == 1


async def test_plain_path_imports_no_cloud_sdk(ms: MetadataServer, ids: DevServer) -> None:
    """A fresh interpreter does a real AWS exchange and has no cloud SDK module loaded."""
    code = (
        "import asyncio, sys\n"
        "from coder_agent.auth import AWS, InstanceIdentityProvider\n"
        "from coder_agent.coderapi.client import CoderClient\n"
        "async def main():\n"
        "    c = None\n"
        "    p = InstanceIdentityProvider(AWS, sys.argv[1], lambda: c)\n"
        "    c = CoderClient(sys.argv[2], p)\n"
        "    print(await p.token())\n"
        "    await c.aclose()\n"
        "asyncio.run(main())\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('google', 'botocore', 'boto3', 'azure', 'requests')]\n"
        "assert not bad, bad\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, ms.url, ids.url,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env={**os.environ})
    out, err = await asyncio.wait_for(proc.communicate(), t(30))
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip().splitlines()[-1] == agent(ids, "aws").token


async def test_retry_now_skips_the_backoff(ms: MetadataServer, ids: DevServer) -> None:
    clock = FakeClock()
    ms.fail("/metadata/attested", 500, "down", count=3)
    async with rig(AZURE, ms, ids, clock=clock) as (prov, _, _):
        for _ in range(2):
            with raises_cause(MetadataError):
                await prov.refresh()
        assert len(clock.sleeps) == 1
        prov.retry_now()  # SIGHUP
        with raises_cause(MetadataError):
            await prov.refresh()
        assert len(clock.sleeps) == 1
        prov.retry_now()
        assert await prov.refresh() == agent(ids, "azure").token
        assert len(clock.sleeps) == 1


def test_not_authenticated_is_retried_and_names_no_server_text() -> None:
    refused = AuthError(409, "Multiple agents found with instance ID \"i-1\".", method="POST",
                        path=AWS.exchange_path)
    e = NotAuthenticated(refused)
    assert classify(e) is Decision.RETRY  # never FATAL: a log batch or app status is not dropped for it
    assert e.refused and e.cause is refused and "Multiple agents" not in str(e)
    assert not NotAuthenticated(MetadataError("http://169.254.169.254", "connect", "refused")).refused
