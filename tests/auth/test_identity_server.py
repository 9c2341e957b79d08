"""The devserver's instance-identity exchange follows coderd's rules; the fake signatures verify."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.identity import (
    aws_signature,
    azure_signature,
    google_jwt,
    verify_aws,
    verify_azure,
    verify_google,
)
from coder_agent.devserver.metadata import MetadataServer

AWS = "/api/v2/workspaceagents/aws-instance-identity"
AZURE = "/api/v2/workspaceagents/azure-instance-identity"
GOOGLE = "/api/v2/workspaceagents/google-instance-identity"


def test_signatures_roundtrip_and_tamper() -> None:
    doc = '{"instanceId": "i-1"}'
    assert verify_aws(aws_signature(doc), doc) == "i-1"
    with pytest.raises(Exception, match="does not match"):
        verify_aws(aws_signature(doc), doc.replace("i-1", "i-2"))
    assert verify_azure(azure_signature("vm-1")) == "vm-1"
    with pytest.raises(Exception, match="verification failed"):
        verify_azure(azure_signature("vm-1", key=b"other"))
    tok = google_jwt({"exp": time.time() + 60, "google": {"compute_engine": {"instance_id": "9"}}})
    assert verify_google(tok)["google"]["compute_engine"]["instance_id"] == "9"
    with pytest.raises(Exception, match="expired"):
        verify_google(google_jwt({"exp": time.time() - 1}))
    with pytest.raises(Exception, match="signature"):
        verify_google(google_jwt({"exp": time.time() + 60}, key=b"other"))


async def _post(ds: DevServer, path: str, body: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=ds.url) as c:
        return await c.post(path, content=json.dumps(body))


async def test_validation_and_invalid_identity(ids: DevServer, ms: MetadataServer) -> None:
    r = await _post(ids, AWS, {"signature": "x"})
    assert r.status_code == 400 and r.json()["message"] == "Validation failed."
    assert [v["field"] for v in r.json()["validations"]] == ["document"]
    r = await _post(ids, AZURE, {})
    assert [v["field"] for v in r.json()["validations"]] == ["signature", "encoding"]
    async with httpx.AsyncClient(base_url=ids.url) as c:
        r = await c.post(GOOGLE, content=b"{nope")
    assert r.status_code == 400 and r.json()["message"] == "Request body must be valid JSON."
    doc = ms.aws_document()
    r = await _post(ids, AWS, {"signature": aws_signature(doc, b"wrong"), "document": doc})
    assert (r.status_code, r.json()["message"]) == (401, "Invalid AWS identity.")
    r = await _post(ids, AZURE, {"signature": "bm90IGpzb24=", "encoding": "pkcs7"})
    assert (r.status_code, r.json()["message"]) == (401, "Invalid Azure identity.")
    r = await _post(ids, GOOGLE, {"json_web_token": "a.b"})
    assert (r.status_code, r.json()["message"]) == (401, "Invalid GCP identity.")
    bad_claims = google_jwt({"exp": time.time() + 60, "google": "x"})
    r = await _post(ids, GOOGLE, {"json_web_token": bad_claims})
    assert (r.status_code, r.json()["message"]) == (400, "Error decoding JWT claims.")


async def test_agent_selection_rules(ms: MetadataServer) -> None:
    iid = "i-shared"
    agents = [DevAgent(name="zeta", instance_id=iid), DevAgent(name="alpha", instance_id=iid),
              DevAgent(name="old", instance_id=iid, extra={"stale_build": True})]
    doc = json.dumps({"instanceId": iid})
    body = {"signature": aws_signature(doc), "document": doc}
    async with DevServer(agents=agents) as ds:
        r = await _post(ds, AWS, body)
        assert r.status_code == 409
        assert r.json()["message"] == ('Multiple agents found with instance ID "i-shared". '
                                       "Set CODER_AGENT_NAME to one of: alpha, zeta")
        r = await _post(ds, AWS, {**body, "agent_name": " zeta "})
        assert r.status_code == 200 and r.json() == {"session_token": agents[0].token}
        r = await _post(ds, AWS, {**body, "agent_name": "old"})
        assert r.status_code == 404
        assert r.json()["message"] == 'No agent found with instance ID "i-shared" and name "old".'
        other = json.dumps({"instanceId": "i-none"})
        r = await _post(ds, AWS, {"signature": aws_signature(other), "document": other})
        assert (r.status_code, r.json()["message"]) == (404, 'Instance with id "i-none" not found.')
        # the exchange never needs a session token, and /me/ routes accept the one it returns
        async with httpx.AsyncClient(base_url=ds.url) as c:
            r = await c.get("/api/v2/workspaceagents/me/gitsshkey")
            assert r.status_code == 401


async def test_google_without_format_full_has_no_instance(ids: DevServer, ms: MetadataServer) -> None:
    async with httpx.AsyncClient(base_url=ms.url, headers={"Metadata-Flavor": "Google"}) as c:
        jwt = (await c.get("/computeMetadata/v1/instance/service-accounts/default/identity",
                           params={"audience": "coder"})).text
    r = await _post(ids, GOOGLE, {"json_web_token": jwt})
    assert (r.status_code, r.json()["message"]) == (404, 'Instance with id "" not found.')


async def test_metadata_server_enforces_protocol(ms: MetadataServer) -> None:
    async with httpx.AsyncClient(base_url=ms.url) as c:
        assert (await c.put("/latest/api/token")).status_code == 400
        assert (await c.get("/latest/api/token")).status_code == 405
        assert (await c.get("/latest/dynamic/instance-identity/document")).status_code == 401
        r = await c.get("/latest/dynamic/instance-identity/document", headers={"X-aws-ec2-metadata-token": "nope"})
        assert r.status_code == 401
        assert (await c.get("/metadata/attested/document", params={"api-version": "2020-09-01"})).status_code == 400
        assert (await c.get("/metadata/attested/document", headers={"Metadata": "true"})).status_code == 400
        r = await c.get("/computeMetadata/v1/instance/service-accounts/default/identity?audience=coder")
        assert r.status_code == 403
        r = await c.get("/")
        assert r.headers["Metadata-Flavor"] == "Google"
    assert len(ms.requests) == 8
