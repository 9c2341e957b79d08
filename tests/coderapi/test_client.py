"""The API client core, driven through httpx.MockTransport (no network)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from coder_agent.coderapi import CoderClient, FixedToken, TokenFile
from coder_agent.coderapi.models import PatchLogs
from coder_agent.errors import ApiError, AuthError, ProtocolError, TransportError

T1 = "11111111-1111-4111-8111-111111111111"
T2 = "22222222-2222-4222-8222-222222222222"


async def test_headers_and_401_refresh_retry_once(tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.write_text(T1)
    seen: list[tuple[str, str | None, str | None]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append((req.url.path, req.headers.get("Coder-Session-Token"), req.headers.get("X-Extra")))
        if req.headers.get("Coder-Session-Token") == T1:
            tok.write_text(f"{T2}\n")  # the token rotates while we are running
            return httpx.Response(401, json={"message": "Workspace agent not authorized."})
        return httpx.Response(200, json=None)

    c = CoderClient("http://coder.test/", TokenFile(tok), headers={"X-Extra": "1"},
                    transport=httpx.MockTransport(handler))
    await c.patch_logs(PatchLogs.model_validate({"log_source_id": T1, "logs": [
        {"created_at": "2026-01-01T00:00:00Z", "output": "x"}]}))
    await c.patch_logs(PatchLogs.model_validate({"log_source_id": T1, "logs": [
        {"created_at": "2026-01-01T00:00:00Z", "output": "y"}]}))
    assert [s[1] for s in seen] == [T1, T2, T2]
    assert all(s[2] == "1" for s in seen)
    await c.aclose()


async def test_persistent_401_raises_auth_error() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401, json={"message": "nope", "detail": "d"})

    c = CoderClient("http://coder.test", FixedToken(T1), transport=httpx.MockTransport(handler))
    with pytest.raises(AuthError) as ei:
        await c.gitsshkey()
    assert calls == 2 and ei.value.detail == "d"


async def test_unauthenticated_request_has_no_token() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert "Coder-Session-Token" not in req.headers
        return httpx.Response(200, json={"version": "v2"})

    c = CoderClient("http://coder.test", FixedToken(T1), transport=httpx.MockTransport(handler))
    assert (await c.buildinfo())["version"] == "v2"


async def test_api_error_carries_response() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"message": "Validation failed.",
                                         "validations": [{"field": "state", "detail": "bad"}]})

    c = CoderClient("http://coder.test", FixedToken(T1), transport=httpx.MockTransport(handler))
    with pytest.raises(ApiError) as ei:
        await c.external_auth(match="https://github.com")
    assert ei.value.status == 400 and ei.value.validations == [{"field": "state", "detail": "bad"}]


async def test_transport_errors_name_the_stage() -> None:
    def refuse(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    def slow(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    for handler, stage in ((refuse, "connect"), (slow, "timeout")):
        c = CoderClient("http://coder.test", FixedToken(T1), transport=httpx.MockTransport(handler))
        with pytest.raises(TransportError) as ei:
            await c.gitsshkey()
        assert ei.value.stage == stage


@pytest.mark.parametrize("body", [b'{"public_key": "ssh-ed25519 AAAA", "private_key": 5}', b"[]", b"not json"])
async def test_a_body_that_is_not_the_model_is_a_protocol_error_without_the_value(body: bytes) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    c = CoderClient("http://coder.test", FixedToken(T1), transport=httpx.MockTransport(handler))
    with pytest.raises(ProtocolError) as ei:
        await c.gitsshkey()
    text = str(ei.value)
    assert "GET /api/v2/workspaceagents/me/gitsshkey answered 200" in text and "GitSSHKey" in text
    assert "AAAA" not in text and "\n" not in text
    await c.aclose()


async def test_dns_failure_is_diagnosed() -> None:
    c = CoderClient("http://no-such-host.invalid", FixedToken(T1))
    with pytest.raises(TransportError) as ei:
        await c.buildinfo()
    assert ei.value.stage in ("dns", "connect")
    await c.aclose()


def test_ws_url() -> None:
    assert CoderClient("https://c.example", FixedToken(T1)).ws_url("/x") == "wss://c.example/x"
    assert CoderClient("http://c.example/", FixedToken(T1)).ws_url("/x") == "ws://c.example/x"
