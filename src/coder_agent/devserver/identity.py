"""Instance-identity exchange (``POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity``)
and the fake signature scheme it shares with the fake metadata server (:mod:`.metadata`).

coderd's rules (coder/coder ``coderd/workspaceresourceauth.go``), reproduced:

* The body must be JSON (400 "Request body must be valid JSON.") with the required fields
  (``signature`` + ``document``; ``signature`` + ``encoding``; ``json_web_token``), else 400
  "Validation failed." with one validation per missing field.
* A signature that does not verify → 401 "Invalid AWS identity." / "Invalid Azure identity." /
  "Invalid GCP identity." with the reason as detail. Google: the audience is not checked; an
  expired token is invalid; claims whose ``google`` part is not an object → 400 "Error decoding
  JWT claims.".
* Candidates: agents whose ``instance_id`` equals the verified one (agents marked
  ``extra["stale_build"]`` are not on the latest build and are ignored). None → 404
  ``Instance with id "<id>" not found.``; ``agent_name`` (trimmed) given and not among them → 404
  ``No agent found with instance ID "<id>" and name "<name>".``; no name and several → 409
  ``Multiple agents found with instance ID "<id>". Set CODER_AGENT_NAME to one of: a, b``
  (names sorted). Otherwise 200 ``{"session_token": agent.token}``. No session token needed.

The fake signatures (the key is public: this is a test double, not security):

* AWS: the document is the JSON text IMDS serves (``instanceId`` inside); the signature is
  ``base64(HMAC-SHA256(DEV_IDENTITY_KEY, document bytes))``.
* Azure: the signature is ``base64(JSON {"vmId": id, "mac": hex HMAC-SHA256(key, "azure:" + id)})``
  with encoding ``pkcs7`` (real Azure: a PKCS#7 blob whose content carries ``vmId``).
* Google: a JWT ``header.claims.sig`` (base64url, no padding); header ``{"alg": "HS256",
  "typ": "JWT", "kid": "devserver"}``; claims carry ``aud``, ``iat``, ``exp`` and, with
  ``format=full``, ``google.compute_engine.{instance_id, instance_name, project_id, zone}``;
  ``sig = HMAC-SHA256(key, "header.claims")``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import web

from .app import DevServer, coder_error
from .state import DevAgent

__all__ = [
    "DEV_IDENTITY_KEY",
    "aws_signature",
    "azure_signature",
    "google_jwt",
    "install",
    "verify_aws",
    "verify_azure",
    "verify_google",
]

DEV_IDENTITY_KEY = b"coder-agent devserver fake cloud identity key"


class InvalidIdentity(Exception):
    pass


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# signing (the fake metadata server) ---------------------------------------------------------

def aws_signature(document: str, key: bytes = DEV_IDENTITY_KEY) -> str:
    return base64.b64encode(_mac(key, document.encode())).decode()


def azure_signature(vm_id: str, key: bytes = DEV_IDENTITY_KEY) -> str:
    blob = {"vmId": vm_id, "mac": _mac(key, f"azure:{vm_id}".encode()).hex()}
    return base64.b64encode(json.dumps(blob).encode()).decode()


def google_jwt(claims: dict[str, Any], key: bytes = DEV_IDENTITY_KEY) -> str:
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "devserver"}).encode())
    body = _b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64url(_mac(key, f'{head}.{body}'.encode()))}"


# verifying (the exchange) -----------------------------------------------------------------

def verify_aws(signature: str, document: str, key: bytes = DEV_IDENTITY_KEY) -> str:
    """The instance ID of a correctly signed document; InvalidIdentity otherwise."""
    try:
        sig = base64.b64decode(signature.strip(), validate=True)
    except ValueError:
        raise InvalidIdentity("signature is not base64") from None
    if not hmac.compare_digest(sig, _mac(key, document.encode())):
        raise InvalidIdentity("signature does not match the document")
    try:
        doc = json.loads(document)
    except ValueError:
        raise InvalidIdentity("document is not JSON") from None
    iid = doc.get("instanceId") if isinstance(doc, dict) else None
    if not isinstance(iid, str):
        raise InvalidIdentity("document has no instanceId")
    return iid


def verify_azure(signature: str, key: bytes = DEV_IDENTITY_KEY) -> str:
    try:
        blob = json.loads(base64.b64decode(signature, validate=True))
        vm_id = str(blob["vmId"])
        mac = bytes.fromhex(str(blob["mac"]))
    except (ValueError, KeyError, TypeError):
        raise InvalidIdentity("signature is not a pkcs7 attested document") from None
    if not hmac.compare_digest(mac, _mac(key, f"azure:{vm_id}".encode())):
        raise InvalidIdentity("certificate verification failed")
    return vm_id


def verify_google(token: str, key: bytes = DEV_IDENTITY_KEY, now: float | None = None) -> dict[str, Any]:
    """The claims of a correctly signed, unexpired token; InvalidIdentity otherwise."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise InvalidIdentity("idtoken: invalid token, token must have three segments")
    head, body, sig = parts
    try:
        ok = hmac.compare_digest(_unb64url(sig), _mac(key, f"{head}.{body}".encode()))
        claims = json.loads(_unb64url(body))
    except ValueError:
        raise InvalidIdentity("idtoken: unable to decode token") from None
    if not ok:
        raise InvalidIdentity("idtoken: invalid token signature")
    if not isinstance(claims, dict):
        raise InvalidIdentity("idtoken: claims are not an object")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp < (time.time() if now is None else now):
        raise InvalidIdentity("idtoken: token expired")
    return claims


# routes -----------------------------------------------------------------------------------

async def _read(request: web.Request, required: tuple[str, ...]) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except ValueError as e:
        return coder_error(400, "Request body must be valid JSON.", str(e))
    if not isinstance(body, dict):
        return coder_error(400, "Request body must be valid JSON.")
    missing = [f for f in required if not isinstance(body.get(f), str) or not body[f]]
    if missing:
        return coder_error(400, "Validation failed.", validations=[
            {"field": f, "detail": 'Validation failed for tag "required" with value: ""'} for f in missing])
    return body


def _select(ds: DevServer, instance_id: str, agent_name: Any) -> DevAgent | web.Response:
    name = agent_name.strip() if isinstance(agent_name, str) else ""
    candidates = [a for a in ds.state.agents
                  if a.instance_id and a.instance_id == instance_id and not a.extra.get("stale_build")]
    if not candidates:
        return coder_error(404, f"Instance with id {json.dumps(instance_id)} not found.")
    if name:
        for a in candidates:
            if a.name == name:
                return a
        return coder_error(404, f"No agent found with instance ID {json.dumps(instance_id)} "
                                f"and name {json.dumps(name)}.")
    if len(candidates) > 1:
        names = ", ".join(sorted(a.name for a in candidates))
        return coder_error(409, f"Multiple agents found with instance ID {json.dumps(instance_id)}. "
                                f"Set CODER_AGENT_NAME to one of: {names}")
    return candidates[0]


def _answer(ds: DevServer, instance_id: str, agent_name: Any) -> web.Response:
    picked = _select(ds, instance_id, agent_name)
    if isinstance(picked, web.Response):
        return picked
    return web.json_response({"session_token": picked.token})


def install(app: web.Application, ds: DevServer) -> None:
    key: bytes = DEV_IDENTITY_KEY

    async def aws(request: web.Request) -> web.Response:
        body = await _read(request, ("signature", "document"))
        if isinstance(body, web.Response):
            return body
        try:
            iid = verify_aws(body["signature"], body["document"], key)
        except InvalidIdentity as e:
            return coder_error(401, "Invalid AWS identity.", str(e))
        return _answer(ds, iid, body.get("agent_name"))

    async def azure(request: web.Request) -> web.Response:
        body = await _read(request, ("signature", "encoding"))
        if isinstance(body, web.Response):
            return body
        try:
            iid = verify_azure(body["signature"], key)
        except InvalidIdentity as e:
            return coder_error(401, "Invalid Azure identity.", str(e))
        return _answer(ds, iid, body.get("agent_name"))

    async def google(request: web.Request) -> web.Response:
        body = await _read(request, ("json_web_token",))
        if isinstance(body, web.Response):
            return body
        try:
            claims = verify_google(body["json_web_token"], key)
        except InvalidIdentity as e:
            return coder_error(401, "Invalid GCP identity.", str(e))
        g = claims.get("google", {})
        ce = g.get("compute_engine", {}) if isinstance(g, dict) else None
        if not isinstance(ce, dict):
            return coder_error(400, "Error decoding JWT claims.", "'google' expected a map")
        return _answer(ds, str(ce.get("instance_id") or ""), body.get("agent_name"))

    r = app.router
    r.add_post("/api/v2/workspaceagents/aws-instance-identity", aws)
    r.add_post("/api/v2/workspaceagents/azure-instance-identity", azure)
    r.add_post("/api/v2/workspaceagents/google-instance-identity", google)
