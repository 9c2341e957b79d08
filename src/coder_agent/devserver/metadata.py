"""A fake cloud metadata server on loopback speaking the real AWS, Azure and Google protocols.

One aiohttp server answers all three clouds' paths (point ``AWS_EC2_METADATA_SERVICE_ENDPOINT``,
``CODER_AGENT_AZURE_METADATA_URL`` at ``ms.url`` and ``GCE_METADATA_HOST`` at ``ms.host``),
records every request, and can be told to fail or hang. Identities are signed with the fake
scheme of :mod:`.identity`, so the devserver accepts them.

Protocol rules kept from the real services:

* AWS IMDSv2: ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` in
  1..21600 (400 otherwise; a GET there is 405) and answers a token; ``GET
  /latest/dynamic/instance-identity/{document,signature,pkcs7}`` needs a current token in
  ``X-aws-ec2-metadata-token`` (401 otherwise: IMDSv1 disabled).
* Azure: ``GET /metadata/attested/document`` needs ``Metadata: true`` and ``api-version``
  (400 with a JSON ``error`` otherwise) and answers ``{"encoding": "pkcs7", "signature": ...}``.
* Google: every ``/computeMetadata/v1/...`` request needs ``Metadata-Flavor: Google`` (403
  otherwise); every reply carries ``Metadata-Flavor: Google``; ``GET /`` is the ping;
  ``.../service-accounts/default/identity`` needs a non-empty ``audience`` (400) and only puts
  ``google.compute_engine`` in the claims with ``format=full``.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .identity import DEV_IDENTITY_KEY, aws_signature, azure_signature, google_jwt

__all__ = ["MetadataFault", "MetadataRequest", "MetadataServer"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class MetadataRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float


@dataclass
class MetadataFault:
    """Matching requests (``path`` is a regex searched in the path) get ``status`` with ``body``,
    or hang (``hang=True``) until the client gives up. ``count``: how many (None = all)."""

    path: str
    status: int | None = None
    body: str = ""
    hang: bool = False
    count: int | None = None
    hits: int = 0


@dataclass
class MetadataServer:
    """Run with ``async with MetadataServer() as ms:``."""

    aws_instance_id: str = "i-0fake1234567890abc"
    azure_vm_id: str = "5e4a3b2c-1d0e-4f9a-8b7c-6d5e4f3a2b1c"
    gcp_instance_id: str = "4201337000000000001"
    key: bytes = DEV_IDENTITY_KEY  # signing key; a different key makes coderd answer 401
    host_addr: str = "127.0.0.1"
    requests: list[MetadataRequest] = field(default_factory=list)
    faults: list[MetadataFault] = field(default_factory=list)
    url: str = ""
    host: str = ""  # host:port, the GCE_METADATA_HOST form
    _runner: web.AppRunner | None = None
    _tokens: dict[str, float] = field(default_factory=dict)  # IMDSv2 token -> expiry (monotonic)

    async def __aenter__(self) -> MetadataServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, port: int = 0) -> None:
        app = web.Application(middlewares=[self._record])
        r = app.router
        r.add_route("*", "/latest/api/token", self._aws_token)
        r.add_get("/latest/dynamic/instance-identity/{kind}", self._aws_identity)
        r.add_get("/metadata/attested/document", self._azure_attested)
        r.add_get("/", self._gce_ping)
        r.add_get("/computeMetadata/v1/instance/service-accounts/{sa}/identity", self._gce_identity)
        r.add_get("/computeMetadata/v1/instance/service-accounts/{sa}/", self._gce_account)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host_addr, port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        assert server is not None and server.sockets
        bound = int(server.sockets[0].getsockname()[1])
        self.host = f"{self.host_addr}:{bound}"
        self.url = f"http://{self.host}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # test controls ---------------------------------------------------------------------

    def fail(self, path: str, status: int, body: str = "", count: int | None = None) -> MetadataFault:
        f = MetadataFault(path, status=status, body=body, count=count)
        self.faults.append(f)
        return f

    def hang(self, path: str, count: int | None = None) -> MetadataFault:
        f = MetadataFault(path, hang=True, count=count)
        self.faults.append(f)
        return f

    def requests_to(self, fragment: str) -> list[MetadataRequest]:
        return [r for r in self.requests if fragment in r.path]

    # identities (also useful to build exchange bodies by hand) -------------------------

    def aws_document(self) -> str:
        doc = {"accountId": "123456789012", "architecture": "x86_64", "availabilityZone": "eu-west-1a",
               "imageId": "ami-0fake", "instanceId": self.aws_instance_id, "instanceType": "t3.micro",
               "pendingTime": "2026-01-01T00:00:00Z", "privateIp": "10.0.0.12", "region": "eu-west-1",
               "version": "2017-09-30"}
        return json.dumps(doc, indent=2)

    def google_token(self, audience: str, full: bool) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"aud": audience, "azp": "1234567890", "iss": "https://accounts.google.com",
                                  "sub": "1234567890", "iat": now, "exp": now + 3600}
        if full:
            claims["google"] = {"compute_engine": {
                "instance_id": self.gcp_instance_id, "instance_name": "dev-vm", "project_id": "fake-project",
                "project_number": 1234567890, "zone": "europe-west1-b",
                "instance_creation_timestamp": now - 60}}
        return google_jwt(claims, self.key)

    # middleware and routes -------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append(MetadataRequest(request.method, request.path, dict(request.query),
                                             dict(request.headers), time.monotonic()))
        for f in self.faults:
            if (f.count is None or f.hits < f.count) and re.search(f.path, request.path):
                f.hits += 1
                if f.hang:
                    await asyncio.sleep(3600)
                return web.Response(status=f.status or 500, text=f.body)
        return await handler(request)

    async def _aws_token(self, request: web.Request) -> web.Response:
        if request.method != "PUT":
            return web.Response(status=405, text="Method Not Allowed")
        ttl_text = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        try:
            ttl = int(ttl_text)
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= 21600:
            return web.Response(status=400, text="Bad Request")
        token = secrets.token_urlsafe(40)
        self._tokens[token] = time.monotonic() + ttl
        return web.Response(text=token, headers={"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})

    async def _aws_identity(self, request: web.Request) -> web.Response:
        token = request.headers.get("X-aws-ec2-metadata-token", "")
        if self._tokens.get(token, 0.0) < time.monotonic():
            return web.Response(status=401, text="Unauthorized")
        doc = self.aws_document()
        kind = request.match_info["kind"]
        if kind == "document":
            return web.Response(text=doc)
        if kind in ("signature", "pkcs7"):
            return web.Response(text=aws_signature(doc, self.key))
        return web.Response(status=404, text="Not Found")

    async def _azure_attested(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata", "").lower() != "true":
            return web.json_response({"error": "Bad request. Required metadata header not specified"}, status=400)
        if not request.query.get("api-version"):
            return web.json_response({"error": "Bad request. api-version was not specified in the request"},
                                     status=400)
        return web.json_response({"encoding": "pkcs7", "signature": azure_signature(self.azure_vm_id, self.key)})

    def _gce_reply(self, text: str, status: int = 200) -> web.Response:
        return web.Response(status=status, text=text, headers={"Metadata-Flavor": "Google"})

    def _gce_refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Metadata-Flavor") != "Google":
            return self._gce_reply("Missing Metadata-Flavor:Google header.", 403)
        return None

    async def _gce_ping(self, request: web.Request) -> web.Response:
        return self._gce_reply("computeMetadata/\n")

    async def _gce_account(self, request: web.Request) -> web.Response:
        refused = self._gce_refused(request)
        if refused is not None:
            return refused
        return web.Response(text=json.dumps({"aliases": ["default"], "email": "fake@fake-project.iam",
                                             "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}),
                            content_type="application/json", headers={"Metadata-Flavor": "Google"})

    async def _gce_identity(self, request: web.Request) -> web.Response:
        refused = self._gce_refused(request)
        if refused is not None:
            return refused
        audience = request.query.get("audience", "")
        if not audience:
            return self._gce_reply("non-empty audience parameter required", 400)
        return self._gce_reply(self.google_token(audience, request.query.get("format") == "full"))
