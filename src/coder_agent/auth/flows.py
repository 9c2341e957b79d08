"""The cloud metadata protocols as pure request/reply flows (no sockets, no clock).

A *flow* is a generator: it yields :class:`MetadataRequest` objects, receives a
:class:`MetadataReply` for each, and returns the identity fields to forward to coderd. The
asyncio layer (:mod:`coder_agent.auth.provider`) only moves requests and replies.

Rules (what the Go agent sends, ../shared/protocol/coder-agent-http.md §1.2, plus our checks):

* AWS IMDSv2: ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds: 21600``,
  then ``GET /latest/dynamic/instance-identity/signature`` and ``.../document`` with
  ``X-aws-ec2-metadata-token``. Bodies are forwarded raw as ``signature`` / ``document``.
* Azure: ``GET /metadata/attested/document?api-version=2020-09-01`` with ``Metadata: true``; the
  JSON reply's ``signature`` and ``encoding`` are forwarded unchanged.
* Google: ``GET /computeMetadata/v1/instance/service-accounts/default/identity?audience=coder&
  format=full`` with ``Metadata-Flavor: Google``; the body is forwarded as ``json_web_token``.
  ``format=full`` is what puts ``google.compute_engine.instance_id`` in the token.
* Unlike the Go agent, every reply's status is checked: a non-2xx reply is a
  :class:`~coder_agent.errors.MetadataError` naming the step, the URL and the service's own text
  (never a body forwarded to coderd as if it were an identity). Secret replies (the IMDSv2
  session token, the identity documents) are never quoted in errors.
* ``agent_name`` is in the exchange body only when set (the key is absent otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import MetadataError, ProtocolError

__all__ = [
    "AWS",
    "AZURE",
    "CLOUDS",
    "GOOGLE",
    "Cloud",
    "Flow",
    "MetadataReply",
    "MetadataRequest",
    "aws_flow",
    "azure_flow",
    "exchange_body",
    "google_flow",
    "session_token_from",
]

AWS_TOKEN_TTL = "21600"
AZURE_API_VERSION = "2020-09-01"
GOOGLE_AUDIENCE = "coder"
_EXCERPT = 200


@dataclass(frozen=True)
class MetadataRequest:
    method: str
    url: str
    step: str  # what this call is for, in words ("IMDSv2 session token")
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetadataReply:
    status: int
    text: str
    headers: Mapping[str, str] = field(default_factory=dict)  # keys lower-case


Flow = Generator[MetadataRequest, MetadataReply, dict[str, str]]


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"


def _ok(req: MetadataRequest, reply: MetadataReply, hint: str = "") -> str:
    """The body of a 2xx reply; otherwise a MetadataError with the service's own words."""
    if 200 <= reply.status < 300:
        return reply.text
    said = _excerpt(reply.text) or "(empty body)"
    raise MetadataError(req.url, f"HTTP {reply.status}", f"{req.step} refused: {said}{hint}")


def _required(req: MetadataRequest, value: str, what: str) -> str:
    if not value.strip():
        raise MetadataError(req.url, "empty reply", f"{req.step}: the service returned an empty {what}")
    return value


def aws_flow(base: str) -> Flow:
    token_req = MetadataRequest("PUT", f"{base}/latest/api/token", "IMDSv2 session token",
                                {"X-aws-ec2-metadata-token-ttl-seconds": AWS_TOKEN_TTL})
    imds_token = _required(token_req, _ok(token_req, (yield token_req)), "token").strip()
    auth = {"X-aws-ec2-metadata-token": imds_token}
    sig_req = MetadataRequest("GET", f"{base}/latest/dynamic/instance-identity/signature",
                              "instance identity signature", auth)
    signature = _required(sig_req, _ok(sig_req, (yield sig_req)), "signature")
    doc_req = MetadataRequest("GET", f"{base}/latest/dynamic/instance-identity/document",
                              "instance identity document", auth)
    document = _required(doc_req, _ok(doc_req, (yield doc_req)), "document")
    return {"signature": signature, "document": document}


def azure_flow(base: str) -> Flow:
    req = MetadataRequest("GET", f"{base}/metadata/attested/document?api-version={AZURE_API_VERSION}",
                          "attested document", {"Metadata": "true"})
    text = _ok(req, (yield req))
    try:
        doc = json.loads(text)
    except ValueError:
        raise MetadataError(req.url, "parse", f"{req.step}: the reply is not JSON: {_excerpt(text)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("signature"), str) or not doc["signature"]:
        raise MetadataError(req.url, "parse", f"{req.step}: the reply has no \"signature\" string")
    encoding = doc.get("encoding")
    return {"signature": doc["signature"], "encoding": encoding if isinstance(encoding, str) else ""}


def google_flow(base: str) -> Flow:
    req = MetadataRequest(
        "GET",
        f"{base}/computeMetadata/v1/instance/service-accounts/default/identity"
        f"?audience={GOOGLE_AUDIENCE}&format=full",
        "identity token", {"Metadata-Flavor": "Google"})
    reply = yield req
    hint = ""
    if reply.headers.get("metadata-flavor") != "Google":
        # Google's metadata server stamps every reply; without it we are talking to something else
        # (another cloud's IMDS at the same link-local address, or a proxy).
        hint = " (the reply lacks \"Metadata-Flavor: Google\": this is not a Google metadata server)"
    jwt = _required(req, _ok(req, reply, hint), "token").strip()
    return {"json_web_token": jwt}


@dataclass(frozen=True)
class Cloud:
    """One ``--auth`` method: where its metadata service is and how to exchange its identity."""

    method: str
    name: str
    exchange_path: str
    flow: Callable[[str], Flow]
    endpoint_setting: str  # the variable that moves the metadata endpoint (for hints)

    def unreachable_hint(self) -> str:
        return (f" (is this machine running on {self.name}? the metadata endpoint can be changed with "
                f"{self.endpoint_setting})")


AWS = Cloud("aws-instance-identity", "AWS EC2", "/api/v2/workspaceagents/aws-instance-identity", aws_flow,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT")
AZURE = Cloud("azure-instance-identity", "Azure", "/api/v2/workspaceagents/azure-instance-identity", azure_flow,
              "CODER_AGENT_AZURE_METADATA_URL")
GOOGLE = Cloud("google-instance-identity", "Google Compute Engine",
               "/api/v2/workspaceagents/google-instance-identity", google_flow, "GCE_METADATA_HOST")
CLOUDS = {c.method: c for c in (AWS, AZURE, GOOGLE)}


def base_url(cloud: Cloud, endpoint: str) -> str:
    """The metadata base URL from a setting: a URL for AWS/Azure, ``host[:port]`` for Google.

    A missing scheme means http (the services are plain HTTP on a link-local address).
    """
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    return endpoint


def exchange_body(identity: Mapping[str, str], agent_name: str | None) -> dict[str, str]:
    """The POST body for coderd: the identity fields, plus ``agent_name`` only when set."""
    body = dict(identity)
    name = (agent_name or "").strip()
    if name:
        body["agent_name"] = name
    return body


def session_token_from(body: Any) -> str:
    """The ``session_token`` of an ``agentsdk.AuthenticateResponse``; ProtocolError otherwise."""
    if isinstance(body, dict):
        tok = body.get("session_token")
        if isinstance(tok, str) and tok.strip():
            return tok.strip()
    raise ProtocolError("the instance identity exchange answered 200 without a session_token")
