"""The OpenAPI 3.1 description of the local API, served at ``GET /api/v0/openapi.json``.

Rules:

* It describes every route the daemon registers (a test compares it with the router), whether
  or not the capability is enabled: a disabled capability answers its routes with a documented
  codersdk.Response error (403 for containers), never an undocumented shape.
* Schemas are the pydantic models' ``model_json_schema``: the codersdk wire models in
  :mod:`coder_agent.coderapi.models` where one exists, the local API's own shapes
  (``POST /api/v0/logs``, the app-status answers, ``/api/v0/status``...) in
  :mod:`coder_agent.localapi.models`. Request schemas describe what the daemon *accepts*
  (validation mode); response schemas what it *sends* (serialization mode); every 4xx/5xx body is
  a ``Response`` (codersdk.Response: ``message`` required, ``detail`` and ``validations`` optional).
* The two ``/watch`` routes are websockets (marked ``x-websocket: true``): a plain GET without the
  upgrade headers gets 400 with a codersdk.Response; after the upgrade every text frame is the
  list route's JSON.
* Pure and built once, on first use.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from .. import __version__

__all__ = ["PATH", "document", "handler"]

PATH = "/api/v0/openapi.json"
_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Response"), description)


def _errors(**codes: str) -> dict[str, Any]:
    """``_errors(e400="...")`` → {"400": error response}; the router's 404/405 are added by callers."""
    return {k.lstrip("e"): _err(v) for k, v in codes.items()}


def _model_schemas() -> dict[str, Any]:
    from pydantic.json_schema import models_json_schema

    from ..coderapi import models as m
    from . import models as local

    pairs: list[tuple[type[Any], Any]] = [
        (m.Response, "serialization"),
        (m.ExternalAuthResponse, "serialization"),
        (m.WorkspaceAgentListeningPortsResponse, "serialization"),
        (m.WorkspaceAgentListContainersResponse, "serialization"),
        (m.PatchAppStatus, "validation"),
        (local.LogsRequest, "validation"),
        *((cls, "serialization") for cls in (local.Hello, local.Status, local.LogsAccepted, local.AppStatusAccepted,
                                             local.AppStatusList, local.AppStatusOutcome, local.GitSSHKeyLocal,
                                             local.Env)),
    ]
    _, top = models_json_schema(pairs, ref_template=_REF)
    defs: dict[str, Any] = dict(top.get("$defs", {}))
    # The local API never sends null for these Go omitempty fields: it leaves the key out.
    resp = defs["Response"]["properties"]
    resp["detail"] = {"type": "string", "title": "Detail"}
    resp["validations"] = {"type": "array", "items": _ref("ValidationErrorModel"), "title": "Validations"}
    return defs


_STRING = {"type": "string"}

_CONTAINERS_OFF = "403: the Dev Container feature is disabled, or not supported inside a sub-agent."
_WS = ("A websocket. Without the upgrade headers the answer is 400 (codersdk.Response). After the upgrade "
       "each text frame is the list route's JSON: once on connect and after every change; the server "
       "pings to notice dead peers; client messages are ignored.")
_DC_ID = {"name": "devcontainer", "in": "path", "required": True, "schema": {"type": "string"},
          "description": "The devcontainer's id (from the containers list)."}


def _paths() -> dict[str, Any]:
    return {
        "/": {"get": {
            "operationId": "hello", "summary": "Liveness: the Go agent's greeting.",
            "responses": {"200": _json(_ref("Hello"), "Always.")}}},
        PATH: {"get": {
            "operationId": "openapi", "summary": "This document.",
            "responses": {"200": _json({"type": "object"}, "The OpenAPI description.")}}},
        "/api/v0/status": {"get": {
            "operationId": "status", "summary": "The daemon's state (control plane, services, capabilities).",
            "responses": {"200": _json(_ref("Status"), "Always.")}}},
        "/api/v0/retry": {"post": {
            "operationId": "retry",
            "summary": "Retry the control-plane connection now, skipping the backoff (as SIGHUP does).",
            "responses": {"202": _json(_ref("Response"), "The retry was started; watch /api/v0/status.")}}},
        "/api/v0/manifest": {"get": {
            "operationId": "manifest",
            "summary": "The manifest coderd gave this agent (agent RPC), environment values redacted.",
            "responses": {
                "200": _json({"type": "object", "required": ["agent_id", "apps", "scripts", "metadata"],
                              "properties": {"agent_id": _STRING, "agent_name": _STRING, "owner": _STRING,
                                             "workspace_id": _STRING, "workspace_name": _STRING,
                                             "directory": _STRING,
                                             "environment": {"type": "object",
                                                             "additionalProperties": {"const": "[REDACTED]"}},
                                             "apps": {"type": "array", "items": {"type": "object"}},
                                             "scripts": {"type": "array", "items": {"type": "object"}},
                                             "metadata": {"type": "array", "items": {"type": "object"}},
                                             "devcontainers": {"type": "array", "items": {"type": "object"}}}},
                             "Known since the agent RPC delivered it."),
                **_errors(e503="Not received from coderd yet (see the connection in /api/v0/status).")}}},
        "/api/v0/logs": {"post": {
            "operationId": "postLogs",
            "summary": "Ship lines under a named log source (coder-agent log).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("LogsRequest")}}},
            "responses": {
                "202": _json(_ref("LogsAccepted"), "Every line is in the source's local file and queued."),
                **_errors(e400="Not JSON, or a field is invalid (named in validations); nothing was written.",
                          e413="Body over 2 MiB.")}}},
        "/api/v0/app-status": {
            "post": {
                "operationId": "postAppStatus",
                "summary": "Report an app's status (agentsdk.PatchAppStatus); delivered to coderd with retries.",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": _ref("PatchAppStatus")}}},
                "responses": {
                    "202": _json(_ref("AppStatusAccepted"), "Accepted and queued (durably unless durable=false)."),
                    **_errors(e400="Invalid as coderd would find it (field named in validations).",
                              e413="Body over 64 KiB.")}},
            "get": {
                "operationId": "getAppStatus",
                "summary": "The newest status per app, or one status's outcome (id), long-polled (wait).",
                "parameters": [
                    {"name": "id", "in": "query", "required": False, "schema": _STRING},
                    {"name": "wait", "in": "query", "required": False,
                     "schema": {"type": "number", "minimum": 0, "maximum": 300},
                     "description": "With id: seconds to wait while the status is pending (at most 300)."},
                ],
                "responses": {
                    "200": _json({"oneOf": [_ref("AppStatusList"), _ref("AppStatusOutcome")]},
                                 "The list (no id) or the outcome of id."),
                    **_errors(e400="wait is not a number.", e404="Unknown id.")}},
        },
        "/api/v0/listening-ports": {"get": {
            "operationId": "listeningPorts", "summary": "TCP ports listened on in the workspace (sorted).",
            "responses": {
                "200": _json(_ref("WorkspaceAgentListeningPortsResponse"), "The ports."),
                **_errors(e500="The scan failed (no /proc reader works).")}}},
        "/api/v0/netcheck": {"get": {
            "operationId": "netcheck", "summary": "The tailnet's DERP view: home region, latencies, connections.",
            "responses": {"200": _json({"type": "object"}, "The DERP state (empty while there is no tailnet).")}}},
        "/api/v0/list-directory": {"post": {
            "operationId": "listDirectory", "summary": "A directory's entries, directories first (Go's agent/ls.go).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {"path": {"type": "array", "items": _STRING},
                               "relativity": {"type": "string", "enum": ["root", "home"]}},
                "required": ["relativity"]}}}},
            "responses": {
                "200": _json({"type": "object", "properties": {
                    "absolute_path": {"type": "array", "items": _STRING},
                    "absolute_path_string": _STRING,
                    "contents": {"type": "array", "items": {"type": "object", "properties": {
                        "name": _STRING, "absolute_path_string": _STRING, "is_dir": {"type": "boolean"}}}}}},
                    "The entries."),
                **_errors(e400="Not a JSON object, a bad path or relativity, or not a directory.",
                          e403="Permission denied.", e404="No such directory.")}}},
        "/api/v0/listening-ports/watch": {"get": {
            "operationId": "watchListeningPorts", "summary": "The ports list, pushed on change.",
            "description": _WS, "x-websocket": True,
            "responses": {
                "101": {"description": "Switching to the websocket."},
                **_errors(e400="Not a websocket upgrade request.")}}},
        "/api/v0/containers": {"get": {
            "operationId": "listContainers", "summary": "Containers and dev containers (codersdk JSON).",
            "parameters": [{"name": "label", "in": "query", "required": False, "style": "form", "explode": True,
                            "schema": {"type": "array", "items": {"type": "string"}},
                            "description": "key=value; only containers with all these labels."}],
            "responses": {
                "200": _json(_ref("WorkspaceAgentListContainersResponse"), "The list."),
                **_errors(e400="A label filter is not key=value.", e403=_CONTAINERS_OFF)}}},
        "/api/v0/containers/watch": {"get": {
            "operationId": "watchContainers", "summary": "The containers list, pushed on change.",
            "description": _WS, "x-websocket": True,
            "responses": {
                "101": {"description": "Switching to the websocket."},
                **_errors(e400="Not a websocket upgrade request.", e403=_CONTAINERS_OFF)}}},
        "/api/v0/containers/devcontainers/{devcontainer}/recreate": {"post": {
            "operationId": "recreateDevcontainer", "summary": "Rebuild a dev container (answers at once).",
            "parameters": [_DC_ID],
            "responses": {
                "202": _json(_ref("Response"), "Recreation started."),
                **_errors(e403=_CONTAINERS_OFF, e404="No such devcontainer.",
                          e409="The devcontainer is starting, stopping or being deleted.")}}},
        "/api/v0/containers/devcontainers/{devcontainer}": {"delete": {
            "operationId": "deleteDevcontainer", "summary": "Stop and remove a dev container's container.",
            "parameters": [_DC_ID],
            "responses": {
                "204": {"description": "Deleted."},
                **_errors(e403=_CONTAINERS_OFF, e404="No such devcontainer.",
                          e409="The devcontainer is starting, stopping or being deleted.",
                          e500="A step failed (the engine's reason in detail).")}}},
        "/api/v0/external-auth": {"get": {
            "operationId": "externalAuth",
            "summary": "Git credentials from Coder's external auth (unix socket only).",
            "parameters": [
                {"name": "match", "in": "query", "required": False, "schema": _STRING,
                 "description": "The URL git asks about (alias: url)."},
                {"name": "url", "in": "query", "required": False, "schema": _STRING},
                {"name": "id", "in": "query", "required": False, "schema": _STRING,
                 "description": "A provider id (exclusive with match)."},
                {"name": "listen", "in": "query", "required": False, "allowEmptyValue": True,
                 "schema": _STRING, "description": "Present: wait until the user has linked the account."},
                {"name": "wait", "in": "query", "required": False, "schema": {"type": "number"},
                 "description": "With listen: seconds per wait (1 to 50)."},
            ],
            "responses": {
                "200": _json(_ref("ExternalAuthResponse"), "The credentials (or the link to authenticate)."),
                **_errors(e400="Neither or both of match and id; wait not a number.",
                          e403="Asked over TCP: credentials are only served on the unix socket.",
                          e404="No provider matches (coderd's answer).",
                          e502="coderd refused the agent's token or cannot be reached.",
                          e503="The daemon is stopping.",
                          e504="listen: not linked yet; ask again.")}}},
        "/api/v0/gitsshkey": {"get": {
            "operationId": "gitSSHKey", "summary": "The user's git SSH key from Coder (unix socket only).",
            "responses": {
                "200": _json(_ref("GitSSHKeyLocal"), "The key pair and where to manage it."),
                **_errors(e403="Asked over TCP.", e502="coderd refused the agent's token or cannot be reached.",
                          e503="The daemon is stopping.")}}},
        "/api/v0/env": {"get": {
            "operationId": "env", "summary": "The environment the daemon adds to every script (coder-agent env).",
            "responses": {"200": _json(_ref("Env"), "Always (secret values redacted).")}}},
    }


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document (built once; callers must not mutate it)."""
    paths = _paths()
    router_errors = _errors(e404="Route not found.", e405="Method not allowed.")
    for item in paths.values():
        for op in item.values():
            for code, resp in router_errors.items():
                op["responses"].setdefault(code, resp)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "coder-agent local API",
            "version": __version__,
            "description": "The Go agent's /api/v0 on a unix socket (0600, same user or root) or loopback TCP. "
                           "Every error body is a codersdk.Response.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": _model_schemas()},
    }


async def handler(request: web.Request) -> web.Response:
    from .server import json_response

    return json_response(document())
